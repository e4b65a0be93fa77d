"""Typed records of the dataset layer, each with its explicit pyarrow schema side by side.

Every record is a slotted, frozen dataclass validated on construction. ``to_table`` /
``from_table`` convert lists of records to and from ``pa.Table`` with the exact schema.

Timestamps (``created_at``, ``time``) are UTC and are bookkeeping: the store ignores them when it
decides whether a row is identical to one already stored (see :data:`BOOKKEEPING_COLUMNS`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyarrow as pa

from prevad import taxonomy
from prevad.errors import SchemaMismatchError, ValidationError

#: uuid5 namespace of every PreVAD id (fixed forever: ids must be reproducible).
PREVAD_NAMESPACE = uuid.UUID("6f1c1d7e-4f0a-5b8e-9a51-70726576ad00")

STAGE_STATUSES = ("ok", "rejected", "failed")
SPLITS = ("train", "val", "test")
ANNOTATOR_KINDS = ("human", "model")
#: Where a human row's description comes from: written (or edited) by the reviewer, or the
#: model's pre-filled text accepted unchanged. None: no description, or a model/imported row.
DESCRIPTION_SOURCES = ("reviewer", "model-accepted")
#: columns ignored when comparing a new row with a stored one of the same key.
BOOKKEEPING_COLUMNS = ("created_at", "time")
#: tolerance on span bounds: the official UCF-Crime file has ends up to 1.0008 (frame rounding).
SPAN_TOLERANCE = 0.01

TS = pa.timestamp("us", tz="UTC")
SPANS = pa.list_(pa.list_(pa.float64()))


def utcnow() -> datetime:
    """The current time, UTC, microsecond resolution (what Parquet stores)."""
    return datetime.now(UTC)


def _fmt(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def video_id_for(
    source: str, source_video_id: str, start_s: float | None = None, end_s: float | None = None
) -> str:
    """Deterministic video id: uuid5 of source + source video id + span (seconds, or none)."""
    name = "\x1f".join([source, source_video_id, _fmt(start_s), _fmt(end_s)])
    return str(uuid.uuid5(PREVAD_NAMESPACE, name))


def make_id(*parts: Any) -> str:
    """Deterministic uuid5 of arbitrary parts (candidate, segment and annotation ids)."""
    return str(uuid.uuid5(PREVAD_NAMESPACE, "\x1f".join(_part(p) for p in parts)))


def _part(p: Any) -> str:
    return _fmt(p) if isinstance(p, float) else ("" if p is None else str(p))


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValidationError(msg)


def _nonempty(obj: Any, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _require(
            isinstance(v, str) and v != "",
            f"{type(obj).__name__}.{n} must be a non-empty string, got {v!r}",
        )


def _nonneg(obj: Any, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _require(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0),
            f"{type(obj).__name__}.{n} must be a number >= 0 or None, got {v!r}",
        )


def _json_or_none(obj: Any, name: str) -> None:
    v = getattr(obj, name)
    if v is None:
        return
    try:
        json.loads(v)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{type(obj).__name__}.{name} must be a JSON string or None, got {v!r} ({exc})"
        ) from None


def _utc(obj: Any, name: str) -> None:
    v = getattr(obj, name)
    _require(isinstance(v, datetime), f"{type(obj).__name__}.{name} must be a datetime, got {v!r}")
    object.__setattr__(obj, name, v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC))


def check_spans(spans: Any, where: str = "spans") -> list[list[float]]:
    """Validate relative spans: a list of [start, end], 0 <= start <= end <= 1.

    Bounds tolerate :data:`SPAN_TOLERANCE` (official files have ends like 1.0008) and are stored
    unchanged so exports round-trip exactly.

    Raises:
        ValidationError: naming the offending span.
    """
    _require(
        isinstance(spans, list | tuple), f"{where} must be a list of [start, end], got {spans!r}"
    )
    out: list[list[float]] = []
    for i, s in enumerate(spans):
        ok = isinstance(s, list | tuple) and len(s) == 2 and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in s
        )
        _require(ok, f"{where}[{i}] must be a pair of finite numbers [start, end], got {s!r}")
        a, b = float(s[0]), float(s[1])
        _require(
            -SPAN_TOLERANCE <= a <= b <= 1 + SPAN_TOLERANCE,
            f"{where}[{i}] = {[a, b]} breaks the rule 0 <= start <= end <= 1 (relative span)",
        )
        out.append([a, b])
    return out


@dataclass(slots=True, frozen=True)
class SourceCandidate:
    """A video found at a source (search hit, list entry) before download."""

    candidate_id: str
    source: str
    source_video_id: str
    url: str | None = None
    title: str | None = None
    query: str | None = None
    duration_s: float | None = None
    metadata_json: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        _nonempty(self, "candidate_id", "source", "source_video_id")
        _nonneg(self, "duration_s")
        _json_or_none(self, "metadata_json")
        _utc(self, "created_at")


CANDIDATE_SCHEMA = pa.schema([
    ("candidate_id", pa.string()), ("source", pa.string()), ("source_video_id", pa.string()),
    ("url", pa.string()), ("title", pa.string()), ("query", pa.string()),
    ("duration_s", pa.float64()), ("metadata_json", pa.string()), ("created_at", TS),
])


@dataclass(slots=True, frozen=True)
class Video:
    """A video (or a span of a source video). ``video_id`` = :func:`video_id_for` of the rest.

    ``feature_uri`` (added field) keeps a feature path given by an imported annotation file.
    """

    video_id: str
    source: str
    source_video_id: str
    start_s: float | None = None
    end_s: float | None = None
    uri: str | None = None
    duration_s: float | None = None
    fps: float | None = None
    n_frames: int | None = None
    width: int | None = None
    height: int | None = None
    created_at: datetime = field(default_factory=utcnow)
    feature_uri: str | None = None

    def __post_init__(self) -> None:
        _nonempty(self, "video_id", "source", "source_video_id")
        _nonneg(self, "start_s", "end_s", "duration_s", "fps", "n_frames", "width", "height")
        if self.start_s is not None and self.end_s is not None:
            _require(
                self.start_s <= self.end_s,
                f"Video span start_s={self.start_s} must be <= end_s={self.end_s}",
            )
        _utc(self, "created_at")

    @classmethod
    def create(cls, source: str, source_video_id: str, start_s: float | None = None,
               end_s: float | None = None, **kw: Any) -> Video:
        """Build a Video whose id is derived from source, source video id and span."""
        vid = video_id_for(source, source_video_id, start_s, end_s)
        return cls(vid, source, source_video_id, start_s, end_s, **kw)


VIDEO_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("source", pa.string()), ("source_video_id", pa.string()),
    ("start_s", pa.float64()), ("end_s", pa.float64()), ("uri", pa.string()),
    ("duration_s", pa.float64()), ("fps", pa.float64()), ("n_frames", pa.int64()),
    ("width", pa.int32()), ("height", pa.int32()), ("created_at", TS),
    ("feature_uri", pa.string()),
])


@dataclass(slots=True, frozen=True)
class Segment:
    """A trimmed segment [start_s, end_s] (seconds) of a stored video."""

    segment_id: str
    video_id: str
    source: str
    start_s: float
    end_s: float
    uri: str | None = None
    method: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        _nonempty(self, "segment_id", "video_id", "source")
        _nonneg(self, "start_s", "end_s")
        _require(
            self.start_s <= self.end_s,
            f"Segment start_s={self.start_s} must be <= end_s={self.end_s}",
        )
        _utc(self, "created_at")


SEGMENT_SCHEMA = pa.schema([
    ("segment_id", pa.string()), ("video_id", pa.string()), ("source", pa.string()),
    ("start_s", pa.float64()), ("end_s", pa.float64()), ("uri", pa.string()),
    ("method", pa.string()), ("created_at", TS),
])


@dataclass(slots=True, frozen=True)
class StageResult:
    """One attempt of one curation stage on one input id (long format)."""

    id: str
    stage: str
    stage_version: str
    status: str
    reason: str | None = None
    error: str | None = None
    output_json: str | None = None
    attempt: int = 1
    run_id: str | None = None
    time: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        _nonempty(self, "id", "stage", "stage_version")
        _require(
            self.status in STAGE_STATUSES,
            f"StageResult.status must be one of {STAGE_STATUSES}, got {self.status!r}",
        )
        _require(
            isinstance(self.attempt, int) and self.attempt >= 1,
            f"StageResult.attempt must be an integer >= 1, got {self.attempt!r}",
        )
        _json_or_none(self, "output_json")
        _utc(self, "time")

    @property
    def output(self) -> Any:
        """The decoded ``output_json`` (None if absent)."""
        return None if self.output_json is None else json.loads(self.output_json)


STAGE_RESULT_SCHEMA = pa.schema([
    ("id", pa.string()), ("stage", pa.string()), ("stage_version", pa.string()),
    ("status", pa.string()), ("reason", pa.string()), ("error", pa.string()),
    ("output_json", pa.string()), ("attempt", pa.int32()), ("run_id", pa.string()),
    ("time", TS),
])


@dataclass(slots=True, frozen=True)
class Annotation:
    """A label of a video: category, anomaly flag, description, relative spans, split.

    For dataset "prevad" the category is checked against (and canonicalised by)
    :mod:`prevad.taxonomy`; benchmark categories are checked by :mod:`prevad.interop` against the
    benchmark's own class list. Added fields: ``descriptions`` (all descriptions given by the
    source; ``description`` is the first) and ``source_index`` (position in the imported file,
    used to export in the original order), ``description_source`` (human review rows: whether
    the description was written by the reviewer, "reviewer", or is the model's pre-filled text
    accepted unchanged, "model-accepted"; None otherwise).
    """

    annotation_id: str
    video_id: str
    dataset: str
    annotator_kind: str
    annotator: str
    category: str
    is_anomaly: bool
    description: str | None = None
    spans: list[list[float]] = field(default_factory=list)
    split: str = "train"
    created_at: datetime = field(default_factory=utcnow)
    descriptions: list[str] | None = None
    source_index: int | None = None
    description_source: str | None = None

    def __post_init__(self) -> None:
        _nonempty(self, "annotation_id", "video_id", "dataset", "annotator", "category")
        _require(
            self.annotator_kind in ANNOTATOR_KINDS,
            f"Annotation.annotator_kind must be one of {ANNOTATOR_KINDS}, "
            f"got {self.annotator_kind!r}",
        )
        _require(
            self.split in SPLITS, f"Annotation.split must be one of {SPLITS}, got {self.split!r}"
        )
        _require(
            isinstance(self.is_anomaly, bool),
            f"Annotation.is_anomaly must be a bool, got {self.is_anomaly!r}",
        )
        object.__setattr__(self, "spans", check_spans(self.spans, "Annotation.spans"))
        if self.descriptions is not None:
            _require(
                isinstance(self.descriptions, list | tuple)
                and all(isinstance(d, str) for d in self.descriptions),
                f"Annotation.descriptions must be a list of strings or None, "
                f"got {self.descriptions!r}",
            )
            object.__setattr__(self, "descriptions", list(self.descriptions))
        _require(
            self.description_source is None or self.description_source in DESCRIPTION_SOURCES,
            f"Annotation.description_source must be one of {DESCRIPTION_SOURCES} or None, "
            f"got {self.description_source!r}",
        )
        _require(
            self.description_source is None or self.description is not None,
            f"Annotation.description_source={self.description_source!r} needs a description",
        )
        if self.dataset == "prevad":
            cat = taxonomy.canonical(self.category)
            object.__setattr__(self, "category", cat)
            _require(
                (cat == taxonomy.NORMAL) != self.is_anomaly,
                f"Annotation category {cat!r} contradicts is_anomaly={self.is_anomaly} "
                f"(Normal <=> not an anomaly)",
            )
        _utc(self, "created_at")

    @property
    def parent_category(self) -> str | None:
        """Top-level class for PreVAD sub-categories, else None."""
        if self.dataset != "prevad":
            return None
        return taxonomy.parent(self.category)


ANNOTATION_SCHEMA = pa.schema([
    ("annotation_id", pa.string()), ("video_id", pa.string()), ("dataset", pa.string()),
    ("annotator_kind", pa.string()), ("annotator", pa.string()), ("category", pa.string()),
    ("is_anomaly", pa.bool_()), ("description", pa.string()), ("spans", SPANS),
    ("split", pa.string()), ("created_at", TS), ("descriptions", pa.list_(pa.string())),
    ("source_index", pa.int64()), ("description_source", pa.string()),
])


@dataclass(slots=True, frozen=True)
class Feature:
    """A per-video feature file [count, dim] of one model.

    ``location`` is relative to the store root. ``dtype`` (added field) is the on-disk dtype,
    "float32" or "float16"; :meth:`prevad.Store.load_features` always returns float32.
    Frame ``i`` of the sequence is source frame ``frame_offset + i * frame_stride``.
    """

    video_id: str
    model_id: str
    frame_stride: int
    frame_offset: int
    frame_size: int
    count: int
    dim: int
    location: str
    created_at: datetime = field(default_factory=utcnow)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _nonempty(self, "video_id", "model_id", "location")
        for n in ("frame_stride", "frame_size", "dim"):
            v = getattr(self, n)
            _require(isinstance(v, int) and v >= 1, f"Feature.{n} must be an int >= 1, got {v!r}")
        for n in ("frame_offset", "count"):
            v = getattr(self, n)
            _require(isinstance(v, int) and v >= 0, f"Feature.{n} must be an int >= 0, got {v!r}")
        _require(
            self.dtype in ("float32", "float16"),
            f"Feature.dtype must be 'float32' or 'float16', got {self.dtype!r}",
        )
        _utc(self, "created_at")


FEATURE_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("model_id", pa.string()), ("frame_stride", pa.int32()),
    ("frame_offset", pa.int32()), ("frame_size", pa.int32()), ("count", pa.int64()),
    ("dim", pa.int32()), ("location", pa.string()), ("created_at", TS), ("dtype", pa.string()),
])


@dataclass(slots=True, frozen=True)
class Score:
    """One model score at one feature step for one class of an anomaly definition."""

    video_id: str
    definition_id: str
    definition_json: str
    checkpoint: str
    class_name: str
    feature_index: int
    time_s: float | None
    anomaly_score: float
    class_prob: float | None = None
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        _nonempty(self, "video_id", "definition_id", "checkpoint", "class_name")
        _json_or_none(self, "definition_json")
        _require(
            isinstance(self.feature_index, int) and self.feature_index >= 0,
            f"Score.feature_index must be an integer >= 0, got {self.feature_index!r}",
        )
        _nonneg(self, "time_s")
        for n in ("anomaly_score", "class_prob"):
            v = getattr(self, n)
            _require(
                (v is None and n == "class_prob") or (isinstance(v, int | float) and 0 <= v <= 1),
                f"Score.{n} must be a probability in [0, 1], got {v!r}",
            )
        _utc(self, "created_at")


SCORE_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("definition_id", pa.string()), ("definition_json", pa.string()),
    ("checkpoint", pa.string()), ("class_name", pa.string()), ("feature_index", pa.int64()),
    ("time_s", pa.float64()), ("anomaly_score", pa.float64()), ("class_prob", pa.float64()),
    ("created_at", TS),
])

SCHEMAS: dict[type, pa.Schema] = {
    SourceCandidate: CANDIDATE_SCHEMA,
    Video: VIDEO_SCHEMA,
    Segment: SEGMENT_SCHEMA,
    StageResult: STAGE_RESULT_SCHEMA,
    Annotation: ANNOTATION_SCHEMA,
    Feature: FEATURE_SCHEMA,
    Score: SCORE_SCHEMA,
}

#: Fields added to a record after stores were first written, each with the value that a row
#: stored before the field existed reads as (None for a nullable field). Part files and
#: ``_schema.parquet`` written by older code lack these columns; every reader fills them in
#: (:class:`prevad.Store`, its views, ``prevad verify``: docs/ARCHITECTURE.md, "Schema
#: evolution"). A new field goes at the end of its schema and gets an entry here; any other
#: change of a stored schema (a removed, renamed or retyped column) needs a migration.
ADDED_FIELDS: dict[type, dict[str, Any]] = {
    Video: {"feature_uri": None},
    Annotation: {"descriptions": None, "source_index": None, "description_source": None},
    Feature: {"dtype": "float32"},
}


def added_fields(cls: type) -> dict[str, Any]:
    """Added fields of a record class -> the value older rows read as (see ADDED_FIELDS)."""
    return ADDED_FIELDS.get(cls, {})


def required_columns(cls: type) -> list[str]:
    """Columns every stored part file of the record's table has (all but the added ones)."""
    added = added_fields(cls)
    return [n for n in SCHEMAS[cls].names if n not in added]

