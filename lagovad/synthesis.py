"""Dynamic video synthesis (paper section 4.1), with the rules of the authors' release.

The rules (their ``src/datasets/PreVAD.py`` with ``default.yaml``; measured against it by
distribution):

Each epoch has ``2 x #abnormal videos`` samples: index ``i < n_abnormal`` is an abnormal sample
anchored on abnormal video ``i``, the rest are normal samples.

- Number of clips, for both kinds of sample: 1 with probability 0.3, else ``randint(1, 5)``.
- Abnormal sample: the abnormal clip (the whole anchor video) sits at a random position; every
  other clip is a normal *filler*.
- Normal sample: a random normal anchor video (whole) is always the first clip, fillers follow.
- Filler: with probability 0.5 a random normal video, otherwise a random one of the anchor's
  nearest normal neighbours; either kind is randomly cropped (start in [0, L/2], end in
  [(start + L)/2, L]).
- Description: one of the anchor's descriptions, picked at random per sample.
- Cut to ``max_len`` steps, two rules (``cut``):

  - ``"first"`` (the authors'): keep the first ``max_len`` steps. This cuts the abnormal clip when
    it starts late in a long concatenation and can drop it entirely, which leaves an abnormal
    sample whose frame label is all zero.
  - ``"window"`` (our fix): keep a ``max_len`` window that holds as much of the anchor clip as
    fits (random among such windows), so an abnormal sample always keeps its abnormal clip.

  The frame pseudo-label is 1 over the abnormal clip.

The neighbour index (cosine kNN over mean-pooled features, normal videos as candidates) is
computed once and stored as Parquet (``indexes/neighbours-<model_id>.parquet`` under the store
root), then reused while it covers the videos being trained on; the authors' retrieval cache
(``train_search_cache.json``) can be used instead (:func:`lagovad.data.load_retrieval_cache`).

Every sample is drawn from ``numpy.random.default_rng([seed, epoch, index])``: the same seed gives
the same samples in any order, which makes runs reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lagovad.errors import LagovadError
from prevad.io import atomic_write

__all__ = [
    "Batch",
    "DynamicSynthesizer",
    "SynthesisError",
    "SynthSample",
    "TrainVideo",
    "build_neighbour_index",
    "collate",
    "load_or_build_neighbours",
    "random_crop",
]

P_SINGLE_CLIP = 0.3
MAX_CLIPS = 5
P_RANDOM_FILLER = 0.5
CUT_RULES = ("first", "window")


class SynthesisError(LagovadError, ValueError):
    """The videos given to synthesis cannot produce samples (no normals, no abnormals, ...)."""


@dataclass(frozen=True)
class TrainVideo:
    """One training video: its features and weak labels.

    Attributes:
        video_id: store id.
        features: [T, D] float32 array.
        is_anomaly: video-level label.
        category: class name ("Normal" for normal videos).
        description: the first description of the anomaly ("" if none).
        descriptions: every description of the anomaly (synthesis picks one per sample); when
            empty, ``description`` alone is used.
    """

    video_id: str
    features: np.ndarray
    is_anomaly: bool
    category: str
    description: str = ""
    descriptions: tuple[str, ...] = ()

    @property
    def all_descriptions(self) -> tuple[str, ...]:
        """The descriptions a sample may use (never empty strings)."""
        found = tuple(d for d in self.descriptions if d.strip())
        if found:
            return found
        return (self.description,) if self.description.strip() else ()


@dataclass
class SynthSample:
    """One synthesized video.

    Attributes:
        features: [T, D] float32, T <= max_len.
        frame_labels: [T] float32 pseudo labels (1 over the abnormal clip).
        label: 1 if abnormal.
        category: the abnormal clip's class, "Normal" for a normal sample.
        description: the abnormal clip's description, one of the anchor's picked at random
            ("" for normal samples).
        video_ids: ids of the clips, in order.
        anchor_span: (start, end) of the anchor clip in ``features`` after the cut, end
            exclusive; (0, 0) when the cut dropped it.
    """

    features: np.ndarray
    frame_labels: np.ndarray
    label: int
    category: str
    description: str
    video_ids: list[str] = field(default_factory=list)
    anchor_span: tuple[int, int] = (0, 0)


@dataclass
class Batch:
    """A padded batch ready for the model.

    Attributes:
        features: [B, T, D] float32.
        mask: [B, T] bool, True = valid step.
        frame_labels: [B, T] float32.
        labels: [B] long video labels.
        categories: class name per video.
        descriptions: description per video.
    """

    features: torch.Tensor
    mask: torch.Tensor
    frame_labels: torch.Tensor
    labels: torch.Tensor
    categories: list[str]
    descriptions: list[str]


def random_crop(length: int, rng: np.random.Generator) -> tuple[int, int]:
    """Crop bounds of a filler: start in [0, L/2], end in [(start + L)/2, L], end > start.

    Args:
        length: number of steps L >= 1.
        rng: random generator.

    Returns:
        (start, end), end exclusive.
    """
    if length < 1:
        raise SynthesisError(f"cannot crop a clip of length {length}; need length >= 1")
    start = int(rng.integers(0, length // 2 + 1))
    low_end = max((start + length) // 2, start + 1)
    end = int(rng.integers(low_end, length + 1))
    return start, end


def _cut_offset(
    total: int, span: tuple[int, int], max_len: int, rule: str, rng: np.random.Generator
) -> int:
    """Offset of the kept ``max_len`` steps: 0 for ``"first"``; for ``"window"`` a random
    window that keeps as much of ``span`` (the anchor clip) as fits."""
    if total <= max_len or rule == "first":
        return 0
    start, end = span
    if end - start >= max_len:
        return int(rng.integers(start, end - max_len + 1))
    return int(rng.integers(max(0, end - max_len), min(start, total - max_len) + 1))


class DynamicSynthesizer:
    """Synthesizes training videos on the fly from stored clip features.

    Args:
        videos: training videos (both labels needed).
        neighbours: video id -> ids of its nearest normal videos (from the neighbour index).
        max_len: maximum synthesized length (512 in the paper).
        seed: base seed; sample ``i`` of epoch ``e`` uses ``default_rng([seed, e, i])``.
        cut: ``"first"`` (the authors' rule) or ``"window"`` (our fix), see the module doc.

    Raises:
        SynthesisError: if there is no abnormal or no normal video, max_len < 1, or an unknown
            cut rule.
    """

    def __init__(
        self,
        videos: Sequence[TrainVideo],
        neighbours: Mapping[str, Sequence[str]],
        max_len: int = 512,
        seed: int = 2024,
        cut: str = "first",
    ) -> None:
        if max_len < 1:
            raise SynthesisError(f"max_len must be >= 1, got {max_len}")
        if cut not in CUT_RULES:
            raise SynthesisError(f"cut must be one of {CUT_RULES}, got {cut!r}")
        self.abnormal = [v for v in videos if v.is_anomaly]
        self.normal = [v for v in videos if not v.is_anomaly]
        if not self.abnormal or not self.normal:
            raise SynthesisError(
                "dynamic synthesis needs abnormal and normal videos, got "
                f"{len(self.abnormal)} abnormal and {len(self.normal)} normal"
            )
        self.by_id = {v.video_id: v for v in self.normal}
        self.neighbours = {
            vid: [n for n in ids if n in self.by_id] for vid, ids in neighbours.items()
        }
        self.max_len = max_len
        self.seed = seed
        self.cut = cut

    def __len__(self) -> int:
        """Epoch length: 2 x number of abnormal videos."""
        return 2 * len(self.abnormal)

    def _filler(self, anchor: TrainVideo, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        near = self.neighbours.get(anchor.video_id, [])
        if near and rng.random() >= P_RANDOM_FILLER:
            video = self.by_id[near[int(rng.integers(0, len(near)))]]
        else:
            video = self.normal[int(rng.integers(0, len(self.normal)))]
        start, end = random_crop(len(video.features), rng)
        return video.video_id, video.features[start:end]

    def sample(self, index: int, epoch: int = 0) -> SynthSample:
        """Synthesize sample ``index`` of ``epoch`` (deterministic given the seed).

        Args:
            index: in [0, len(self)).
            epoch: epoch number (changes the draw).

        Returns:
            The synthesized sample.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"sample index must lie in [0, {len(self)}), got {index}")
        rng = np.random.default_rng([self.seed, epoch, index])
        abnormal = index < len(self.abnormal)
        n_clips = 1 if rng.random() < P_SINGLE_CLIP else int(rng.integers(1, MAX_CLIPS + 1))
        if abnormal:
            anchor = self.abnormal[index]
            position = int(rng.integers(0, n_clips))
        else:
            anchor = self.normal[int(rng.integers(0, len(self.normal)))]
            position = 0
        clips: list[tuple[str, np.ndarray]] = []
        for slot in range(n_clips):
            clips.append(
                (anchor.video_id, anchor.features)
                if slot == position
                else self._filler(anchor, rng)
            )
        descriptions = anchor.all_descriptions if abnormal else ()
        description = (
            descriptions[int(rng.integers(0, len(descriptions)))] if descriptions else ""
        )
        lengths = [len(c[1]) for c in clips]
        starts = np.cumsum([0, *lengths])
        total = int(starts[-1])
        span = (int(starts[position]), int(starts[position + 1]))
        labels = np.zeros(total, dtype=np.float32)
        if abnormal:
            labels[span[0] : span[1]] = 1.0
        features = np.concatenate([np.asarray(c[1], dtype=np.float32) for c in clips])
        offset = _cut_offset(total, span, self.max_len, self.cut, rng)
        window = slice(offset, offset + self.max_len)
        kept_start = min(max(span[0] - offset, 0), self.max_len)
        kept_end = min(max(span[1] - offset, 0), self.max_len)
        return SynthSample(
            features=features[window],
            frame_labels=labels[window],
            label=int(abnormal),
            category=anchor.category if abnormal else "Normal",
            description=description,
            video_ids=[c[0] for c in clips],
            anchor_span=(kept_start, kept_end) if kept_end > kept_start else (0, 0),
        )


