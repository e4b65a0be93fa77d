"""Named SQL queries over the store's views, with bound parameters ($name).

Every SQL text of the project lives here. Every constant is plain read-only SQL; functions below
bind the parameters and run them through :meth:`prevad.Store.query`, so user input never becomes
SQL text. The builders at the end (``key_lookup`` etc.) fill in column names that come from the
store's own table specs, never from users.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
SELECT i.*, coalesce(f.attempts, 0) + 1 AS next_attempt
FROM {input_table} AS i
ANTI JOIN (
    SELECT id FROM stage_results
    WHERE stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR
      AND status IN ('ok', 'rejected')
) AS d ON d.id = i.{input_key}
LEFT JOIN (
    -- an item not done has only failed results of this version: its attempts so far
    SELECT id, max(attempt) AS attempts FROM stage_results
    WHERE stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR
      AND status = 'failed'
    GROUP BY id
) AS f ON f.id = i.{input_key}
ORDER BY i.{input_key}
"""

#: input table -> its id column, for work lists. ``clips`` is the catalog's view (D1,
#: :data:`CLIPS_VIEW`): the input of the model stages after clean.
WORK_LIST_INPUTS: dict[str, str] = {
    "candidates": "candidate_id",
    "videos": "video_id",
    "segments": "segment_id",
    "clips": "clip_id",
    "annotations": "annotation_id",
}

#: One named constant per input table.
WORK_LIST: dict[str, str] = {
    t: WORK_LIST_TEMPLATE.format(input_table=t, input_key=k) for t, k in WORK_LIST_INPUTS.items()
}

#: Labelled videos (distinct clip/video ids, D1) per annotation dataset, by final label
#: (human over model): ``videos``, ``abnormal``, ``human_labelled``, and ``annotation_rows``
#: (a video labelled by a model and a human has two rows). Optionally one dataset, one split.
DATASET_COUNTS = """
SELECT dataset,
       count(*) AS videos,
       count(*) FILTER (WHERE is_anomaly) AS abnormal,
       count(*) FILTER (WHERE n_human > 0) AS human_labelled,
       CAST(sum(n_human + n_model) AS BIGINT) AS annotation_rows
FROM final_labels
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

#: Videos by final category (and anomaly flag) per dataset, with their annotation rows.
COUNTS_BY_CATEGORY = """
SELECT dataset, category, is_anomaly, count(*) AS videos,
       CAST(sum(n_human + n_model) AS BIGINT) AS annotation_rows
FROM final_labels GROUP BY ALL ORDER BY dataset, videos DESC, category
"""

#: Videos by split per dataset (split of the final label), with their annotation rows.
COUNTS_BY_SPLIT = """
SELECT dataset, split, count(*) AS videos,
       CAST(sum(n_human + n_model) AS BIGINT) AS annotation_rows
FROM final_labels GROUP BY ALL ORDER BY dataset, split
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

#: Any clip id of the store resolved to its parent video's file and span, whatever the clean
#: decisions say now (a ``segments`` row, or a video as a clip of itself): what an annotation's
#: ``video_id`` names (D1). Parameter: $ids (VARCHAR[]).
CLIP_FILES_BY_ID = """
SELECT s.segment_id AS clip_id, s.video_id, v.uri, s.start_s, s.end_s, TRUE AS is_segment,
       s.uri AS clip_uri, v.duration_s AS video_duration_s
FROM segments AS s LEFT JOIN videos AS v ON v.video_id = s.video_id
WHERE list_contains($ids::VARCHAR[], s.segment_id)
UNION ALL
SELECT v.video_id AS clip_id, v.video_id, v.uri, 0.0 AS start_s, v.duration_s AS end_s,
       FALSE AS is_segment, NULL AS clip_uri, v.duration_s AS video_duration_s
FROM videos AS v
WHERE list_contains($ids::VARCHAR[], v.video_id)
"""

#: The ids of the catalog's ``clips`` view (D1): what review makes tasks of.
CLIP_IDS = "SELECT clip_id FROM clips ORDER BY clip_id"

#: Video rows by id. Parameter: $ids (VARCHAR[]).
VIDEOS_BY_ID = """
SELECT video_id, uri, duration_s, start_s, end_s FROM videos
WHERE list_contains($ids::VARCHAR[], video_id)
"""