R = TypeVar("R")


def schema_of(cls: type) -> pa.Schema:
    """The pyarrow schema of a record class."""
    return SCHEMAS[cls]


def check_schema(table: pa.Table, schema: pa.Schema, what: str = "table") -> None:
    """Raise SchemaMismatchError unless ``table`` has exactly ``schema``'s columns and types."""
    got = {f.name: f.type for f in table.schema}
    for f in schema:
        if f.name not in got:
            raise SchemaMismatchError(
                f"{what}: column {f.name!r} is missing; expected type {f.type}"
            )
        if not got[f.name].equals(f.type):
            raise SchemaMismatchError(
                f"{what}: column {f.name!r} has type {got[f.name]}, expected {f.type}"
            )
    extra = [n for n in got if n not in schema.names]
    if extra:
        raise SchemaMismatchError(
            f"{what}: unexpected column {extra[0]!r}; expected exactly {schema.names}"
        )


def to_table(records: list[Any], cls: type | None = None) -> pa.Table:
    """Records -> pa.Table with the record's exact schema (all records of one class)."""
    if cls is None:
        if not records:
            raise ValueError("to_table needs cls when records is empty")
        cls = type(records[0])
    schema = SCHEMAS[cls]
    for r in records:
        if type(r) is not cls:
            raise ValidationError(
                f"to_table: expected {cls.__name__} records, got {type(r).__name__}"
            )
    cols = {f.name: [getattr(r, f.name) for r in records] for f in schema}
    return pa.table(cols, schema=schema)


def from_table(table: pa.Table, cls: type[R]) -> list[R]:
    """pa.Table (exact schema) -> validated records."""
    check_schema(table, SCHEMAS[cls], cls.__name__)
    return [cls(**row) for row in table.to_pylist()]


def replace(record: R, **changes: Any) -> R:
    """A copy of ``record`` with fields changed (validated again)."""
    return dataclasses.replace(record, **changes)  # type: ignore[type-var]
