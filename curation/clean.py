"""Stage ``clean``: find shot boundaries with PySceneDetect and drop intros and outros.

For each stored video (input table ``videos``), the stage

1. decodes the file once (at ``detect_width`` pixels wide) and detects shot boundaries with
   PySceneDetect's ``ContentDetector`` (``threshold``, ``min_shot_s``) on those frames;
2. measures each shot on small decoded thumbnails: share of **black** frames, **static** content
   (median frame-to-frame change), and **colour similarity** to the main shot (histogram
   intersection);
3. applies the policy below to the first and last shots, repeatedly, and keeps the span from the
   first kept shot to the last one as a ``segments`` row (seconds in the video file,
   ``method = "scenedetect-content"``); the detected cuts, per-shot measures and what was dropped
   and why are the item's stage output.

Policy (:class:`CleanPolicy`, every knob is part of the stage version). The **main shot** (the
longest shot that is neither black nor static; the longest shot if all are) is never dropped.
An edge shot (first or last remaining) no longer than ``max_edge_s`` is dropped when it is

- ``black``: at least ``black_fraction`` of its frames are black (mean luma < ``black_luma`` and
  95th percentile < 2 x ``black_luma``, 0-255);
- ``static``: the 95th percentile over its frames of the mean absolute luma difference to its
  first frame is below ``static_diff`` (title cards, logos, frozen frames; a fixed camera in
  which people move is not static);
- ``short``: shorter than ``min_edge_shot_s`` (flash frames, stingers);
- ``unrelated``: no longer than ``unrelated_max_s`` nor than ``unrelated_max_share`` of the span
  still kept, and its colour histogram intersects the main shot's by less than
  ``unrelated_similarity`` (a hard cut to unrelated content such as an ad or a channel promo).

Then black frames at the two ends of the kept span are trimmed frame by frame (fades without a
cut). A video whose kept span is shorter than ``min_keep_s`` is rejected (``too_short``); a video
with no non-black frame is rejected (``all_black``); a file that cannot be decoded fails.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import typer

from curation.common import CurationError, clean_errors, print_summary, resolve_uri
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
CODE_VERSION = 1
METHOD = "scenedetect-content"
THUMB = 16


@dataclass(frozen=True, slots=True)
class CleanPolicy:
    """Shot detection and intro/outro removal knobs (see the module docstring)."""

    threshold: float = 27.0
    min_shot_s: float = 0.3
    detect_width: int = 256
    max_edge_s: float = 15.0
    black_luma: float = 20.0
    black_fraction: float = 0.9
    static_diff: float = 0.5
    min_edge_shot_s: float = 0.5
    unrelated_max_s: float = 3.0
    unrelated_similarity: float = 0.2
    unrelated_max_share: float = 0.25
    min_keep_s: float = 1.0

    def version(self) -> str:
        """Stage version of this policy."""
        return stage_version(STAGE, asdict(self), code_version=CODE_VERSION)


@dataclass(slots=True)
class Shot:
    """A shot [start, end) in frames with its measures."""

    start: int
    end: int
    black: float = 0.0
    change: float = 0.0
    similarity: float = 1.0
    dropped: str | None = None

    @property
    def frames(self) -> int:
        """Length in frames."""
        return self.end - self.start


def scan(path: str | Path, policy: CleanPolicy) -> tuple[list[int], np.ndarray, np.ndarray,
                                                         float]:
    """One decoding pass: shot boundaries (PySceneDetect ContentDetector) and frame thumbnails.

    Frames are decoded at ``policy.detect_width`` pixels wide (PySceneDetect itself downscales to
    about 256 px before detecting) and handed to the detector in order; the same frames give the
    small RGB thumbnails the policy measures.

    Returns:
        (cut frames ascending: where a new shot starts, thumbnails uint8 [N, THUMB, THUMB, 3],
        luma float32 [N, THUMB*THUMB], fps).

    Raises:
        CurationError: the file cannot be opened or decoded, or has no frames.
    """
    import cv2
    from scenedetect import ContentDetector, FrameTimecode

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise CurationError(f"cannot open {path} as a video: {exc}") from exc
    thumbs, cuts = [], []
    try:
        if not container.streams.video:
            raise CurationError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        w0, h0 = stream.codec_context.width, stream.codec_context.height
        width = min(w0, policy.detect_width)
        height = max(2, round(h0 * width / w0 / 2) * 2)
        detector = ContentDetector(threshold=policy.threshold,
                                   min_scene_len=max(1, round(policy.min_shot_s * fps)))
        try:
            for i, frame in enumerate(container.decode(stream)):
                img = frame.to_ndarray(width=width, height=height, format="bgr24")
                tc = FrameTimecode(i, fps)
                cuts += [int(c.frame_num) for c in detector.process_frame(tc, img)]
                small = cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
                thumbs.append(small[..., ::-1])
        except (av.error.FFmpegError, OSError) as exc:
            raise CurationError(f"{path}: decoding failed after {len(thumbs)} frames: {exc}") \
                from exc
        if thumbs:
            cuts += [int(c.frame_num) for c in detector.post_process(FrameTimecode(
                len(thumbs) - 1, fps))]
    finally:
        container.close()
    if not thumbs:
        raise CurationError(f"{path}: no frame could be decoded")
    t = np.ascontiguousarray(np.stack(thumbs))
    luma = (t.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).reshape(
        len(t), -1)
    return sorted({c for c in cuts if 0 < c < len(t)}), t, luma, fps


def _hist(thumbs: np.ndarray) -> np.ndarray:
    q = (thumbs // 64).reshape(-1, 3).astype(np.int64)  # 4 levels per channel: 64 bins
    h = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64).astype(np.float64)
    return h / max(h.sum(), 1.0)


def measure_shots(cuts: list[int], thumbs: np.ndarray, luma: np.ndarray,
                  policy: CleanPolicy) -> tuple[list[Shot], np.ndarray]:
    """Shots between the cuts with their black share, change and similarity to the main shot.

    Returns:
        (shots, per-frame black flags).
    """
    n = len(thumbs)
    bounds = [0, *[c for c in cuts if 0 < c < n], n]
    is_black = (luma.mean(1) < policy.black_luma) & (
        np.percentile(luma, 95, axis=1) < 2 * policy.black_luma)
    shots = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        # how far the shot ever gets from its first frame (95th percentile): ~0 for a title card
        # or a frozen frame, clearly above for a fixed CCTV view in which people move
        change = np.abs(luma[a:b] - luma[a]).mean(1)
        shots.append(Shot(a, b, black=float(is_black[a:b].mean()),
                          change=float(np.percentile(change, 95))))
    main = main_shot(shots, policy)
    ref = _hist(thumbs[shots[main].start : shots[main].end])
    for s in shots:
        s.similarity = float(np.minimum(_hist(thumbs[s.start : s.end]), ref).sum())
    return shots, is_black


def main_shot(shots: list[Shot], policy: CleanPolicy) -> int:
    """Index of the main shot: the longest that is neither black nor static (else the longest)."""
    live = [i for i, s in enumerate(shots)
            if s.black < policy.black_fraction and s.change >= policy.static_diff]
    return max(live or range(len(shots)), key=lambda i: shots[i].frames)


def _edge_reason(s: Shot, policy: CleanPolicy, fps: float, kept_s: float) -> str | None:
    secs = s.frames / fps
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


def main_span(shots: list[Shot], is_black: np.ndarray, policy: CleanPolicy,
              fps: float) -> tuple[int, int] | None:
    """Apply the policy; marks dropped shots and returns the kept frames [start, end) or None."""
    main = main_shot(shots, policy)
    lo, hi = 0, len(shots) - 1
    changed = True
    while changed and lo <= hi:
        changed = False
        for side in (lo, hi):
            if side == main or lo > hi:
                continue
            kept_s = (shots[hi].end - shots[lo].start) / fps
            reason = _edge_reason(shots[side], policy, fps, kept_s)
            if reason:
                shots[side].dropped = reason
                if side == lo:
                    lo += 1
                else:
                    hi -= 1
                changed = True
    start, end = shots[lo].start, shots[hi].end
    keep = np.flatnonzero(~is_black[start:end])
    if not len(keep):
        return None
    return start + int(keep[0]), start + int(keep[-1]) + 1


@dataclass(slots=True)
class Cleaner:
    """The stage's ``process``."""

    store: Store
    policy: CleanPolicy

    def __call__(self, rows: list[dict[str, Any]]) -> list[ItemResult]:
        """Clean each video of the batch."""
        return [self.one(r) for r in rows]

    def one(self, row: dict[str, Any]) -> ItemResult:
        """Detect shots in one video and keep its main span."""
        try:
            path = resolve_uri(self.store, row.get("uri"))
        except CurationError as exc:
            return Rejected("no_file", output={"error": str(exc)})
        if not path.is_file():
            return Failed(f"video file missing: {path}")
        try:
            cuts, thumbs, luma, fps = scan(path, self.policy)
        except CurationError as exc:
            return Failed(str(exc))
        shots, is_black = measure_shots(cuts, thumbs, luma, self.policy)
        span = main_span(shots, is_black, self.policy, fps)
        out: dict[str, Any] = {
            "method": METHOD, "fps": fps, "n_frames": len(thumbs),
            "cut_frames": cuts, "cuts_s": [round(c / fps, 4) for c in cuts],
            "shots": [{"start_s": round(s.start / fps, 4), "end_s": round(s.end / fps, 4),
                       "black": round(s.black, 3), "change": round(s.change, 3),
                       "similarity": round(s.similarity, 3), "dropped": s.dropped}
                      for s in shots],
        }
        if span is None:
            return Rejected("all_black", output=out)
        start_s, end_s = round(span[0] / fps, 6), round(span[1] / fps, 6)
        out["kept_s"], out["kept_frames"] = [start_s, end_s], list(span)
        if end_s - start_s < self.policy.min_keep_s:
            return Rejected("too_short", output=out)
        seg = Segment(make_id("segment", row["video_id"], start_s, end_s, METHOD),
                      row["video_id"], row["source"], start_s, end_s, method=METHOD)
        out["segment_id"] = seg.segment_id
        return Ok({"segments": [seg]}, output=out)


