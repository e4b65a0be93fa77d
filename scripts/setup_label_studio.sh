#!/usr/bin/env bash
# Installs what the review round-trip tests need, idempotently:
#   * Label Studio (pinned) in its OWN virtualenv, because its dependency pins clash with ours;
#   * Debian's chromium, which Playwright drives through executable_path (no browser download);
#   * a migrated Label Studio database the tests copy (a fresh one costs minutes to migrate);
#   * the Python `playwright` client in OUR venv (also in the `dev` extra).
# Re-running is cheap: each step is skipped when its result is already there.
# Env: LABEL_STUDIO_VENV (default ~/.cache/lagovad/label-studio-venv), PYTHON (default python3),
#      OUR_PY (default .venv/bin/python), LABEL_STUDIO_VERSION (default 1.23.2).
set -euo pipefail
cd "$(dirname "$0")/.."

LS_VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
LS_VENV="${LABEL_STUDIO_VENV:-$HOME/.cache/lagovad/label-studio-venv}"
PYTHON="${PYTHON:-python3}"
OUR_PY="${OUR_PY:-.venv/bin/python}"

if [ -x "$LS_VENV/bin/label-studio" ] && [ -f "$LS_VENV/.ls-$LS_VERSION" ]; then
  echo "label-studio $LS_VERSION: already in $LS_VENV"
else
  echo "label-studio $LS_VERSION: installing into $LS_VENV"
  mkdir -p "$(dirname "$LS_VENV")"
  test -x "$LS_VENV/bin/python" || "$PYTHON" -m venv "$LS_VENV"
  "$LS_VENV/bin/python" -m pip install -q --upgrade pip
  "$LS_VENV/bin/python" -m pip install -q "label-studio==$LS_VERSION"
  touch "$LS_VENV/.ls-$LS_VERSION"
fi

# A data dir with the database already migrated, copied by each test session: Django's
# migrations are most of a fresh server start (`label-studio version` migrates and exits).
TEMPLATE="$(dirname "$LS_VENV")/label-studio-test-db-$LS_VERSION"
if [ -f "$TEMPLATE/label_studio.sqlite3" ]; then
  echo "label-studio test database: already in $TEMPLATE"
else
  echo "label-studio test database: migrating into $TEMPLATE"
  rm -rf "$TEMPLATE.tmp$$"
  LABEL_STUDIO_BASE_DATA_DIR="$TEMPLATE.tmp$$" "$LS_VENV/bin/label-studio" version >/dev/null 2>&1
  rm -rf "$TEMPLATE"
  mv "$TEMPLATE.tmp$$" "$TEMPLATE"
fi

if [ -x /usr/bin/chromium ]; then
  echo "chromium: already installed"
else
  echo "chromium: installing from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

if [ -x "$OUR_PY" ]; then
  if "$OUR_PY" -c "import playwright" 2>/dev/null; then
    echo "playwright: already in $OUR_PY"
  else
    echo "playwright: installing into $OUR_PY"
    "$OUR_PY" -m pip install -q "playwright>=1.45"
  fi
fi
