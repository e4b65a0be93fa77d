"""The PreVAD store: hive-partitioned Parquet tables + a DuckDB catalog of views.

Layout under ``root``::

    store.json                          marker + format version
    catalog.duckdb                      views named like the tables, over the Parquet files
    .lock                               fcntl lock taken by writers
    tables/<table>/_schema.parquet      empty file with the table's schema (views work when empty)
    tables/<table>/<col>=<value>/part-<time>-<uuid>.parquet
    features/<model_id>/<video_id>.npy

Appends are all-or-nothing: each partition's rows go to a hidden temp file first (invisible to
the views, whose glob only matches ``*.parquet``); then a journal naming the renames is written
atomically (the commit point); then the temp files are renamed and the journal is removed. A crash
before the journal leaves the store unchanged (orphan temp files are ignored and cleaned);
a crash after it is rolled forward by the next access through :class:`Store`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prevad import records as rec
from prevad.errors import (
    DuplicateIdError,
    FeatureFileMissingError,
    QueryError,
    ReadOnlyQueryError,
    SchemaMismatchError,
    StoreNotFoundError,
    UnknownTableError,
    ValidationError,
)
from prevad.io import atomic_write, atomic_write_json, fsync_dir

FORMAT = "prevad-store"
FORMAT_VERSION = 1
JOURNAL = "_journal.json"
TMP_SUFFIX = ".parquet.tmp"


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A store table: its record class, key columns and partition column."""

    name: str
    record: type
    key: tuple[str, ...]
    partition: str

    @property
    def schema(self) -> pa.Schema:
        """The table's exact pyarrow schema."""
        return rec.SCHEMAS[self.record]


TABLES: dict[str, TableSpec] = {
    s.name: s
    for s in (
        TableSpec("candidates", rec.SourceCandidate, ("candidate_id",), "source"),
        TableSpec("videos", rec.Video, ("video_id",), "source"),
        TableSpec("segments", rec.Segment, ("segment_id",), "source"),
        TableSpec(
            "stage_results", rec.StageResult, ("id", "stage", "stage_version", "attempt"), "stage"
        ),
        TableSpec("annotations", rec.Annotation, ("annotation_id",), "dataset"),
        TableSpec("features", rec.Feature, ("video_id", "model_id"), "model_id"),
        TableSpec(
            "scores",
            rec.Score,
            ("video_id", "definition_id", "checkpoint", "class_name", "feature_index"),
            "definition_id",
        ),
    )
}

