"""Training and validation data read from a prevad store.

One annotation per video is used: a human annotation wins over a model one, then the most recent.
Every description of the chosen annotation is kept (synthesis picks one per sample).
Every problem that would stop training is found here, before the first step: an empty split,
annotated videos without features, features of the wrong dimension, abnormal validation videos
without spans. Errors name the offending video ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from lagovad.errors import LagovadError
from lagovad.labels import spans_to_mask
from lagovad.synthesis import TrainVideo
from prevad import Store

__all__ = [
    "DataError",
    "SplitData",
    "frame_ground_truth",
    "load_retrieval_cache",
    "load_split",
    "resolve_feature_model",
]

_SHOW_IDS = 10


class DataError(LagovadError, ValueError):
    """The store cannot provide the data a training run needs."""


@dataclass
class SplitData:
    """Videos of one split with their features and labels.

    Attributes:
        split: "train", "val" or "test".
        model_id: feature model the arrays come from.
        videos: one entry per annotated video (features loaded).
        spans: video id -> relative spans [[start, end], ...] in [0, 1].
    """

    split: str
    model_id: str
    videos: list[TrainVideo]
    spans: dict[str, list[list[float]]]

    @property
    def categories(self) -> list[str]:
        """Sorted anomaly categories present in the split."""
        return sorted({v.category for v in self.videos if v.is_anomaly})


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(sorted(ids)[:_SHOW_IDS])
    more = f" (+{len(ids) - _SHOW_IDS} more)" if len(ids) > _SHOW_IDS else ""
    return shown + more


def _pick_annotations(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One annotation per video: human before model, then the latest created_at."""
    chosen: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = (row["annotator_kind"] == "human", row["created_at"], row["annotation_id"])
        old = chosen.get(row["video_id"])
        if old is None or key > (
            old["annotator_kind"] == "human",
            old["created_at"],
            old["annotation_id"],
        ):
            chosen[row["video_id"]] = row
    return chosen


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
    rows = store.read("features", columns=["model_id", "dim"]).to_pylist()
    dims: dict[str, int] = {r["model_id"]: r["dim"] for r in rows}
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


def human_confirmed(
    rows: list[dict[str, Any]], split: str, store: Store, dataset: str | None = None
) -> list[dict[str, Any]]:
    """Only the human annotations of ``rows``: a curated store's reviewed labels.

    Videos that only have a model pre-label (not yet reviewed) are left out, so training sees
    what a reviewer confirmed or corrected (``prevad review import``/``pull``), never a bare
    judge output.

    Raises:
        DataError: model annotations exist for the split but none is human-confirmed.
    """
    human = [r for r in rows if r["annotator_kind"] == "human"]
    if rows and not human:
        where = f" of dataset {dataset!r}" if dataset else ""
        raise DataError(
            f"split {split!r}{where} of store {store.root} has {len(rows)} model annotations "
            f"but no human-confirmed one; review them (prevad review export/import) or train "
            f"with labels='final'"
        )
    return human


def load_split(
    store: Store,
    split: str,
    model_id: str,
    dim: int,
    dataset: str | None = None,
    require_spans: bool = False,
    labels: str = "final",
) -> SplitData:
    """Load and validate one split.

    Args:
        store: the prevad store.
        split: "train", "val" or "test".
        model_id: feature model id (see :func:`resolve_feature_model`).
        dim: the feature dimension the model expects.
        dataset: only annotations of this dataset (default: all).
        require_spans: abnormal videos must have spans (validation needs frame ground truth).
        labels: "final" (per video its latest human annotation, else its latest model one) or
            "human" (only human-confirmed annotations; see :func:`human_confirmed`).

    Returns:
        The split's videos, features loaded.

    Raises:
        DataError: empty split, missing features, wrong dimension, empty features, or (with
            ``require_spans``) abnormal videos without spans. Messages list the video ids.
    """
    rows = [
        r
        for r in store.read("annotations").to_pylist()
        if r["split"] == split and (dataset is None or r["dataset"] == dataset)
    ]
    if labels not in LABEL_CHOICES:
        raise DataError(f"labels must be one of {LABEL_CHOICES}, got {labels!r}")
    if labels == "human":
        rows = human_confirmed(rows, split, store, dataset)
    if not rows:
        where = f" of dataset {dataset!r}" if dataset else ""
        raise DataError(f"split {split!r}{where} of store {store.root} has no annotations")
    chosen = _pick_annotations(rows)
    features = {
        r["video_id"]: r for r in store.read("features").to_pylist() if r["model_id"] == model_id
    }
    missing = [vid for vid in chosen if vid not in features]
    if missing:
        raise DataError(
            f"{len(missing)} annotated {split} videos have no {model_id!r} features: "
            f"{_ids(missing)}; extract them or remove their annotations"
        )
    wrong = [vid for vid in chosen if features[vid]["dim"] != dim]
    if wrong:
        dims = sorted({features[vid]["dim"] for vid in wrong})
        raise DataError(
            f"the model expects {dim}-d features but {len(wrong)} {split} videos have "
            f"dimension {dims}: {_ids(wrong)}"
        )
    empty = [vid for vid in chosen if features[vid]["count"] < 1]
    if empty:
        raise DataError(f"{len(empty)} {split} videos have zero feature steps: {_ids(empty)}")
    if require_spans:
        no_span = [v for v, r in chosen.items() if r["is_anomaly"] and not r["spans"]]
        if no_span:
            raise DataError(
                f"{len(no_span)} abnormal {split} videos have no spans, so frame AUC/AP cannot "
                f"be computed: {_ids(no_span)}"
            )
    videos = []
    for vid in sorted(chosen):
        row = chosen[vid]
        arr = store.load_features(features[vid])
        videos.append(
            TrainVideo(
                video_id=vid,
                features=arr,
                is_anomaly=bool(row["is_anomaly"]),
                category=row["category"] if row["is_anomaly"] else "Normal",
                description=row["description"] or "",
                descriptions=tuple(row.get("descriptions") or ()),
            )
        )
    spans = {vid: [list(s) for s in (chosen[vid]["spans"] or [])] for vid in chosen}
    return SplitData(split=split, model_id=model_id, videos=videos, spans=spans)


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
    store: Store, path: str | Path, videos: Sequence[TrainVideo]
) -> dict[str, list[str]]:
    """The authors' retrieval cache (``train_search_cache.json``) as a neighbour index.

    Their file maps a video's file stem (of its feature ``.npy`` or its video file) to the stems
    of its nearest normal videos. Stems are matched to store videos through ``feature_uri``,
    ``uri`` and ``source_video_id`` (what the official import records); entries and neighbours
    that are not among ``videos`` are left out, as are neighbours that are not normal.

    Args:
        store: the prevad store the training videos come from.
        path: the JSON cache file.
        videos: the training videos.

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
    wanted = {v.video_id for v in videos}
    normal = {v.video_id for v in videos if not v.is_anomaly}
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
