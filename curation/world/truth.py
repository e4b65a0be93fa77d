"""The truth table of a generated world, and the truth of any part of any of its files.

Two Parquet files in the world folder:

- ``truth.parquet``, one row per file (:data:`VIDEO_SCHEMA`): caption and its kind, category
  (sub-category and top-level, ``Normal`` for normal videos), frame rate, frame count, size,
  variable frame rate (with every frame's time), hard cuts, dissolves, intro/outro frames,
  black and title runs, anomaly spans (frames and seconds), duplicate group and kind, which
  file is broken and how, whether it is served with byte ranges, and the corpus section.
- ``shots.parquet``, one row per piece of each timeline (:data:`SHOT_SCHEMA`): kind (scene,
  title, black), frames and seconds, how it begins (cut, dissolve) and whether the event lies in
  it.

Conventions. Frames are 0-based indices of the decoded frames of the file; spans are
``[start, end)`` (end exclusive); seconds are presentation times (``frame_times`` for variable
frame rate files, ``frame / fps`` otherwise). A hard cut at frame ``k`` means frame ``k`` is the
first frame of the new piece. A dissolve ``[a, b)`` is the overlap of two pieces. ``intro_frames``
is where the first scene starts (the middle of a dissolve into it); ``outro_frames`` counts the
frames after the last scene.

:func:`span_truth` maps the truth onto any part ``[start_s, end_s)`` of a file (a clip, a
downloaded section): its category, whether the event is in it, and the event's frames relative
to the part. It is what the simulated reviewer and the benchmark use to judge every item.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.world.plan import VideoPlan
from prevad import taxonomy

TRUTH_FILE = "truth.parquet"
SHOTS_FILE = "shots.parquet"
#: World ids: ``w`` corpus, ``t`` held-out test, ``s`` stream, then six digits.
WORLD_ID = re.compile(r"\b([wts]\d{6})\b")

_SPANS = pa.list_(pa.list_(pa.int64()))
_SPANS_S = pa.list_(pa.list_(pa.float64()))
VIDEO_SCHEMA = pa.schema([
    ("world_id", pa.string()), ("split", pa.string()), ("file", pa.string()),
    ("url_path", pa.string()), ("caption", pa.string()), ("caption_kind", pa.string()),
    ("category", pa.string()), ("top_level", pa.string()), ("is_anomaly", pa.bool_()),
    ("pattern", pa.string()), ("fps", pa.float64()), ("n_frames", pa.int64()),
    ("duration_s", pa.float64()), ("width", pa.int64()), ("height", pa.int64()),
    ("vfr", pa.bool_()), ("frame_times", pa.list_(pa.float64())),
    ("cut_frames", pa.list_(pa.int64())), ("cut_s", pa.list_(pa.float64())),
    ("dissolves", _SPANS), ("dissolves_s", _SPANS_S),
    ("intro_frames", pa.int64()), ("outro_frames", pa.int64()),
    ("black_frames", _SPANS), ("title_frames", _SPANS),
    ("anomaly_frames", _SPANS), ("anomaly_s", _SPANS_S),
    ("n_shots", pa.int64()), ("compilation", pa.bool_()),
    ("dup_group", pa.string()), ("dup_kind", pa.string()), ("dup_of", pa.string()),
    ("trim_start_frames", pa.int64()), ("broken", pa.string()), ("ranges", pa.bool_()),
    ("section_start_s", pa.float64()), ("section_end_s", pa.float64()),
])
SHOT_SCHEMA = pa.schema([
    ("world_id", pa.string()), ("shot_index", pa.int64()), ("kind", pa.string()),
    ("start_frame", pa.int64()), ("end_frame", pa.int64()), ("start_s", pa.float64()),
    ("end_s", pa.float64()), ("transition", pa.string()), ("dissolve_frames", pa.int64()),
    ("has_event", pa.bool_()),
])


def _time(times: Sequence[float], fps: float, k: int) -> float:
    """Time of frame boundary ``k`` (``len(times)`` = the end of the last frame)."""
    if k < len(times):
        return float(times[k])
    last = times[-1] if times else 0.0
    return round(float(last) + (k - len(times) + 1) / fps, 6)


def plan_truth(plan: VideoPlan) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The truth row of a planned file and its shot rows (file frames, see the module doc)."""
    lo, n = plan.trim_start, len(plan.frames)
    times = plan.frame_times()
    fps = plan.fps

    def clip(a: int, b: int) -> tuple[int, int] | None:
        a, b = max(a - lo, 0), min(b - lo, n)
        return (a, b) if b > a else None

    def secs(span: tuple[int, int]) -> list[float]:
        return [round(_time(times, fps, span[0]), 6), round(_time(times, fps, span[1]), 6)]

    shots, cuts, dissolves, blacks, titles = [], [], [], [], []
    event = clip(plan.event.start, plan.event.end) if plan.event else None
    pieces = [(p, clip(p.start, p.end)) for p in plan.pieces]
    for p, span in pieces:
        if span is None:
            continue
        if p.transition == "cut" and 0 < span[0] < n:
            cuts.append(span[0])
        if p.transition == "dissolve":
            d = clip(p.start, p.start + p.dissolve)
            if d and d[0] > 0:
                dissolves.append(d)
        (blacks if p.kind == "black" else titles if p.kind == "title" else []).append(span)
        shots.append({
            "world_id": plan.world_id, "shot_index": len(shots), "kind": p.kind,
            "start_frame": span[0], "end_frame": span[1], "start_s": secs(span)[0],
            "end_s": secs(span)[1], "transition": p.transition if span[0] > 0 else "start",
            "dissolve_frames": p.dissolve if p.transition == "dissolve" else 0,
            "has_event": bool(event and event[0] < span[1] and span[0] < event[1]
                              and p.kind == "scene"),
        })
    scenes = [(p, s) for p, s in pieces if p.kind == "scene" and s is not None]
    first, last = scenes[0], scenes[-1]
    intro = first[1][0] + (first[0].dissolve // 2 if first[0].transition == "dissolve" else 0)
    outro = n - last[1][1]
    anomalous = plan.event is not None
    row = {
        "world_id": plan.world_id, "split": plan.split, "file": plan.file,
        "url_path": plan.url_path, "caption": plan.caption, "caption_kind": plan.caption_kind,
        "category": plan.category, "top_level": taxonomy.top_level(plan.category),
        "is_anomaly": anomalous, "pattern": plan.event.pattern if plan.event else None,
        # a variable-rate file's rate is its average (what a probe reports)
        "fps": round(n / _time(times, fps, n), 6) if plan.vfr else fps, "n_frames": n,
        "duration_s": round(_time(times, fps, n), 6),
        "width": plan.size[0], "height": plan.size[1], "vfr": plan.vfr,
        "frame_times": times if plan.vfr else [],
        "cut_frames": cuts, "cut_s": [secs((c, c))[0] for c in cuts],
        "dissolves": [list(d) for d in dissolves], "dissolves_s": [secs(d) for d in dissolves],
        "intro_frames": intro, "outro_frames": outro,
        "black_frames": [list(b) for b in blacks], "title_frames": [list(t) for t in titles],
        "anomaly_frames": [list(event)] if event else [],
        "anomaly_s": [secs(event)] if event else [],
        "n_shots": len(scenes), "compilation": len(scenes) > 1,
        "dup_group": plan.dup_of or plan.world_id, "dup_kind": plan.dup_kind,
        "dup_of": plan.dup_of, "trim_start_frames": plan.trim_start, "broken": plan.broken,
        "ranges": plan.ranges,
        "section_start_s": plan.section[0] if plan.section else None,
        "section_end_s": plan.section[1] if plan.section else None,
    }
    return row, shots


def write_truth(folder: str | Path, plans: Sequence[VideoPlan]) -> tuple[Path, Path]:
    """Write ``truth.parquet`` and ``shots.parquet`` for ``plans`` (atomically)."""
    from prevad.io import atomic_write

    rows, shots = [], []
    groups: dict[str, int] = {}
    for p in plans:
        row, s = plan_truth(p)
        rows.append(row)
        shots.extend(s)
        if p.dup_of:
            groups[p.dup_of] = groups.get(p.dup_of, 0) + 1
    for row in rows:  # a video without copies is a group of one: no group name
        if row["dup_of"] is None and row["world_id"] not in groups:
            row["dup_group"] = None
        elif row["dup_of"] is None:
            row["dup_kind"] = "original"
    out = []
    for name, data, schema in ((TRUTH_FILE, rows, VIDEO_SCHEMA), (SHOTS_FILE, shots,
                                                                   SHOT_SCHEMA)):
        path = Path(folder) / name
        with atomic_write(path) as fh:
            pq.write_table(pa.Table.from_pylist(data, schema=schema), fh)
        out.append(path)
    return out[0], out[1]


def load_truth(world: str | Path) -> dict[str, dict[str, Any]]:
    """The truth rows of a world folder, by world id."""
    table = pq.read_table(Path(world) / TRUTH_FILE)
    return {r["world_id"]: r for r in table.to_pylist()}


def load_shots(world: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The shot rows of a world folder, per world id in timeline order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in pq.read_table(Path(world) / SHOTS_FILE).to_pylist():
        out.setdefault(r["world_id"], []).append(r)
    return out


def world_id_of(*texts: str | None) -> str | None:
    """The world id named in any of ``texts`` (a source id, a URL, a file name), else None."""
    for t in texts:
        m = WORLD_ID.search(t or "")
        if m:
            return m.group(1)
    return None


def frame_at(video: dict[str, Any], t: float) -> int:
    """Index of the first frame shown at or after ``t`` seconds (a quarter frame of slack)."""
    fps = float(video["fps"])
    slack = 0.25 / fps
    times = video.get("frame_times") or []
    if times:
        return bisect.bisect_left(times, t - slack)
    return min(max(int(-(-(t - slack) * fps // 1)), 0), int(video["n_frames"]))


@dataclass(frozen=True, slots=True)
class SpanTruth:
    """The truth of a part of a file.

    Attributes:
        world_id: the file's world id.
        first_frame: the part's first frame in the file.
        n_frames: frames in the part.
        category: the sub-category when the event lies (partly) in the part, else Normal.
        top_level: its top-level class (Normal for Normal).
        spans: event frames ``[start, end)`` relative to the part's first frame.
    """

    world_id: str
    first_frame: int
    n_frames: int
    category: str
    top_level: str
    spans: tuple[tuple[int, int], ...]

    @property
    def is_anomaly(self) -> bool:
        """True when the part holds (some of) the event."""
        return bool(self.spans)

    def relative(self) -> list[list[float]]:
        """Spans relative to the part, ``[start / n, end / n]`` (the store's convention)."""
        return [[a / self.n_frames, b / self.n_frames] for a, b in self.spans]


def span_truth(video: dict[str, Any], start_s: float | None = None, end_s: float | None = None,
               n_frames: int | None = None) -> SpanTruth:
    """The truth of the part ``[start_s, end_s)`` (seconds of the file) of a world file.

    Args:
        video: the file's truth row (:func:`load_truth`).
        start_s: where the part starts (None: the file's start).
        end_s: where it ends (None: the file's end).
        n_frames: the part's frame count when known (e.g. the store's count for a whole
            file); else it is derived from ``end_s``.
    """
    f0 = 0 if start_s is None else frame_at(video, start_s)
    if n_frames is not None:
        f1 = f0 + int(n_frames)
    else:
        f1 = int(video["n_frames"]) if end_s is None else frame_at(video, end_s)
    f1 = max(f1, f0 + 1)
    spans = tuple((max(a, f0) - f0, min(b, f1) - f0) for a, b in video["anomaly_frames"]
                  if a < f1 and f0 < b)
    category = video["category"] if spans else taxonomy.NORMAL
    return SpanTruth(video["world_id"], f0, f1 - f0, category, taxonomy.top_level(category),
                     spans)
