"""PreVAD dataset layer: typed records, taxonomy, Parquet + DuckDB store, interop, stats, cards."""

from prevad import taxonomy
from prevad.errors import (
    CorruptStoreError,
    DuplicateIdError,
    FeatureFileMissingError,
    MalformedFileError,
    PrevadError,
    QueryError,
    ReadOnlyQueryError,
    ReadOnlyStoreError,
    SchemaMismatchError,
    StoreNotFoundError,
    UnknownCategoryError,
    UnknownTableError,
    ValidationError,
)
from prevad.queries import dataset_counts, latest_status, work_list
from prevad.records import (
    Annotation,
    Feature,
    Score,
    Segment,
    SourceCandidate,
    StageResult,
    Video,
    video_id_for,
)
from prevad.store import TABLES, AppendResult, Store

__all__ = [
    "TABLES",
    "Annotation",
    "AppendResult",
    "CorruptStoreError",
    "DuplicateIdError",
    "Feature",
    "FeatureFileMissingError",
    "MalformedFileError",
    "PrevadError",
    "QueryError",
    "ReadOnlyQueryError",
    "ReadOnlyStoreError",
    "SchemaMismatchError",
    "Score",
    "Segment",
    "SourceCandidate",
    "StageResult",
    "Store",
    "StoreNotFoundError",
    "UnknownCategoryError",
    "UnknownTableError",
    "ValidationError",
    "Video",
    "dataset_counts",
    "latest_status",
    "taxonomy",
    "video_id_for",
    "work_list",
]
