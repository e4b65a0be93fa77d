"""Detection, classification and temporal-localisation metrics in numpy.

* ``roc_auc``: area under the ROC curve with tied scores grouped (as sklearn/torchmetrics).
* ``average_precision``: sklearn-style step sum ``sum_n (R_n - R_{n-1}) P_n`` (VadCLIP, official).
* ``pr_auc_trapezoid``: trapezoid area under the PR curve, ``auc(recall, precision)`` with
  sklearn's ``precision_recall_curve`` points (PEL4VAD, LAVAD). Both are reported, labelled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lagovad.eval.benchmarks import EvalError


def _check_binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise EvalError(f"labels and scores must have the same length, got {y.shape} vs {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise EvalError("labels must be 0/1")
    if not np.isfinite(s).all():
        raise EvalError("scores must be finite (found NaN or inf)")
    return y.astype(np.int64), s


def _binary_counts(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative TP and FP at each distinct threshold, thresholds in decreasing order."""
    y, s = _check_binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_group]
    fps = (last_of_group + 1) - tps
    return tps, fps, s[last_of_group]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)`` starting at (0, 0)."""
    tps, fps, thr = _binary_counts(labels, scores)
    if tps[-1] == 0 or fps[-1] == 0:
        raise EvalError("ROC needs both positive and negative labels")
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (ties grouped, trapezoid rule)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def pr_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve like sklearn's: recall decreasing, ending at (recall 0, precision 1).

    Returns:
        ``(precision, recall, thresholds)``; the last point has no threshold.
    """
    tps, fps, thr = _binary_counts(labels, scores)
    if tps[-1] == 0:
        raise EvalError("precision-recall needs at least one positive label")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]


def average_precision(labels, scores) -> float:
    """Step-wise average precision (sklearn ``average_precision_score``)."""
    precision, recall, _ = pr_curve(labels, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def pr_auc_trapezoid(labels, scores) -> float:
    """Trapezoid area under the PR curve (``sklearn.metrics.auc(recall, precision)``)."""
    precision, recall, _ = pr_curve(labels, scores)
    return float(-np.trapezoid(precision, recall))


def minmax_normalise(scores: np.ndarray) -> np.ndarray:
    """Per-video min-max normalisation (DoTA); a constant video maps to zeros."""
    s = np.asarray(scores, dtype=np.float64)
    lo, hi = s.min(), s.max()
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)


# --- classification -------------------------------------------------------------------------


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Micro accuracy (fraction of videos whose predicted class is right)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.size == 0:
        raise EvalError(f"y_true and y_pred must be equal non-empty, got {t.shape} vs {p.shape}")
    return float((t == p).mean())


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Macro F1 over ``n_classes`` classes (a class with no TP, FP or FN scores 0)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    f1s = []
    for c in range(n_classes):
        tp = np.sum((t == c) & (p == c))
        fp = np.sum((t != c) & (p == c))
        fn = np.sum((t == c) & (p != c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s))


def video_class_logits(sims: np.ndarray) -> np.ndarray:
    """Video-level logits from per-step class similarities ``[T, C]`` (Normal = column 0).

    ``[min over time of Normal, max over time of each anomaly class]`` (official protocol).
    """
    s = np.asarray(sims, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise EvalError(f"similarities must be [T, C] with C >= 2, got {s.shape}")
    return np.r_[s[:, 0].min(), s[:, 1:].max(axis=0)]


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


# --- temporal localisation (mAP@IoU) -----------------------------------------------------------


def segments_from_scores(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Maximal runs ``[start, end)`` where ``scores >= threshold``."""
    above = np.r_[0, (np.asarray(scores) >= threshold).astype(np.int8), 0]
    edges = np.flatnonzero(np.diff(above))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def interval_iou(a: tuple[float, float], b: np.ndarray) -> np.ndarray:
    """IoU of interval ``a`` with each row ``[start, end)`` of ``b``."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(a[1], b[:, 1]) - np.maximum(a[0], b[:, 0]), 0, None)
    union = (a[1] - a[0]) + (b[:, 1] - b[:, 0]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _interpolated_ap(tp: np.ndarray, n_gt: int) -> float:
    """All-point interpolated AP (ActivityNet/THUMOS convention) from ranked TP flags."""
    if n_gt == 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    rec = ctp / n_gt
    prec = ctp / np.arange(1, len(tp) + 1)
    mprec = np.r_[0.0, prec, 0.0]
    mrec = np.r_[0.0, rec, 1.0]
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def detection_map(proposals: list[tuple[str, int, float, float, float]],
                  ground_truth: list[tuple[str, int, float, float]], n_classes: int,
                  iou_thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
                  ) -> dict[float, float]:
    """Temporal detection mAP at several IoU thresholds.

    Args:
        proposals: ``(video, class, start, end, confidence)``; classes are 1..n_classes-1.
        ground_truth: ``(video, class, start, end)`` instances.
        n_classes: Number of classes including Normal (class 0 is never scored).
        iou_thresholds: IoU thresholds.

    Returns:
        ``{iou: mAP}``: AP per anomaly class (greedy matching by confidence, each ground-truth
        instance matched once), averaged over classes that have ground truth.
    """
    out = {}
    for iou_t in iou_thresholds:
        aps = []
        for c in range(1, n_classes):
            gts = [g for g in ground_truth if g[1] == c]
            if not gts:
                continue
            by_video: dict[str, np.ndarray] = {}
            for g in gts:
                by_video.setdefault(g[0], []).append((g[2], g[3]))
            by_video = {k: np.asarray(v, dtype=np.float64) for k, v in by_video.items()}
            used = {k: np.zeros(len(v), bool) for k, v in by_video.items()}
            props = sorted((p for p in proposals if p[1] == c), key=lambda p: -p[4])
            tp = np.zeros(len(props))
            for i, (vid, _, s, e, _) in enumerate(props):
                if vid not in by_video:
                    continue
                ious = interval_iou((s, e), by_video[vid])
                ious[used[vid]] = -1.0
                j = int(np.argmax(ious))
                if ious[j] >= iou_t:
                    tp[i] = 1
                    used[vid][j] = True
            aps.append(_interpolated_ap(tp, len(gts)))
        out[float(iou_t)] = float(np.mean(aps)) if aps else float("nan")
    return out
