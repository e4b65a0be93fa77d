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

from lagovad.eval.benchmarks import XD_CODES, Benchmark, Definition, EvalError, video_key
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


#: Column orders of named class-score layouts (``--score-classes``), Normal first.
SCORE_LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    # VadCLIP's label_map order (ucf_test.py / xd_test.py), i.e. its softmax columns.
    "vadclip": {
        "ucf": ("Normal", "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion",
                "Fighting", "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing",
                "Vandalism"),
        "xd": ("Normal", "Fighting", "Shooting", "Riot", "Abuse", "Car accident", "Explosion"),
    },
}
SCORE_CLASS_SOURCES = ("file", "vadclip", "lagovad")
CLASSES_KEY = "__classes__"  # npz entry / Parquet metadata key naming the class columns
PROB_TOLERANCE = 1e-6


@dataclass
class ScoreTable:
    """Scores read from a file, before they are matched with a benchmark.

    Attributes:
        path: The file.
        anomaly: ``{video: [T]}`` anomaly scores.
        classes: ``{video: [T, C]}`` per-step class probabilities.
        class_names: Names of the ``C`` columns given in the file, or None.
    """

    path: str
    anomaly: dict[str, np.ndarray]
    classes: dict[str, np.ndarray]
    class_names: tuple[str, ...] | None

    @property
    def videos(self) -> set[str]:
        """Every video named in the file."""
        return set(self.anomaly) | set(self.classes)


def _put(table: ScoreTable, name: str, arr: np.ndarray) -> None:
    key = video_key(str(name))
    if arr.ndim == 1:
        table.anomaly[key] = arr
    elif arr.ndim == 2 and arr.shape[1] >= 2:
        table.classes[key] = arr
    else:
        raise EvalError(f"scores of video {key} in {table.path} have shape {arr.shape}; "
                        "expected [T] anomaly scores or [T, C>=2] class probabilities")


def _names_array(value, path: Path) -> tuple[str, ...]:
    names = tuple(str(x) for x in np.asarray(value).reshape(-1).tolist())
    if not names or len(set(names)) != len(names):
        raise EvalError(f"{CLASSES_KEY} in {path} must list distinct class names, got "
                        f"{list(names)}")
    return names


