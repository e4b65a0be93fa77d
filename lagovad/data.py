"""Training and validation data read from a prevad store, in bounded memory.

One DuckDB query (:data:`prevad.queries.TRAINING_SET`) resolves a split: per clip (D1: clip ids
live in ``annotations.video_id`` / ``features.video_id``) its chosen annotation (a human
annotation wins over a model one, then the most recent) under the label rule, joined to its
feature row. The result is kept as flat arrays (ids, labels, lengths, file locations); feature
arrays are read from their ``.npy`` files only when a sample needs them (by ``DataLoader``
workers during training), a few rows at a time, so memory does not grow with the number of
videos.

Every problem that would stop training is found before the first step: an empty split, annotated
videos without features, features of the wrong dimension or length, missing, unreadable or
non-finite feature files (:func:`feature_index` reads each file once and remembers it by size
and modification time under ``<store>/indexes/``), abnormal validation videos without spans.
Errors name the offending video ids.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from lagovad.errors import LagovadError
from lagovad.labels import spans_to_mask
from lagovad.synthesis import TrainVideo
from prevad import Store, queries
from prevad.io import atomic_write

__all__ = [
    "DataError",
    "FeatureIndex",
    "SplitData",
    "feature_index",
    "frame_ground_truth",
    "load_retrieval_cache",
    "load_split",
    "resolve_feature_model",
]

_SHOW_IDS = 10
#: Where :func:`feature_index` keeps what it read (``{model}`` is the feature model id).
FEATURE_INDEX = "indexes/feature-index-{model}.parquet"


class DataError(LagovadError, ValueError):
    """The store cannot provide the data a training run needs."""


@dataclass
class SplitData:
    """One split of the store: a row per clip, labels in memory, features on disk.

    Attributes:
        split: "train", "val" or "test".
        model_id: feature model the arrays come from.
        root: the store root (feature locations are relative to it).
        dim: feature dimension.
        video_ids: clip id per row (sorted).
        annotation_ids: the chosen annotation per row.
        annotators: ``annotator_kind:annotator`` of each chosen annotation (model annotations
            name their stage and version there, e.g. ``model:judge@3f2a``).
        is_anomaly: [N] bool.
        lengths: [N] feature steps.
        locations: feature file per row, relative to ``root``.
        row_categories: class per row ("Normal" for normal rows).
        row_descriptions: the descriptions a sample may use per row (empty for normal rows).
        row_spans: relative spans [[start, end], ...] per row.
    """

    split: str
    model_id: str
    root: Path
    dim: int
    video_ids: list[str]
    annotation_ids: list[str]
    annotators: list[str]
    is_anomaly: np.ndarray
    lengths: np.ndarray
    locations: list[str]
    row_categories: list[str]
    row_descriptions: list[tuple[str, ...]]
    row_spans: list[list[list[float]]]
    _dtypes: list[str] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def categories(self) -> list[str]:
        """Sorted anomaly categories present in the split."""
        return sorted({c for c, a in zip(self.row_categories, self.is_anomaly, strict=True) if a})

    @property
    def spans(self) -> dict[str, list[list[float]]]:
        """Clip id -> relative spans."""
        return dict(zip(self.video_ids, self.row_spans, strict=True))

    def category(self, row: int) -> str:
        """Class of row ``row``."""
        return self.row_categories[row]

    def descriptions(self, row: int) -> tuple[str, ...]:
        """Descriptions a sample of row ``row`` may use (never empty strings)."""
        return self.row_descriptions[row]

    def read(self, row: int, start: int = 0, end: int | None = None) -> np.ndarray:
        """Feature steps ``[start, end)`` of row ``row`` as float32, read from its file.

        Only those steps are read (memory-mapped file, copied out); the file's shape must be the
        row's (count, dim) and the steps finite.

        Raises:
            DataError: the file is gone, unreadable, of another shape, or not finite.
        """
        path = self.root / self.locations[row]
        vid = self.video_ids[row]
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"feature file {path} of video {vid} cannot be read: {exc}") from None
        if arr.shape != (int(self.lengths[row]), self.dim):
            raise DataError(f"feature file {path} of video {vid} has shape {arr.shape}, its "
                            f"row says ({int(self.lengths[row])}, {self.dim})")
        out = np.array(arr[start:end], dtype=np.float32)
        del arr  # unmap: pages read here do not stay in this process
        if not np.isfinite(out).all():
            raise DataError(f"feature file {path} of video {vid} holds NaN/Inf values; features "
                            "must be finite")
        return out

    @property
    def videos(self) -> list[TrainVideo]:
        """Every row as a :class:`TrainVideo` with its features loaded (small splits only:
        this reads every feature file of the split into memory)."""
        return [
            TrainVideo(
                video_id=vid,
                features=self.read(i),
                is_anomaly=bool(self.is_anomaly[i]),
                category=self.row_categories[i],
                description=(self.row_descriptions[i] or ("",))[0],
                descriptions=self.row_descriptions[i],
            )
            for i, vid in enumerate(self.video_ids)
        ]


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(sorted(ids)[:_SHOW_IDS])
    more = f" (+{len(ids) - _SHOW_IDS} more)" if len(ids) > _SHOW_IDS else ""
    return shown + more


def resolve_feature_model(
    store: Store,
    model_id: str | None = None,
    video_dim: int | None = None,
    flag: str = "--feature-model",
) -> str:
    """The stored feature model to use: ``model_id`` if given, else the only one that fits.

    Args:
        store: the prevad store.
        model_id: the feature ``model_id`` asked for, if any.
        video_dim: only models with features of this dimension fit (None: any).
        flag: the command-line option that chooses a model, named in the error.

    Returns:
        The feature model id.

    Raises:
        DataError: no features at all, an unknown model id, a model of the wrong dimension, or
            several fitting models and none chosen.
    """
    table = store.read("features", columns=["model_id", "dim"])
    pairs = table.group_by(["model_id", "dim"]).aggregate([]).to_pylist()
    dims: dict[str, int] = {r["model_id"]: r["dim"] for r in pairs}
    if not dims:
        raise DataError(f"store {store.root} holds no features; run `lagovad extract` first")
    if model_id is not None:
        if model_id not in dims:
            raise DataError(
                f"no features of model {model_id!r} in {store.root}; stored: {sorted(dims)}"
            )
        if video_dim is not None and dims[model_id] != video_dim:
            raise DataError(
                f"features of {model_id!r} are {dims[model_id]}-d but the model expects "
                f"video_dim={video_dim}"
            )
        return model_id
    fitting = sorted(m for m, d in dims.items() if video_dim is None or d == video_dim)
    if not fitting:
        raise DataError(
            f"no stored features have the model's video_dim={video_dim}; stored models and "
            f"dims: {dims} (run lagovad extract)"
        )
    if len(fitting) > 1:
        raise DataError(
            f"store {store.root} holds features of several models {fitting}; choose one with {flag}"
        )
    return fitting[0]


#: ``labels`` choices of :func:`load_split`.
LABEL_CHOICES = ("final", "human")


def _no_rows_error(store: Store, split: str, dataset: str | None, labels: str) -> DataError:
    where = f" of dataset {dataset!r}" if dataset else ""
    kinds = {r["annotator_kind"]: r["n"] for r in store.query(
        queries.ANNOTATION_KINDS_OF_SPLIT, {"split": split, "dataset": dataset}).to_pylist()}
    if labels == "human" and kinds.get("model"):
        return DataError(
            f"split {split!r}{where} of store {store.root} has {kinds['model']} model annotations "
            f"but no human-confirmed one; review them (prevad review export/import) or train "
            f"with labels='final'"
        )
    return DataError(f"split {split!r}{where} of store {store.root} has no annotations")


def load_split(
    store: Store,
    split: str,
    model_id: str,
    dim: int,
    dataset: str | None = None,
    require_spans: bool = False,
    labels: str = "final",
    annotation_ids: Sequence[str] | None = None,
) -> SplitData:
    """Resolve and validate one split with one query (features stay on disk).

    Args:
        store: the prevad store.
        split: "train", "val" or "test".
        model_id: feature model id (see :func:`resolve_feature_model`).
        dim: the feature dimension the model expects.
        dataset: only annotations of this dataset (default: all).
        require_spans: abnormal videos must have spans (validation needs frame ground truth).
        labels: "final" (per video its latest human annotation, else its latest model one) or
            "human" (only human-confirmed annotations: a curated store's reviewed labels; videos
            with only a model pre-label are left out).
        annotation_ids: choose only among these annotations (a training manifest's).

    Returns:
        The split's rows.

    Raises:
        DataError: empty split, missing features, wrong dimension, empty features, or (with
            ``require_spans``) abnormal videos without spans. Messages list the video ids.
    """
    if labels not in LABEL_CHOICES:
        raise DataError(f"labels must be one of {LABEL_CHOICES}, got {labels!r}")
    table = store.query(queries.TRAINING_SET, {
        "split": split, "dataset": dataset, "human_only": labels == "human",
        "model_id": model_id, "ids": None if annotation_ids is None else list(annotation_ids),
    })
    if not table.num_rows:
        raise _no_rows_error(store, split, dataset, labels)
    vids = table.column("video_id").to_pylist()
    counts = table.column("count").to_pylist()
    missing = [v for v, c in zip(vids, counts, strict=True) if c is None]
    if missing:
        raise DataError(
            f"{len(missing)} annotated {split} videos have no {model_id!r} features: "
            f"{_ids(missing)}; extract them or remove their annotations"
        )
    dims = table.column("dim").to_numpy()
    wrong = [v for v, d in zip(vids, dims, strict=True) if d != dim]
    if wrong:
        found = sorted({int(d) for d in dims if d != dim})
        raise DataError(
            f"the model expects {dim}-d features but {len(wrong)} {split} videos have "
            f"dimension {found}: {_ids(wrong)}"
        )
    lengths = np.asarray(counts, dtype=np.int64)
    empty = [v for v, n in zip(vids, lengths, strict=True) if n < 1]
    if empty:
        raise DataError(f"{len(empty)} {split} videos have zero feature steps: {_ids(empty)}")
    is_anomaly = table.column("is_anomaly").to_numpy(zero_copy_only=False).astype(bool)
    spans = [[list(s) for s in (x or [])] for x in table.column("spans").to_pylist()]
    if require_spans:
        no_span = [v for v, a, s in zip(vids, is_anomaly, spans, strict=True) if a and not s]
        if no_span:
            raise DataError(
                f"{len(no_span)} abnormal {split} videos have no spans, so frame AUC/AP cannot "
                f"be computed: {_ids(no_span)}"
            )
    cats = table.column("category").to_pylist()
    descs = []
    for a, one, many in zip(is_anomaly, table.column("description").to_pylist(),
                            table.column("descriptions").to_pylist(), strict=True):
        found = tuple(d for d in (many or ()) if d.strip())
        descs.append(found or ((one,) if one and one.strip() else ()) if a else ())
    kinds = table.column("annotator_kind").to_pylist()
    annotators = table.column("annotator").to_pylist()
    return SplitData(
        split=split,
        model_id=model_id,
        root=store.root,
        dim=dim,
        video_ids=vids,
        annotation_ids=table.column("annotation_id").to_pylist(),
        annotators=[f"{k}:{a}" for k, a in zip(kinds, annotators, strict=True)],
        is_anomaly=is_anomaly,
        lengths=lengths,
        locations=table.column("location").to_pylist(),
        row_categories=[c if a else "Normal" for c, a in zip(cats, is_anomaly, strict=True)],
        row_descriptions=descs,
        row_spans=spans,
        _dtypes=table.column("dtype").to_pylist(),
    )


# ----------------------------------------------------------------------------- feature index
@dataclass
class FeatureIndex:
    """What :func:`feature_index` knows of a split's feature files.

    Attributes:
        checksums: blake2b-128 (hex) of each row's ``.npy`` file.
        means: [N, dim] float32 mean over time of each row's features (the neighbour index
            compares these).
        read: how many files were read this time (the others were known by size and mtime).
    """

    checksums: list[str]
    means: np.ndarray
    read: int


def _read_file(path: Path, shape: tuple[int, int]) -> tuple[str, np.ndarray] | str:
    """(checksum, mean) of one feature file, or why it cannot be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc})"
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        return f"is not a readable .npy file ({exc})"
    if arr.shape != shape:
        return f"has shape {arr.shape}, its row says {shape}"
    arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        steps = np.flatnonzero(bad.any(axis=1))
        return (f"holds {int(bad.sum())} NaN/Inf values at {len(steps)} steps (first: "
                f"{[int(x) for x in steps[:5]]}); features must be finite")
    return hashlib.blake2b(data, digest_size=16).hexdigest(), arr.mean(axis=0)


