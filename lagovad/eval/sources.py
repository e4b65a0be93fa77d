"""Inputs of an evaluation: feature sources, external score files, frame-count files.

Features come from a folder of ``<video>.npy`` files ``[T, D]`` (flat, or with one sub-folder per
benchmark as used by ``--all``) or from a prevad store (a folder holding ``catalog.duckdb``),
where benchmark videos are matched by ``Video.source_video_id``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lagovad.eval.benchmarks import Benchmark, EvalError, video_key
from prevad import queries

MISSING_SHOWN = 10


class MissingFeaturesError(EvalError):
    """Benchmark videos without features (or scores) while ``--allow-missing`` is off."""


#: Feature rows of one model with their video's source id (bound parameter: model_id).
STORE_FEATURES_SQL = queries.STORE_FEATURES_OF_MODEL

def missing_message(kind: str, bench: str, missing: list[str], total: int) -> str:
    """Error text listing the first missing videos and the count."""
    shown = ", ".join(missing[:MISSING_SHOWN])
    more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    return (f"{kind} missing for {len(missing)} of {total} {bench} videos: {shown}{more}; "
            "every benchmark video needs them (or pass --allow-missing to report coverage)")


@dataclass
class FeatureSource:
    """Lazy per-video feature loaders for one benchmark.

    Attributes:
        loaders: ``{video: () -> [T, D] float32}`` for videos found.
        missing: Benchmark videos without features.
        origin: Where the features were found (for reports).
    """

    loaders: dict[str, Callable[[], np.ndarray]]
    missing: list[str]
    origin: str


def is_store(path: Path) -> bool:
    """A prevad store is a folder with ``catalog.duckdb``."""
    return (Path(path) / "catalog.duckdb").is_file()


def _npy_loader(path: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 2:
            raise EvalError(f"feature file {path} must be [T, D], got shape {arr.shape}")
        return arr.astype(np.float32, copy=False)
    return load


def _from_dir(root: Path, bench: Benchmark) -> FeatureSource:
    folder = root / bench.name if (root / bench.name).is_dir() else root
    loaders, missing = {}, []
    for v in bench.videos:
        p = folder / f"{v.name}.npy"
        if p.is_file():
            loaders[v.name] = _npy_loader(p)
        else:
            missing.append(v.name)
    return FeatureSource(loaders, missing, str(folder))


def _from_store(root: Path, bench: Benchmark, feature_model: str | None) -> FeatureSource:
    # the dataset layer is only needed for store inputs
    from lagovad.data import DataError, resolve_feature_model
    from prevad import Store

    store = Store(root)
    try:
        model_id = resolve_feature_model(store, feature_model)
    except DataError as exc:
        raise EvalError(str(exc)) from exc
    rows = store.query(STORE_FEATURES_SQL, [model_id]).to_pylist()
    # A store may hold the same source video id under several sources: prefer the benchmark's.
    by_key: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["source"] == bench.name):
        by_key[video_key(r["source_video_id"])] = r
    loaders, missing = {}, []
    for v in bench.videos:
        row = by_key.get(v.name)
        if row is None:
            missing.append(v.name)
            continue
        feat = {k: val for k, val in row.items() if k not in ("source_video_id", "source")}
        loaders[v.name] = (lambda f=feat: np.asarray(store.load_features(f), dtype=np.float32))
    return FeatureSource(loaders, missing, f"store {root}")


def feature_source(path: str | Path, bench: Benchmark, allow_missing: bool = False,
                   feature_model: str | None = None) -> FeatureSource:
    """Find a benchmark's features in a folder or a prevad store.

    Raises:
        MissingFeaturesError: if videos lack features and ``allow_missing`` is False.
    """
    root = Path(path)
    if not root.exists():
        raise EvalError(f"features path does not exist: {root}")
    src = _from_store(root, bench, feature_model) if is_store(root) else _from_dir(root, bench)
    if src.missing and not allow_missing:
        raise MissingFeaturesError(
            missing_message("features", bench.name, src.missing, len(bench.videos))
            + f" (looked in {src.origin})")
    return src  # with allow_missing it may be empty: the runner then skips the benchmark


def read_scores(path: str | Path) -> dict[str, np.ndarray]:
    """Per-video score arrays from ``.npz`` (one array per video name) or Parquet.

    Parquet layouts: wide (``video`` string, ``scores`` list<float>) or long (``video``,
    ``score``, optional ``index`` giving the order). Names are normalised with ``video_key``.
    """
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"scores file does not exist: {p}")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            return {video_key(k): np.asarray(data[k], dtype=np.float64).reshape(-1)
                    for k in data.files}
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        tbl = pq.read_table(p)
        cols = set(tbl.column_names)
        if {"video", "scores"} <= cols:
            return {video_key(v): np.asarray(s, dtype=np.float64)
                    for v, s in zip(tbl["video"].to_pylist(), tbl["scores"].to_pylist(),
                                    strict=True)}
        if {"video", "score"} <= cols:
            df = {c: tbl[c].to_numpy(zero_copy_only=False) for c in tbl.column_names}
            order = np.lexsort((df["index"], df["video"])) if "index" in cols else \
                np.argsort(df["video"], kind="stable")
            videos, scores = df["video"][order], df["score"][order].astype(np.float64)
            out: dict[str, np.ndarray] = {}
            names, starts = np.unique(videos, return_index=True)
            bounds = list(starts) + [len(videos)]
            for i, name in enumerate(names):
                out[video_key(str(name))] = scores[bounds[i]:bounds[i + 1]]
            return out
        raise EvalError(f"Parquet scores need columns (video, scores) or (video, score[, index]), "
                        f"got {sorted(cols)}")
    raise EvalError(f"scores file must be .npz or .parquet, got {p.name}")


def read_frames(path: str | Path) -> dict[str, int]:
    """Per-video frame counts from JSON ``{name: n}`` or CSV ``name,n_frames`` (header optional)."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"frames file does not exist: {p}")
    if p.suffix == ".json":
        data = json.loads(p.read_text())
        if not isinstance(data, dict):
            raise EvalError(f"{p} must be a JSON object {{video: n_frames}}")
        items = data.items()
    else:
        with p.open(newline="") as f:
            items = [r for r in csv.reader(f) if r]
        if items and not items[0][1].strip().isdigit():
            items = items[1:]  # header row
    out = {}
    for name, n in items:
        n = int(n)
        if n < 1:
            raise EvalError(f"frame count of {name} must be >= 1, got {n}")
        out[video_key(str(name).strip())] = n
    return out
