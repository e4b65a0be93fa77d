"""SIGKILL in the middle of a stage, run again: the store ends as after an uninterrupted run.

The stage is the real ``clean`` (PySceneDetect over tiny generated videos). The crashing runs use
``tests.flows.stages:killing_clean`` - the same stage, name and version, whose process kills its
own process with SIGKILL right after computing its k-th item, i.e. while run_stage still holds
that item's shard uncommitted. Killed runs are real subprocesses: ``prevad curate run`` at
several points, and the ``curate`` Prefect flow itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from flows.curate import curate
from lagovad.video import write_video
from prevad.records import Video
from prevad.store import Store

ROOT = Path(__file__).resolve().parents[2]
H, W, FPS = 48, 64, 20
N_GOOD = 7
SHARD = 3


def _moving(seed: int):
    rng = np.random.default_rng(seed)
    bg = np.kron(rng.integers(30, 220, size=(H // 8, W // 8, 3), dtype=np.uint8),
                 np.ones((8, 8, 1), np.uint8))

    def frame(i: int) -> np.ndarray:
        img = bg.copy()
        x = (i * 3) % (W - 8)
        img[16:32, x:x + 8] = 250
        return img

    return frame


def _make_store(root: Path, media: Path) -> Store:
    """7 good videos (ok), one all-black (rejected), one corrupt file (failed)."""
    store = Store.init(root)
    videos = []
    for k in range(N_GOOD):
        path = media / f"good{k}.mp4"
        if not path.exists():
            write_video(path, 30 + 4 * k, _moving(k), fps=FPS, lossless=False)
        videos.append(Video.create("test", f"good{k}", uri=str(path)))
    black = media / "black.mp4"
    if not black.exists():
        write_video(black, 30, lambda i: np.full((H, W, 3), 3, np.uint8), fps=FPS)
    junk = media / "junk.mp4"
    junk.write_bytes(b"not a video" * 20)
    videos += [Video.create("test", "black", uri=str(black)),
               Video.create("test", "junk", uri=str(junk))]
    store.append("videos", videos)
    return store


def _vid(name: str) -> str:
    return Video.create("test", name).video_id


def _clean_results(store: Store) -> dict[str, list]:
    out = defaultdict(list)
    for r in store.records("stage_results"):
        if r.stage == "clean":
            out[r.id].append(r)
    return out


def _contents(store: Store) -> dict:
    """What must match an uninterrupted run: segments, and the final outcome of every item."""
    segs = sorted((s.segment_id, s.video_id, round(s.start_s, 4), round(s.end_s, 4))
                  for s in store.records("segments"))
    final = {}
    for vid, rows in _clean_results(store).items():
        last = max(rows, key=lambda r: (r.attempt, r.time))
        final[vid] = (last.stage_version, last.status, last.reason,
                      json.loads(last.output_json) if last.output_json else None)
    return {"segments": segs, "final": final}


def _killed_cli_run(store: Store, kill_at: int) -> int:
    """``prevad curate run STORE killing_clean`` in a subprocess; returns its exit code."""
    cmd = [sys.executable, "-m", "toolkit", "curate", "run", str(store.root),
           "tests.flows.stages:killing_clean", "--param", f"kill_at={kill_at}",
           "--engine", "local", "--shard-size", str(SHARD)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode


def _killed_flow_run(store: Store, kill_at: int) -> int:
    """The ``curate`` flow (step clean) in a subprocess, its clean stage killing the process."""
    from prefect.settings import PREFECT_API_URL

    code = (
        "import sys; from curation import registry; "
        "registry.STAGES['clean'] = 'tests.flows.stages:killing_clean'; "
        "from flows.curate import curate; "
        f"curate({str(store.root)!r}, steps=['clean'], "
        f"params={{'clean': {{'kill_at': {kill_at}}}}}, engine='local', shard_size={SHARD}, "
        "card=False)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          timeout=300).returncode


@pytest.mark.slow
def test_sigkill_mid_stage_then_rerun_matches_an_uninterrupted_run(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    # the uninterrupted reference (9 items: 7 ok, 1 rejected, 1 failed)
    ref = _make_store(tmp_path / "ref", media)
    out = curate(str(ref.root), steps=["clean"], engine="local", shard_size=SHARD, card=False)
    summary = out["steps"]["clean"]
    assert (summary["ok"], summary["rejected"], summary["failed"]) == (N_GOOD, {"all_black": 1}, 1)

    store = _make_store(tmp_path / "crashed", media)
    # kill inside the first shard, then inside a later shard of the next run, then via the flow
    for run, kill_at in ((_killed_cli_run, 2), (_killed_cli_run, 4), (_killed_flow_run, 2)):
        before = _contents(store)
        assert run(store, kill_at) == -signal.SIGKILL
        after = _contents(store)
        # whatever was committed before the kill is still there, nothing was rewritten
        assert set(before["segments"]) <= set(after["segments"])
        assert all(after["final"][k] == v for k, v in before["final"].items())
    done = [v for v, o in _contents(store)["final"].items() if o[1] in ("ok", "rejected")]
    assert 0 < len(done) < N_GOOD + 1  # the kills did leave work undone

    rerun = curate(str(store.root), steps=["clean"], engine="local", shard_size=SHARD,
                   card=False)["steps"]["clean"]
    assert rerun["items"] == N_GOOD + 2 - len(done)  # completed items are not redone
    assert _contents(store) == _contents(ref)

    results = _clean_results(store)
    for vid, rows in results.items():
        # completed items exist once: never lost, never duplicated, rejected never redone
        assert vid == _vid("junk") or len(rows) == 1, (vid, [r.status for r in rows])
    seg_ids = [s.segment_id for s in store.records("segments")]
    assert len(seg_ids) == len(set(seg_ids)) == N_GOOD

    # the failed item is retried on the next run, and only it
    junk_before = len(results[_vid("junk")])
    again = curate(str(store.root), steps=["clean"], engine="local", shard_size=SHARD,
                   card=False)["steps"]["clean"]
    assert again["items"] == 1 and again["failed"] == 1
    junk_rows = _clean_results(store)[_vid("junk")]
    assert [r.attempt for r in sorted(junk_rows, key=lambda r: r.attempt)] == list(
        range(1, junk_before + 2))
