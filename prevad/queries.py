"""Named SQL queries over the store's views, with bound parameters ($name).

Every constant is plain read-only SQL; functions below bind the parameters and run them through
:meth:`prevad.Store.query`, so user input never becomes SQL text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from prevad.store import Store

#: Latest stage result per (id, stage): most recent time, then highest attempt.
#: Parameter: $stage (VARCHAR or NULL for all stages).
LATEST_STATUS = """
SELECT id, stage, stage_version, status, reason, error, output_json, attempt, run_id, time
FROM (
    SELECT *, row_number() OVER (
        PARTITION BY id, stage ORDER BY time DESC, attempt DESC, stage_version DESC
    ) AS rn
    FROM stage_results
    WHERE ($stage::VARCHAR IS NULL OR stage = $stage::VARCHAR)
)
WHERE rn = 1
ORDER BY stage, id
"""

#: Work list of a stage: inputs with no ok/rejected result for the current stage_version.
#: ``{input_table}``/``{input_key}`` come from :data:`WORK_LIST_INPUTS` (never from users).
#: Parameters: $stage, $stage_version. ``next_attempt`` = 1 + attempts already made.
WORK_LIST_TEMPLATE = """
SELECT i.*, coalesce(a.attempts, 0) + 1 AS next_attempt
FROM {input_table} AS i
LEFT JOIN (
    SELECT id, max(attempt) AS attempts FROM stage_results
    WHERE stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR
    GROUP BY id
) AS a ON a.id = i.{input_key}
WHERE NOT EXISTS (
    SELECT 1 FROM stage_results AS s
    WHERE s.id = i.{input_key} AND s.stage = $stage::VARCHAR
      AND s.stage_version = $stage_version::VARCHAR AND s.status IN ('ok', 'rejected')
)
ORDER BY i.{input_key}
"""

#: input table -> its id column, for work lists.
WORK_LIST_INPUTS: dict[str, str] = {
    "candidates": "candidate_id",
    "videos": "video_id",
    "segments": "segment_id",
    "annotations": "annotation_id",
}

#: One named constant per input table.
WORK_LIST: dict[str, str] = {
    t: WORK_LIST_TEMPLATE.format(input_table=t, input_key=k) for t, k in WORK_LIST_INPUTS.items()
}

#: Videos / abnormal videos per annotation dataset (optionally one dataset, one split).
DATASET_COUNTS = """
SELECT dataset,
       count(DISTINCT video_id) AS videos,
       count(DISTINCT video_id) FILTER (WHERE is_anomaly) AS abnormal
FROM annotations
WHERE ($dataset::VARCHAR IS NULL OR dataset = $dataset::VARCHAR)
  AND ($split::VARCHAR IS NULL OR split = $split::VARCHAR)
GROUP BY dataset
ORDER BY dataset
"""

#: Annotation rows of one dataset in source order (for export).
ANNOTATIONS_OF_DATASET = """
SELECT a.*, v.uri, v.feature_uri, v.source_video_id, v.duration_s
FROM annotations AS a JOIN videos AS v USING (video_id)
WHERE a.dataset = $dataset::VARCHAR
  AND ($split::VARCHAR IS NULL OR a.split = $split::VARCHAR)
ORDER BY a.source_index NULLS LAST, a.annotation_id
"""

#: Counts by category (and anomaly flag) per dataset.
COUNTS_BY_CATEGORY = """
SELECT dataset, category, is_anomaly, count(*) AS n
FROM annotations GROUP BY ALL ORDER BY dataset, n DESC, category
"""

#: Counts by split per dataset.
COUNTS_BY_SPLIT = """
SELECT dataset, split, count(*) AS n FROM annotations GROUP BY ALL ORDER BY dataset, split
"""

#: Counts of videos by source.
COUNTS_BY_SOURCE = """
SELECT source, count(*) AS videos, count(duration_s) AS with_duration,
       sum(duration_s) AS total_duration_s