def collate(samples: Sequence[SynthSample], pad_to: int | None = None) -> Batch:
    """Pad samples into a batch (zeros and mask False on padded steps).

    Args:
        samples: synthesized samples.
        pad_to: pad to this length; default the longest sample (equivalent under the mask).

    Returns:
        The batch.
    """
    if not samples:
        raise SynthesisError("cannot collate an empty list of samples")
    longest = max(len(s.features) for s in samples)
    length = longest if pad_to is None else max(pad_to, longest)
    dim = samples[0].features.shape[1]
    feats = np.zeros((len(samples), length, dim), dtype=np.float32)
    frame_labels = np.zeros((len(samples), length), dtype=np.float32)
    mask = np.zeros((len(samples), length), dtype=bool)
    for row, s in enumerate(samples):
        n = len(s.features)
        feats[row, :n] = s.features
        frame_labels[row, :n] = s.frame_labels
        mask[row, :n] = True
    return Batch(
        features=torch.from_numpy(feats),
        mask=torch.from_numpy(mask),
        frame_labels=torch.from_numpy(frame_labels),
        labels=torch.tensor([s.label for s in samples], dtype=torch.long),
        categories=[s.category for s in samples],
        descriptions=[s.description for s in samples],
    )


def build_neighbour_index(videos: Sequence[TrainVideo], k: int = 10) -> dict[str, list[str]]:
    """Cosine kNN over mean-pooled features: for every video, its k nearest normal videos.

    Args:
        videos: all training videos (queries); normal ones are also the candidates.
        k: neighbours per video (fewer when there are fewer normal videos).

    Returns:
        video id -> neighbour ids, nearest first, never the video itself.
    """
    if k < 1:
        raise SynthesisError(f"k must be >= 1, got {k}")
    pooled = np.stack([np.asarray(v.features, dtype=np.float32).mean(axis=0) for v in videos])
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    normal_rows = np.array([i for i, v in enumerate(videos) if not v.is_anomaly], dtype=np.int64)
    if normal_rows.size == 0:
        return {v.video_id: [] for v in videos}
    candidates = pooled[normal_rows]
    result: dict[str, list[str]] = {}
    for lo in range(0, len(videos), 4096):  # chunks bound the [chunk, n_normal] matrix
        sims = pooled[lo : lo + 4096] @ candidates.T
        take = min(k + 1, len(normal_rows))  # +1: the query itself may be a candidate
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        for r, cols in enumerate(top):
            me = lo + r
            cols = cols[np.argsort(-sims[r, cols], kind="stable")]
            ids = [videos[normal_rows[j]].video_id for j in cols if normal_rows[j] != me]
            result[videos[me].video_id] = ids[:k]
    return result


