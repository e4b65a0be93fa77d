"""Small, real stages for the flow, deployment and Ray tests (importable as stage references).

``clean_stage`` is a pure function over ``videos`` rows: videos shorter than ``min_duration`` are
rejected, a video whose duration is ``crash_on`` makes ``process`` raise (one failed item), and
every other video gets one trimmed segment.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import uuid
from collections import Counter
from pathlib import Path

from prevad.errors import ValidationError
from prevad.records import Segment, Video
from prevad.stage import Ok, Rejected, Stage, stage_version
from prevad.store import Store

#: Calls of :func:`flaky_stage` per key (the local engine calls factories in this process).
CALLS: Counter[str] = Counter()


def add_videos(store: Store, n: int) -> None:
    """``n`` synthetic videos v000.. with duration i seconds."""
    store.append("videos", [Video.create("synthetic", f"v{i:03d}", duration_s=float(i))
                            for i in range(n)])


def _trim(min_duration: float, crash_on: float | None):
    def process(rows):
        out = []
        for r in rows:
            d = r["duration_s"]
            if crash_on is not None and d == crash_on:
                raise RuntimeError(f"decoder crashed on {r['source_video_id']}")
            if d < min_duration:
                out.append(Rejected("too_short"))
            else:
                seg = Segment(f"{r['video_id']}-main", r["video_id"], r["source"], 0.5, d - 0.5)
                out.append(Ok({"segments": [seg]}, output={"kept_s": d - 1}))
        return out

    return process


def clean_stage(min_duration: float = 2.0, crash_on: float | None = None,
                built_dir: str | None = None, batch_size: int = 3) -> Stage:
    """The test stage; with ``built_dir`` each build leaves a file there (counts the builds)."""
    if built_dir:
        Path(built_dir, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    version = stage_version("clean", {"min_duration": min_duration, "crash_on": crash_on})
    return Stage("clean", version, "videos", _trim(min_duration, crash_on),
                 batch_size=batch_size)


def flaky_stage(error: str, times: int, key: str) -> Stage:
    """Raises ``error`` ('connection' or 'validation') on its first ``times`` builds."""
    CALLS[key] += 1
    if CALLS[key] <= times:
        exc = {"connection": ConnectionError, "validation": ValidationError}[error]
        raise exc(f"simulated {error} error, build {CALLS[key]}")
    return clean_stage()


def caption_stage(prefix: str = "a clip of") -> Stage:
    """A second stage, over ``segments``: a caption per segment as the item's output."""

    def process(rows):
        return [Ok(output={"caption": f"{prefix} {r['end_s'] - r['start_s']:.1f} s"})
                for r in rows]

    return Stage("caption", stage_version("caption", {"prefix": prefix}), "segments", process)


def killing_clean(store: str, kill_at: int, **policy) -> Stage:
    """The real ``clean`` stage (same name, version and results) that SIGKILLs its own process
    right after computing its ``kill_at``-th item, before ``run_stage`` can commit that item's
    shard: a crash in the middle of a stage at a chosen point."""
    from curation.stages import clean

    real = clean(store, **policy)
    done = [0]

    def process(rows):
        out = real.process(rows)
        done[0] += len(rows)
        if done[0] >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    return dataclasses.replace(real, process=process)
