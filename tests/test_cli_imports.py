"""The data layer's commands start without the model stack.

``prevad --help``, ``prevad query`` and ``prevad curate status`` run in a fresh interpreter (as a
user runs them) and report the modules loaded when they exit: no torch, transformers or
open_clip. The model stack loads where a stage needs it (``curate describe`` builds a model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prevad import Store

HEAVY = ("torch", "transformers", "open_clip")

#: Runs the ``prevad`` command (toolkit.cli) with argv; at exit writes which HEAVY modules loaded.
WRAPPER = """
import atexit, json, sys
out, args = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(out, "w").write(json.dumps(
    sorted(m for m in {heavy!r} if m in sys.modules))))
sys.argv = ["prevad", *args]
from toolkit.cli import app
app()
"""


def loaded_heavy(tmp_path: Path, *args: str) -> tuple[int, list[str], str]:
    """(exit code, heavy modules loaded, output) of ``prevad ARGS`` in a new interpreter."""
    report = tmp_path / "modules.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", WRAPPER.format(heavy=HEAVY), str(report),
                           *args], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    return proc.returncode, json.loads(report.read_text()), proc.stdout + proc.stderr


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.init(tmp_path / "store")


@pytest.mark.parametrize("args", [
    ["--help"],
    ["query", "{root}", "SELECT count(*) AS n FROM videos"],
    ["curate", "status", "{root}"],
    ["curate", "--help"],
    ["review", "--help"],
])
def test_data_layer_commands_do_not_import_the_model_stack(tmp_path, store, args):
    code, heavy, out = loaded_heavy(tmp_path, *(a.format(root=store.root) for a in args))
    assert code == 0, out
    assert heavy == [], f"prevad {' '.join(args)} imported {heavy}"


def test_a_model_stage_still_loads_it_when_it_builds_a_model(tmp_path, store):
    # the check sees the model stack when it is loaded: a describe run on an empty store
    # builds its engine (a model directory that does not exist is one error line)
    code, heavy, out = loaded_heavy(tmp_path, "curate", "describe", str(store.root),
                                    "--model", str(tmp_path / "no-model"), "--device", "cpu")
    assert code == 2 and "error: " in out and "Traceback" not in out, out
    assert "torch" in heavy, heavy
