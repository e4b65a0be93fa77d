"""Detection, classification and temporal-localisation metrics in numpy.

* ``roc_auc``: area under the ROC curve with tied scores grouped (as sklearn/torchmetrics).
* ``average_precision``: sklearn-style step sum ``sum_n (R_n - R_{n-1}) P_n`` (VadCLIP, official).
* ``pr_auc_trapezoid``: trapezoid area under the PR curve, ``auc(recall, precision)`` with
  sklearn's ``precision_recall_curve`` points (PEL4VAD, LAVAD). Both are reported, labelled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lagovad.errors import EvalError


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


F1_ABSENT = ("ignore", "zero")


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int,
             absent: str = "ignore") -> float:
    """Macro F1 over ``n_classes`` classes.

    Args:
        y_true: True class indices.
        y_pred: Predicted class indices.
        n_classes: Number of classes.
        absent: What to do with a class that has no true and no predicted sample (no TP, FP or
            FN). ``ignore``: leave it out of the mean, as torchmetrics' ``F1Score(average=
            "macro")`` (used by the authors' offline evaluation). ``zero``: count it as 0 and
            divide by ``n_classes`` (sklearn with ``labels=range(n_classes)``).

    Returns:
        The mean per-class F1 (a class with FP or FN but no TP scores 0).
    """
    if absent not in F1_ABSENT:
        raise EvalError(f"absent must be one of {F1_ABSENT}, got {absent!r}")
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.size == 0:
        raise EvalError(f"y_true and y_pred must be equal non-empty, got {t.shape} vs {p.shape}")
    f1s = []
    for c in range(n_classes):
        tp = int(np.sum((t == c) & (p == c)))
        fp = int(np.sum((t != c) & (p == c)))
        fn = int(np.sum((t == c) & (p != c)))
        if tp + fp + fn == 0 and absent == "ignore":
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


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


# VadCLIP's getDetectionMAP (nwpu-zxr/VadCLIP src/utils/xd_detectionMAP.py, ucf_detectionMAP.py,
# commit f643c91), re-implemented step for step; docs/COMPATIBILITY.md lists its conventions.
VADCLIP_IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
VADCLIP_RELATIVE_THRESHOLD = 0.6  # their thr_set = arange(0.6, 0.7, 0.1) == [0.6]
VADCLIP_NMS_IOU = 0.6
VADCLIP_MIN_FRAMES = 2  # a proposal needs e - s >= 2 frames
VADCLIP_MEAN_WEIGHT = 0.7  # score = max inside + 0.7 x mean of the top 1/16 of the class curve
VADCLIP_TOP_FRACTION = 16


def _vadclip_nms(spans: np.ndarray, thresh: float) -> list[int]:
    """Greedy 1-D NMS over ``[start, end]`` rows already sorted by score; kept row indices."""
    x1, x2 = spans[:, 0], spans[:, 1]
    lengths = x2 - x1
    order, keep = np.arange(len(spans)), []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        inter = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]))
        ovr = inter / (lengths[i] + lengths[order[1:]] - inter)
        order = order[np.flatnonzero(ovr <= thresh) + 1]
    return keep


def _vadclip_video_proposals(video: int, probs: np.ndarray) -> list[list[np.ndarray]]:
    """Per class, the NMS-kept ``[video, start, end, score]`` rows of one video."""
    n, c = probs.shape
    k = int(n / VADCLIP_TOP_FRACTION)
    if k == 0:
        # Their mean over an empty top-k is NaN, so every column is zeroed: no proposals.
        return [[] for _ in range(c)]
    c_score = np.mean(-np.sort(-probs, axis=0)[:k], axis=0)
    probs = probs * (c_score > 0.0)  # a class whose top-k mean is not positive is zeroed
    out = []
    for cls in range(c):
        tmp = probs[:, cls]
        hi, lo = np.max(tmp), np.min(tmp)
        threshold = hi - (hi - lo) * VADCLIP_RELATIVE_THRESHOLD
        edges = np.diff(np.r_[0.0, (tmp > threshold).astype(np.float32), 0.0])
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        rows = [[video, s, e, np.max(tmp[s:e]) + VADCLIP_MEAN_WEIGHT * c_score[cls]]
                for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
                if e - s >= VADCLIP_MIN_FRAMES]
        if not rows:
            out.append([])
            continue
        arr = np.array(rows, dtype=np.float64)
        arr = arr[np.argsort(-arr[:, -1])]
        out.append(list(arr[_vadclip_nms(arr[:, 1:-1], VADCLIP_NMS_IOU)]))
    return out


def _range_iou(gs: int, ge: int, ps: int, pe: int) -> float:
    """IoU of the integer frame sets ``range(gs, ge)`` and ``range(ps, pe)``."""
    lg, lp = max(ge - gs, 0), max(pe - ps, 0)
    inter = max(min(ge, pe) - max(gs, ps), 0) if lg and lp else 0
    return float(inter) / float(lg + lp - inter)


def _vadclip_class_ap(props: np.ndarray, gt: list[tuple[int, int, int]], iou: float) -> float:
    """Non-interpolated AP of one class: sum of precisions at true positives / #ground truth."""
    remaining: dict[int, list[tuple[int, int]]] = {}
    for v, s, e in gt:
        remaining.setdefault(v, []).append((s, e))
    tp = []
    for row in props:
        segs = remaining.get(int(row[0]), [])
        best, best_j = 0.0, None
        for j, (gs, ge) in enumerate(segs):
            o = _range_iou(gs, ge, int(row[1]), int(row[2]))
            if o >= iou and o > best:
                best, best_j = o, j
        if best_j is not None:
            del segs[best_j]  # each ground-truth segment is matched once
        tp.append(1.0 if best_j is not None else 0.0)
    tp_arr = np.asarray(tp)
    if tp_arr.sum() == 0:
        return 0.0
    tp_c, fp_c = np.cumsum(tp_arr), np.cumsum(1.0 - tp_arr)
    return float(np.sum((tp_c / (fp_c + tp_c)) * tp_arr) / len(gt))


def vadclip_detection_map(predictions: Sequence[np.ndarray],
                          segments: Sequence[Sequence[tuple[int, int]]],
                          labels: Sequence[Sequence[int | None]],
                          iou_thresholds: Sequence[float] = VADCLIP_IOU_THRESHOLDS,
                          ) -> dict[float, float]:
    """Temporal localisation mAP exactly as VadCLIP's ``getDetectionMAP``.

    Per video and class: the class curve is zeroed if the mean of its top ``n // 16`` frames is
    not positive; proposals are runs of >= 2 frames above ``max - 0.6 (max - min)`` of that
    curve, scored ``max inside + 0.7 x top-1/16 mean``, NMS at IoU 0.6 within the video. Per
    class, proposals of all videos are ranked by score and greedily matched (best IoU >= the
    threshold among the unmatched ground truth of the same video) with frame-set IoU; AP is the
    sum of precisions at true positives over the number of ground-truth segments (not
    interpolated; 0 without a true positive). mAP is the mean over **all** ``C`` classes,
    Normal and classes without ground truth included; if some class has no proposal in any
    video, the mAP at that IoU is 0 (their early ``return 0``).

    Args:
        predictions: Per video, ``[n_frames, C]`` class probabilities (VadCLIP: the snippet
            softmax repeated 16x per frame); column ``c`` is class ``c``.
        segments: Per video, ground-truth ``(start, end)`` frame spans (``range(start, end)``);
            VadCLIP gives each normal video one span ``(0, n_frames)``.
        labels: Per video and segment, the class index of each span, or None for a label that
            matches no class (never ground truth, as VadCLIP's UCF normal label ``'A'``).
        iou_thresholds: IoU thresholds.

    Returns:
        ``{iou: mAP}`` as fractions (VadCLIP prints 100x these).
    """
    if not (len(predictions) == len(segments) == len(labels)):
        raise EvalError(f"predictions, segments and labels must have one entry per video, got "
                        f"{len(predictions)}, {len(segments)}, {len(labels)}")
    if not predictions:
        raise EvalError("no videos to localise")
    arrays = [np.ascontiguousarray(p, dtype=np.float64) for p in predictions]
    n_classes = arrays[0].shape[1] if arrays[0].ndim == 2 else 0
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != n_classes or n_classes < 1:
            raise EvalError(f"predictions of video {i} must be [n_frames, {n_classes}], "
                            f"got {a.shape}")
    per_class: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
    for i, a in enumerate(arrays):
        for cls, rows in enumerate(_vadclip_video_proposals(i, a)):
            per_class[cls].extend(rows)
    gts: list[list[tuple[int, int, int]]] = [[] for _ in range(n_classes)]
    for i, (segs, labs) in enumerate(zip(segments, labels, strict=True)):
        for (s, e), lab in zip(segs, labs, strict=True):
            if lab is not None:
                gts[lab].append((i, int(s), int(e)))
    ranked = []
    for rows in per_class:
        arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
        ranked.append(arr[np.argsort(-arr[:, 3])])
    out = {}
    for iou in iou_thresholds:
        if any(len(r) == 0 for r in ranked):
            out[float(iou)] = 0.0  # their getLocMAP returns 0 as soon as a class has no proposal
            continue
        out[float(iou)] = float(np.mean([_vadclip_class_ap(ranked[c], gts[c], iou)
                                         for c in range(n_classes)]))
    return out