def load_or_build_neighbours(
    path: Path, videos: Sequence[TrainVideo], k: int = 10
) -> dict[str, list[str]]:
    """Reuse the stored neighbour index if it covers ``videos``, else build and store it.

    The stored index is reused when it has a row for every video, with neighbours that are all
    among the current normal videos and as many of them as ``k`` allows; otherwise it is rebuilt
    (the training set changed) and rewritten atomically.

    Args:
        path: Parquet file (columns video_id: string, neighbours: list<string>).
        videos: training videos.
        k: neighbours per video.

    Returns:
        video id -> neighbour ids.
    """
    path = Path(path)
    normal_ids = {v.video_id for v in videos if not v.is_anomaly}
    want = min(k, len(normal_ids))
    if path.exists():
        table = pq.read_table(path)
        stored = dict(
            zip(
                table.column("video_id").to_pylist(),
                table.column("neighbours").to_pylist(),
                strict=True,
            )
        )
        fits = all(
            v.video_id in stored
            and set(stored[v.video_id]) <= normal_ids
            and len(stored[v.video_id]) >= min(want, len(normal_ids - {v.video_id}))
            for v in videos
        )
        if fits:
            return {v.video_id: list(stored[v.video_id])[:k] for v in videos}
    index = build_neighbour_index(videos, k)
    table = pa.table(
        {
            "video_id": pa.array(list(index), pa.string()),
            "neighbours": pa.array(list(index.values()), pa.list_(pa.string())),
        }
    )
    with atomic_write(path) as fh:
        pq.write_table(table, fh)
    return index
