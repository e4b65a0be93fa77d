"""Ground truth at feature resolution (official) and at frame resolution (VadCLIP/PEL).

Conventions (stated, never mixed):

* ``feature``: the official LaGoVAD protocol. Each relative span ``[s, e]`` is scaled by the
  feature count ``T`` and rounded half-to-even (as ``torch.round``); ``gt[start:end] = 1`` with
  ``end`` exclusive; spans that round to empty are skipped.
* ``frame16``: frame resolution. Each snippet score is repeated ``repeat`` times (16 for VadCLIP
  and PEL4VAD); the frame ground truth has ``T * repeat`` frames (VadCLIP truncates to this
  length). Relative spans are scaled by the frame count and rounded half-to-even, end exclusive.
  With native frame annotations (UCF/XD), frames ``[start, end)`` are marked directly. With
  known frame counts (``--frames``) the ground truth is built over the real ``n`` frames and the
  score count must be ``floor(n / repeat)`` (ground truth then cut to ``T * repeat`` frames) or
  ``ceil(n / repeat)`` (the last snippet's repeats stop at frame ``n``); nothing is padded.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lagovad.eval.benchmarks import BenchmarkVideo, EvalError
from lagovad.labels import frame_spans_to_mask, spans_to_mask

GT_RESOLUTIONS = ("feature", "frame16")

__all__ = ["GT_RESOLUTIONS", "check_score_count", "expand_scores", "frame_ground_truth",
           "frame_spans_to_mask", "spans_to_mask", "video_gt"]


def video_gt(video: BenchmarkVideo, n_scores: int, resolution: str = "feature",
             repeat: int = 16, n_frames: int | None = None, native: bool = False) -> np.ndarray:
    """Ground truth aligned with a video's scores after :func:`expand_scores`.

    Args:
        video: The benchmark video.
        n_scores: Number of per-snippet scores (features) of the video.
        resolution: ``feature`` or ``frame16``.
        repeat: Frames per score for ``frame16``.
        n_frames: Known frame count (``frame16`` only); default ``n_scores * repeat``.
        native: Use native frame-number spans (UCF/XD loaded with ``load_native``).
    """
    if resolution == "feature":
        return spans_to_mask(video.spans, n_scores)
    if resolution != "frame16":
        raise EvalError(f"gt resolution must be one of {GT_RESOLUTIONS}, got {resolution!r}")
    n = int(n_frames) if n_frames is not None else n_scores * repeat
    if native:
        if video.frame_spans is None:
            raise EvalError(f"video {video.name} has no native frame spans; load with load_native")
        return frame_spans_to_mask(video.frame_spans, n)
    return spans_to_mask(video.spans, n)


def check_score_count(video: str, n_scores: int, n_frames: int, stride: int) -> None:
    """Check that ``n_scores`` scores of ``stride`` frames each can describe ``n_frames`` frames.

    Accepted: ``floor(n_frames / stride)`` (the last partial snippet dropped, as VadCLIP/I3D
    features) or ``ceil(n_frames / stride)`` (the last partial snippet kept). Anything else
    (half or three times the length, one video-level score, ...) is a wrong score file.

    Raises:
        EvalError: naming the video, the counts and the rule.
    """
    lo, hi = n_frames // stride, -(-n_frames // stride)
    if n_scores not in (lo, hi) or n_scores < 1:
        allowed = f"{lo}" if lo == hi else f"{lo} or {hi}"
        raise EvalError(
            f"video {video} has {n_scores} scores but {n_frames} frames at {stride} frames per "
            f"score need floor/ceil({n_frames}/{stride}) = {allowed} scores")


def expand_scores(scores: np.ndarray, resolution: str = "feature", repeat: int = 16,
                  n_frames: int | None = None, video: str = "?") -> np.ndarray:
    """Scores at the ground truth's resolution: unchanged, or repeated ``repeat`` times per frame.

    With ``n_frames`` (``frame16``) the score count must pass :func:`check_score_count`;
    nothing is padded. When the last snippet is partial (``ceil``), its repeats stop at the
    video's last frame; with ``floor`` the result has ``T * repeat <= n_frames`` frames and the
    ground truth is cut to it by the caller, as VadCLIP cuts its ground truth to ``T * 16``.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if resolution == "feature":
        return scores
    if resolution != "frame16":
        raise EvalError(f"gt resolution must be one of {GT_RESOLUTIONS}, got {resolution!r}")
    if repeat < 1:
        raise EvalError(f"repeat must be an integer >= 1, got {repeat}")
    out = np.repeat(scores, repeat)
    if n_frames is not None:
        check_score_count(video, len(scores), int(n_frames), repeat)
        out = out[:n_frames]
    return out


def frame_ground_truth(videos: Iterable[BenchmarkVideo], frames: dict[str, int],
                       native: bool = False) -> dict[str, np.ndarray]:
    """Frame ground truth for given per-video frame counts (``lagovad gt``).

    Raises:
        EvalError: listing videos of the benchmark absent from ``frames``.
    """
    videos = list(videos)
    missing = [v.name for v in videos if v.name not in frames]
    if missing:
        raise EvalError(f"frame counts missing for {len(missing)} videos, e.g. "
                        f"{', '.join(missing[:5])}; every benchmark video needs a count")
    out = {}
    for v in videos:
        n = int(frames[v.name])
        out[v.name] = (frame_spans_to_mask(v.frame_spans or (), n) if native
                       else spans_to_mask(v.spans, n))
    return out
