"""Ray scale-out: a stage run on a local Ray instance stores exactly what the local engine does,
with the stage built once per actor and the driver as the only writer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.stage_flow import stage_flow
from prevad.store import Store
from tests.flows.stages import add_videos

ray = pytest.importorskip("ray")
REPO_ROOT = Path(__file__).resolve().parents[2]
CLEAN = "tests.flows.stages:clean_stage"
PARAMS = {"min_duration": 2.0, "crash_on": 5.0, "batch_size": 2}
RESULT_COLUMNS = ["id", "stage", "stage_version", "status", "reason", "output_json", "attempt"]


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance on 2 CPUs; its workers import this checkout (tests.flows.stages)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _contents(store: Store) -> tuple[list, list]:
    segments = store.query("SELECT * EXCLUDE (created_at) FROM segments ORDER BY segment_id"
                           ).to_pylist()
    results = store.query(f"SELECT {', '.join(RESULT_COLUMNS)}, error FROM stage_results "
                          "ORDER BY id, attempt").to_pylist()
    for r in results:  # the traceback text differs by host; the message must survive
        r["error"] = None if r["error"] is None else "decoder crashed on v005" in r["error"]
    return segments, results


@pytest.mark.slow
def test_ray_engine_stores_what_the_local_engine_stores(tmp_path, ray_address, monkeypatch):
    local, remote = Store.init(tmp_path / "local"), Store.init(tmp_path / "ray")
    add_videos(local, 8)
    add_videos(remote, 8)
    local_summary = stage_flow(str(local.root), CLEAN, PARAMS, engine="local", card=False)

    built = tmp_path / "built"
    built.mkdir()
    monkeypatch.setenv("RAY_ADDRESS", ray_address)  # engine "auto" picks Ray when it is set
    ray_summary = stage_flow(str(remote.root), CLEAN, {**PARAMS, "built_dir": str(built)},
                             engine="auto", shard_size=3, card=False)

    assert (ray_summary["ok"], ray_summary["rejected"], ray_summary["failed"]) == (
        local_summary["ok"], local_summary["rejected"], local_summary["failed"]) == (
        5, {"too_short": 2}, 1)
    assert _contents(remote) == _contents(local)
    # 4 batches on one actor: the stage (its model) was built once there, plus once on the driver
    builders = [p.name.split("-")[0] for p in built.iterdir()]
    assert sorted(builders).count(str(os.getpid())) == 1
    assert len(builders) == 2