FROM videos GROUP BY source ORDER BY videos DESC, source
"""

#: Latest status counts per stage.
COUNTS_BY_STAGE_STATUS = f"""
SELECT stage, stage_version, status, count(*) AS n
FROM ({LATEST_STATUS}) GROUP BY ALL ORDER BY stage, stage_version, status
"""

#: Latest status counts per stage, version and reason (``prevad curate status``).
STAGE_STATUS_REASONS = f"""
SELECT stage, stage_version, status, coalesce(reason, '') AS reason, count(*) AS n
FROM ({LATEST_STATUS}) GROUP BY ALL ORDER BY stage, stage_version, status, n DESC
"""

#: Non-null video durations (seconds).
DURATIONS = """
SELECT source, duration_s FROM videos WHERE duration_s IS NOT NULL ORDER BY source, video_id
"""


# ---------------------------------------------------------------- model-based curation stages

#: Number of segments in the store (the multimodal stages read segments when there are any).
COUNT_SEGMENTS = "SELECT count(*) AS n FROM segments"

#: Video rows by id. Parameter: $ids (VARCHAR[]).
VIDEOS_BY_ID = """
SELECT video_id, uri, duration_s, start_s, end_s FROM videos
WHERE list_contains($ids::VARCHAR[], video_id)
"""

#: Latest ``ok`` output of a stage per id, for some ids. Parameters: $stage, $ids (VARCHAR[]).
LATEST_OK_OUTPUTS = """
SELECT id, output_json FROM (
    SELECT id, output_json, row_number() OVER (
        PARTITION BY id ORDER BY time DESC, attempt DESC, stage_version DESC
    ) AS rn
    FROM stage_results
    WHERE stage = $stage::VARCHAR AND status = 'ok' AND list_contains($ids::VARCHAR[], id)
)
WHERE rn = 1
"""

#: Latest result of a stage per id (any status), for some ids. Parameters: $stage, $ids.
LATEST_STATUS_OF_IDS = f"""
SELECT * FROM ({LATEST_STATUS}) WHERE list_contains($ids::VARCHAR[], id)
"""

#: describe results, latest per item, with typed columns. Parameter: $stage ('describe').
DESCRIBE_RESULTS = f"""
SELECT id, stage_version, status, reason, error,
       json_extract_string(output_json, '$.video_id') AS video_id,
       json_extract_string(output_json, '$.segment_id') AS segment_id,
       json_extract_string(output_json, '$.description') AS description,
       json_extract_string(output_json, '$.model') AS model,
       output_json
FROM ({LATEST_STATUS})
"""

#: verify results, latest per item: VLM verdict/score and CLIP similarity. Parameter: $stage.
VERIFY_RESULTS = f"""
SELECT id, stage_version, status, reason, error,
       json_extract_string(output_json, '$.video_id') AS video_id,
       json_extract_string(output_json, '$.segment_id') AS segment_id,
       json_extract_string(output_json, '$.verdict') AS verdict,
       TRY_CAST(json_extract(output_json, '$.score') AS DOUBLE) AS score,
       TRY_CAST(json_extract(output_json, '$.clip_mean') AS DOUBLE) AS clip_mean,
       TRY_CAST(json_extract(output_json, '$.clip_max') AS DOUBLE) AS clip_max,
       CAST(json_extract(output_json, '$.unsupported_claims') AS VARCHAR[])
           AS unsupported_claims,
       output_json
FROM ({LATEST_STATUS})
"""

#: judge results, latest per item: anomaly flag, taxonomy category, confidence, reason.
#: Parameter: $stage ('judge'). ``judge_reason`` is the model's one-sentence reason;
#: ``reason`` is the rejection reason of a rejected item.
JUDGE_RESULTS = f"""
SELECT id, stage_version, status, reason, error,
       json_extract_string(output_json, '$.video_id') AS video_id,
       json_extract_string(output_json, '$.segment_id') AS segment_id,
       TRY_CAST(json_extract(output_json, '$.anomaly') AS BOOLEAN) AS anomaly,
       json_extract_string(output_json, '$.category') AS category,
       json_extract_string(output_json, '$.top_level') AS top_level,
       TRY_CAST(json_extract(output_json, '$.confidence') AS DOUBLE) AS confidence,
       json_extract_string(output_json, '$.reason') AS judge_reason,
       output_json
FROM ({LATEST_STATUS})
"""

#: describe-anomaly results, latest per human annotation. Parameter: $stage.
DESCRIBE_ANOMALY_RESULTS = f"""
SELECT id AS annotation_id, stage_version, status, reason, error,
       json_extract_string(output_json, '$.video_id') AS video_id,
       json_extract_string(output_json, '$.category') AS category,
       json_extract_string(output_json, '$.description') AS description,
       json_extract_string(output_json, '$.model_annotation_id') AS model_annotation_id,
       output_json