#: Statement types a store query may contain (checked by DuckDB's own parser).
READ_ONLY_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Outcome of :meth:`Store.append`: rows written and identical rows skipped."""

    written: int
    skipped: int


def _quote(value: Any) -> str:
    """Partition folder value: percent-encoded so any id is a safe single path component."""
    return urllib.parse.quote(str(value), safe="")


def _spec(table: str) -> TableSpec:
    if table not in TABLES:
        raise UnknownTableError(f"unknown table {table!r}: must be one of {sorted(TABLES)}")
    return TABLES[table]


class Store:
    """A PreVAD store rooted at a folder. See the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Open an existing store.

        Raises:
            StoreNotFoundError: ``root`` has no ``store.json`` (run :meth:`Store.init`).
        """
        self.root = Path(root).resolve()
        marker = self.root / "store.json"
        if not marker.is_file():
            raise StoreNotFoundError(
                f"{self.root} is not a PreVAD store (no store.json); create it with "
                f"Store.init or `prevad init {root}`"
            )
        meta = json.loads(marker.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise StoreNotFoundError(
                f"{marker} is not a {FORMAT} v{FORMAT_VERSION} marker, got {meta!r}"
            )
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: int | None = None
        if meta.get("root") != str(self.root):
            # The folder moved: views hold absolute globs, rebuild them.
            with self._locked():
                self._write_catalog()
                atomic_write_json(marker, {**meta, "root": str(self.root)})
        self._recover_all()

    # ------------------------------------------------------------------ creation
    @classmethod
    def init(cls, root: str | os.PathLike[str]) -> Store:
        """Create (or complete) a store at ``root`` and open it. Idempotent."""
        path = Path(root).resolve()
        path.mkdir(parents=True, exist_ok=True)
        for spec in TABLES.values():
            schema_file = path / "tables" / spec.name / "_schema.parquet"
            if not schema_file.exists():
                with atomic_write(schema_file) as fh:
                    pq.write_table(spec.schema.empty_table(), fh)
        (path / "features").mkdir(exist_ok=True)
        marker = path / "store.json"
        if not marker.exists() or not (path / "catalog.duckdb").exists():
            store = cls.__new__(cls)
            store.root, store._thread_lock = path, threading.RLock()
            store._lock_depth, store._lock_fd = 0, None
            with store._locked():
                store._write_catalog()
                atomic_write_json(
                    marker, {"format": FORMAT, "version": FORMAT_VERSION, "root": str(path)}
                )
        return cls(path)

    def _write_catalog(self) -> None:
        """(Re)create catalog.duckdb with one view per table over its Parquet files."""
        catalog = self.root / "catalog.duckdb"
        tmp = catalog.with_name(f".catalog.{uuid.uuid4().hex}.duckdb")
        con = duckdb.connect(str(tmp))
        try:
            for spec in TABLES.values():
                glob = str(self.root / "tables" / spec.name / "**" / "*.parquet").replace("'", "''")
                con.execute(
                    f"CREATE OR REPLACE VIEW {spec.name} AS SELECT * FROM read_parquet("
                    f"'{glob}', hive_partitioning = false, union_by_name = true)"
                )
            con.execute("CHECKPOINT")
        finally:
            con.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(tmp) + ".wal")
        os.replace(tmp, catalog)
        fsync_dir(self.root)

    # ------------------------------------------------------------------ locking & recovery
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive store lock (fcntl, across processes; re-entrant within this object)."""
        with self._thread_lock:
            if self._lock_depth == 0:
                fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _table_dir(self, table: str) -> Path:
        return self.root / "tables" / table

    def _recover_all(self) -> None:
        """Finish any committed-but-interrupted append (cheap when there is nothing to do)."""
        pending = [t for t in TABLES if (self._table_dir(t) / JOURNAL).exists()]
        if not pending:
            return
        with self._locked():
            for t in pending:
                self._recover(t)

    def _recover(self, table: str) -> None:
        journal = self._table_dir(table) / JOURNAL
        if not journal.exists():
            return
        for tmp, final in json.loads(journal.read_text())["renames"]:
            tmp_p, final_p = self.root / tmp, self.root / final
            if tmp_p.exists():
                os.replace(tmp_p, final_p)
                fsync_dir(final_p.parent)
        journal.unlink()

    def _clean_orphans(self, table: str) -> None:
        """Remove temp files of appends that crashed before their commit point."""
        for p in self._table_dir(table).rglob(f"*{TMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    # ------------------------------------------------------------------ reading
    def part_files(self, table: str) -> list[Path]:
        """Committed Parquet part files of a table, in write order."""
        _spec(table)
        files = self._table_dir(table).glob("*=*/part-*.parquet")
        return sorted(files, key=lambda p: (p.name, str(p)))

    def read(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole table as a pa.Table with the record's schema (empty if no rows)."""
        spec = _spec(table)
        self._recover_all()
        schema = spec.schema
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        parts = [pq.read_table(p, columns=schema.names, schema=spec.schema) for p in
                 self.part_files(table)]
        if not parts:
            return schema.empty_table()
        return pa.concat_tables(parts).select(schema.names)

    def records(self, table: str) -> list[Any]:
        """The whole table as validated records."""
        return rec.from_table(self.read(table), _spec(table).record)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only DuckDB connection to the catalog (views named like the tables)."""
        self._recover_all()
        return duckdb.connect(str(self.root / "catalog.duckdb"), read_only=True)

    def query(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> pa.Table:
        """Run read-only SQL over the views with bound parameters; returns a pa.Table.

        Raises:
            ReadOnlyQueryError: the SQL contains anything but SELECT / EXPLAIN statements.
            QueryError: DuckDB rejected the query.
        """
        check_read_only(sql)
        con = self.connect()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return con.execute(sql, params or None).to_arrow_table()
        except duckdb.Error as exc:
            msg = str(exc).splitlines()[0]
            if "read-only" in msg.lower():
                raise ReadOnlyQueryError(f"query would write to the store: {msg}") from None
            raise QueryError(f"query failed: {msg}") from None
        finally:
            con.close()

    # ------------------------------------------------------------------ writing
    def append(self, table: str, rows: Sequence[Any] | pa.Table) -> AppendResult:
        """Append records (or a pa.Table with the exact schema) to a table, all or nothing.

        Rows whose key is already stored (or repeated in the batch) with identical content are
        skipped; timestamps (``created_at``, ``time``) are ignored in that comparison.

        Raises:
            UnknownTableError: bad table name.
            SchemaMismatchError: a pa.Table with a missing/extra column or a wrong type.
            ValidationError: a row breaks a record rule.
            DuplicateIdError: a key comes with different content; nothing is written.
        """
        spec = _spec(table)
        batch = self._as_table(spec, rows)
        with self._locked():
            self._recover(table)
            keep, skipped = self._dedup(spec, batch)
            if keep:
                self._commit(spec, batch.take(pa.array(keep, pa.int64())))
        return AppendResult(written=len(keep), skipped=skipped)

    @staticmethod
    def _as_table(spec: TableSpec, rows: Sequence[Any] | pa.Table) -> pa.Table:
        if isinstance(rows, pa.Table):
            rec.check_schema(rows, spec.schema, spec.name)
            rec.from_table(rows, spec.record)  # validate every row
            return rows.select(spec.schema.names).cast(spec.schema)
        rows = list(rows)
        for r in rows:
            if type(r) is not spec.record:
                raise SchemaMismatchError(
                    f"table {spec.name!r} takes {spec.record.__name__} records, "
                    f"got {type(r).__name__}"
                )
        return rec.to_table(rows, spec.record)

    @staticmethod
    def _content(spec: TableSpec, table: pa.Table) -> list[dict[str, Any]]:
        cols = [c for c in spec.schema.names if c not in rec.BOOKKEEPING_COLUMNS]
        return table.select(cols).to_pylist()

    def _dedup(self, spec: TableSpec, batch: pa.Table) -> tuple[list[int], int]:
        """Indices of batch rows to write and the number skipped; raise on conflicts."""
        new = self._content(spec, batch)
        seen: dict[tuple, int] = {}
        keep: list[int] = []
        skipped = 0
        for i, row in enumerate(new):
            k = tuple(row[c] for c in spec.key)
            if k in seen:
                _same_or_raise(spec, k, new[seen[k]], row, "earlier in the same batch")
                skipped += 1
                continue
            seen[k] = i
            keep.append(i)
        stored_keys = self.read(spec.name, columns=spec.key).to_pylist()
        hits = {tuple(r[c] for c in spec.key) for r in stored_keys} & seen.keys()
        if hits:
            stored = {
                tuple(r[c] for c in spec.key): r
                for r in self._content(spec, self.read(spec.name))
                if tuple(r[c] for c in spec.key) in hits
            }
            for k in hits:
                _same_or_raise(spec, k, stored[k], new[seen[k]], "already stored")
            keep = [i for i in keep if tuple(new[i][c] for c in spec.key) not in hits]
            skipped += len(hits)
        return keep, skipped

    def _commit(self, spec: TableSpec, table: pa.Table) -> None:
        """Write one part file per partition value; journal + renames make it all-or-nothing."""
        stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        renames: list[tuple[str, str]] = []
        col = table.column(spec.partition).to_pylist()
        groups: dict[Any, list[int]] = {}
        for i, v in enumerate(col):
            groups.setdefault(v, []).append(i)
        for value, idx in groups.items():
            folder = self._table_dir(spec.name) / f"{spec.partition}={_quote(value)}"
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / f"part-{stamp}.parquet"
            tmp = folder / f".part-{stamp}{TMP_SUFFIX}"
            with open(tmp, "wb") as fh:
                pq.write_table(table.take(pa.array(idx, pa.int64())), fh)
                fh.flush()
                os.fsync(fh.fileno())
            renames.append((str(tmp.relative_to(self.root)), str(final.relative_to(self.root))))
        journal = self._table_dir(spec.name) / JOURNAL
        try:
            atomic_write_json(journal, {"renames": renames})  # commit point
        except BaseException:
            self._clean_orphans(spec.name)
            raise
        self._recover(spec.name)

    # ------------------------------------------------------------------ features
    def feature_path(self, video_id: str, model_id: str) -> str:
        """Location (relative to the root) of a video's feature file for a model."""
        return f"features/{_quote(model_id)}/{_quote(video_id)}.npy"

    def write_features(
        self,
        video_id: str,
        model_id: str,
        array: np.ndarray,
        frame_stride: int = 8,
        frame_offset: int = 4,
        frame_size: int = 224,
        frames: int | None = None,
        dtype: str = "float32",
    ) -> rec.Feature:
        """Save a [T, D] feature array atomically and append its Feature row.

        The array is stored as ``dtype`` ("float32" default, or "float16" to halve disk use);
        :meth:`load_features` returns float32 either way. ``frames`` (the source frame count)
        is accepted for provenance and checked against the array length when given.

        Raises:
            ValidationError: not a finite 2-D array, or ``frames`` inconsistent with T.
            DuplicateIdError: a feature of this (video, model) already exists with other content.
        """
        arr = np.asarray(array)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValidationError(f"features must be a non-empty [T, D] array, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValidationError(f"features of video {video_id!r} contain NaN or inf")
        if dtype not in ("float32", "float16"):
            raise ValidationError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        if frames is not None:
            expected = len(range(frame_offset, frames, frame_stride))
            if expected != arr.shape[0]:
                raise ValidationError(
                    f"{frames} frames with stride {frame_stride} and offset {frame_offset} give "
                    f"{expected} steps, but the array has T={arr.shape[0]}"
                )
        arr = arr.astype(dtype)
        location = self.feature_path(video_id, model_id)
        feat = rec.Feature(video_id, model_id, int(frame_stride), int(frame_offset),
                           int(frame_size), int(arr.shape[0]), int(arr.shape[1]), location,
                           dtype=dtype)
        path = self.root / location
        with self._locked():
            batch = rec.to_table([feat])
            self._dedup(TABLES["features"], batch)  # raises before the file is touched
            if path.exists():
                old = np.load(path, allow_pickle=False)
                if old.dtype != arr.dtype or not np.array_equal(old, arr):
                    raise DuplicateIdError(
                        f"features of video {video_id!r} for model {model_id!r} already exist "
                        f"at {location} with different values; nothing was written"
                    )
            else:
                with atomic_write(path) as fh:
                    np.save(fh, arr, allow_pickle=False)
            self.append("features", [feat])
        return feat

    def load_features(
        self, row: rec.Feature | dict[str, Any] | str, model_id: str | None = None
    ) -> np.ndarray:
        """Load a feature array [T, D] as float32.

        Args:
            row: a Feature record, a features row (dict), or a video id.
            model_id: with a video id, which model (required if the video has several).

        Raises:
            FeatureFileMissingError: no Feature row, or its .npy file is missing.
            ValidationError: the array's shape differs from its row, or it holds NaN/Inf.
        """
        if isinstance(row, str):
            row = self._feature_row(row, model_id)
        if isinstance(row, rec.Feature):
            location, count, dim = row.location, row.count, row.dim
        else:
            location, count, dim = row["location"], row.get("count"), row.get("dim")
        path = self.root / location
        if not path.is_file():
            raise FeatureFileMissingError(
                f"feature file {path} is missing (Feature.location={location!r})"
            )
        arr = np.load(path, allow_pickle=False)
        if count is not None and arr.shape != (count, dim):
            raise ValidationError(
                f"feature file {path} has shape {arr.shape}, its row says ({count}, {dim})"
            )
        vid = row.video_id if isinstance(row, rec.Feature) else row.get("video_id")
        _check_finite(arr, path, vid)
        return arr.astype(np.float32, copy=False)

    def _feature_row(self, video_id: str, model_id: str | None) -> dict[str, Any]:
        rows = [
            r for r in self.read("features").to_pylist()
            if r["video_id"] == video_id and (model_id is None or r["model_id"] == model_id)
        ]
        if not rows:
            raise FeatureFileMissingError(
                f"no features stored for video {video_id!r}"
                + (f" and model {model_id!r}" if model_id else "")
            )
        if len(rows) > 1:
            raise ValidationError(
                f"video {video_id!r} has features of several models "
                f"{sorted(r['model_id'] for r in rows)}; pass model_id"
            )
        return rows[0]


def check_read_only(sql: str) -> None:
    """Raise ReadOnlyQueryError unless every statement of ``sql`` is a SELECT or EXPLAIN.

    DuckDB's own parser classifies the statements (not a regex); the connection that runs the
    query is additionally opened read-only.
    """
    try:
        statements = duckdb.connect(":memory:").extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"query does not parse: {str(exc).splitlines()[0]}") from None
    if not statements:
        raise QueryError("query is empty")
    for st in statements:
        if st.type not in READ_ONLY_STATEMENTS:
            kind = str(st.type).rsplit(".", 1)[-1]
            raise ReadOnlyQueryError(
                f"store queries are read-only: {kind} statement refused "
                f"({st.query.strip()[:60]!r}); only SELECT / EXPLAIN are allowed"
            )


def _same_or_raise(spec: TableSpec, key: tuple, old: dict, new: dict, where: str) -> None:
    if old == new:
        return
    col = next(c for c in old if old[c] != new[c])
    keytxt = ", ".join(f"{c}={v!r}" for c, v in zip(spec.key, key, strict=True))
    raise DuplicateIdError(
        f"{spec.name}: key ({keytxt}) is {where} with different content (column {col!r}: "
        f"{old[col]!r} vs {new[col]!r}); keys are unique, nothing was written"
    )


def _check_finite(arr: np.ndarray, path: Path, video_id: str | None) -> None:
    """Raise ValidationError naming the file, the video and the first bad steps on NaN/Inf.

    A single NaN step would turn every score of the video (and, in training, every weight) into
    NaN far from its cause, so it is refused where the array enters.
    """
    if not np.issubdtype(arr.dtype, np.number):
        raise ValidationError(f"feature file {path} holds {arr.dtype} values, not numbers")
    bad = ~np.isfinite(arr)
    if bad.any():
        steps = np.flatnonzero(bad.reshape(len(arr), -1).any(axis=1)) if arr.ndim else [0]
        who = f" (video {video_id})" if video_id else ""
        raise ValidationError(
            f"feature file {path}{who} holds {int(bad.sum())} NaN/Inf values at "
            f"{len(steps)} steps (first: {[int(s) for s in steps[:5]]}); features must be finite"
        )