def make_stage(store: Store, policy: CleanPolicy | None = None) -> Stage:
    """The clean stage over ``videos``."""
    policy = policy or CleanPolicy()
    return Stage(STAGE, policy.version(), "videos", Cleaner(store, policy), batch_size=1)


def clean(store: Store, policy: CleanPolicy | None = None, *, limit: int | None = None,
          progress: bool = False, run_id: str | None = None) -> StageSummary:
    """Run the clean stage over the videos work list (see :func:`run_stage`)."""
    return run_stage(store, make_stage(store, policy), shard_size=16, limit=limit,
                     progress=progress, run_id=run_id)


def register(app: typer.Typer) -> None:
    """Add ``prevad curate clean``."""
    defaults = CleanPolicy()

    @app.command("clean")
    @clean_errors
    def clean_cmd(
        root: Path = typer.Argument(..., help="the store"),
        threshold: float = typer.Option(defaults.threshold, help="ContentDetector threshold"),
        min_shot: float = typer.Option(defaults.min_shot_s, help="shortest shot (s)"),
        max_edge: float = typer.Option(defaults.max_edge_s, help="longest droppable edge shot"),
        min_edge_shot: float = typer.Option(defaults.min_edge_shot_s,
                                            help="edge shots shorter than this are dropped"),
        static_diff: float = typer.Option(defaults.static_diff, help="static below this change"),
        unrelated_similarity: float = typer.Option(defaults.unrelated_similarity,
                                                   help="unrelated below this similarity"),
        min_keep: float = typer.Option(defaults.min_keep_s, help="reject shorter kept spans"),
        limit: int | None = typer.Option(None, help="at most this many videos"),
        show: bool = typer.Option(False, help="print each video's kept span and cuts"),
    ) -> None:
        """Detect shot boundaries and keep each video's main span (drop intros/outros)."""
        policy = CleanPolicy(threshold=threshold, min_shot_s=min_shot, max_edge_s=max_edge,
                             min_edge_shot_s=min_edge_shot, static_diff=static_diff,
                             unrelated_similarity=unrelated_similarity, min_keep_s=min_keep)
        store = Store(root)
        summary = clean(store, policy, limit=limit, progress=True)
        print_summary(summary)
        if show:
            for r in store.records("stage_results"):
                if r.stage == STAGE and r.run_id == summary.run_id:
                    out = r.output or {}
                    typer.echo(json.dumps({"video_id": r.id, "status": r.status,
                                           "kept_s": out.get("kept_s"),
                                           "cuts_s": out.get("cuts_s")}))
