"""End-to-end detection on one video under a user-defined anomaly definition.

video -> frame features (cached) -> LaGoVAD -> per-step anomaly scores, class probabilities,
anomalous intervals in seconds -> JSON, CSV and a PNG plot.

Time base: feature step i stands for frames [i * stride, (i + 1) * stride) and is sampled at frame
`offset + i * stride`; its time is that frame's index / fps.

Scores:
- anomaly score = sigmoid(frame logit), full length, in non-overlapping chunks of the model's
  `max_len` steps (the authors' full-length evaluation);
- per-step class probabilities = softmax over the definition's classes (Normal first) of the class
  logits (cosine / temperature);
- video-level class probabilities follow the authors' classification protocol: softmax of
  [min over time of the Normal logit, max over time of each anomaly class logit].

Intervals (`find_intervals`): steps with score >= `threshold` form runs; a run of steps i..j covers
[i * stride / fps, (j + 1) * stride / fps] (clipped to the video's duration); runs separated by a
gap <= `merge_gap_s` are merged; intervals shorter than `min_duration_s` are dropped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lagovad.definition import AnomalyDefinition
from lagovad.errors import LagovadError
from lagovad.extraction import (
    FolderSink,
    Protocol,
    StoreSink,
    VideoJob,
    make_protocol,
    run_extraction,
)
from lagovad.image_encoder import ImageEncoder, load_image_encoder
from lagovad.video import probe

DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_DURATION_S = 1.0
DEFAULT_MERGE_GAP_S = 1.0
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "lagovad" / "features"


class DetectError(LagovadError):
    """Detection cannot run as asked (features/model mismatch, missing weights, bad options)."""


@dataclass
class Interval:
    """A detected anomalous interval.

    Attributes:
        start_s: Start, seconds.
        end_s: End, seconds.
        peak_score: Highest anomaly score inside.
        mean_score: Mean anomaly score inside.
        top_class: Anomaly class with the highest mean probability inside.
        top_class_prob: That mean probability.
    """

    start_s: float
    end_s: float
    peak_score: float
    mean_score: float
    top_class: str
    top_class_prob: float


@dataclass
class Detection:
    """Everything `detect` produces for one video.

    Attributes:
        video: The video file.
        definition: The anomaly definition (Normal first).
        checkpoint: Checkpoint label.
        feature_model_id: Image encoder that made the features.
        protocol: Frame sampling of the features.
        fps: Frames per second.
        duration_s: Video duration, seconds.
        frame_indices: Sampled frame index per step [T].
        times_s: Time of each step [T].
        anomaly_scores: sigmoid(frame logit) per step [T].
        class_probs: Per-step class probabilities [T, C].
        video_class_probs: Video-level class probabilities [C].
        intervals: Detected anomalous intervals.
        options: Interval options used (threshold, min_duration_s, merge_gap_s).
    """

    video: Path
    definition: AnomalyDefinition
    checkpoint: str
    feature_model_id: str
    protocol: Protocol
    fps: float
    duration_s: float
    frame_indices: np.ndarray
    times_s: np.ndarray
    anomaly_scores: np.ndarray
    class_probs: np.ndarray
    video_class_probs: np.ndarray
    intervals: list[Interval]
    options: dict[str, float] = field(default_factory=dict)

    def top_classes(self, k: int = 3) -> list[tuple[str, float]]:
        """The k anomaly classes with the highest video-level probability."""
        labels = self.definition.labels
        order = np.argsort(-self.video_class_probs[1:])[:k] + 1
        return [(labels[i], float(self.video_class_probs[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-step arrays included)."""
        labels = self.definition.labels
        return {
            "video": str(self.video),
            "checkpoint": self.checkpoint,
            "definition": self.definition.to_dict(),
            "definition_id": self.definition.id,
            "features": {"model_id": self.feature_model_id, **self.protocol.to_dict()},
            "fps": self.fps,
            "duration_s": self.duration_s,
            "options": self.options,
            "video_class_probs": dict(zip(labels, map(float, self.video_class_probs),
                                          strict=True)),
            "intervals": [vars(i) for i in self.intervals],
            "steps": {
                "frame_index": self.frame_indices.tolist(),
                "time_s": [round(float(t), 4) for t in self.times_s],
                "anomaly_score": [round(float(s), 6) for s in self.anomaly_scores],
                "class_probs": {lab: [round(float(p), 6) for p in self.class_probs[:, c]]
                                for c, lab in enumerate(labels)},
            },
        }


# -- scoring -----------------------------------------------------------------------------------


