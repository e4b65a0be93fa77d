# Two commands matter to a newcomer: `make demo` (the main job on embedded defaults) and
# `make test` (the test suite). Both create or reuse the virtualenv in $(VENV).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install demo quickstart test lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The curation chain end to end on a generated world, trained on what it curated and evaluated
# on the world's held-out split (flows/demo.py; exits 1 when the held-out AUC is below 0.9);
# `make quickstart` is the older, shorter tour (benchmarks, synthetic training, detect).
demo: $(STAMP)
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180 $(PY) -m flows.demo --out runs/demo

quickstart: $(STAMP)
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180 $(PY) -m flows.quickstart --out runs/quickstart

# The review tests run a real Label Studio (own venv) and drive Debian's chromium: the setup
# script installs both once and is a no-op afterwards.
test: $(STAMP)
	OUR_PY=$(PY) bash scripts/setup_label_studio.sh
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache
