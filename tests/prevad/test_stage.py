"""The stage contract: work list, ok/rejected/failed, capped retries, versions."""

from __future__ import annotations

import json

import pytest

from prevad import Store
from prevad.records import Segment, Video
from prevad.stage import Ok, Rejected, Stage, run_stage, stage_version


def _videos(store: Store, n: int) -> list[Video]:
    vids = [Video.create("synthetic", f"v{i:03d}", duration_s=float(i)) for i in range(n)]
    store.append("videos", vids)
    return vids


def _trim(rows):
    out = []
    for r in rows:
        d = r["duration_s"]
        if d == 3.0:
            raise RuntimeError("decoder crashed on v003")
        if d < 2:
            out.append(Rejected("too_short"))
        else:
            seg = Segment(f"{r['video_id']}-main", r["video_id"], r["source"], 0.5, d - 0.5)
            out.append(Ok({"segments": [seg]}, output={"kept": d - 1}))
    return out


def test_run_stage_commits_outputs_and_statuses(tmp_path):
    store = Store.init(tmp_path / "s")
    _videos(store, 6)
    stage = Stage("clean", stage_version("clean", {"min": 2}), "videos", _trim, batch_size=4)
    summary = run_stage(store, stage)
    assert (summary.ok, summary.rejected, summary.failed) == (3, {"too_short": 2}, 1)
    assert store.read("segments").num_rows == 3
    failed = [r for r in store.records("stage_results") if r.status == "failed"]
    assert len(failed) == 1 and "decoder crashed on v003" in failed[0].error
    saved = json.loads(next((store.root / "stage_runs" / "clean").glob("*.json")).read_text())
    assert saved["ok"] == 3 and saved["items"] == 6

    # a rerun redoes only the failed item, with the next attempt number
    again = run_stage(store, stage)
    assert again.items == 1 and again.failed == 1
    attempts = sorted(r.attempt for r in store.records("stage_results") if r.status == "failed")
    assert attempts == [1, 2]
    assert store.read("segments").num_rows == 3


def test_attempts_are_capped_and_new_version_reruns(tmp_path):
    store = Store.init(tmp_path / "s")
    _videos(store, 4)
    stage = Stage("clean", "v1-a", "videos", _trim, max_attempts=2)
    run_stage(store, stage)
    run_stage(store, stage)
    third = run_stage(store, stage)
    assert third.items == 0 and third.exhausted == 1
    new = Stage("clean", "v1-b", "videos", _trim, max_attempts=2)
    assert run_stage(store, new).items == 4


def test_stage_version_changes_with_params_and_files(tmp_path):
    f = tmp_path / "queries.json"
    f.write_text("[1]")
    a = stage_version("retrieve", {"k": 5}, [f])
    assert a == stage_version("retrieve", {"k": 5}, [f])
    assert a != stage_version("retrieve", {"k": 6}, [f])
    f.write_text("[2]")
    assert a != stage_version("retrieve", {"k": 5}, [f])


def test_bad_stage_definition_is_a_clear_error():
    with pytest.raises(ValueError, match="input_table must be one of"):
        Stage("x", "v1", "nope", _trim)


def test_an_interrupted_run_releases_its_claims_for_a_retry_in_the_same_process(tmp_path):
    store = Store.init(tmp_path / "s")
    _videos(store, 4)
    calls = {"n": 0}

    def interrupted_once(rows):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # not an item's error: the run itself stops
        return _trim(rows)

    stage = Stage("clean", "v1-a", "videos", interrupted_once, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        run_stage(store, stage)
    # the same process retries at once (as a Prefect task retry would): nothing is skipped
    again = run_stage(store, stage)
    assert again.items == 4 and again.ok == 1