@torch.inference_mode()
def score_features(
    model: torch.nn.Module,
    features: np.ndarray,
    definition: AnomalyDefinition,
    max_len: int | None = None,
    text: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score a whole feature sequence in non-overlapping chunks of `max_len` steps.

    Args:
        model: A LaGoVAD model.
        features: [T, D] frame features (D = the model's video_dim).
        definition: The anomaly definition.
        max_len: Chunk length; the model's `config["max_len"]` when None.
        text: Precomputed `model.encode_definition(definition)` (reused across videos).

    Returns:
        (anomaly scores [T], class probabilities [T, C], class logits [T, C]).

    Raises:
        DetectError: If the feature dimension is not the model's video_dim or T == 0.
    """
    video_dim = int(model.config["video_dim"])
    if features.ndim != 2 or features.shape[1] != video_dim or len(features) == 0:
        raise DetectError(
            f"features must be a non-empty [T, {video_dim}] array for this model, "
            f"got shape {tuple(features.shape)}"
        )
    max_len = int(max_len or model.config["max_len"])
    device = model.device
    if text is None:
        text = model.encode_definition(definition)
    scores, logits = [], []
    for start in range(0, len(features), max_len):
        chunk = torch.as_tensor(features[start:start + max_len], dtype=torch.float32)
        out = model(chunk[None].to(device), text=text)
        scores.append(torch.sigmoid(out.frame_logits[0]).float().cpu())
        logits.append(out.class_logits[0].float().cpu())
    score = torch.cat(scores)
    logit = torch.cat(logits)
    return score.numpy(), torch.softmax(logit, dim=-1).numpy(), logit.numpy()


def video_class_probs(class_logits: np.ndarray) -> np.ndarray:
    """Authors' video-level classification: softmax([min_t Normal, max_t class c ...])."""
    pooled = np.concatenate([class_logits[:, :1].min(axis=0), class_logits[:, 1:].max(axis=0)])
    return torch.softmax(torch.as_tensor(pooled), dim=0).numpy()


def find_intervals(
    scores: np.ndarray,
    step_s: float,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_duration_s: float = DEFAULT_MIN_DURATION_S,
    merge_gap_s: float = DEFAULT_MERGE_GAP_S,
    duration_s: float | None = None,
) -> list[tuple[int, int, float, float]]:
    """Anomalous intervals from per-step scores (see the module docstring for the rule).

    Args:
        scores: Anomaly score per step [T].
        step_s: Seconds per step (stride / fps).
        threshold: A step is anomalous when its score >= threshold.
        min_duration_s: Shorter intervals (after merging) are dropped.
        merge_gap_s: Intervals whose gap is <= this are merged.
        duration_s: Clip interval ends to the video duration.

    Returns:
        (first step, last step, start_s, end_s) per interval, in time order.

    Raises:
        DetectError: If an option is out of range.
    """
    if not 0.0 <= threshold <= 1.0:
        raise DetectError(f"threshold must be in [0, 1], got {threshold}")
    if min_duration_s < 0 or merge_gap_s < 0:
        raise DetectError(f"min_duration_s and merge_gap_s must be >= 0, got {min_duration_s} "
                          f"and {merge_gap_s}")
    if step_s <= 0:
        raise DetectError(f"step_s must be > 0, got {step_s}")
    above = np.asarray(scores) >= threshold
    runs: list[list[int]] = []
    for i in np.flatnonzero(above):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = int(i)
        else:
            runs.append([int(i), int(i)])
    merged: list[list[int]] = []
    for run in runs:
        if merged and (run[0] - merged[-1][1] - 1) * step_s <= merge_gap_s:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    out = []
    for first, last in merged:
        start, end = first * step_s, (last + 1) * step_s
        if duration_s:
            end = min(end, duration_s)
        if end - start >= min_duration_s:
            out.append((first, last, start, end))
    return out


# -- features ----------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def cached_features(
    video: Path,
    encoder: ImageEncoder,
    protocol: Protocol,
    *,
    cache_dir: Path | None = None,
    store: Any = None,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Features of one video, extracted once and cached (in `cache_dir` or a prevad store).

    The folder cache key is the file's absolute path, size and mtime, so an edited file is
    extracted again; the folder itself is per encoder and protocol.

    Returns:
        (features [T, D], number of videos decoded in this call: 0 on a cache hit).

    Raises:
        DetectError: If the video cannot be decoded (the reason is in the message).
    """
    if store is not None:
        sink: FolderSink | StoreSink = StoreSink(store, encoder.model_id, protocol)
        job = sink.jobs([video])[0]
    else:
        root = Path(cache_dir or DEFAULT_CACHE_DIR)
        p = protocol
        sub = root / f"{_slug(encoder.model_id)}_s{p.stride}o{p.offset}r{p.size}"
        st = video.stat()
        key = hashlib.sha256(f"{video.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        sink = FolderSink(sub, encoder.model_id, protocol)
        job = VideoJob(key=video.stem, path=video, name=f"{video.stem}-{key.hexdigest()[:16]}")
    summary = run_extraction([job], sink, encoder, protocol, batch_size=batch_size,
                             decode_workers=1, progress=progress)
    if summary.failures:
        raise DetectError(f"cannot extract features of {video}: {summary.failures[0]['reason']}")
    if store is not None:
        return store.load_features(job.key, encoder.model_id), summary.decoded_videos
    return np.load(sub / f"{job.name}.npy"), summary.decoded_videos


# -- model -------------------------------------------------------------------------------------


def load_detector(
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.nn.Module, str]:
    """Load the LaGoVAD model: a checkpoint directory, or a named config with weights.

    Returns:
        (model in eval mode, checkpoint label stored with scores).

    Raises:
        DetectError: If no weights are given (a randomly initialised model scores nothing).
    """
    import lagovad

    if checkpoint is not None:
        model, _ = lagovad.load_checkpoint(checkpoint, device=device)
        return model.eval(), str(Path(checkpoint).resolve())
    if model_name is not None and weights is not None:
        model = lagovad.create_model(model_name, pretrained=weights, device=device)
        return model.eval(), f"{model_name}:{Path(weights).resolve()}"
    raise DetectError(
        "detection needs trained weights: pass --checkpoint CKPT_DIR (a lagovad checkpoint) or "
        "--model NAME --weights FILE (e.g. an authors' .ckpt); got neither"
    )


def encoder_for(
    model: torch.nn.Module,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
    device: str | torch.device | None = None,
) -> ImageEncoder:
    """The image encoder named by the model config (`image_clip`), or the given override.

    Raises:
        DetectError: If the encoder's feature dimension is not the model's video_dim.
    """
    cfg = model.config.get("image_clip", {})
    name = clip_model or cfg.get("name") or "ViT-B-16"
    pretrained = clip_pretrained if clip_pretrained is not None else cfg.get("pretrained")
    encoder = load_image_encoder(name, pretrained, device=device, option="--clip-pretrained")
    check_dims(encoder, model)
    return encoder


def check_dims(encoder: ImageEncoder, model: torch.nn.Module) -> None:
    """Raise DetectError unless the encoder's output dim is the model's video_dim."""
    video_dim = int(model.config["video_dim"])
    if encoder.dim != video_dim:
        raise DetectError(
            f"image encoder {encoder.model_id} makes {encoder.dim}-d features but the checkpoint "
            f"expects video_dim={video_dim}; use the encoder the model was trained with "
            f"(config image_clip: {model.config.get('image_clip')})"
        )


# -- end to end --------------------------------------------------------------------------------


def detect(
    video: str | Path,
    definition: AnomalyDefinition,
    model: torch.nn.Module,
    encoder: ImageEncoder,
    *,
    checkpoint: str = "unknown",
    cache_dir: Path | None = None,
    store: Any = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_duration_s: float = DEFAULT_MIN_DURATION_S,
    merge_gap_s: float = DEFAULT_MERGE_GAP_S,
    progress: bool = False,
) -> Detection:
    """Run detection on one video.

    Args:
        video: Video file.
        definition: Anomaly definition (class names and/or descriptions).
        model: LaGoVAD model (see `load_detector`).
        encoder: Image encoder whose features the model expects (see `encoder_for`).
        checkpoint: Label of the model weights (stored in outputs).
        cache_dir: Feature cache folder (default ~/.cache/lagovad/features).
        store: A prevad store to cache features in instead.
        threshold: Interval threshold on the anomaly score.
        min_duration_s: Minimum interval length, seconds.
        merge_gap_s: Merge intervals separated by at most this, seconds.
        progress: Show extraction progress.

    Returns:
        The detection.
    """
    if not isinstance(definition, AnomalyDefinition) or len(definition) < 2:
        raise DetectError("an anomaly definition with at least one anomaly class is required")
    check_dims(encoder, model)
    video = Path(video)
    cfg = model.config.get("features", {})
    protocol = make_protocol(encoder, cfg.get("frame_stride", 8), cfg.get("frame_offset"))
    feats, _ = cached_features(video, encoder, protocol, cache_dir=cache_dir, store=store,
                               progress=progress)
    info = probe(video)
    fps = info.fps or 25.0  # only for times: a stream without a rate is rare
    scores, probs, logits = score_features(model, feats, definition)
    step_s = protocol.stride / fps
    frame_indices = protocol.offset + protocol.stride * np.arange(len(feats))
    duration = info.duration_s or len(feats) * step_s
    labels = definition.labels
    intervals = []
    for first, last, start, end in find_intervals(
        scores, step_s, threshold=threshold, min_duration_s=min_duration_s,
        merge_gap_s=merge_gap_s, duration_s=duration,
    ):
        mean_probs = probs[first:last + 1, 1:].mean(axis=0)
        top = int(np.argmax(mean_probs))
        intervals.append(Interval(
            start_s=round(start, 4), end_s=round(end, 4),
            peak_score=float(scores[first:last + 1].max()),
            mean_score=float(scores[first:last + 1].mean()),
            top_class=labels[top + 1], top_class_prob=float(mean_probs[top]),
        ))
    return Detection(
        video=video, definition=definition, checkpoint=checkpoint,
        feature_model_id=encoder.model_id, protocol=protocol, fps=fps, duration_s=duration,
        frame_indices=frame_indices, times_s=frame_indices / fps, anomaly_scores=scores,
        class_probs=probs, video_class_probs=video_class_probs(logits), intervals=intervals,
        options={"threshold": threshold, "min_duration_s": min_duration_s,
                 "merge_gap_s": merge_gap_s},
    )


# -- outputs -----------------------------------------------------------------------------------


def write_outputs(det: Detection, out_dir: str | Path, plot: bool = True) -> dict[str, Path]:
    """Write `<stem>.detect.json`, `<stem>.scores.csv`, `<stem>.intervals.csv`, `<stem>.png`.

    Returns:
        Output kind -> path.
    """
    from prevad.io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = det.video.stem
    paths = {"json": out / f"{stem}.detect.json", "scores_csv": out / f"{stem}.scores.csv",
             "intervals_csv": out / f"{stem}.intervals.csv"}
    atomic_write_json(paths["json"], det.to_dict())
    atomic_write_text(paths["scores_csv"], scores_csv(det))
    atomic_write_text(paths["intervals_csv"], intervals_csv(det))
    if plot:
        paths["png"] = out / f"{stem}.png"
        plot_detection(det, paths["png"])
    return paths


def scores_csv(det: Detection) -> str:
    """Per-step CSV: feature_index, frame_index, time_s, anomaly_score, p_<class>..."""
    buf = io.StringIO()
    w = csv.writer(buf)
    labels = det.definition.labels
    w.writerow(["feature_index", "frame_index", "time_s", "anomaly_score",
                *[f"p_{lab}" for lab in labels]])
    for i in range(len(det.anomaly_scores)):
        w.writerow([i, int(det.frame_indices[i]), f"{det.times_s[i]:.4f}",
                    f"{det.anomaly_scores[i]:.6f}", *[f"{p:.6f}" for p in det.class_probs[i]]])
    return buf.getvalue()


def intervals_csv(det: Detection) -> str:
    """One row per interval: start_s, end_s, peak_score, mean_score, top_class, top_class_prob."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["start_s", "end_s", "peak_score", "mean_score", "top_class", "top_class_prob"])
    for iv in det.intervals:
        w.writerow([iv.start_s, iv.end_s, f"{iv.peak_score:.6f}", f"{iv.mean_score:.6f}",
                    iv.top_class, f"{iv.top_class_prob:.6f}"])
    return buf.getvalue()


def plot_detection(det: Detection, path: str | Path, top_k: int = 3) -> None:
    """PNG: anomaly score over time, threshold, intervals shaded, top classes in the legend."""
    from prevad.io import atomic_save_png, new_figure

    fig = new_figure(figsize=(10, 3.2), dpi=100)  # pyplot-free: the caller's backend stays
    ax = fig.subplots()
    ax.plot(det.times_s, det.anomaly_scores, color="black", lw=1.5, label="anomaly score")
    labels = det.definition.labels
    for name, prob in det.top_classes(top_k):
        c = labels.index(name)
        ax.plot(det.times_s, det.class_probs[:, c], lw=0.9, alpha=0.8,
                label=f"{name[:40]} (video p={prob:.2f})")
    ax.axhline(det.options.get("threshold", DEFAULT_THRESHOLD), color="gray", ls="--", lw=0.8)
    for i, iv in enumerate(det.intervals):
        ax.axvspan(iv.start_s, iv.end_s, color="red", alpha=0.2,
                   label="detected interval" if i == 0 else None)
    ax.set_xlim(0, max(det.duration_s, float(det.times_s[-1]) if len(det.times_s) else 1.0))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score / probability")
    ax.set_title(det.video.name)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    atomic_save_png(fig, path)