#: Latest result per id of ONE version of a stage, for some ids: what a downstream stage reads
#: of an upstream one (docs/DECISIONS.md, D3). Parameters: $stage, $stage_version, $ids.
RESULTS_OF_VERSION = """
SELECT id, status, reason, output_json FROM (
    SELECT id, status, reason, output_json, row_number() OVER (
        PARTITION BY id ORDER BY time DESC, attempt DESC
    ) AS rn
    FROM stage_results
    WHERE stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR
      AND list_contains($ids::VARCHAR[], id)
)
WHERE rn = 1
"""

#: Versions of a stage with ok or rejected results: the versions a downstream stage may be told
#: to read (``--describe-version`` ...). Parameter: $stage.
DONE_VERSIONS_OF_STAGE = """
SELECT DISTINCT stage_version FROM stage_results
WHERE stage = $stage::VARCHAR AND status IN ('ok', 'rejected')
ORDER BY stage_version
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
    """Labelled videos, abnormal videos (by final label) and annotation rows per dataset."""
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


#: Attempts so far and whether an ok/rejected result exists, for the ids ``$ids`` of a stage
#: version (read under the store lock when a worker claims a shard).
ATTEMPTS_OF_IDS = """
SELECT id, max(attempt) AS attempts,
       bool_or(status IN ('ok', 'rejected')) AS done
FROM stage_results
WHERE stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR
  AND id IN (SELECT unnest($ids::VARCHAR[]))
GROUP BY id
"""

#: Total number of videos (``prevad stats``).
VIDEO_COUNT = "SELECT count(*) AS n FROM videos"

#: Trainer-ready manifest rows (``prevad manifest``). Parameters: $dataset, $split, $model_id.
MANIFEST = """
SELECT a.video_id, a.dataset, a.split, a.category, a.is_anomaly,
       CAST(a.is_anomaly AS INTEGER) AS label, a.description, a.descriptions, a.spans,
       f.model_id, f.location AS feature_location, f.count AS feature_count, f.dim AS feature_dim,
       f.frame_stride, f.frame_offset, v.uri AS video_uri, v.duration_s
FROM annotations AS a
JOIN videos AS v USING (video_id)
LEFT JOIN (SELECT * FROM features WHERE $model_id::VARCHAR IS NULL
           OR model_id = $model_id::VARCHAR) AS f USING (video_id)
WHERE ($dataset::VARCHAR IS NULL OR a.dataset = $dataset::VARCHAR)
  AND ($split::VARCHAR IS NULL OR a.split = $split::VARCHAR)
ORDER BY a.dataset, a.split, a.source_index NULLS LAST, a.video_id
"""

#: The training set of one split (``lagovad train``): per clip its chosen annotation (human
#: before model, then the latest ``created_at``, then the largest ``annotation_id``) joined to
#: its feature row of one model (NULL columns when it has none). Parameters: $split,
#: $dataset (NULL = all), $human_only (BOOLEAN: only human annotations), $model_id, $ids
#: (VARCHAR[] of annotation ids to choose from, e.g. a training manifest's; NULL = all).
TRAINING_SET = """
WITH candidates AS (
    SELECT * FROM annotations
    WHERE split = $split::VARCHAR
      AND ($dataset::VARCHAR IS NULL OR dataset = $dataset::VARCHAR)
      AND (NOT $human_only::BOOLEAN OR annotator_kind = 'human')
      AND ($ids::VARCHAR[] IS NULL
           OR annotation_id IN (SELECT unnest($ids::VARCHAR[])))
), chosen AS (
    SELECT *, row_number() OVER (
        PARTITION BY video_id
        ORDER BY annotator_kind = 'human' DESC, created_at DESC, annotation_id DESC
    ) AS rn
    FROM candidates
)
SELECT c.video_id, c.annotation_id, c.annotator_kind, c.annotator, c.dataset, c.is_anomaly,
       c.category, c.description, c.descriptions, c.spans,
       f.location, f.count, f.dim, f.dtype
