"""`prevad curate run STORE STAGE`: any stage by reference from the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from prevad.store import Store
from tests.flows.stages import add_videos
from toolkit.cli import app

runner = CliRunner()
CLEAN = "tests.flows.stages:clean_stage"


def test_run_command_runs_a_stage_and_resumes(tmp_path):
    store = Store.init(tmp_path / "s")
    add_videos(store, 6)
    args = ["curate", "run", str(store.root), CLEAN, "--param", "min_duration=3",
            "--engine", "local"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["rejected"]) == (3, {"too_short": 3})
    again = json.loads(runner.invoke(app, args).stdout.strip().splitlines()[-1])
    assert again["items"] == 0 and store.read("segments").num_rows == 3


def test_run_command_bad_input_is_one_error_line(tmp_path):
    store = Store.init(tmp_path / "s")
    cases = [
        ([CLEAN, "--engine", "spark"], "engine must be one of"),
        (["no_such_stage"], "unknown stage 'no_such_stage'"),
        ([CLEAN, "--param", "min_duration"], "--param must look like key=value"),
        (["tests.flows.stages:CALLS"], "is not callable"),
        (["tests.flows.stages:_trim", "--param", "min_duration=1", "--param", "crash_on=null"],
         "returned function, expected prevad.stage.Stage"),
        ([CLEAN, "--param", "min_dur=1"], "does not take these parameters"),
    ]
    for extra, message in cases:
        res = runner.invoke(app, ["curate", "run", str(store.root), *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert res.stderr.startswith("error: ") and message in res.stderr, res.stderr
        assert "Traceback" not in res.output