def feature_index(store: Store, data: SplitData, progress: bool = False,
                  threads: int = 4) -> FeatureIndex:
    """Check every feature file of a split and return its checksum and mean.

    Each file is read once (checksum of its bytes, shape against its row, finiteness, mean over
    time) and remembered in ``<store>/indexes/feature-index-<model>.parquet`` by location, size
    and modification time; later calls only ``stat`` the files and read those that changed.

    Raises:
        DataError: files missing, unreadable, of the wrong shape or not finite (ids listed).
    """
    cache_path = store.root / FEATURE_INDEX.format(model=_safe(data.model_id))
    known: dict[str, int] = {}
    cached = None
    if cache_path.is_file():
        try:
            cached = pq.read_table(cache_path)
            if cached.schema.field("mean").type.list_size != data.dim:
                cached = None
        except (OSError, pa.ArrowException, KeyError):
            cached = None  # an unreadable cache is rebuilt, never trusted
    if cached is not None:
        known = {loc: i for i, loc in enumerate(cached.column("location").to_pylist())}
        c_size = cached.column("size").to_numpy()
        c_mtime = cached.column("mtime_ns").to_numpy()
        c_sum = cached.column("checksum").to_pylist()
        c_mean = pc.list_flatten(cached.column("mean").combine_chunks()).to_numpy(
            zero_copy_only=False).reshape(-1, data.dim)
    n = len(data)
    checksums: list[str] = [""] * n
    means = np.zeros((n, data.dim), dtype=np.float32)
    stats: list[tuple[int, int]] = [(0, 0)] * n
    todo, bad = [], []
    for i, loc in enumerate(data.locations):
        try:
            st = os.stat(data.root / loc)
        except OSError:
            bad.append((data.video_ids[i], f"{loc} is missing"))
            continue
        stats[i] = (st.st_size, st.st_mtime_ns)
        j = known.get(loc)
        if j is not None and c_size[j] == st.st_size and c_mtime[j] == st.st_mtime_ns:
            checksums[i], means[i] = c_sum[j], c_mean[j]
        else:
            todo.append(i)
    if todo:
        def work(i: int):
            return _read_file(data.root / data.locations[i], (int(data.lengths[i]), data.dim))

        with ThreadPoolExecutor(max(1, threads)) as pool:
            results = pool.map(work, todo)
            for i, res in tqdm(zip(todo, results, strict=True), total=len(todo),
                               desc=f"checking {data.split} features", disable=not progress,
                               leave=False):
                if isinstance(res, str):
                    bad.append((data.video_ids[i], f"{data.locations[i]} {res}"))
                else:
                    checksums[i], means[i] = res
    if bad:
        shown = "; ".join(f"{v}: {why}" for v, why in sorted(bad)[:_SHOW_IDS])
        more = f" (+{len(bad) - _SHOW_IDS} more)" if len(bad) > _SHOW_IDS else ""
        raise DataError(f"{len(bad)} {data.split} feature files of {data.model_id!r} cannot be "
                        f"used: {shown}{more}")
    if todo:
        _save_index(cache_path, cached, known, data, stats, checksums, means)
    return FeatureIndex(checksums, means, len(todo))