FROM chosen AS c
LEFT JOIN features AS f ON f.video_id = c.video_id AND f.model_id = $model_id::VARCHAR
WHERE c.rn = 1
ORDER BY c.video_id
"""

#: Annotations of a split by annotator kind (why a ``--labels human`` training set is empty).
#: Parameters: $split, $dataset (NULL = all).
ANNOTATION_KINDS_OF_SPLIT = """
SELECT annotator_kind, count(*) AS n FROM annotations
WHERE split = $split::VARCHAR AND ($dataset::VARCHAR IS NULL OR dataset = $dataset::VARCHAR)
GROUP BY annotator_kind ORDER BY annotator_kind
"""

#: Feature rows of one model (``lagovad extract`` resume check). Parameter: $model_id.
FEATURES_OF_MODEL = """
SELECT video_id, frame_stride, frame_offset, frame_size, location, count, dim FROM features
WHERE model_id = $model_id::VARCHAR
"""

#: Stored videos that have a media uri (``lagovad extract --store`` without inputs).
VIDEOS_WITH_URI = """
SELECT * FROM videos WHERE uri IS NOT NULL AND uri <> '' ORDER BY video_id
"""

#: Which of $ids are stored videos.
VIDEO_IDS_IN = """
SELECT video_id FROM videos WHERE video_id IN (SELECT unnest($ids::VARCHAR[]))
"""

#: Feature rows of one model with their video's source id (bound parameter: model_id, as ``?``).
STORE_FEATURES_OF_MODEL = (
    "SELECT v.source_video_id AS source_video_id, v.source AS source, f.* FROM features f "
    "JOIN videos v ON v.video_id = f.video_id WHERE f.model_id = ?"
)

#: "Which videos contain class X above a threshold, and when?" Named parameters:
#: $definition_id, $checkpoint, $class_name, $min_prob (class probability, e.g. 0.8) and
#: $min_score (anomaly score, e.g. 0.8; pass 0 to filter on the class probability only).
#: One row per interval: video_id, uri, start_s/end_s (times of the first/last sampled frame),
#: first/last feature_index, steps, peak_prob, peak_score.
CLASS_INTERVALS = """
WITH hits AS (
    SELECT video_id, feature_index, time_s, class_prob, anomaly_score,
           feature_index - ROW_NUMBER() OVER (PARTITION BY video_id ORDER BY feature_index)
               AS island
    FROM scores
    WHERE definition_id = $definition_id
      AND checkpoint = $checkpoint
      AND class_name = $class_name
      AND class_prob >= $min_prob
      AND anomaly_score >= $min_score
)
SELECT h.video_id,
       ANY_VALUE(v.uri) AS uri,
       MIN(h.time_s) AS start_s,
       MAX(h.time_s) AS end_s,
       MIN(h.feature_index) AS first_index,
       MAX(h.feature_index) AS last_index,
       COUNT(*) AS steps,
       MAX(h.class_prob) AS peak_prob,
       MAX(h.anomaly_score) AS peak_score
FROM hits h
LEFT JOIN videos v ON v.video_id = h.video_id
GROUP BY h.video_id, h.island
ORDER BY h.video_id, first_index
"""

#: Videos already scored for a definition and checkpoint. Parameters: $d, $c.
SCORED_VIDEOS = """
SELECT DISTINCT video_id FROM scores WHERE definition_id = $d AND checkpoint = $c
"""

#: Annotation splits of the synthetic quickstart videos (``flows/quickstart.py``).
SYNTHETIC_SPLITS = """
SELECT a.split, count(*) AS n FROM annotations a JOIN videos v USING (video_id)
WHERE v.source = 'synthetic' GROUP BY a.split ORDER BY a.split
"""

# ---------------------------------------------------------------- result views of the catalog
# Created in ``catalog.duckdb`` (so any DuckDB can query them without Python) and on every
# ``Store.query`` connection. Each is plain SQL over the table views; README "Querying the store"
# has example queries.

#: Latest result per (item, stage, stage version): what ``prevad curate status`` counts.
STAGE_STATUS_VIEW = """
SELECT id, stage, stage_version, status, reason, error, attempt, run_id, time, output_json
FROM stage_results
QUALIFY row_number() OVER (
    PARTITION BY id, stage, stage_version ORDER BY time DESC, attempt DESC) = 1
"""

def clips_sql(clean_version: str = "NULL") -> str:
    """The clip rule of D1 as SQL (``clean_version``: a SQL expression, NULL = any version).

    A clip is a ``segments`` row kept by its video's latest ``clean`` decision (ok: the
    decision's ``segment_ids``; rejected: none) or a segment of a video clean never decided on
    (imported, or written by older code whose output has no ``segment_ids``); a video with no
    segments and no clean decision is a clip of itself (``clip_id = video_id``). Videos whose
    latest ``dedup`` decision calls them a copy have no clips (downstream skips duplicates).
    ``clip_index`` numbers a video's clips by start (NULL for a whole video).
    """
    return f"""
