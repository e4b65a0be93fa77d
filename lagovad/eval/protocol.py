"""The evaluation protocol over per-video scores, independent of where the scores came from.

Detection: per-video anomaly scores are aligned with ground truth (``gt.py``), optionally
min-max normalised per video (DoTA), pooled across all videos, then AUC, AP (sklearn-style step
sum) and PR-AUC (trapezoid) are computed. Classification: per-step class similarities ->
``[min_t Normal, max_t class_c]`` -> softmax -> argmax; micro accuracy and macro F1.

Temporal localisation (mAP@IoU 0.1-0.5, UCF/XD) follows VadCLIP's ``getDetectionMAP``
(``metrics.vadclip_detection_map``): per-step class probabilities (softmax of the class logits,
or probabilities read from a score file) repeated ``repeat`` times per frame, ground truth from
the native frame annotations with one class per segment (XD ``annotations_multiclasses.txt``,
UCF ``Temporal_Anomaly_Annotation.txt``) and one Normal segment ``[0, T * repeat)`` per normal
video, mAP averaged over all classes including Normal. Protocol ``vadclip-ucf-quirk`` also
reproduces VadCLIP's UCF label mismatch (normal videos labelled ``'A'``, so Normal has no ground
truth, scores AP 0 and still counts in the mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lagovad import metrics
from lagovad.eval.benchmarks import (
    DATA_DIR,
    XD_CODES,
    AnnotationFormatError,
    Benchmark,
    Definition,
    EvalError,
    read_ucf_native,
    video_key,
)
from lagovad.eval.gt import check_score_count, expand_scores, video_gt

IOU_THRESHOLDS = metrics.VADCLIP_IOU_THRESHOLDS
LOCALISATION_PROTOCOLS = ("vadclip", "vadclip-ucf-quirk")
LOCALISATION_REFERENCE = ("VadCLIP getDetectionMAP (nwpu-zxr/VadCLIP src/utils/xd_detectionMAP.py, "
                          "commit f643c91)")
F1_CONVENTION = ("macro_f1: torchmetrics F1Score(average='macro'), a class with no true and no "
                 "predicted video is left out; macro_f1_absent_as_zero counts it as 0")


@dataclass
class VideoScores:
    """Scores of one video at feature (snippet) resolution.

    Attributes:
        anomaly: ``[T]`` anomaly probabilities.
        class_sims: ``[T, C]`` class scores, Normal first, or None.
        class_kind: ``logits`` (a model's similarities; softmax gives probabilities) or
            ``probs`` (per-step class probabilities, e.g. an external method's softmax).
    """

    anomaly: np.ndarray
    class_sims: np.ndarray | None = None
    class_kind: str = "logits"

    def class_probs(self) -> np.ndarray:
        """``[T, C]`` per-step class probabilities."""
        if self.class_sims is None:
            raise EvalError("these scores have no class scores")
        sims = np.asarray(self.class_sims, dtype=np.float64)
        return metrics.softmax(sims) if self.class_kind == "logits" else sims


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

    Videos absent from ``scores`` are skipped (coverage is reported; the command refuses
    unknown names and, without ``--allow-missing``, missing videos). With ``frames`` every
    scored video needs a frame count and its score count must match it
    (:func:`lagovad.eval.gt.check_score_count`, ``repeat`` frames per score).
    """
    labels, pooled, per_video = [], [], {}
    for v in bench.videos:
        if v.name not in scores:
            continue
        s = np.asarray(scores[v.name], dtype=np.float64).reshape(-1)
        if s.size == 0:
            raise EvalError(f"scores of video {v.name} are empty; every video needs >= 1 score")
        if not np.isfinite(s).all():
            raise EvalError(f"scores of video {v.name} contain NaN or inf; scores must be finite")
        if bench.minmax_per_video:
            s = metrics.minmax_normalise(s)
        n_frames = None
        if frames is not None:
            if v.name not in frames:
                raise EvalError(f"video {v.name} has scores but no frame count in the --frames "
                                "file; every scored video needs one")
            n_frames = int(frames[v.name])
            if resolution == "feature":
                check_score_count(v.name, len(s), n_frames, repeat)
        s = expand_scores(s, resolution, repeat, n_frames if resolution == "frame16" else None,
                          v.name)
        # Ground truth over the real frame count (when known), cut to the frames with a score.
        n_gt = n_frames if (resolution == "frame16" and n_frames is not None) else len(s)
        g = video_gt(v, len(s), resolution, repeat, n_gt if resolution == "frame16" else None,
                     native)[:len(s)]
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
        sims: ``{video: [T, C]}`` class logits (a model) or probabilities (a score file);
            the rule is applied to what the method produced.
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
            "macro_f1": metrics.macro_f1(y_true, y_pred, n_classes, absent="ignore"),
            "macro_f1_absent_as_zero": metrics.macro_f1(y_true, y_pred, n_classes, absent="zero"),
            "f1_convention": F1_CONVENTION, "n_classes": n_classes, "n_videos": len(y_true)}


def read_xd_segments(path: str | Path) -> dict[str, list[tuple[str, int, int]]]:
    """XD-Violence ``annotations_multiclasses.txt``: ``{video: [(class, start, end), ...]}``.

    Lines are ``name (code start end)+``; codes (``B1`` ... ``G``) map to the official class
    names. Each segment keeps its own label (47 test videos have segments of several classes).
    """
    out: dict[str, list[tuple[str, int, int]]] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        rest = parts[1:]
        if not rest or len(rest) % 3 or any(c not in XD_CODES for c in rest[0::3]):
            raise AnnotationFormatError(f"{path}:{lineno}: expected 'name (code start end)+' "
                                        f"with codes {sorted(XD_CODES)}, got {line!r}")
        try:
            segs = [(XD_CODES[c], int(a), int(b))
                    for c, a, b in zip(rest[0::3], rest[1::3], rest[2::3], strict=True)]
        except ValueError as exc:
            raise AnnotationFormatError(f"{path}:{lineno}: frame numbers must be integers, "
                                        f"got {line!r}") from exc
        out[video_key(parts[0])] = segs
    return out


def native_segments(bench: Benchmark) -> dict[str, list[tuple[str, int, int]]]:
    """Labelled native frame segments of UCF or XD abnormal videos (VadCLIP's ground truth)."""
    if bench.name == "xd":
        return read_xd_segments(DATA_DIR / "xd" / "annotations_multiclasses.txt")
    if bench.name == "ucf":
        native = read_ucf_native(DATA_DIR / "ucf" / "Temporal_Anomaly_Annotation.txt")
        return {k: [(cls, s, e) for s, e in spans] for k, (cls, spans) in native.items()}
    raise EvalError(f"localisation is defined for ucf and xd only, got {bench.name!r}")


def evaluate_localisation(bench: Benchmark, defn: Definition, scores: dict[str, VideoScores],
                          repeat: int = 16, protocol: str = "vadclip") -> dict:
    """mAP@IoU 0.1-0.5 as VadCLIP's ``getDetectionMAP`` (see the module docstring).

    Args:
        bench: UCF or XD.
        defn: Its definition; class columns follow ``defn.classification_classes``.
        scores: Videos with class scores (others are skipped).
        repeat: Frames per score (VadCLIP repeats each snippet 16 times).
        protocol: ``vadclip`` or ``vadclip-ucf-quirk`` (UCF normal videos labelled ``'A'``).

    Returns:
        ``{"protocol", "reference", "mAP@0.1" ... "mAP@0.5", "mAP@avg", "n_videos"}``.
    """
    if protocol not in LOCALISATION_PROTOCOLS:
        raise EvalError(f"localisation protocol must be one of {LOCALISATION_PROTOCOLS}, "
                        f"got {protocol!r}")
    order = defn.classification_classes
    segs_by_video = native_segments(bench)
    normal_label = None if (protocol == "vadclip-ucf-quirk" and bench.name == "ucf") else 0
    predictions, segments, labels = [], [], []
    for v in bench.videos:
        vs = scores.get(v.name)
        if vs is None or vs.class_sims is None:
            continue
        probs = np.repeat(vs.class_probs(), repeat, axis=0)
        if not v.is_anomaly:
            segs, labs = [(0, len(probs))], [normal_label]
        else:
            native = segs_by_video.get(v.name)
            if not native:
                raise AnnotationFormatError(f"no native frame segments for abnormal video "
                                            f"{v.name} of {bench.name}")
            segs = [(s, e) for _, s, e in native]
            labs = [_class_position(order, defn.label_map.get(c, c), v.name) for c, _, _ in native]
        predictions.append(probs)
        segments.append(segs)
        labels.append(labs)
    if not predictions:
        raise EvalError(f"no class scores for any video of {bench.name}")
    res = metrics.vadclip_detection_map(predictions, segments, labels, IOU_THRESHOLDS)
    out: dict = {"protocol": protocol, "reference": LOCALISATION_REFERENCE}
    out.update({f"mAP@{t:.1f}": val for t, val in res.items()})
    out["mAP@avg"] = float(np.mean(list(res.values())))
    out["n_videos"] = len(predictions)
    return out


def _class_position(order: tuple[str, ...], name: str, video: str) -> int:
    if name not in order:
        raise AnnotationFormatError(f"segment class {name!r} of {video} is not one of {order}")
    return order.index(name)