def _save_index(path: Path, cached: pa.Table | None, known: dict[str, int], data: SplitData,
                stats: list[tuple[int, int]], checksums: list[str], means: np.ndarray) -> None:
    """Write the index: this split's rows plus every other location the old index knew."""
    fresh = pa.table({
        "location": pa.array(data.locations, pa.string()),
        "size": pa.array([s for s, _ in stats], pa.int64()),
        "mtime_ns": pa.array([m for _, m in stats], pa.int64()),
        "checksum": pa.array(checksums, pa.string()),
        "mean": pa.FixedSizeListArray.from_arrays(pa.array(means.reshape(-1)), data.dim),
    })
    if cached is not None:
        mine = set(data.locations)
        keep = [j for loc, j in known.items() if loc not in mine]
        fresh = pa.concat_tables([cached.take(pa.array(keep, pa.int64())).cast(fresh.schema),
                                  fresh])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        pq.write_table(fresh, fh)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def frame_ground_truth(spans: Sequence[Sequence[float]], length: int) -> np.ndarray:
    """Frame labels at feature resolution, as the authors' evaluation builds them.

    The same rule as the evaluation harness (:func:`lagovad.labels.spans_to_mask`): spans are
    scaled by ``length``, rounded half to even, end exclusive, empty ones skipped.

    Args:
        spans: relative [start, end] pairs in [0, 1].
        length: number of feature steps T.

    Returns:
        [T] uint8 array of 0/1.
    """
    return spans_to_mask(spans, length)


