"""Frame labels from anomaly spans: one rule for training (synthesis, validation) and evaluation.

It sits below both the trainer and the evaluation harness (``lagovad.eval.gt`` re-exports it), so
training never imports the harness.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from lagovad.errors import EvalError


def spans_to_mask(spans: Iterable[Sequence[float]], length: int) -> np.ndarray:
    """Binary mask of ``length`` steps from relative spans (half-to-even rounding, end-exclusive).

    Args:
        spans: ``(start, end)`` fractions in [0, 1].
        length: Number of steps (features or frames), >= 0.

    Returns:
        uint8 array of shape ``[length]``.
    """
    if length < 0:
        raise EvalError(f"length must be >= 0, got {length}")
    gt = np.zeros(length, dtype=np.uint8)
    for s, e in spans:
        # np.rint rounds half to even, exactly like torch.round.
        start, end = int(np.rint(s * length)), int(np.rint(e * length))
        start, end = max(start, 0), min(end, length)
        if end > start:
            gt[start:end] = 1
    return gt


def frame_spans_to_mask(frame_spans: Iterable[Sequence[int]], n_frames: int) -> np.ndarray:
    """Frame mask from native frame-number spans, ``[start, end)``, truncated to ``n_frames``."""
    gt = np.zeros(n_frames, dtype=np.uint8)
    for s, e in frame_spans:
        s, e = max(int(s), 0), min(int(e), n_frames)
        if e > s:
            gt[s:e] = 1
    return gt
