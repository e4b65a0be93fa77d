"""Stage ``clean``: split each video into single-shot clips and drop intros, outros and filler.

For each stored video (input table ``videos``) the stage

1. skips a video that the ``dedup`` stage found to be a copy of an earlier one (rejected
   ``duplicate``, before any decoding; see "Duplicates" below);
2. decodes the file once and finds its shot boundaries (:mod:`curation.shots`): hard cuts from
   PySceneDetect (``ContentDetector`` by default, ``AdaptiveDetector`` with
   ``detector="adaptive"``), checked against flashes and black frames, and dissolves and fades
   found by a linear-blend test on small thumbnails;
3. cuts the video into shots. **A transition belongs to neither shot**: the frames of a dissolve
   or fade (blends of two shots) are left out of both clips, so every clip is a single shot; a
   hard cut ends one shot on the frame before it;
4. measures each shot on its thumbnails: share of **black** frames, **static** content, and
   **colour similarity** to the main shot (histogram intersection);
5. applies the edge rules below to the first and last shots (repeatedly), drops black and
   static (title card) shots inside the video too, trims black frames at both ends of every
   shot, drops shots shorter than ``min_clip_s``, and splits shots longer than ``max_clip_s``
   into windows of equal duration (each at most ``max_clip_s`` and more than half of it, so
   no remainder is left shorter than the others; Panda-70M cuts the first 5 s off any clip
   longer than 7 s for the same purpose);
6. stores every kept clip as a ``segments`` row (D1 in ``docs/DECISIONS.md``): ``segment_id`` =
   uuid5 of (parent video id, span, method), ``video_id`` = the parent video, ``start_s`` /
   ``end_s`` = presentation times in the parent file (the first frame's time and the time at
   which the frame after the clip starts), ``method`` naming the detector.

The item's output (``stage_results.output_json``) holds the clips, the hard cuts, dissolves and
fades, the detector cuts that were dropped and why, per-shot measures, and the reason for every
dropped shot: ``black``, ``static``, ``short`` (edge shot shorter than ``min_edge_shot_s``),
``unrelated`` and ``too_short`` (shorter than ``min_clip_s``).

Edge rules (:class:`CleanPolicy`, every knob is part of the stage version). The **main shot**
(the longest shot that is neither black nor static; the longest shot if all are) is never
dropped. An edge shot (first or last remaining) no longer than ``max_edge_s`` is dropped when it
is

- ``black``: at least ``black_fraction`` of its frames are black (mean luma < ``black_luma`` and
  95th percentile < 2 x ``black_luma``, 0-255);
- ``static``: the 95th percentile over its frames of the mean absolute luma difference to its
  first frame is below ``static_diff`` (title cards, logos, frozen frames; a fixed camera in
  which people move is not static);
- ``short``: shorter than ``min_edge_shot_s`` (flash frames, stingers);
- ``unrelated``: no longer than ``unrelated_max_s`` nor than ``unrelated_max_share`` of the span
  still kept, and its colour histogram intersects the main shot's by less than
  ``unrelated_similarity`` (a hard cut to unrelated content such as an ad or a channel promo).

A video with no non-black frame is rejected (``all_black``); one whose every shot is dropped
as shorter than ``min_clip_s`` is rejected (``too_short``); a file that cannot be decoded fails.

**Duplicates.** The stage reads the ``dedup`` results of one dedup version: ``dedup_version``
if given, else the newest version with ok results (none: nothing is skipped; ``"none"``: dedup
is ignored). That version is part of clean's own version, so a new dedup configuration cleans
again. Run ``dedup`` before ``clean``: a video cleaned before dedup marked it keeps its clips.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import typer

from curation.common import CurationError, resolve_uri
from curation.options import (
    check_bool,
    check_choice,
    check_number,
    opt,
    stage_command,
)
from curation.shots import (
    DETECTORS,
    Boundaries,
    Scan,
    ShotConfig,
    find_boundaries,
    luma,
    scan,
    shot_spans,
)
from prevad import queries
from prevad.errors import ValidationError
from prevad.records import Segment, make_id
from prevad.stage import (
    Failed,
    ItemResult,
    Ok,
    Rejected,
    Stage,
    StageSummary,
    run_stage,
    stage_version,
)
from prevad.store import Store

STAGE = "clean"
#: 2: single-shot clips, dissolves and fades, flash check, pts times, duplicates skipped.
CODE_VERSION = 2
DEDUP_STAGE = "dedup"


def method_of(detector: str) -> str:
    """``segments.method`` of clips cut with ``detector`` (e.g. "scenedetect-content+dissolve")."""
    return f"scenedetect-{detector}+dissolve"


@dataclass(frozen=True, slots=True)
class CleanPolicy:
    """Shot detection, clip and intro/outro knobs (see the module docstring and
    :class:`curation.shots.ShotConfig`). Every field is part of the stage version."""

    detector: str = opt("adaptive", "Hard-cut detector: content | adaptive.")
    threshold: float = opt(27.0, "ContentDetector threshold.")
    adaptive_threshold: float = opt(3.0, "AdaptiveDetector threshold.")
    min_shot_s: float = opt(0.3, "Shortest shot the detector reports (s).", "--min-shot")
    detect_width: int = opt(128, "Frames are scaled to this width for detection (>= 16).")
    flash_s: float = opt(0.6, "A cut whose picture comes back within this many seconds is a "
                         "flash, not a cut.", "--flash")
    flash_ratio: float = opt(0.35, "A cut is a flash when frames around it match better than "
                             "this share of its jump (0-1).")
    dissolves: bool = opt(True, "Detect dissolves and fades.")
    dissolve_min_score: float = opt(12.0, "Least dissolve score (0-255).")
    dissolve_max_residual: float = opt(0.25, "Largest linear-blend residual, share of the "
                                       "jump (0-1).")
    dissolve_min_contrast: float = opt(1.8, "Least colour contrast of a dissolve.")
    dissolve_linear_residual: float = opt(0.1, "A blend this linear (and twice the least "
                                          "score) needs no colour contrast (0-1).")
    dissolve_max_s: float = opt(3.0, "Longest dissolve or fade half (s).", "--dissolve-max")
    return_s: float = opt(10.0, "A blend whose picture comes back within this many seconds is "
                          "an overlay, not a transition (s).")
    return_ratio: float = opt(0.5, "'Comes back' means closer than this share of the blend's "
                              "jump (0-1).")
    return_pair_corr: float = opt(0.7, "Two blends that correlate above this once one is "
                                  "reversed undo each other (0-1).")
    max_edge_s: float = opt(15.0, "Longest droppable edge shot (s).", "--max-edge")
    black_luma: float = opt(20.0, "Black below this mean luma (0-255).")
    black_fraction: float = opt(0.9, "An edge shot is black when at least this share of its "
                                "frames is (0-1).")
    static_diff: float = opt(0.5, "Static below this luma change.")
    min_edge_shot_s: float = opt(0.5, "Edge shots shorter than this are dropped (s).",
                                 "--min-edge-shot")
    unrelated_max_s: float = opt(3.0, "Longest edge shot that may be dropped as unrelated (s).",
                                 "--unrelated-max")
    unrelated_similarity: float = opt(0.2, "Unrelated below this colour similarity to the "
                                      "main shot (0-1).")
    unrelated_max_share: float = opt(0.25, "Largest share of the kept span an unrelated edge "
                                     "shot may have (0-1).")
    min_clip_s: float = opt(1.0, "Drop clips shorter than this (s).", "--min-clip")
    max_clip_s: float = opt(60.0, "Split longer shots into equal windows (s); 0 = never "
                            "split.", "--max-clip")
    dedup_version: str = opt("", "Dedup results to read (default: the newest with ok "
                             "results; 'none' = skip no duplicate).")

    def __post_init__(self) -> None:
        _validate(self)

    def shot_config(self) -> ShotConfig:
        """The boundary-detection part."""
        names = {f.name for f in fields(ShotConfig)}
        return ShotConfig(**{k: v for k, v in asdict(self).items() if k in names})

    def version(self, dedup_version: str | None = None) -> str:
        """Stage version of this policy reading ``dedup_version`` (resolved, or None)."""
        params = {**asdict(self), "dedup_version": dedup_version}
        return stage_version(STAGE, params, code_version=CODE_VERSION)


_FRACTIONS = ("black_fraction", "unrelated_similarity", "unrelated_max_share", "flash_ratio",
              "dissolve_max_residual", "dissolve_linear_residual", "return_ratio",
              "return_pair_corr")
_POSITIVE = ("threshold", "adaptive_threshold", "dissolve_max_s", "flash_s")


def _validate(p: CleanPolicy) -> None:
    """Every option checked before any item is touched (a bad option is never a rejection)."""
    check_choice(p, "detector", list(DETECTORS))
    check_bool(p, "dissolves")
    if not isinstance(p.dedup_version, str):
        raise ValidationError(f"--dedup-version (dedup_version) must be a text, got "
                              f"{p.dedup_version!r}")
    check_number(p, "detect_width", integer=True, minimum=16, strict=False)
    for f in fields(p):
        if f.name in ("detector", "dissolves", "dedup_version", "detect_width"):
            continue
        check_number(p, f.name, minimum=0, strict=f.name in _POSITIVE,
                     maximum=1 if f.name in _FRACTIONS else None)
    if p.max_clip_s and p.max_clip_s < 2 * p.min_clip_s:
        raise ValidationError(
            f"--max-clip (max_clip_s) must be 0 (no splitting) or at least twice --min-clip "
            f"({2 * p.min_clip_s:g}), got {p.max_clip_s!r}: a long shot is split into equal "
            f"windows longer than max_clip_s / 2, which must not fall under min_clip_s"
        )


@dataclass(slots=True)
class Shot:
    """A shot [start, end) in frames with its measures."""

    start: int
    end: int
    seconds: float = 0.0
    black: float = 0.0
    change: float = 0.0
    similarity: float = 1.0
    dropped: str | None = None

    @property
    def frames(self) -> int:
        """Length in frames."""
        return self.end - self.start


def _hist(thumbs: np.ndarray) -> np.ndarray:
    q = (thumbs // 64).reshape(-1, 3).astype(np.int64)  # 4 levels per channel: 64 bins
    h = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64).astype(np.float64)
    return h / max(h.sum(), 1.0)


def measure_shots(spans: list[tuple[int, int]], durations: list[float], thumbs: np.ndarray,
                  lum: np.ndarray, black: np.ndarray, policy: CleanPolicy) -> list[Shot]:
    """Shots over ``spans`` (lasting ``durations`` seconds) with their black share, change and
    similarity to the main shot."""
    shots = []
    for k, (a, b) in enumerate(spans):
        # how far the shot ever gets from its first frame (95th percentile): ~0 for a title card
        # or a frozen frame, clearly above for a fixed CCTV view in which people move
        change = np.abs(lum[a:b] - lum[a]).mean(1)
        shots.append(Shot(a, b, seconds=durations[k],
                          black=float(black[a:b].mean()),
                          change=float(np.percentile(change, 95))))
    if shots:
        main = main_shot(shots, policy)
        ref = _hist(thumbs[shots[main].start : shots[main].end])
        for s in shots:
            s.similarity = float(np.minimum(_hist(thumbs[s.start : s.end]), ref).sum())
    return shots


def main_shot(shots: list[Shot], policy: CleanPolicy) -> int:
    """Index of the main shot: the longest that is neither black nor static (else the longest)."""
    live = [i for i, s in enumerate(shots)
            if s.black < policy.black_fraction and s.change >= policy.static_diff]
    return max(live or range(len(shots)), key=lambda i: (shots[i].seconds, shots[i].frames))


def _edge_reason(s: Shot, policy: CleanPolicy, kept_s: float) -> str | None:
    secs = s.seconds
    if secs > policy.max_edge_s:
        return None
    if s.black >= policy.black_fraction:
        return "black"
    if s.change < policy.static_diff:
        return "static"
    if secs < policy.min_edge_shot_s:
        return "short"
    if (secs <= policy.unrelated_max_s and secs <= policy.unrelated_max_share * kept_s
            and s.similarity < policy.unrelated_similarity):
        return "unrelated"
    return None


def drop_edges(shots: list[Shot], policy: CleanPolicy) -> None:
    """Mark edge shots (first/last still kept, repeatedly) that the edge rules drop."""
    main = main_shot(shots, policy)
    lo, hi = 0, len(shots) - 1
    changed = True
    while changed and lo <= hi:
        changed = False
        for side in (lo, hi):
            if side == main or lo > hi:
                continue
            kept_s = sum(x.seconds for x in shots[lo:hi + 1])
            reason = _edge_reason(shots[side], policy, kept_s)
            if reason:
                shots[side].dropped = reason
                if side == lo:
                    lo += 1
                else:
                    hi -= 1
                changed = True
    for i in range(lo, hi + 1):  # inside: black shots and title cards go too
        s = shots[i]
        if i == main or s.seconds > policy.max_edge_s:
            continue
        if s.black >= policy.black_fraction:
            s.dropped = "black"
        elif s.change < policy.static_diff:
            s.dropped = "static"


def windows(times: np.ndarray, start: int, end: int, end_s: float,
            max_s: float) -> list[tuple[int, int]]:
    """Frames ``[start, end)`` (ending at ``end_s`` seconds) as ``ceil(duration / max_s)``
    windows of equal duration in presentation time, cut at the first frame of each."""
    duration = end_s - float(times[start])
    if max_s <= 0 or duration <= max_s + 1e-9:
        return [(start, end)]
    k = math.ceil(duration / max_s - 1e-9)
    edges = [start] + [int(np.searchsorted(times, times[start] + i * duration / k - 1e-9))
                       for i in range(1, k)] + [end]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


@dataclass(slots=True)
class ClipPlan:
    """What clean decided for one video."""

    shots: list[Shot]
    clips: list[dict[str, Any]]
    all_black: bool


def plan_clips(sc: Scan, b: Boundaries, policy: CleanPolicy) -> ClipPlan:
    """Shots, dropped shots and kept clips (frames and seconds) of a scanned video."""
    spans = shot_spans(sc.n, b)
    lum = luma(sc.thumbs)
    # durations in presentation time: exact for variable frame rate files
    durations = [sc.end_time(e) - float(sc.times[a]) for a, e in spans]
    shots = measure_shots(spans, durations, sc.thumbs, lum, b.black, policy)
    if not shots or bool(b.black.all()):
        return ClipPlan(shots, [], True)
    drop_edges(shots, policy)
    clips: list[dict[str, Any]] = []
    for i, s in enumerate(shots):
        if s.dropped:
            continue
        keep = np.flatnonzero(~b.black[s.start:s.end])
        if not len(keep):
            s.dropped = "black"
            continue
        a, e = s.start + int(keep[0]), s.start + int(keep[-1]) + 1  # black frames trimmed
        if sc.end_time(e) - float(sc.times[a]) < policy.min_clip_s:
            s.dropped = "too_short"
            continue
        for w, (wa, we) in enumerate(windows(sc.times, a, e, sc.end_time(e),
                                             policy.max_clip_s)):
            clips.append({"shot": i, "window": w, "start_frame": wa, "end_frame": we,
                          "start_s": round(float(sc.times[wa]), 6),
                          "end_s": round(sc.end_time(we), 6)})
    return ClipPlan(shots, clips, False)


def _seconds(sc: Scan, frames: list[int]) -> list[float]:
    return [round(float(sc.times[c]), 6) for c in frames]


def describe_result(sc: Scan, b: Boundaries, plan: ClipPlan, method: str) -> dict[str, Any]:
    """The item's output: boundaries, per-shot measures, clips and every drop with its reason."""
    return {
        "method": method, "fps": sc.fps, "n_frames": sc.n,
        "duration_s": round(sc.end_time(sc.n) - float(sc.times[0]), 6),
        "cut_frames": b.cuts, "cuts_s": _seconds(sc, b.cuts),
        "dissolves": [t.to_dict(sc) for t in b.dissolves],
        "fades": [t.to_dict(sc) for t in b.fades],
        "dropped_cuts": [{"frame": c, "s": round(float(sc.times[c]), 6), "reason": r}
                         for c, r in b.dropped_cuts],
        "shots": [{"start_frame": s.start, "end_frame": s.end,
                   "start_s": round(float(sc.times[s.start]), 6),
                   "end_s": round(sc.end_time(s.end), 6), "black": round(s.black, 3),
                   "change": round(s.change, 3), "similarity": round(s.similarity, 3),
                   "dropped": s.dropped} for s in plan.shots],
    }