def _stem(text: str | None) -> str | None:
    """File stem of a path or URL (either separator), or None for an empty value."""
    if not text:
        return None
    return PurePosixPath(PureWindowsPath(text.strip()).as_posix()).stem or None


def load_retrieval_cache(
    store: Store, path: str | Path, videos: SplitData | Sequence[TrainVideo]
) -> dict[str, list[str]]:
    """The authors' retrieval cache (``train_search_cache.json``) as a neighbour index.

    Their file maps a video's file stem (of its feature ``.npy`` or its video file) to the stems
    of its nearest normal videos. Stems are matched to store videos through ``feature_uri``,
    ``uri`` and ``source_video_id`` (what the official import records); entries and neighbours
    that are not among ``videos`` are left out, as are neighbours that are not normal.

    Args:
        store: the prevad store the training videos come from.
        path: the JSON cache file.
        videos: the training split (or its videos).

    Returns:
        video id -> neighbour video ids (in the file's order).

    Raises:
        DataError: missing or malformed file, or a file that matches none of the videos.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"retrieval cache {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"retrieval cache {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
        for k, v in data.items()
    ):
        raise DataError(
            f"retrieval cache {path} must be a JSON object mapping a video name to a list of "
            "neighbour video names"
        )
    if isinstance(videos, SplitData):
        flags = dict(zip(videos.video_ids, videos.is_anomaly.tolist(), strict=True))
    else:
        flags = {v.video_id: v.is_anomaly for v in videos}
    wanted = set(flags)
    normal = {v for v, a in flags.items() if not a}
    by_stem: dict[str, str] = {}
    rows = store.read("videos", columns=["video_id", "source_video_id", "uri", "feature_uri"])
    for row in rows.to_pylist():
        if row["video_id"] not in wanted:
            continue
        for key in ("feature_uri", "uri", "source_video_id"):
            stem = _stem(row[key])
            if stem:
                by_stem.setdefault(stem, row["video_id"])
    for vid in wanted:  # a cache written with our ids also works
        by_stem.setdefault(vid, vid)
    index: dict[str, list[str]] = {}
    for key, names in data.items():
        vid = by_stem.get(_stem(key) or "")
        if vid is None:
            continue
        near = [by_stem.get(_stem(n) or "") for n in names]
        index[vid] = [n for n in near if n in normal and n != vid]
    if not index:
        raise DataError(
            f"retrieval cache {path} names none of the {len(wanted)} training videos (matched "
            "by file stem of feature_uri, uri or source_video_id)"
        )
    return index
