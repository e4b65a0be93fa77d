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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


class VideoList:
    """Rows over in-memory :class:`TrainVideo` objects (the :class:`Clips` of small sets)."""

    def __init__(self, videos: Sequence[TrainVideo]):
        self._videos = list(videos)
        self.video_ids = [v.video_id for v in self._videos]
        self.is_anomaly = np.array([v.is_anomaly for v in self._videos], dtype=bool)
        self.lengths = np.array([len(v.features) for v in self._videos], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._videos)

    def category(self, row: int) -> str:
        """Class of a row."""
        return self._videos[row].category

    def descriptions(self, row: int) -> tuple[str, ...]:
        """Descriptions a sample of the row may use."""
        return self._videos[row].all_descriptions

    def read(self, row: int, start: int = 0, end: int | None = None) -> np.ndarray:
        """Feature steps ``[start, end)`` of a row."""
        return np.asarray(self._videos[row].features[start:end], dtype=np.float32)


class Clips(Protocol):
    """What synthesis needs of a training set: per row its id, label, length, class,
    descriptions, and its features on request (:class:`VideoList` in memory,
    :class:`lagovad.data.SplitData` from the store's files)."""

    video_ids: Sequence[str]
    is_anomaly: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int: ...

    def category(self, row: int) -> str: ...

    def descriptions(self, row: int) -> tuple[str, ...]: ...

    def read(self, row: int, start: int = 0, end: int | None = None) -> np.ndarray: ...