FROM ({LATEST_STATUS})
"""

#: Typed result query per model-based stage.
STAGE_RESULT_QUERIES: dict[str, str] = {
    "describe": DESCRIBE_RESULTS,
    "verify": VERIFY_RESULTS,
    "judge": JUDGE_RESULTS,
    "describe-anomaly": DESCRIBE_ANOMALY_RESULTS,
}


def latest_status(store: Store, stage: str | None = None) -> pa.Table:
    """Latest result per (id, stage), optionally for one stage."""
    return store.query(LATEST_STATUS, {"stage": stage})


def work_list(
    store: Store, stage: str, stage_version: str, input_table: str = "videos"
) -> pa.Table:
    """Rows of ``input_table`` that still need ``stage`` at ``stage_version``.

    An input is done once it has an ``ok`` or ``rejected`` result for that exact version;
    ``failed`` results (and results of older versions) leave it on the list.

    Raises:
        ValueError: ``input_table`` is not one of :data:`WORK_LIST_INPUTS`.
    """
    if input_table not in WORK_LIST:
        raise ValueError(
            f"input_table must be one of {sorted(WORK_LIST)}, got {input_table!r}"
        )
    return store.query(WORK_LIST[input_table], {"stage": stage, "stage_version": stage_version})


def dataset_counts(
    store: Store, dataset: str | None = None, split: str | None = None
) -> pa.Table:
    """Videos and abnormal videos per dataset."""
    return store.query(DATASET_COUNTS, {"dataset": dataset, "split": split})


def stage_status_counts(store: Store) -> pa.Table:
    """Latest result counts per (stage, stage_version, status, reason)."""
    return store.query(STAGE_STATUS_REASONS, {"stage": None})


def stage_results(store: Store, stage: str) -> pa.Table:
    """Latest result per item of a model-based stage with its typed columns.

    Args:
        store: the store.
        stage: "describe", "verify", "judge" or "describe-anomaly".

    Raises:
        ValueError: ``stage`` has no typed result query.
    """
    if stage not in STAGE_RESULT_QUERIES:
        raise ValueError(f"stage must be one of {sorted(STAGE_RESULT_QUERIES)}, got {stage!r}")
    return store.query(STAGE_RESULT_QUERIES[stage], {"stage": stage})


def judge_results(store: Store) -> pa.Table:
    """Latest judge result per item (anomaly, category, top_level, confidence, judge_reason)."""
    return stage_results(store, "judge")


#: Final label per video of a dataset (``prevad review``): the latest human annotation, else the
#: latest model one. Parameter: $dataset. One row per video with ``n_human`` / ``n_model``.
FINAL_LABELS = """
SELECT video_id, annotation_id, annotator_kind, annotator, category, is_anomaly, description,
       spans, split, created_at, n_human, n_model
FROM (
    SELECT *,
           row_number() OVER (
               PARTITION BY video_id
               ORDER BY annotator_kind = 'human' DESC, created_at DESC, annotation_id
           ) AS rn,
           count(*) FILTER (WHERE annotator_kind = 'human') OVER (PARTITION BY video_id)
               AS n_human,
           count(*) FILTER (WHERE annotator_kind = 'model') OVER (PARTITION BY video_id)
               AS n_model
    FROM annotations
    WHERE dataset = $dataset::VARCHAR
)
WHERE rn = 1
ORDER BY video_id
"""


def final_labels(store: Store, dataset: str = "prevad") -> pa.Table:
    """One row per video of ``dataset``: its latest human label, else its latest model label."""
    return store.query(FINAL_LABELS, {"dataset": dataset})

# ---------------------------------------------------------------- curation stages (retrieve,
# acquire, record): lookups by id.

#: Every attempt of one item at one stage version. Parameters: $id, $stage, $stage_version.
ITEM_ATTEMPTS = """
SELECT status, attempt FROM stage_results
WHERE id = $id::VARCHAR AND stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR
ORDER BY attempt
"""

#: The stored row of one video. Parameter: $video_id.
VIDEO_BY_ID = """
SELECT * FROM videos WHERE video_id = $video_id::VARCHAR
"""


def item_attempts(store: Store, item_id: str, stage: str, stage_version: str) -> pa.Table:
    """Status and attempt number of every result of one item at one stage version."""
    return store.query(ITEM_ATTEMPTS, {"id": item_id, "stage": stage,
                                       "stage_version": stage_version})


def video_by_id(store: Store, video_id: str) -> pa.Table:
    """The ``videos`` row of ``video_id`` (no rows when it is not stored)."""
    return store.query(VIDEO_BY_ID, {"video_id": video_id})