WITH clean_decisions AS (
    SELECT id AS video_id, status, output_json FROM (
        SELECT id, status, output_json, row_number() OVER (
            PARTITION BY id ORDER BY time DESC, attempt DESC, stage_version DESC) AS rn
        FROM stage_results
        WHERE stage = 'clean' AND status IN ('ok', 'rejected')
          AND ({clean_version} IS NULL OR stage_version = {clean_version})
    ) WHERE rn = 1
),
decided AS (  -- videos whose clips the clean decision lists (or, rejected, says are none)
    SELECT video_id FROM clean_decisions
    WHERE status = 'rejected' OR json_extract(output_json, '$.segment_ids') IS NOT NULL
),
ever_cleaned AS (
    SELECT DISTINCT id AS video_id FROM stage_results
    WHERE stage = 'clean' AND status IN ('ok', 'rejected')
),
dups AS (
    SELECT id AS video_id FROM (
        SELECT id, status, reason, row_number() OVER (
            PARTITION BY id ORDER BY time DESC, attempt DESC, stage_version DESC) AS rn
        FROM stage_results WHERE stage = 'dedup' AND status IN ('ok', 'rejected')
    ) WHERE rn = 1 AND reason IN ('exact_duplicate', 'near_duplicate')
),
kept AS (
    SELECT DISTINCT unnest(CAST(json_extract(output_json, '$.segment_ids') AS VARCHAR[]))
        AS segment_id
    FROM clean_decisions WHERE status = 'ok'
)
SELECT s.segment_id AS clip_id, s.video_id, coalesce(v.source, s.source) AS source,
       v.source_video_id, v.uri, s.start_s, s.end_s, s.end_s - s.start_s AS duration_s,
       v.fps, v.width, v.height, TRUE AS is_segment, s.method, s.uri AS clip_uri,
       v.duration_s AS video_duration_s,
       CAST(row_number() OVER (PARTITION BY s.video_id ORDER BY s.start_s, s.segment_id) - 1
            AS INTEGER) AS clip_index
FROM segments AS s LEFT JOIN videos AS v ON v.video_id = s.video_id
WHERE (s.segment_id IN (SELECT segment_id FROM kept)
       OR s.video_id NOT IN (SELECT video_id FROM decided))
  AND s.video_id NOT IN (SELECT video_id FROM dups)
UNION ALL
SELECT v.video_id AS clip_id, v.video_id, v.source, v.source_video_id, v.uri,
       0.0 AS start_s, v.duration_s AS end_s, v.duration_s, v.fps, v.width, v.height,
       FALSE AS is_segment, NULL AS method, NULL AS clip_uri, v.duration_s AS video_duration_s,
       CAST(NULL AS INTEGER) AS clip_index
FROM videos AS v
WHERE v.video_id NOT IN (SELECT video_id FROM segments)
  AND v.video_id NOT IN (SELECT video_id FROM ever_cleaned)
  AND v.video_id NOT IN (SELECT video_id FROM dups)
"""


#: The catalog's ``clips`` view (D1): see :func:`clips_sql`.
CLIPS_VIEW = clips_sql()


def _model_results(stage: str, columns: str) -> str:
    """A result view of a model stage: latest ok/rejected result per (clip, version), with
    ``newest_version`` marking the version downstream stages read by default (D3)."""
    return f"""
SELECT r.id AS clip_id,
       coalesce(json_extract_string(r.output_json, '$.video_id'), c.video_id) AS video_id,
       r.stage_version, r.status, r.reason,{columns}
       json_extract_string(r.output_json, '$.model') AS model,
       r.stage_version = (
           SELECT stage_version FROM stage_results WHERE stage = '{stage}' AND status = 'ok'
           GROUP BY stage_version ORDER BY max(time) DESC, stage_version DESC LIMIT 1
       ) AS newest_version,
       r.run_id, r.time, r.output_json
