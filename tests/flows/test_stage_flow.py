"""The generic stage flow on the embedded Prefect server: store results, artifacts, tags,
resume, and retries only for transient errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

from flows.stage_flow import chain, is_transient, make_stage_flow, resolve_factory, stage_flow
from prevad.errors import ValidationError
from prevad.store import Store
from tests.flows.stages import CALLS, add_videos

CLEAN = "tests.flows.stages:clean_stage"


@pytest.fixture()
def store(tmp_path) -> Store:
    st = Store.init(tmp_path / "store")
    add_videos(st, 8)
    return st


def _latest_artifact(key: str):
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return max(arts, key=lambda a: a.created)


def test_stage_flow_commits_results_and_publishes_summary(store):
    state = stage_flow(str(store.root), CLEAN, {"min_duration": 2.0, "crash_on": 5.0},
                       engine="local", return_state=True)
    summary = state.result()
    assert (summary["ok"], summary["rejected"], summary["failed"]) == (5, {"too_short": 2}, 1)
    assert store.read("segments").num_rows == 5
    # the table artifact lists ok / rejected by reason / failed
    table = _latest_artifact("stage-clean")
    assert '"reason": "too_short"' in table.data and '"items": 5' in table.data
    assert "items/s" in table.description
    # the data card is written and linked
    assert summary["card"].endswith("card.md")
    link = _latest_artifact("data-card-link")
    assert Path(summary["card"]).resolve().as_uri() in link.data

    # a second run redoes only the failed item: nothing is duplicated
    again = stage_flow(str(store.root), CLEAN, {"min_duration": 2.0, "crash_on": 5.0},
                       engine="local", card=False)
    assert (again["items"], again["ok"], again["failed"]) == (1, 0, 1)
    assert store.read("segments").num_rows == 5
    assert store.read("stage_results").num_rows == 9


def test_model_stages_carry_the_gpu_tag(store):
    state = stage_flow(str(store.root), CLEAN, engine="local", tags=["gpu"], card=False,
                       return_state=True)
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    stage_runs = [r for r in runs if r.name.startswith("stage-clean_stage")]
    assert stage_runs and stage_runs[0].tags == ["gpu"]


def test_transient_errors_are_retried_bad_input_is_not(store):
    key = uuid.uuid4().hex
    out = stage_flow(str(store.root), "tests.flows.stages:flaky_stage",
                     {"error": "connection", "times": 1, "key": key}, engine="local",
                     retry_delay_s=0, card=False)
    assert CALLS[key] == 2 and out["ok"] == 6

    key = uuid.uuid4().hex
    with pytest.raises(ValidationError, match="simulated validation error"):
        stage_flow(str(store.root), "tests.flows.stages:flaky_stage",
                   {"error": "validation", "times": 1, "key": key}, engine="local",
                   retry_delay_s=0, card=False)
    assert CALLS[key] == 1


def test_error_classification_and_bad_references():
    assert is_transient(ConnectionResetError("peer reset"))
    assert is_transient(TimeoutError("slow"))
    assert is_transient(OSError(5, "I/O error"))
    assert not is_transient(FileNotFoundError("missing.mp4"))
    assert not is_transient(ValidationError("bad row"))
    with pytest.raises(ValidationError, match="unknown stage 'nope'"):
        resolve_factory("nope")
    with pytest.raises(ValidationError, match="cannot be imported"):
        resolve_factory("tests.flows.stages:no_such_factory")


def test_make_stage_flow_names_a_flow_per_stage(store):
    clean = make_stage_flow("clean", CLEAN, default_params={"min_duration": 4.0})
    state = clean(str(store.root), params={"crash_on": 6.0}, engine="local", card=False,
                  return_state=True)
    summary = state.result()
    assert (summary["ok"], summary["rejected"], summary["failed"]) == (3, {"too_short": 4}, 1)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert client.read_flow(run.flow_id).name == "clean"


def test_chain_runs_stages_in_order_and_resumes(store):
    refs = [CLEAN, "tests.flows.stages:caption_stage"]
    params = {"clean_stage": {"min_duration": 3.0}, "caption_stage": {"prefix": "clip"}}
    out = chain(str(store.root), stages=refs, params=params, engine="local", card=False)
    assert out["stages"]["clean_stage"]["ok"] == 5
    assert out["stages"]["caption_stage"]["ok"] == 5  # it saw every segment clean wrote
    captions = store.query("SELECT output_json FROM stage_results WHERE stage = 'caption' "
                           "ORDER BY id").to_pylist()
    assert {c["output_json"] for c in captions} >= {'{"caption": "clip 6.0 s"}'}
    again = chain(str(store.root), stages=refs, params=params, engine="local", card=False)
    assert [s["items"] for s in again["stages"].values()] == [0, 0]
    # a bad reference fails before any stage runs
    runs_before = len(list((store.root / "stage_runs").rglob("*.json")))
    with pytest.raises(ValidationError, match="unknown stage 'nope'"):
        chain(str(store.root), stages=[CLEAN, "nope"], engine="local", card=False)
    assert len(list((store.root / "stage_runs").rglob("*.json"))) == runs_before


def test_every_stage_of_a_chain_is_checked_before_the_first_runs(store):
    """A value the last stage's options refuse (the same check and message as its command)
    stops the chain before the first stage touches an item."""
    params = {"clean_stage": {"min_duration": 3.0},
              "judge": {"model": "m", "max_reason_chars": 0}}
    with pytest.raises(ValidationError, match=r"--max-reason-chars \(max_reason_chars\) must "
                       r"be a whole number >= 1, got 0"):
        chain(str(store.root), stages=[CLEAN, "judge"], params=params, engine="local",
              card=False)
    with pytest.raises(ValidationError, match=r"stage 'clean' has no parameter\(s\) treshold"):
        stage_flow(str(store.root), "clean", {"treshold": 20}, engine="local", card=False)
    assert store.read("stage_results").num_rows == 0
    assert not (store.root / "stage_runs").exists() or not any(
        (store.root / "stage_runs").rglob("*.json"))