@dataclass
class Neighbours:
    """Neighbour rows per row, compressed (CSR): row ``i``'s are ``rows[offsets[i]:offsets[i+1]]``.

    Attributes:
        offsets: [N + 1] int64.
        rows: int32 row indices, nearest first.
    """

    offsets: np.ndarray
    rows: np.ndarray

    def of(self, row: int) -> np.ndarray:
        """The neighbour rows of ``row``."""
        return self.rows[self.offsets[row] : self.offsets[row + 1]]

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> Neighbours:
        """From one list of rows per row."""
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(x) for x in lists])
        flat = [r for x in lists for r in x]
        return cls(offsets, np.asarray(flat, dtype=np.int32))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Sequence[str]], ids: Sequence[str],
                     keep: np.ndarray | None = None) -> Neighbours:
        """From video id -> neighbour ids; ids that are not rows (or not ``keep``) are dropped."""
        row_of = {v: i for i, v in enumerate(ids)}
        lists = []
        for vid in ids:
            rows = [row_of[n] for n in mapping.get(vid, ()) if n in row_of]
            lists.append([r for r in rows if keep is None or keep[r]])
        return cls.from_lists(lists)

    def to_mapping(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """Video id -> neighbour ids."""
        return {vid: [ids[r] for r in self.of(i)] for i, vid in enumerate(ids)}


class DynamicSynthesizer:
    """Synthesizes training videos on the fly from stored clip features.

    Features are read only for the steps a sample keeps (a clip beyond the ``max_len`` cut is
    never read), so the training set can stay on disk (:class:`lagovad.data.SplitData`).

    Args:
        videos: training videos (both labels needed): :class:`TrainVideo` objects or any
            :class:`Clips`.
        neighbours: video id -> ids of its nearest normal videos, or :class:`Neighbours` rows.
        max_len: maximum synthesized length (512 in the paper).
        seed: base seed; sample ``i`` of epoch ``e`` uses ``default_rng([seed, e, i])``.
        cut: ``"first"`` (the authors' rule) or ``"window"`` (our fix), see the module doc.

    Raises:
        SynthesisError: if there is no abnormal or no normal video, max_len < 1, or an unknown
            cut rule.
    """

    def __init__(
        self,
        videos: Sequence[TrainVideo] | Clips,
        neighbours: Mapping[str, Sequence[str]] | Neighbours,
        max_len: int = 512,
        seed: int = 2024,
        cut: str = "first",
    ) -> None:
        if max_len < 1:
            raise SynthesisError(f"max_len must be >= 1, got {max_len}")
        if cut not in CUT_RULES:
            raise SynthesisError(f"cut must be one of {CUT_RULES}, got {cut!r}")
        clips = videos if hasattr(videos, "read") else VideoList(videos)  # type: ignore[arg-type]
        self.clips = clips
        self.abnormal = np.flatnonzero(clips.is_anomaly)
        self.normal = np.flatnonzero(~clips.is_anomaly)
        if not len(self.abnormal) or not len(self.normal):
            raise SynthesisError(
                "dynamic synthesis needs abnormal and normal videos, got "
                f"{len(self.abnormal)} abnormal and {len(self.normal)} normal"
            )
        if not isinstance(neighbours, Neighbours):
            neighbours = Neighbours.from_mapping(neighbours, clips.video_ids,
                                                 keep=~clips.is_anomaly)
        self.neighbours = neighbours
        self.max_len = max_len
        self.seed = seed
        self.cut = cut

    def __len__(self) -> int:
        """Epoch length: 2 x number of abnormal videos."""
        return 2 * len(self.abnormal)

    def _filler(self, anchor: int, rng: np.random.Generator) -> tuple[int, int, int]:
        near = self.neighbours.of(anchor)
        if len(near) and rng.random() >= P_RANDOM_FILLER:
            row = int(near[int(rng.integers(0, len(near)))])
        else:
            row = int(self.normal[int(rng.integers(0, len(self.normal)))])
        start, end = random_crop(int(self.clips.lengths[row]), rng)
        return row, start, end

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
            anchor = int(self.abnormal[index])
            position = int(rng.integers(0, n_clips))
        else:
            anchor = int(self.normal[int(rng.integers(0, len(self.normal)))])
            position = 0
        pieces: list[tuple[int, int, int]] = []  # (row, start, end) per clip
        for slot in range(n_clips):
            pieces.append(
                (anchor, 0, int(self.clips.lengths[anchor]))
                if slot == position
                else self._filler(anchor, rng)
            )
        descriptions = self.clips.descriptions(anchor) if abnormal else ()
        description = (
            descriptions[int(rng.integers(0, len(descriptions)))] if descriptions else ""
        )
        starts = np.cumsum([0, *(end - start for _, start, end in pieces)])
        total = int(starts[-1])
        span = (int(starts[position]), int(starts[position + 1]))
        offset = _cut_offset(total, span, self.max_len, self.cut, rng)
        stop = min(total, offset + self.max_len)
        parts = []
        for (row, start, _), lo, hi in zip(pieces, starts[:-1], starts[1:], strict=True):
            a, b = max(lo, offset), min(hi, stop)  # the kept steps of this clip
            if a < b:
                parts.append(self.clips.read(row, start + a - lo, start + b - lo))
        labels = np.zeros(stop - offset, dtype=np.float32)
        kept_start = min(max(span[0] - offset, 0), self.max_len)
        kept_end = min(max(span[1] - offset, 0), self.max_len)
        if abnormal:
            labels[kept_start:kept_end] = 1.0
        return SynthSample(
            features=np.concatenate(parts),
            frame_labels=labels,
            label=int(abnormal),
            category=self.clips.category(anchor) if abnormal else "Normal",
            description=description,
            video_ids=[self.clips.video_ids[row] for row, _, _ in pieces],
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


def nearest_normals(means: np.ndarray, is_anomaly: np.ndarray, k: int = 10,
                    chunk: int = 1024) -> Neighbours:
    """Cosine kNN over mean-pooled features: for every row, its k nearest normal rows.

    Memory is bounded by ``chunk`` query rows at a time ([chunk, n_normal] similarities).

    Args:
        means: [N, D] mean-pooled features.
        is_anomaly: [N] bool; normal rows are the candidates.
        k: neighbours per row (fewer when there are fewer normal rows).
        chunk: query rows per block.

    Returns:
        Neighbours (nearest first, never the row itself; ties in row order).
    """
    if k < 1:
        raise SynthesisError(f"k must be >= 1, got {k}")
    pooled = torch.from_numpy(np.ascontiguousarray(means, dtype=np.float32))
    pooled = pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)
    normal_rows = torch.from_numpy(np.flatnonzero(~np.asarray(is_anomaly, dtype=bool)))
    n = pooled.shape[0]
    if normal_rows.numel() == 0:
        return Neighbours(np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int32))
    candidates = pooled[normal_rows]
    take = min(k + 1, normal_rows.numel())  # +1: the query itself may be a candidate
    lists: list[list[int]] = []
    for lo in range(0, n, chunk):
        sims = pooled[lo : lo + chunk] @ candidates.T
        # stable order among ties: sort by (-similarity, candidate row) through a stable sort
        top = torch.topk(sims, take, dim=1).indices
        top_sims = torch.gather(sims, 1, top)
        order = torch.argsort(top, dim=1)
        top, top_sims = torch.gather(top, 1, order), torch.gather(top_sims, 1, order)
        top = torch.gather(top, 1, torch.argsort(-top_sims, dim=1, stable=True))
        rows = normal_rows[top].tolist()
        for r, found in enumerate(rows):
            lists.append([c for c in found if c != lo + r][:k])
    return Neighbours.from_lists(lists)


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
    means = np.stack([np.asarray(v.features, dtype=np.float32).mean(axis=0) for v in videos])
    flags = np.array([v.is_anomaly for v in videos], dtype=bool)
    return nearest_normals(means, flags, k).to_mapping([v.video_id for v in videos])