FROM stage_status AS r LEFT JOIN clips AS c ON c.clip_id = r.id
WHERE r.stage = '{stage}' AND r.status IN ('ok', 'rejected')
"""


#: describe: one row per (clip, describe version): the MLLM's description.
DESCRIPTIONS_VIEW = _model_results("describe", """
       json_extract_string(r.output_json, '$.description') AS description,""")

#: verify: the VLM's verdict and score, CLIP similarity, unsupported claims.
VERIFICATIONS_VIEW = _model_results("verify", """
       json_extract_string(r.output_json, '$.verdict') AS verdict,
       TRY_CAST(json_extract(r.output_json, '$.score') AS DOUBLE) AS score,
       TRY_CAST(json_extract(r.output_json, '$.clip_mean') AS DOUBLE) AS clip_mean,
       TRY_CAST(json_extract(r.output_json, '$.clip_max') AS DOUBLE) AS clip_max,
       TRY_CAST(json_extract(r.output_json, '$.unsupported_claims') AS VARCHAR[])
           AS unsupported_claims,""")

#: judge: anomaly flag, taxonomy category, confidence and the model's one-sentence reason
#: (``reason`` is the rejection reason of a rejected item).
JUDGEMENTS_VIEW = _model_results("judge", """
       TRY_CAST(json_extract(r.output_json, '$.anomaly') AS BOOLEAN) AS anomaly,
       json_extract_string(r.output_json, '$.category') AS category,
       json_extract_string(r.output_json, '$.top_level') AS top_level,
       TRY_CAST(json_extract(r.output_json, '$.confidence') AS DOUBLE) AS confidence,
       json_extract_string(r.output_json, '$.reason') AS judge_reason,""")

#: One row per (dataset, clip): its latest human annotation, else its latest model one.
#: ``clip_id`` is ``annotations.video_id`` (a clip id, D1), ``video_id`` the parent video;
#: ``description_source`` says whether a human row's description was written by the reviewer
#: or is model text the reviewer accepted (NULL for model rows and rows stored before it).
FINAL_LABELS_VIEW = """
SELECT a.dataset, a.video_id AS clip_id, coalesce(c.video_id, a.video_id) AS video_id,
       a.category, a.is_anomaly, a.description, a.description_source, a.spans, a.split,
       a.annotator_kind, a.annotator, a.annotation_id, a.created_at, a.n_human, a.n_model
FROM (
    SELECT *,
           row_number() OVER (
               PARTITION BY dataset, video_id
               ORDER BY annotator_kind = 'human' DESC, created_at DESC, annotation_id
           ) AS rn,
           count(*) FILTER (WHERE annotator_kind = 'human')
               OVER (PARTITION BY dataset, video_id) AS n_human,
           count(*) FILTER (WHERE annotator_kind = 'model')
               OVER (PARTITION BY dataset, video_id) AS n_model
    FROM annotations
) AS a LEFT JOIN clips AS c ON c.clip_id = a.video_id
WHERE a.rn = 1
"""

#: View name -> SQL, in creation order (a view may use the ones before it).
RESULT_VIEWS: dict[str, str] = {
    "stage_status": STAGE_STATUS_VIEW,
    "clips": CLIPS_VIEW,
    "descriptions": DESCRIPTIONS_VIEW,
    "verifications": VERIFICATIONS_VIEW,
    "judgements": JUDGEMENTS_VIEW,
    "final_labels": FINAL_LABELS_VIEW,
}


# ------------------------------------------------------------------ store internals
#: DuckDB variable holding a snapshot's file lists (a struct: table -> paths), set per cursor.
SNAPSHOT_VARIABLE = "__prevad_snapshot"

#: A table's Parquet files in the catalog (``{glob}`` from the store itself: any DuckDB that
#: opens catalog.duckdb sees new commits).
CATALOG_SOURCE = "read_parquet('{glob}', hive_partitioning = false, union_by_name = true)"

#: A table's files in the cursor's snapshot (``Store.query``).
SNAPSHOT_SOURCE = (
    f"read_parquet(getvariable('{SNAPSHOT_VARIABLE}').{{view}}, hive_partitioning = false, "
    "union_by_name = true)"
)

#: Part files handed to a key lookup as the parameter ``$files``.
FILES_SOURCE = "read_parquet($files, hive_partitioning = false, union_by_name = true)"

#: One view per table over :func:`typed_select` of its files.
TABLE_VIEW = "CREATE OR REPLACE VIEW {view} AS {select}"

#: A stored column for SQL: (name, DuckDB type, SQL literal that rows without it read as, or
#: None for NULL).
Column = tuple[str, str, str | None]


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB type that DuckDB reads a Parquet column of Arrow type ``t`` as.

    Raises:
        TypeError: a type the store does not use.
    """
    if pa.types.is_list(t):
        return f"{duckdb_type(t.value_type)}[]"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP WITH TIME ZONE" if t.tz else "TIMESTAMP"
    for check, name in ((pa.types.is_string, "VARCHAR"), (pa.types.is_boolean, "BOOLEAN"),
                        (pa.types.is_int64, "BIGINT"), (pa.types.is_int32, "INTEGER"),
                        (pa.types.is_float64, "DOUBLE")):
        if check(t):
            return name
    raise TypeError(f"no DuckDB type for Arrow type {t}")