@dataclass(slots=True)
class Cleaner:
    """The stage's ``process``."""

    store: Store
    policy: CleanPolicy
    dedup_version: str | None = None
    _dups: dict[str, dict[str, Any]] | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> list[ItemResult]:
        """Clean each video of the batch (duplicates first, without decoding)."""
        if self._dups is None:  # one query per run, not per video
            self._dups = duplicates(self.store, self.dedup_version)
        return [self.one(r, self._dups.get(r["video_id"])) for r in rows]

    def one(self, row: dict[str, Any], duplicate: dict[str, Any] | None = None) -> ItemResult:
        """Split one video into clips."""
        if duplicate is not None:
            return Rejected("duplicate", output={**duplicate,
                                                 "dedup_version": self.dedup_version})
        try:
            path = resolve_uri(self.store, row.get("uri"))
        except CurationError as exc:
            return Rejected("no_file", output={"error": str(exc)})
        if not path.is_file():
            return Failed(f"video file missing: {path}")
        try:
            sc = scan(path, self.policy.shot_config())
        except CurationError as exc:
            return Failed(str(exc))
        b = find_boundaries(sc, self.policy.shot_config())
        plan = plan_clips(sc, b, self.policy)
        method = method_of(self.policy.detector)
        out = describe_result(sc, b, plan, method)
        if plan.all_black:
            return Rejected("all_black", output=out)
        if not plan.clips:
            return Rejected("too_short", output=out)
        segments = []
        for c in plan.clips:
            seg = Segment(make_id("segment", row["video_id"], c["start_s"], c["end_s"], method),
                          row["video_id"], row["source"], c["start_s"], c["end_s"],
                          method=method)
            c["segment_id"] = seg.segment_id
            segments.append(seg)
        out["clips"] = plan.clips
        out["segment_ids"] = [s.segment_id for s in segments]
        out["kept_s"] = [plan.clips[0]["start_s"], plan.clips[-1]["end_s"]]
        return Ok({"segments": segments}, output=out)