def load_or_build_neighbours(
    path: Path, videos: Sequence[TrainVideo], k: int = 10
) -> dict[str, list[str]]:
    """Reuse the stored neighbour index if it covers ``videos``, else build and store it
    (:func:`neighbour_rows` for in-memory videos).

    Returns:
        video id -> neighbour ids.
    """
    clips = VideoList(videos)
    means = np.stack([np.asarray(v.features, dtype=np.float32).mean(axis=0) for v in videos])
    return neighbour_rows(path, clips.video_ids, clips.is_anomaly, lambda: means, k).to_mapping(
        clips.video_ids)


def neighbour_rows(
    path: Path,
    ids: Sequence[str],
    is_anomaly: np.ndarray,
    means: Callable[[], np.ndarray],
    k: int = 10,
) -> Neighbours:
    """Reuse the stored neighbour index if it covers the rows, else build and store it.

    The stored index (Parquet: video_id string, neighbours list<string>) is reused when it has a
    row for every video, with neighbours that are all among the current normal videos and as
    many of them as ``k`` allows; otherwise it is rebuilt (the training set changed) from
    ``means()`` and rewritten atomically. Ids are matched with Arrow, not Python loops, so a
    100k-row index loads in about a second.

    Args:
        path: the Parquet file.
        ids: video id per row.
        is_anomaly: [N] bool.
        means: returns [N, D] mean-pooled features (called only to rebuild).
        k: neighbours per row.

    Returns:
        Neighbour rows.
    """
    path = Path(path)
    is_anomaly = np.asarray(is_anomaly, dtype=bool)
    if path.exists():
        stored = _stored_neighbours(path, ids, is_anomaly, k)
        if stored is not None:
            return stored
    index = nearest_normals(means(), is_anomaly, k)
    names = pa.array(list(ids), pa.string())
    flat = names.take(pa.array(index.rows, pa.int32())) if len(index.rows) else pa.array(
        [], pa.string())
    table = pa.table({
        "video_id": names,
        "neighbours": pa.ListArray.from_arrays(pa.array(index.offsets, pa.int32()), flat),
    })
    with atomic_write(path) as fh:
        pq.write_table(table, fh)
    return index


def _stored_neighbours(path: Path, ids: Sequence[str], is_anomaly: np.ndarray,
                       k: int) -> Neighbours | None:
    """The stored index as rows when it covers every row (see :func:`neighbour_rows`)."""
    try:
        table = pq.read_table(path)
        stored_ids = table.column("video_id").combine_chunks()
        lists = table.column("neighbours").combine_chunks()
    except (OSError, pa.ArrowException, KeyError):
        return None
    names = pa.array(list(ids), pa.string())
    at = pc.index_in(names, value_set=stored_ids)  # row -> stored row
    if at.null_count:
        return None
    n_normal = int((~is_anomaly).sum())
    picked = lists.take(at)
    counts = pc.list_value_length(picked).to_numpy(zero_copy_only=False)
    rows = pc.index_in(pc.list_flatten(picked), value_set=names)
    if rows.null_count:
        return None
    rows = rows.to_numpy(zero_copy_only=False).astype(np.int32)
    if len(rows) and is_anomaly[rows].any():
        return None
    need = np.minimum(min(k, n_normal), n_normal - (~is_anomaly).astype(np.int64))
    if (counts < need).any():
        return None
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    full = Neighbours(offsets, rows)
    if (counts <= k).all():
        return full
    return Neighbours.from_lists([full.of(i)[:k].tolist() for i in range(len(ids))])