def sql_literal(value: Any) -> str | None:
    """A fill value as SQL (None for NULL). Only strings and numbers are used as fills."""
    if value is None:
        return None
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    raise TypeError(f"no SQL literal for fill value {value!r}")


def typed_select(columns: Sequence[Column], source: str) -> str:
    """SELECT exactly ``columns`` from ``source`` (a ``read_parquet(..., union_by_name)``).

    Files written before a column was added lack it, and while no file of the source has it
    ``SELECT *`` would have no such column at all: the source is unioned by name with an empty
    relation of every column's type, so a missing column reads as NULL (or its fill value) in
    any file set, and columns that are not the table's never show. DuckDB drops the empty side
    and still pushes filters and projections into the Parquet scan.
    """
    empty = ", ".join(f"NULL::{t} AS {_ident(n)}" for n, t, _ in columns)
    cols = ", ".join(_ident(n) if fill is None else f"coalesce({_ident(n)}, {fill}) AS {_ident(n)}"
                     for n, _, fill in columns)
    return (f"SELECT {cols} FROM (SELECT {empty} WHERE false UNION ALL BY NAME "
            f"SELECT * FROM {source})")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _row(alias: str, cols: Sequence[str]) -> str:
    return "row(" + ", ".join(f"{alias}.{_ident(c)}" for c in cols) + ")"


def batch_duplicates(key: Sequence[str], content: Sequence[str]) -> str:
    """SQL over the registered ``__batch``: rows repeating an earlier row's key.

    Columns: ``__i`` (the repeat), ``first`` (the earlier row), ``same`` (identical content).
    """
    part = ", ".join(_ident(k) for k in key)
    return f"""
SELECT __i, first, same FROM (
    SELECT __i,
           first_value(__i) OVER w AS first,
           {_row('b', content)} IS NOT DISTINCT FROM first_value({_row('b', content)}) OVER w
               AS same,
           row_number() OVER w AS rn
    FROM __batch AS b
    WINDOW w AS (PARTITION BY {part} ORDER BY __i)
) WHERE rn > 1
"""


def stored_matches(key: Sequence[str], content: Sequence[str], columns: Sequence[Column]
                   ) -> str:
    """SQL: batch rows (``__batch``) whose key is in the part files ``$files``.

    Columns: ``__i`` (batch row), ``same`` (identical content). Only the key and content columns
    are read, and the join's key filter lets Parquet statistics skip what cannot match.
    ``columns``: the table's (:func:`typed_select`: files without an added column compare as
    NULL, or the column's fill value).
    """
    on = " AND ".join(f"b.{_ident(k)} = s.{_ident(k)}" for k in key)
    return f"""
SELECT b.__i, {_row('b', content)} IS NOT DISTINCT FROM {_row('s', content)} AS same
FROM __batch AS b
JOIN ({typed_select(columns, FILES_SOURCE)}) AS s ON {on}
"""


def exact_repeats(content: Sequence[str]) -> str:
    """SQL over ``__batch``: rows (``__i``) whose content columns (key included) repeat an
    earlier row exactly (compaction drops them)."""
    cols = ", ".join(_ident(c) for c in content)
    return f"""
SELECT __i FROM __batch
QUALIFY row_number() OVER (PARTITION BY {cols} ORDER BY __i) > 1
"""


def key_lookup(key: Sequence[str], columns: Sequence[str], table: Sequence[Column]) -> str:
    """SQL: stored rows (from ``$files``) whose ``key`` columns match a row of ``__batch``.

    ``table``: the table's columns (:func:`typed_select`).
    """
    on = " AND ".join(f"b.{_ident(k)} = s.{_ident(k)}" for k in key)
    cols = ", ".join(f"s.{_ident(c)}" for c in columns)
    return f"""
SELECT {cols}
FROM ({typed_select(table, FILES_SOURCE)}) AS s
SEMI JOIN (SELECT DISTINCT * FROM __batch) AS b ON {on}
"""


