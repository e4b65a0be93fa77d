"""Score every stored video under a new anomaly definition, from cached features (no decoding).

Writes one `Score` row per (video, feature step, class) to the store's `scores` table:
`anomaly_score` = sigmoid(frame logit) at that step, `class_prob` = that class's softmax
probability at that step (over the definition's classes, Normal first), `time_s` = the sampled
frame's time (frame index / fps; null when the video's fps is unknown). Videos already scored
under the same definition and checkpoint are skipped, so a rescore can be resumed.

`CLASS_INTERVALS_SQL` answers "which videos contain X above 0.8, and when": consecutive feature
steps where class X's probability and the anomaly score both reach the thresholds are grouped into
intervals (gaps-and-islands over feature_index).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lagovad.data import DataError, resolve_feature_model
from lagovad.definition import AnomalyDefinition
from lagovad.detect import DetectError, score_features
from prevad import queries
from prevad.records import SCORE_SCHEMA, utcnow

#: "Which videos contain class X above a threshold, and when?" (see prevad.queries).
CLASS_INTERVALS_SQL = queries.CLASS_INTERVALS


#: Rows buffered before one append (each append is one Parquet part).
FLUSH_ROWS = 200_000


class RescoreError(DetectError):
    """Rescoring cannot run (no matching features, ambiguous feature model, bad definition)."""


@dataclass
class RescoreSummary:
    """What a rescore did.

    Attributes:
        definition_id: Id of the definition scored.
        checkpoint: Checkpoint label written with the rows.
        model_id: Feature model whose features were scored.
        scored: Videos scored in this run.
        skipped: Videos already scored under this definition and checkpoint.
        rows: Score rows written.
        failures: Videos whose features could not be loaded (video_id, reason).
    """

    definition_id: str
    checkpoint: str
    model_id: str
    scored: int = 0
    skipped: int = 0
    rows: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)


def pick_feature_model(store: Any, video_dim: int, model_id: str | None = None) -> str:
    """The stored feature model to score: `model_id`, or the only one with `video_dim` columns.

    Raises:
        RescoreError: If none matches, or several do and `model_id` is not given.
    """
    try:
        return resolve_feature_model(store, model_id, video_dim, flag="--model-id")
    except DataError as exc:
        raise RescoreError(str(exc)) from exc


def rescore(
    store: Any,
    model: torch.nn.Module,
    definition: AnomalyDefinition,
    checkpoint: str,
    *,
    model_id: str | None = None,
    progress: bool = True,
) -> RescoreSummary:
    """Score all stored videos that have features under `definition`; append Score rows.

    Args:
        store: A prevad store.
        model: LaGoVAD model.
        definition: The anomaly definition.
        checkpoint: Checkpoint label written in the `checkpoint` column.
        model_id: Feature model to use (default: the only one fitting the model's video_dim).
        progress: Show a progress bar.

    Returns:
        The summary.
    """
    video_dim = int(model.config["video_dim"])
    model_id = pick_feature_model(store, video_dim, model_id)
    summary = RescoreSummary(definition.id, checkpoint, model_id)
    done = _scored_videos(store, definition.id, checkpoint)
    fps = {r["video_id"]: r["fps"] for r in store.read("videos", ["video_id", "fps"]).to_pylist()}
    features = [r for r in store.read("features").to_pylist() if r["model_id"] == model_id]
    text = model.encode_definition(definition)
    labels = definition.labels
    buffer: list[pa.Table] = []
    buffered = 0
    for row in _progress(features, progress):
        if row["video_id"] in done:
            summary.skipped += 1
            continue
        try:
            feats = store.load_features(row)
        except (OSError, ValueError) as exc:
            summary.failures.append({"video_id": row["video_id"], "reason": str(exc)})
            continue
        scores, probs, _ = score_features(model, feats, definition, text=text)
        table = _score_table(row, scores, probs, labels, definition, checkpoint,
                             fps.get(row["video_id"]))
        buffer.append(table)
        buffered += table.num_rows
        summary.scored += 1
        if buffered >= FLUSH_ROWS:
            summary.rows += _flush(store, buffer)
            buffer, buffered = [], 0
    summary.rows += _flush(store, buffer)
    return summary


def _scored_videos(store: Any, definition_id: str, checkpoint: str) -> set[str]:
    table = store.query(
        queries.SCORED_VIDEOS,
        {"d": definition_id, "c": checkpoint},
    )
    return set(table.column("video_id").to_pylist())


def _score_table(row: dict, scores: np.ndarray, probs: np.ndarray, labels: list[str],
                 definition: AnomalyDefinition, checkpoint: str, fps: float | None) -> pa.Table:
    t, c = probs.shape
    steps = np.repeat(np.arange(t, dtype=np.int64), c)
    frames = row["frame_offset"] + row["frame_stride"] * steps
    times = (frames / fps).tolist() if fps else [None] * (t * c)
    n = t * c
    return pa.table({
        "video_id": [row["video_id"]] * n,
        "definition_id": [definition.id] * n,
        "definition_json": [definition.to_json()] * n,
        "checkpoint": [checkpoint] * n,
        "class_name": labels * t,
        "feature_index": steps,
        "time_s": times,
        "anomaly_score": np.repeat(np.clip(scores, 0.0, 1.0).astype(np.float64), c),
        "class_prob": np.clip(probs, 0.0, 1.0).astype(np.float64).reshape(-1),
        "created_at": pa.array([utcnow()] * n, type=SCORE_SCHEMA.field("created_at").type),
    }, schema=SCORE_SCHEMA)


def _flush(store: Any, tables: list[pa.Table]) -> int:
    if not tables:
        return 0
    result = store.append("scores", pa.concat_tables(tables))
    return int(result.written)


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description="rescore")


def videos_with_class(
    store: Any, definition: AnomalyDefinition, checkpoint: str, class_name: str,
    min_prob: float = 0.8, min_score: float = 0.0,
) -> list[dict[str, Any]]:
    """Run `CLASS_INTERVALS_SQL`: intervals where `class_name` reaches the thresholds.

    Raises:
        RescoreError: If `class_name` is not a label of the definition.
    """
    if class_name not in definition.labels:
        raise RescoreError(f"class {class_name!r} is not in the definition {definition.labels}")
    params = {"definition_id": definition.id, "checkpoint": checkpoint, "class_name": class_name,
              "min_prob": float(min_prob), "min_score": float(min_score)}
    return store.query(CLASS_INTERVALS_SQL, params).to_pylist()


def definition_of(json_text: str) -> AnomalyDefinition:
    """The definition stored in a Score row's definition_json."""
    return AnomalyDefinition.from_dict(json.loads(json_text))
