"""Synthetic planted-anomaly features, for the demo, tests and benchmarks.

Each anomaly class owns a direction in feature space; a synthetic video is Gaussian noise with
that direction added over its anomalous steps. A model that learns the mapping detects and names
the planted class, which makes training and evaluation checkable without real CLIP weights.
Everything here is labelled synthetic where it is stored (source "synthetic").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prevad import Store
from prevad.records import Annotation, Video, video_id_for

SYNTHETIC_SOURCE = "synthetic"
SYNTHETIC_MODEL_ID = "synthetic-clip"
DEFAULT_DESCRIPTIONS = {
    "Assault": "A person violently attacks another person in the street.",
    "Explosion": "A sudden explosion with a fireball and smoke.",
}


def class_directions(classes: Sequence[str], dim: int, seed: int = 99) -> dict[str, np.ndarray]:
    """Orthonormal anomaly directions, one per class.

    Raises:
        ValueError: more classes than dimensions.
    """
    if len(classes) > dim:
        raise ValueError(f"need dim >= number of classes, got dim={dim}, classes={len(classes)}")
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, len(classes))))
    return {name: q[:, i].astype(np.float32) for i, name in enumerate(classes)}


def planted_video(
    rng: np.random.Generator,
    length: int,
    direction: np.ndarray,
    spans: Sequence[Sequence[float]] = (),
    strength: float = 4.0,
    noise: float = 0.5,
) -> np.ndarray:
    """Noise features [length, dim] with ``direction`` added over each relative span.

    Spans map to steps like the official ground truth: ``round(s * length)`` to
    ``round(e * length)``, end exclusive.
    """
    feats = rng.normal(scale=noise, size=(length, direction.shape[0])).astype(np.float32)
    for start, end in spans:
        feats[round(start * length) : round(end * length)] += strength * direction
    return feats


def populate_store(
    store: Store,
    descriptions: dict[str, str] | None = None,
    dim: int = 32,
    n_per_class: dict[str, int] | None = None,
    seed: int = 0,
    model_id: str = SYNTHETIC_MODEL_ID,
) -> dict[str, int]:
    """Write a PreVAD-like synthetic training set (videos, annotations, features) to a store.

    Per split and class ``n`` abnormal videos and as many normal videos as abnormal ones. Train
    anomalies cover most of their video (weak, video-level labels as in PreVAD); val and test
    anomalies are a short span inside normal context, with spans stored.

    Args:
        store: An initialised store.
        descriptions: class name -> anomaly description (defaults to two classes).
        dim: Feature dimension (must match the model's ``video_dim``).
        n_per_class: split -> abnormal videos per class (default train 24, val 4, test 4).
        seed: Seed of every random draw.
        model_id: Feature model id to store the arrays under.

    Returns:
        Number of videos written per split.
    """
    descriptions = descriptions or DEFAULT_DESCRIPTIONS
    n_per_class = n_per_class or {"train": 24, "val": 4, "test": 4}
    directions = class_directions(list(descriptions), dim)
    rng = np.random.default_rng(seed)
    videos, annotations, counts = [], [], {}
    for split, n in n_per_class.items():
        items = [(c, i) for c in descriptions for i in range(n)]
        items += [(None, i) for i in range(n * len(descriptions))]
        counts[split] = len(items)
        for category, i in items:
            name = f"{split}-{category or 'normal'}-{i}"
            vid = video_id_for(SYNTHETIC_SOURCE, name)
            length = int(rng.integers(24, 60))
            spans = _draw_spans(rng, category, split)
            direction = directions[category] if category else next(iter(directions.values()))
            feats = planted_video(rng, length, direction, spans)
            videos.append(Video(video_id=vid, source=SYNTHETIC_SOURCE, source_video_id=name))
            annotations.append(
                Annotation(
                    annotation_id=f"ann-{name}",
                    video_id=vid,
                    dataset="prevad",
                    annotator_kind="human",
                    annotator="synthetic",
                    category=category or "Normal",
                    is_anomaly=category is not None,
                    description=descriptions[category] if category else None,
                    spans=[list(s) for s in spans] if split != "train" else [],
                    split=split,
                )
            )
            store.write_features(vid, model_id, feats)
    store.append("videos", videos)
    store.append("annotations", annotations)
    return counts


def _draw_spans(
    rng: np.random.Generator, category: str | None, split: str
) -> list[tuple[float, float]]:
    if category is None:
        return []
    if split == "train":
        start = float(rng.uniform(0.0, 0.3))
        return [(start, float(rng.uniform(max(start + 0.5, 0.8), 1.0)))]
    start = float(rng.uniform(0.1, 0.6))
    return [(start, start + float(rng.uniform(0.15, 0.3)))]


def write_benchmark_features(
    entries: Sequence[tuple[str, Sequence[Sequence[float]], int]],
    out_dir: str | Path,
    direction: np.ndarray,
    seed: int = 0,
) -> int:
    """Write one synthetic ``<name>.npy`` per benchmark video, the anomaly planted at its spans.

    Args:
        entries: (video name, relative spans, feature length) per video.
        out_dir: Folder of the official feature layout.
        direction: The planted anomaly direction.
        seed: Seed of the noise.

    Returns:
        Number of files written.
    """
    from prevad.io import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, spans, length in entries:
        with atomic_write(out / f"{name}.npy") as fh:
            np.save(fh, planted_video(rng, length, direction, spans))
    return len(entries)