def duplicates(store: Store, dedup_version: str | None,
               ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{video_id: {"duplicate_of", "distance", "kind"}}`` for the videos (all, or ``ids``)
    that dedup (at ``dedup_version``) found to be copies; empty when no version is read."""
    if not dedup_version:
        return {}
    params = {"stage": DEDUP_STAGE, "stage_version": dedup_version}
    rows = (store.query(queries.DUPLICATES_OF_VERSION, params) if ids is None else
            store.query(queries.DUPLICATES_OF_IDS, {**params, "ids": ids})).to_pylist()
    out = {}
    for r in rows:
        o = json.loads(r["output_json"] or "{}")
        out[r["id"]] = {"duplicate_of": o.get("duplicate_of"), "distance": o.get("distance"),
                        "kind": o.get("kind")}
    return out


def resolve_dedup_version(store: Store, wanted: str) -> str | None:
    """The dedup version clean reads: ``wanted``; "" = the newest with ok results (None when
    dedup never ran); "none" = none."""
    if wanted == "none":
        return None
    if wanted:
        return wanted
    rows = store.query(queries.NEWEST_OK_STAGE_VERSION, {"stage": DEDUP_STAGE}).to_pylist()
    return rows[0]["stage_version"] if rows else None


def make_stage(store: Store, policy: CleanPolicy | None = None) -> Stage:
    """The clean stage over ``videos``."""
    policy = policy or CleanPolicy()
    dedup = resolve_dedup_version(store, policy.dedup_version)
    return Stage(STAGE, policy.version(dedup), "videos", Cleaner(store, policy, dedup),
                 batch_size=1)


def clean(store: Store, policy: CleanPolicy | None = None, *, limit: int | None = None,
          progress: bool = False, run_id: str | None = None) -> StageSummary:
    """Run the clean stage over the videos work list (see :func:`run_stage`)."""
    return run_stage(store, make_stage(store, policy), shard_size=16, limit=limit,
                     progress=progress, run_id=run_id)


def _show(store: Store, policy: CleanPolicy, summary: StageSummary, show: bool) -> None:
    """``--show``: each video's clips, cuts and dissolves of this run, one JSON line each."""
    if not show:
        return
    for r in store.records("stage_results"):
        if r.stage == STAGE and r.run_id == summary.run_id:
            out = r.output or {}
            typer.echo(json.dumps({
                "video_id": r.id, "status": r.status, "reason": r.reason,
                "clips_s": [[c["start_s"], c["end_s"]] for c in out.get("clips", [])],
                "cuts_s": out.get("cuts_s"),
                "dissolves_s": [[t["start_s"], t["end_s"]] for t in out.get("dissolves", [])]}))


def register(app: typer.Typer) -> None:
    """Add ``prevad curate clean`` (one option per :class:`CleanPolicy` field)."""
    show = inspect.Parameter("show", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                             default=typer.Option(False, help="print each video's clips, cuts "
                                                  "and dissolves"))
    stage_command(app, STAGE, CleanPolicy, clean, "Split videos into single-shot clips (cuts, "
                  "dissolves), drop intros/outros/filler.", limit_help="at most this many videos",
                  extra=[show], after=_show)