def read_scores(path: str | Path) -> ScoreTable:
    """Per-video score arrays from ``.npz`` or Parquet.

    ``.npz``: one array per video name, ``[T]`` anomaly scores or ``[T, C]`` per-step class
    probabilities; an optional string array ``__classes__`` names the ``C`` columns.
    Parquet, wide: ``video`` plus ``scores`` (list<float>) and/or ``class_scores``
    (list<list<float>>, rows of ``C``), column names in the schema metadata ``__classes__``
    (a JSON list). Parquet, long: ``video``, ``score``, optional ``index`` giving the order.
    Names are normalised with ``video_key``.
    """
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"scores file does not exist: {p}")
    table = ScoreTable(str(p), {}, {}, None)
    if p.suffix == ".npz":
        try:
            data = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EvalError(f"{p} is not a readable .npz file: {exc}") from exc
        with data:
            for k in data.files:
                if k == CLASSES_KEY:
                    table.class_names = _names_array(data[k], p)
                    continue
                try:
                    arr = np.asarray(data[k], dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    raise EvalError(f"scores of video {k} in {p} are not numbers") from exc
                _put(table, k, arr)
        return table
    if p.suffix == ".parquet":
        _read_parquet(p, table)
        return table
    raise EvalError(f"scores file must be .npz or .parquet, got {p.name}")


def _read_parquet(p: Path, table: ScoreTable) -> None:
    import pyarrow.parquet as pq

    try:
        tbl = pq.read_table(p)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise EvalError(f"{p} is not a readable Parquet file: {exc}") from exc
    cols = set(tbl.column_names)
    meta = (tbl.schema.metadata or {}).get(CLASSES_KEY.encode())
    if meta is not None:
        try:
            table.class_names = _names_array(json.loads(meta), p)
        except json.JSONDecodeError as exc:
            raise EvalError(f"metadata {CLASSES_KEY} of {p} must be a JSON list") from exc
    if "video" in cols and cols & {"scores", "class_scores"}:
        videos = tbl["video"].to_pylist()
        for col in ("scores", "class_scores"):
            if col not in cols:
                continue
            for v, vals in zip(videos, tbl[col].to_pylist(), strict=True):
                if vals is None:
                    continue
                try:
                    arr = np.asarray(vals, dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    raise EvalError(f"{col} of video {v} in {p} must be a rectangular array of "
                                    "numbers") from exc
                if (col == "scores") != (arr.ndim == 1):
                    raise EvalError(f"{col} of video {v} in {p} has shape {arr.shape}; "
                                    f"expected {'[T]' if col == 'scores' else '[T, C]'}")
                _put(table, v, arr)
        return
    if {"video", "score"} <= cols:
        df = {c: tbl[c].to_numpy(zero_copy_only=False) for c in tbl.column_names}
        order = np.lexsort((df["index"], df["video"])) if "index" in cols else \
            np.argsort(df["video"], kind="stable")
        videos, scores = df["video"][order], df["score"][order].astype(np.float64)
        names, starts = np.unique(videos, return_index=True)
        bounds = list(starts) + [len(videos)]
        for i, name in enumerate(names):
            _put(table, str(name), scores[bounds[i]:bounds[i + 1]])
        return
    raise EvalError(f"Parquet scores need columns (video, scores and/or class_scores) or "
                    f"(video, score[, index]), got {sorted(cols)}")


def _class_aliases(bench: Benchmark, defn: Definition) -> dict[str, str]:
    """Accepted column name -> definition class (Normal, then ``defn.classes``)."""
    aliases = {"Normal": "Normal", "normal": "Normal"}
    for c in defn.classification_classes:
        aliases[c] = c
    for gt_name, c in defn.label_map.items():
        aliases[gt_name] = c
    if bench.name == "xd":
        aliases["A"] = "Normal"
        aliases.update(XD_CODES)
    return aliases


def column_names(table: ScoreTable, bench: Benchmark, defn: Definition,
                 source: str = "file") -> tuple[str, ...]:
    """The class names of the file's columns, from the file or a named layout."""
    if source == "file":
        if table.class_names is None:
            raise EvalError(
                f"{table.path} has [T, C] class scores but no {CLASSES_KEY} naming the columns; "
                f"add it or pass --score-classes with one of {SCORE_CLASS_SOURCES[1:]}")
        return table.class_names
    if source == "lagovad":
        return defn.classification_classes
    if source in SCORE_LAYOUTS:
        if bench.name not in SCORE_LAYOUTS[source]:
            raise EvalError(f"layout {source!r} is defined for "
                            f"{', '.join(SCORE_LAYOUTS[source])}, not {bench.name}")
        return SCORE_LAYOUTS[source][bench.name]
    raise EvalError(f"--score-classes must be one of {SCORE_CLASS_SOURCES}, got {source!r}")


def column_order(names: tuple[str, ...], bench: Benchmark, defn: Definition,
                 path: str) -> list[int]:
    """Positions of the definition's classes (Normal, then ``defn.classes``) among ``names``.

    Raises:
        EvalError: for an unknown, repeated or missing class name.
    """
    if not defn.classification_classes:
        raise EvalError(f"{bench.name} has no classes: give [T] anomaly scores, not class "
                        f"scores, for its videos ({path})")
    aliases = _class_aliases(bench, defn)
    resolved = []
    for n in names:
        if n not in aliases:
            raise EvalError(f"class {n!r} of {path} is not a {bench.name} class; expected "
                            f"names from {sorted(set(aliases))}")
        resolved.append(aliases[n])
    wanted = ["Normal", *defn.classes]
    dup = sorted({c for c in resolved if resolved.count(c) > 1})
    missing = [c for c in wanted if c not in resolved]
    if dup or missing:
        raise EvalError(f"class columns of {path} must name each {bench.name} class once: "
                        f"repeated {dup}, missing {missing}")
    return [resolved.index(c) for c in wanted]


def _check_probs(video: str, arr: np.ndarray, path: str) -> None:
    if not np.isfinite(arr).all():
        raise EvalError(f"class scores of video {video} in {path} contain NaN or inf")
    if arr.min() < -PROB_TOLERANCE or arr.max() > 1 + PROB_TOLERANCE:
        raise EvalError(f"class scores of video {video} in {path} must be probabilities in "
                        f"[0, 1], got values in [{arr.min():.4g}, {arr.max():.4g}]")


def benchmark_scores(table: ScoreTable, bench: Benchmark, defn: Definition,
                     source: str = "file") -> dict:
    """``{video: VideoScores}`` for the benchmark's videos found in ``table``.

    Class scores are reordered to the definition order (Normal, then ``defn.classes``); a
    video with class scores only gets ``1 - P(Normal)`` as its anomaly score (VadCLIP's
    ``prob2``). Lengths must agree and every video needs >= 2 steps.
    """
    from lagovad.eval.protocol import VideoScores

    names = [v.name for v in bench.videos if v.name in table.videos]
    with_cls = [n for n in names if n in table.classes]
    if with_cls and source == "file" and table.class_names is None:
        n = with_cls[0]
        raise EvalError(
            f"scores of video {n} in {table.path} have shape {table.classes[n].shape}: a 2-D "
            f"array is [T, C] class probabilities and needs its column names ({CLASSES_KEY} in "
            f"the file, or --score-classes {'/'.join(SCORE_CLASS_SOURCES[1:])}); anomaly "
            "scores must be 1-D [T]")
    if with_cls and len(with_cls) != len(names):
        without = [n for n in names if n not in table.classes]
        raise EvalError(f"{table.path} has class scores for {len(with_cls)} of {len(names)} "
                        f"{bench.name} videos (none for {without[0]}, ...); give them for all "
                        "or for none")
    cols = column_order(column_names(table, bench, defn, source), bench, defn, table.path) \
        if with_cls else None
    out = {}
    for n in names:
        anomaly, cls = table.anomaly.get(n), table.classes.get(n)
        if cls is not None:
            if cls.shape[1] != len(cols):
                raise EvalError(f"class scores of video {n} in {table.path} have shape "
                                f"{cls.shape}; expected [T, {len(cols)}] (one column per class)")
            _check_probs(n, cls, table.path)
            cls = cls[:, cols]
            if anomaly is None:
                anomaly = 1.0 - cls[:, 0]
            elif len(anomaly) != len(cls):
                raise EvalError(f"video {n} has {len(anomaly)} anomaly scores but {len(cls)} "
                                f"rows of class scores in {table.path}; they must be equal")
        if len(anomaly) < 2:
            raise EvalError(f"video {n} has {len(anomaly)} score(s) in {table.path}; per-step "
                            "scores are needed (>= 2 steps), not one score per video")
        out[n] = VideoScores(anomaly, cls, "probs")
    return out


def read_frames(path: str | Path) -> dict[str, int]:
    """Per-video frame counts from JSON ``{name: n}`` or CSV ``name,n_frames`` (header optional).

    Raises:
        EvalError: naming the file and the entry that is not a positive integer count.
    """
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"frames file does not exist: {p}")
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EvalError(f"{p} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise EvalError(f"{p} must be a JSON object {{video: n_frames}}")
        items = list(data.items())
    else:
        with p.open(newline="") as f:
            items = [r for r in csv.reader(f) if r]
        if items and len(items[0]) > 1 and not items[0][1].strip().isdigit():
            items = items[1:]  # header row
    out = {}
    for row in items:
        if len(row) != 2:
            raise EvalError(f"{p}: each row must be 'video,n_frames', got {list(row)}")
        name, n = row
        try:
            count = int(str(n).strip())
        except ValueError:
            count = 0
        if count < 1 or isinstance(n, bool | float):
            raise EvalError(f"{p}: frame count of {name} must be an integer >= 1, got {n!r}")
        out[video_key(str(name).strip())] = count
    return out
