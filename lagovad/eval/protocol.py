"""The evaluation protocol over per-video scores, independent of where the scores came from.

Detection: per-video anomaly scores are aligned with ground truth (``gt.py``), optionally
min-max normalised per video (DoTA), pooled across all videos, then AUC, AP (sklearn-style step
sum) and PR-AUC (trapezoid) are computed. Classification: per-step class similarities ->
``[min_t Normal, max_t class_c]`` -> softmax -> argmax; micro accuracy and macro F1.

Temporal localisation (mAP@IoU 0.1-0.5, UCF/XD): for each video, proposals are maximal runs of
feature steps whose anomaly score is >= each threshold in ``PROPOSAL_THRESHOLDS``; duplicates
(same video and span) are merged. A proposal's class is the anomaly class with the highest mean
class probability (softmax over the definition's classes) inside it; its confidence is the mean
anomaly score inside times that class probability. Ground-truth instances are the feature-level
runs of each abnormal video's spans, with the video's class. AP per class uses greedy matching by
confidence and all-point interpolation; mAP averages classes with ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lagovad.eval import metrics
from lagovad.eval.benchmarks import Benchmark, Definition, EvalError
from lagovad.eval.gt import expand_scores, spans_to_mask, video_gt

PROPOSAL_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)


@dataclass
class VideoScores:
    """Scores of one video at feature (snippet) resolution.

    Attributes:
        anomaly: ``[T]`` anomaly probabilities.
        class_sims: ``[T, C]`` class similarity logits, Normal first, or None.
    """

    anomaly: np.ndarray
    class_sims: np.ndarray | None = None


@dataclass
class DetectionResult:
    """Pooled detection metrics plus what plots need."""

    metric: str
    auc: float | None
    ap: float | None
    ap_trapezoid: float | None
    gt_resolution: str
    n_videos: int
    n_expected: int
    labels: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    per_video_auc: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def main(self) -> float | None:
        """The benchmark's headline number (AP for XD, AUC otherwise)."""
        return self.ap if self.metric == "ap" else self.auc

    def as_dict(self) -> dict:
        """JSON-ready summary (no arrays)."""
        return {"metric": self.metric, "auc": self.auc, "ap": self.ap,
                "ap_trapezoid": self.ap_trapezoid, "gt_resolution": self.gt_resolution,
                "n_videos": self.n_videos, "n_expected": self.n_expected,
                "coverage": self.n_videos / self.n_expected if self.n_expected else 0.0}


def _safe(fn, labels, scores) -> float | None:
    try:
        return fn(labels, scores)
    except EvalError:
        return None  # e.g. DoTA has no negative frames at some resolutions


def evaluate_detection(bench: Benchmark, scores: dict[str, np.ndarray],
                       resolution: str = "feature", repeat: int = 16,
                       frames: dict[str, int] | None = None, native: bool = False,
                       ) -> DetectionResult:
    """Pooled detection metrics of ``scores`` (``{video: [T] anomaly scores}``).

    Videos absent from ``scores`` are skipped (coverage is reported); names in ``scores`` that
    are not in the benchmark are ignored.
    """
    labels, pooled, per_video = [], [], {}
    for v in bench.videos:
        if v.name not in scores:
            continue
        s = np.asarray(scores[v.name], dtype=np.float64).reshape(-1)
        if s.size == 0:
            raise EvalError(f"scores of video {v.name} are empty; every video needs >= 1 score")
        if bench.minmax_per_video:
            s = metrics.minmax_normalise(s)
        n_frames = frames.get(v.name) if frames else None
        s = expand_scores(s, resolution, repeat, n_frames)
        # After expansion the scores and the ground truth have the same length in both modes.
        g = video_gt(v, len(s), resolution, repeat,
                     len(s) if resolution == "frame16" else None, native)
        labels.append(g)
        pooled.append(s)
        if 0 < g.sum() < len(g):
            per_video[v.name] = metrics.roc_auc(g, s)
    if not labels:
        raise EvalError(f"no scores for any video of {bench.name}")
    y, s = np.concatenate(labels), np.concatenate(pooled)
    return DetectionResult(
        bench.metric, _safe(metrics.roc_auc, y, s), _safe(metrics.average_precision, y, s),
        _safe(metrics.pr_auc_trapezoid, y, s), resolution, len(labels), len(bench.videos),
        y, s, per_video)


def class_index(bench: Benchmark, defn: Definition) -> dict[str, int]:
    """Ground-truth class name -> classification index (Normal = 0)."""
    order = defn.classification_classes
    if not order:
        raise EvalError(f"benchmark {bench.name} has no classification classes")
    idx = {}
    for v in bench.videos:
        name = defn.label_map.get(v.class_name, v.class_name)
        if name not in order:
            raise EvalError(f"class {v.class_name!r} of {v.name} is not in the definition "
                            f"classes {list(order)}")
        idx[v.class_name] = order.index(name)
    return idx


def evaluate_classification(bench: Benchmark, defn: Definition,
                            sims: dict[str, np.ndarray]) -> dict:
    """Micro accuracy and macro F1 over normal and abnormal videos.

    Args:
        bench: UCF or XD.
        defn: Its definition; ``sims`` columns follow ``defn.classification_classes``.
        sims: ``{video: [T, C]}`` class similarity logits.
    """
    idx = class_index(bench, defn)
    y_true, y_pred = [], []
    for v in bench.videos:
        if v.name not in sims:
            continue
        probs = metrics.softmax(metrics.video_class_logits(sims[v.name]))
        y_true.append(idx[v.class_name])
        y_pred.append(int(np.argmax(probs)))
    n_classes = len(defn.classification_classes)
    return {"accuracy": metrics.accuracy(y_true, y_pred),
            "macro_f1": metrics.macro_f1(y_true, y_pred, n_classes),
            "n_classes": n_classes, "n_videos": len(y_true)}


def _proposals(name: str, anomaly: np.ndarray, class_probs: np.ndarray) -> list[tuple]:
    seen, out = set(), []
    for thr in PROPOSAL_THRESHOLDS:
        for s, e in metrics.segments_from_scores(anomaly, thr):
            if (s, e) in seen:
                continue
            seen.add((s, e))
            mean_probs = class_probs[s:e, 1:].mean(axis=0)
            c = int(np.argmax(mean_probs)) + 1
            out.append((name, c, float(s), float(e),
                        float(anomaly[s:e].mean() * mean_probs[c - 1])))
    return out


def evaluate_localisation(bench: Benchmark, defn: Definition,
                          scores: dict[str, VideoScores]) -> dict[str, float]:
    """mAP@IoU 0.1-0.5 at feature resolution (procedure in the module docstring)."""
    idx = class_index(bench, defn)
    proposals, gts = [], []
    for v in bench.videos:
        vs = scores.get(v.name)
        if vs is None or vs.class_sims is None:
            continue
        anomaly = np.asarray(vs.anomaly, dtype=np.float64)
        proposals += _proposals(v.name, anomaly, metrics.softmax(np.asarray(vs.class_sims)))
        if v.is_anomaly:
            for s, e in v.spans:
                mask = spans_to_mask([(s, e)], len(anomaly))
                for a, b in metrics.segments_from_scores(mask, 1):
                    gts.append((v.name, idx[v.class_name], float(a), float(b)))
    res = metrics.detection_map(proposals, gts, len(defn.classification_classes), IOU_THRESHOLDS)
    out = {f"mAP@{t:.1f}": val for t, val in res.items()}
    out["mAP@avg"] = float(np.nanmean(list(res.values())))
    return out
