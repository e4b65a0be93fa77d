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
