"""`prevad curate run STORE STAGE`: any stage by reference from the command line."""

from __future__ import annotations

import json

import pytest
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
            "--engine", "local", "--json"]
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
        ([CLEAN, "--param", "min_dur=1"], "has no parameter(s) min_dur"),
    ]
    for extra, message in cases:
        res = runner.invoke(app, ["curate", "run", str(store.root), *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert res.stderr.startswith("error: ") and message in res.stderr, res.stderr
        assert "Traceback" not in res.output


# Each case: a stage and its -p items -> the words the one error line must contain. Types are
# checked against the options' hints ("expected ..."); ranges by the stage's config class, with
# the message its command gives ("--flag (keyword) must be ...").
BAD_PARAMS = [
    ("acquire", ["max_height=-1"], "--max-height (max_height) must be a whole number > 0, got -1"),
    ("acquire", ["max_height=480.5"], "max_height=480.5: expected an integer"),
    ("acquire", ["max_height=true"], "max_height=True: expected an integer"),
    ("acquire", ["socket_timeout_s=NaN"], "(socket_timeout_s) must be a finite number > 0, "
     "got nan"),
    ("acquire", ["socket_timeout_s=Infinity"], "(socket_timeout_s) must be a finite number > 0, "
     "got inf"),
    ("acquire", ["socket_timeout_s=0"], "(socket_timeout_s) must be a finite number > 0, got 0"),
    ("acquire", ["backoff_s=-1"], "--backoff (backoff_s) must be a finite number >= 0, got -1"),
    ("acquire", ["retries=three"], "retries='three': expected an integer"),
    ("acquire", ["precise_cuts=1"], "precise_cuts=1: expected true or false"),
    ("acquire", ["extra=[1,2]"], "extra=[1, 2]: expected a JSON object"),
    ("acquire", ["schemes=http"], "schemes='http': expected a JSON list"),
    ("acquire", ["schemes=[\"http\", 7]"], "schemes[1]=7: expected a text"),
    ("acquire", ["max_heigth=480"], "has no parameter(s) max_heigth"),
    ("acquire", ["max_height=1", "max_height=2"], "--param max_height is given twice"),
    ("acquire", ["url_template={\"a\": 1}"], "url_template={'a': 1}: expected"),
    ("clean", ["black_fraction=1.5"], "(black_fraction) must be a finite number >= 0 and <= 1"),
    ("clean", ["threshold=-27"], "--threshold (threshold) must be a finite number > 0, got -27"),
    ("clean", ["detect_width=0"], "--detect-width (detect_width) must be a whole number >= 16"),
    ("record", ["socket_timeout_s=-Infinity"], "(socket_timeout_s) must be a finite number > 0, "
     "got -inf"),
    ("record", ["reencode=maybe"], "reencode='maybe': expected true or false"),
    ("dedup", ["rate=31"], "--rate (rate) must be a finite number > 0 and <= 30, got 31"),
    ("describe", ["model=m", "frames=0"], "--frames (frames) must be a whole number >= 1, got 0"),
    ("describe", ["model=m", "temperature=NaN"], "(temperature) must be a finite number >= 0, "
     "got nan"),
    ("describe", ["model=m", "batch_size=[8]"], "batch_size=[8]: expected an integer"),
    ("describe", ["frames=8"], "--model (model) must be a non-empty one-line text, got ''"),
    ("verify", ["model=m", "min_clip_mean=NaN"], "(min_clip_mean) must be a finite number"),
    ("judge", ["model=m", "require_verified=null"], "require_verified=None"),
    ("judge", ["model=m", "1bad=2"], "'1bad' is not a parameter name"),
    ("judge", ["model=m", "engine=openai"], "--engine openai needs --base-url"),
]


def test_run_command_refuses_bad_stage_parameters_before_running(tmp_path):
    """Wrong types, NaN/inf, negatives, zero counts and unknown names: one error line, exit 2,
    nothing written (no stage_results row, no run summary, no claim)."""
    store = Store.init(tmp_path / "s")
    add_videos(store, 2)
    for stage, items, message in BAD_PARAMS:
        args = ["curate", "run", str(store.root), stage, "--engine", "local"]
        for item in items:
            args += ["-p", item]
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (stage, items, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (items, res.stderr)
        assert message in lines[0], (items, lines[0])
        assert "Traceback" not in res.output
    assert store.read("stage_results").num_rows == 0
    assert not (store.root / "stage_runs").exists() or not any(
        (store.root / "stage_runs").rglob("*.json"))


def test_run_command_bad_run_options(tmp_path):
    store = Store.init(tmp_path / "s")
    for extra, message in [(["--actors", "0"], "--actors 0"), (["--num-gpus", "nan"],
                                                               "--num-gpus nan"),
                           (["--shard-size", "0"], "--shard-size 0"),
                           (["--limit", "-1"], "--limit -1")]:
        res = runner.invoke(app, ["curate", "run", str(store.root), CLEAN, *extra])
        assert res.exit_code == 2 and res.stderr.startswith("error: ") \
            and message in res.stderr, (extra, res.output)


def test_run_command_text_parameters_keep_what_was_written(tmp_path):
    """A text parameter that looks like JSON (``-p format=123``) is the text as written, and a
    good value runs the stage (the acquire work list is empty here: 0 items)."""
    from curation.stage_params import check_params

    assert check_params("acquire", {"format": 123}, {"format": "123"}) == {"format": "123"}
    store = Store.init(tmp_path / "s")
    res = runner.invoke(app, ["curate", "run", str(store.root), "acquire", "--engine", "local",
                              "-p", "format=123", "-p", "socket_timeout_s=5",
                              "-p", "schemes=[\"https\"]", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["items"] == 0


@pytest.mark.parametrize("stage, flag, key, value", [
    ("clean", "--threshold", "threshold", "-27"),
    ("clean", "--max-clip", "max_clip_s", "1.5"),
    ("dedup", "--rate", "rate", "31"),
    ("acquire", "--timeout", "timeout_s", "nan"),
    ("record", "--short-fraction", "short_fraction", "2"),
    ("describe", "--frames", "frames", "0"),
    ("verify", "--max-claims", "max_claims", "0"),
    ("judge", "--temperature", "temperature", "-1"),
])
def test_the_command_and_curate_run_refuse_a_value_with_the_same_line(tmp_path, stage, flag,
                                                                      key, value):
    """One declaration, one check: ``prevad curate STAGE --flag V`` and ``prevad curate run
    STAGE -p key=V`` print the same error line, and nothing is written."""
    store = Store.init(tmp_path / "s")
    add_videos(store, 2)
    model = ["--model", "m"] if stage in ("describe", "verify", "judge") else []
    cli = runner.invoke(app, ["curate", stage, str(store.root), *model, flag, value])
    run = runner.invoke(app, ["curate", "run", str(store.root), stage, "--engine", "local",
                              *(["-p", "model=m"] if model else []), "-p", f"{key}={value}"])
    assert cli.exit_code == run.exit_code == 2, (cli.output, run.output)
    assert cli.stderr.startswith(f"error: {flag} ({key}) must be "), cli.stderr
    assert cli.stderr == run.stderr
    assert store.read("stage_results").num_rows == 0