#: Names of the catalog's views (``prevad verify``).
CATALOG_VIEWS = "SELECT view_name FROM duckdb_views()"


#: Versions of a stage that have ok results (a downstream stage's version includes them, so a
#: re-run of the upstream stage under a new version re-runs it). Parameter: $stage.
OK_VERSIONS_OF_STAGE = """
SELECT DISTINCT stage_version FROM stage_results
WHERE stage = $stage::VARCHAR AND status = 'ok'
ORDER BY stage_version
"""


def ok_versions(store: Store, stage: str) -> list[str]:
    """Versions of ``stage`` with at least one ok result, sorted."""
    return store.query(OK_VERSIONS_OF_STAGE, {"stage": stage}).column("stage_version").to_pylist()


#: The version of a stage whose newest ``ok`` result is the most recent (docs/DECISIONS.md, D3).
#: Parameter: $stage.
NEWEST_OK_VERSION = """
SELECT stage_version FROM stage_results
WHERE stage = $stage::VARCHAR AND status = 'ok'
GROUP BY stage_version
ORDER BY max(time) DESC, stage_version DESC
LIMIT 1
"""


#: The latest ``ok`` output per item of ONE stage version (D3: a downstream stage reads one
#: upstream version). Parameters: $stage, $stage_version.
OK_OUTPUTS_OF_VERSION = """
SELECT id, stage_version, output_json, time FROM (
    SELECT id, stage_version, output_json, time, row_number() OVER (
        PARTITION BY id ORDER BY time DESC, attempt DESC
    ) AS rn
    FROM stage_results
    WHERE stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR AND status = 'ok'
)
WHERE rn = 1
ORDER BY id
"""


def newest_ok_version(store: Store, stage: str) -> str | None:
    """The upstream version a downstream stage reads by default (D3), or None when ``stage``
    has no ok result. A failed or partial run of another version never changes the answer
    unless it produced ok results later than every other version's.
    """
    rows = store.query(NEWEST_OK_VERSION, {"stage": stage}).column("stage_version").to_pylist()
    return rows[0] if rows else None


# ------------------------------------------------------------------ clips and duplicates
# (clean / dedup / lagovad extract; D1 in docs/DECISIONS.md)

#: Alias kept for the clips code: the newest version of a stage with ok results.
NEWEST_OK_STAGE_VERSION = NEWEST_OK_VERSION

#: Items that one dedup version rejected as copies (exact or near), among $ids. Parameters:
#: $stage ('dedup'), $stage_version, $ids (VARCHAR[]). ``output_json``: duplicate_of, distance.
DUPLICATES_OF_IDS = """
SELECT id, any_value(output_json) AS output_json FROM stage_results
WHERE stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR
  AND status = 'rejected' AND reason IN ('exact_duplicate', 'near_duplicate')
  AND list_contains($ids::VARCHAR[], id)
GROUP BY id
"""

#: Every item that one dedup version rejected as a copy. Parameters: $stage, $stage_version.
DUPLICATES_OF_VERSION = """
SELECT id, any_value(output_json) AS output_json FROM stage_results
WHERE stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR
  AND status = 'rejected' AND reason IN ('exact_duplicate', 'near_duplicate')
GROUP BY id
"""

#: Every result of one dedup version, oldest first (the duplicate index is rebuilt from it).
#: Parameters: $stage ('dedup'), $stage_version.
DEDUP_DECISIONS = """
SELECT id, status, reason, output_json FROM stage_results
WHERE stage = $stage::VARCHAR AND stage_version = $stage_version::VARCHAR
  AND status IN ('ok', 'rejected')
ORDER BY time, id
"""

#: Videos with a file, oldest acquisition first (dedup keeps the first-acquired copy).
VIDEOS_BY_ACQUISITION = """
SELECT video_id, uri, created_at FROM videos
WHERE uri IS NOT NULL AND uri <> ''
ORDER BY created_at, video_id
"""

#: Every clip (D1), optionally of one pinned clean version. Parameter: $clean_version (NULL =
#: each video's latest clean decision of any version). Same rule and columns as the catalog's
#: ``clips`` view (:data:`CLIPS_VIEW`), ordered by video and start.
CLIPS_OF_VIDEOS = clips_sql("$clean_version::VARCHAR") + "ORDER BY video_id, start_s, clip_id\n"
