"""SIGKILL during `extract --store`: each video's .npy, Feature row and status row land together."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lagovad.extract import STAGE
from prevad import Store
from prevad.maintenance import verify
from prevad.store import orphan_files
from tests.lagovad.helpers import write_video

REPO = Path(__file__).resolve().parents[2]

#: Child: count the write path's file-system steps after setup, SIGKILL before the N-th one.
CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from lagovad.extract import extract
    from lagovad.image_encoder import load_image_encoder
    from prevad import Store
    from prevad import store as store_mod

    root, ckpt, videos, kill_at, steps_file = sys.argv[1:6]
    encoder = load_image_encoder("lagovad-clip-tiny", ckpt, device="cpu")
    store = Store(root)
    count = [0]

    def hook(fn):
        def wrapped(*a, **k):
            count[0] += 1
            if count[0] == int(kill_at):
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return wrapped

    for name in ("replace", "fsync", "unlink", "link", "rename", "mkdir"):
        setattr(os, name, hook(getattr(os, name)))
    store_mod.exchange_paths = hook(store_mod.exchange_paths)
    extract([videos], encoder, store=store, progress=False, decode_workers=1)
    Path(steps_file).write_text(str(count[0]))
""")


def _run(root: Path, ckpt: Path, videos: Path, kill_at: int, steps: Path) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(ckpt), str(videos), str(kill_at),
         str(steps)],
        cwd=REPO, env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300,
    )
    return proc.returncode


def _consistent(root: Path) -> set[str]:
    """Check every video's three outputs agree; return the ids with features."""
    store = Store(root)  # the next command: rolls forward / cleans up
    feats = {r["video_id"]: r for r in store.read("features").to_pylist()}
    ok = {r["id"] for r in store.read("stage_results").to_pylist()
          if r["stage"] == STAGE and r["status"] == "ok"}
    files = {p.stem for p in (root / "features").rglob("*.npy")}
    assert set(feats) == ok, "a Feature row without its ok status row (or the reverse)"
    assert {Path(r["location"]).stem for r in feats.values()} == files
    assert orphan_files(root) == [] and not list(root.rglob("*.tmp"))
    assert verify(store).ok, verify(store).problems
    return set(feats)


@pytest.mark.slow
def test_sigkill_during_store_extraction(tmp_path, tiny_open_clip_checkpoint):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_video(videos / f"gray{i}.mp4", 24 + 8 * i)
    dry = tmp_path / "dry"
    Store.init(dry)
    steps = tmp_path / "steps.txt"
    assert _run(dry, tiny_open_clip_checkpoint, videos, 10**9, steps) == 0
    total = int(steps.read_text())
    assert len(_consistent(dry)) == 3
    # spawning a process with torch costs seconds: a few points inside the write path (the
    # store's own SIGKILL sweep in tests/prevad covers every step of the same commit)
    points = sorted({total // 2, total})
    for kill_at in points:
        root = tmp_path / f"k{kill_at}"
        Store.init(root)
        assert _run(root, tiny_open_clip_checkpoint, videos, kill_at, steps) == -signal.SIGKILL
        _consistent(root)
        if kill_at != points[-1]:
            continue
        # the rerun finishes the rest; no attempt number is written twice
        assert _run(root, tiny_open_clip_checkpoint, videos, 10**9, steps) == 0
        assert len(_consistent(root)) == 3
        rows = Store(root).read("stage_results").to_pylist()
        keys = [(r["id"], r["attempt"]) for r in rows]
        assert len(keys) == len(set(keys)), json.dumps(keys)
