"""The PreVAD store: hive-partitioned Parquet tables + a DuckDB catalog of views.

Layout under ``root``::

    store.json                          marker + format version (+ optional compact_threshold)
    catalog.duckdb                      views named like the tables, over the Parquet files
    .lock                               fcntl lock taken by writers
    _journal.json                       present only while a commit is being applied
    .writing                            present only while a writer may hold temp files
    tables/<table>/_schema.parquet      empty file with the table's schema (views work when empty)
    tables/<table>/<col>=<value>/part-<time>-<uuid>-n<rows>.parquet
    features/<model_id>/<video_id>.npy
    .staging/                           compaction work folders (invisible to the views)
    quarantine/                         unreadable files moved aside by ``prevad repair``

Writes (:meth:`Store.append_many`, which :meth:`Store.append` and :meth:`Store.write_features`
use) are all-or-nothing across tables and files: every new part file (and feature file) is first
written to a hidden temp file (the views only match ``*.parquet``); then one journal listing all
renames is written atomically (the commit point); then the renames are applied and the journal is
removed. A commit of a single file skips the journal (one rename is atomic by itself). A crash
before the commit point leaves the store unchanged; the ``.writing`` marker tells the next writer
or the next open to remove the orphan temp files. A crash after it is rolled forward by the next
access through :class:`Store`.

Duplicate detection reads only the batch's keys: DuckDB joins the batch (registered as an Arrow
table) against the key and content columns of the table's part files (only the batch's
partitions when the partition column is part of the key), and Parquet row-group statistics prune
what cannot match, so an append costs what it writes, not what is stored.

Compaction (:meth:`Store.compact`, ``prevad compact``, and automatically once a partition holds
more than ``compact_threshold`` part files) merges a partition's small part files into one file
sorted by key. The new partition folder is built under ``.staging/`` (hard links for the files
kept as they are) and swapped with the live one in one ``renameat2(RENAME_EXCHANGE)`` call,
journalled like any commit, so a reader's glob sees the old parts or the new part, never both
and never neither. A reader that listed the old files just before the swap may find one gone:
:meth:`Store.query` and :meth:`Store.read` retry once in that case. Where the exchange is not
supported (not Linux, or a file system without it) the new file is renamed in and the old ones
removed right after, still journalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
import urllib.parse
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prevad import queries
from prevad import records as rec
from prevad.errors import (
    CorruptStoreError,
    DuplicateIdError,
    FeatureFileMissingError,
    QueryError,
    ReadOnlyQueryError,
    ReadOnlyStoreError,
    SchemaMismatchError,
    StoreNotFoundError,
    UnknownTableError,
    ValidationError,
)
from prevad.io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    refuse_special,
)
from prevad.journal import (
    BOOKKEEPING,
    JOURNAL,
    QUARANTINE,
    STAGING,
    Journal,
    Swap,
    UnsafePathError,
    inside_root,
)
from prevad.journal import read_journal as _read_journal_file

FORMAT = "prevad-store"
FORMAT_VERSION = 1
#: Bump when the catalog's views change: stores opened writable rebuild an older catalog.
CATALOG_VERSION = 3
WRITING_MARKER = ".writing"
#: Held exclusively while a commit's renames are applied, shared while a reader lists the
#: tables' files: a reader's file lists are all from one point between commits.
COMMIT_LOCK = ".commit.lock"
TMP_SUFFIX = ".parquet.tmp"
#: A partition with more part files than this is compacted after the commit that passed it.
DEFAULT_COMPACT_THRESHOLD = 32
#: Automatic compaction leaves part files of at least this many rows alone (``compact`` merges
#: everything), so an append never rewrites a big partition.
BIG_PART_ROWS = 100_000
#: Parquet row groups: small enough that row-group statistics prune key lookups well.
ROW_GROUP_ROWS = 65_536
#: Folders whose temp files are written only under the store lock (safe to clean as orphans).
LOCKED_WRITE_DIRS = ("tables", "features", "claims", "stage_runs", "imports")

_ROWS_IN_NAME = re.compile(r"-n(\d+)\.parquet$")
_PARQUET_IN_MSG = re.compile(r"""['"]([^'"]+\.parquet)['"]""")


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

    @property
    def content_columns(self) -> list[str]:
        """Columns compared by duplicate detection (all but the timestamps)."""
        return [c for c in self.schema.names if c not in rec.BOOKKEEPING_COLUMNS]

    @property
    def added(self) -> dict[str, Any]:
        """Columns added after the first format -> what rows stored without them read as."""
        return rec.added_fields(self.record)

    @property
    def sql_columns(self) -> list[queries.Column]:
        """The table's columns for :func:`prevad.queries.typed_select` (type, fill value)."""
        return [(f.name, queries.duckdb_type(f.type), queries.sql_literal(self.added.get(f.name)))
                for f in self.schema]

    def fill(self, name: str, rows: int) -> pa.Array:
        """The column ``name`` of ``rows`` rows stored before it was added."""
        f = self.schema.field(name)
        value = self.added.get(name)
        return pa.nulls(rows, f.type) if value is None else pa.array([value] * rows, f.type)

    def schema_problem(self, schema: pa.Schema) -> str | None:
        """What makes a file's schema foreign to the table (None when it is the table's
        schema, or an older one: the same columns and types without some added columns)."""
        for f in schema:
            if f.name not in self.schema.names:
                return f"unexpected column {f.name!r} for table {self.name!r}"
            want = self.schema.field(f.name).type
            if not f.type.equals(want):
                return f"column {f.name!r} has type {f.type}, table {self.name!r} expects {want}"
        missing = [n for n in rec.required_columns(self.record) if n not in schema.names]
        if missing:
            return (f"column {missing[0]!r} of table {self.name!r} is missing (only added "
                    f"columns {sorted(self.added)} may be)")
        return None


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



@dataclass(frozen=True, slots=True)
class AppendResult:
    """Outcome of :meth:`Store.append`: rows written and identical rows skipped."""

    written: int
    skipped: int


@dataclass(slots=True)
class CompactionResult:
    """Outcome of :meth:`Store.compact`: part files before/after per partition folder."""

    partitions: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def files_before(self) -> int:
        """Part files in the compacted partitions before."""
        return sum(b for b, _ in self.partitions.values())

    @property
    def files_after(self) -> int:
        """Part files in the compacted partitions after."""
        return sum(a for _, a in self.partitions.values())


def _quote(value: Any) -> str:
    """Partition folder value: percent-encoded so any id is a safe single path component."""
    return urllib.parse.quote(str(value), safe="")


def _spec(table: str) -> TableSpec:
    if table not in TABLES:
        raise UnknownTableError(f"unknown table {table!r}: must be one of {sorted(TABLES)}")
    return TABLES[table]


def _schema_id() -> str:
    """A digest of every table's schema: ``store.json`` records the one its schema files and
    catalog were written for, and a writable open upgrades them when it differs."""
    text = "\n".join(f"{t}:{s.schema}" for t, s in sorted(TABLES.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: The schemas of this version of the code (see :func:`_schema_id`).
SCHEMA_ID = _schema_id()


def part_rows(path: Path) -> int:
    """Rows of a part file: from its name (``-n<rows>``), else from its Parquet footer."""
    m = _ROWS_IN_NAME.search(path.name)
    if m:
        return int(m.group(1))
    return pq.read_metadata(path).num_rows


def _stamp() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------- atomic folder exchange
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: Any = None


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        True when swapped; False when the platform or file system cannot do it (nothing changed).

    Raises:
        OSError: any other failure.
    """
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        except OSError:
            _libc = False
    fn = getattr(_libc, "renameat2", None) if _libc else None
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _is_vanished_file(exc: BaseException) -> bool:
    msg = str(exc)
    return "No such file" in msg or "No files found" in msg or isinstance(exc, FileNotFoundError)


class Store:
    """A PreVAD store rooted at a folder. See the module docstring for the layout."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        read_only: bool | None = None,
        compact_threshold: int | None = None,
    ) -> None:
        """Open an existing store.

        Args:
            root: the store folder.
            read_only: open without writing anything (default: when ``root`` is not writable).
            compact_threshold: part files per partition that trigger automatic compaction
                (default: ``store.json``'s ``compact_threshold``, else 32; 0 turns it off).

        Raises:
            StoreNotFoundError: ``root`` has no ``store.json`` (run :meth:`Store.init`).
            CorruptStoreError: ``store.json`` or the journal cannot be read.
        """
        self.root = Path(root).resolve()
        meta = read_marker(self.root, str(root))
        self.read_only = (
            not os.access(self.root, os.W_OK) if read_only is None else bool(read_only)
        )
        threshold = meta.get("compact_threshold", DEFAULT_COMPACT_THRESHOLD)
        if compact_threshold is not None:
            threshold = _check_threshold(compact_threshold, "compact_threshold")
        self.compact_threshold = threshold
        self._init_state()
        if self.read_only:
            return
        if (meta.get("root") != str(self.root) or meta.get("catalog") != CATALOG_VERSION
                or meta.get("schema") != SCHEMA_ID):
            # The folder moved (views hold absolute globs), or the catalog or the schemas
            # predate this code (a store written by older code, docs/ARCHITECTURE.md "Schema
            # evolution"): bring the schema files and the catalog up to date.
            with self._locked():
                self.upgrade_schema_files()
                self._write_catalog()
                atomic_write_json(self.root / "store.json", {
                    **meta, "root": str(self.root), "catalog": CATALOG_VERSION,
                    "schema": SCHEMA_ID})
        self._recover_all()

    def upgrade_schema_files(self) -> list[str]:
        """Rewrite each ``_schema.parquet`` that lacks added columns (an older store) with the
        current schema; a missing one is written, a foreign one is left for ``prevad verify``
        and ``prevad repair``. Part files are never rewritten for this: readers fill the added
        columns in (:data:`prevad.records.ADDED_FIELDS`).

        Returns:
            The tables whose schema file was written.
        """
        done = []
        with self._locked():
            for spec in TABLES.values():
                path = self._table_dir(spec.name) / "_schema.parquet"
                if path.is_symlink() or (path.exists() and not path.is_file()):
                    continue  # not ours to replace: verify reports it, repair quarantines it
                if path.exists():
                    try:
                        have = pq.read_schema(path)
                    except (OSError, pa.ArrowException):
                        continue
                    if have.equals(spec.schema) or spec.schema_problem(have):
                        continue
                with atomic_write(path) as fh:
                    pq.write_table(spec.schema.empty_table(), fh)
                done.append(spec.name)
        return done

    def _init_state(self) -> None:
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: int | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_pid = 0
        self._hash_cache: dict[str, np.ndarray] = {}
        self._reader: tuple[int, duckdb.DuckDBPyConnection] | None = None
        self._journal_names: list[str] | None = None
        _LIVE_STORES.add(self)

    def _close_connections(self) -> None:
        """Drop the cached DuckDB connections (reopened on next use)."""
        for con in (self._con, self._reader[1] if self._reader else None):
            if con is not None:
                with contextlib.suppress(Exception):
                    con.close()
        self._con, self._reader = None, None

    @classmethod
    def _bare(cls, root: Path) -> Store:
        """A writable handle without any check or recovery (for init and repair)."""
        store = cls.__new__(cls)
        store.root, store.read_only = root, False
        store.compact_threshold = DEFAULT_COMPACT_THRESHOLD
        store._init_state()
        return store

    # ------------------------------------------------------------------ creation
    @classmethod
    def init(cls, root: str | os.PathLike[str], compact_threshold: int | None = None) -> Store:
        """Create (or complete) a store at ``root`` and open it. Idempotent.

        On an existing store this also checks that the marker, the journal and the catalog are
        readable and the part files have readable footers.

        Raises:
            CorruptStoreError: the existing store has a file that cannot be read (named).
        """
        path = Path(root).resolve()
        path.mkdir(parents=True, exist_ok=True)
        marker = path / "store.json"
        existing = marker.exists()
        if existing:
            read_marker(path, str(root))  # a garbage marker is an error, not "store ready"
        for spec in TABLES.values():
            schema_file = path / "tables" / spec.name / "_schema.parquet"
            if not schema_file.exists():
                with atomic_write(schema_file) as fh:
                    pq.write_table(spec.schema.empty_table(), fh)
        (path / "features").mkdir(exist_ok=True)
        if not existing or not (path / "catalog.duckdb").exists():
            store = cls._bare(path)
            with store._locked():
                store._write_catalog()
                meta: dict[str, Any] = {
                    "format": FORMAT, "version": FORMAT_VERSION, "root": str(path),
                    "catalog": CATALOG_VERSION, "schema": SCHEMA_ID,
                }
                if compact_threshold is not None:
                    meta["compact_threshold"] = _check_threshold(
                        compact_threshold, "compact_threshold")
                atomic_write_json(marker, meta)
        store = cls(path)
        if existing:
            from prevad.maintenance import verify

            report = verify(store, full=False)
            if not report.ok:
                raise CorruptStoreError(
                    f"{path} is a damaged store: {report.problems[0]}"
                    + (f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1
                       else "")
                    + f"; run `prevad verify {root}` and `prevad repair {root}`"
                )
        return store

    def _write_catalog(self) -> None:
        """(Re)create catalog.duckdb: one view per table over its Parquet files (globs, so any
        DuckDB sees new commits) and the result views of :data:`queries.RESULT_VIEWS`."""
        catalog = self.root / "catalog.duckdb"
        refuse_special(catalog)
        tmp = catalog.with_name(f".catalog.{uuid.uuid4().hex}.duckdb")
        con = duckdb.connect(str(tmp))
        try:
            self._create_views(con, snapshot=False)
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
        if self.read_only:
            raise ReadOnlyStoreError(f"the store at {self.root} is open read-only; cannot write")
        with self._thread_lock:
            if self._lock_depth == 0:
                self._lock_fd = _open_lock(self.root / ".lock", create=True)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _try_lock(self) -> bool:
        """Take the store lock when no other writer holds it (never waits); True when taken.

        Release with ``_unlock``. Readers use it to roll a crashed writer's journal forward
        without queueing behind a live writer (who rolls it forward itself).
        """
        with self._thread_lock:
            if self._lock_depth:
                return False  # this object is the writer: its temp files are not orphans
            fd = _open_lock(self.root / ".lock", create=True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._lock_fd, self._lock_depth = fd, 1
            return True

    def _unlock(self) -> None:
        with self._thread_lock:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

    @contextlib.contextmanager
    def _commit_lock(self, *, shared: bool = False) -> Iterator[None]:
        """The commit lock: exclusive around a commit's renames, shared around a reader's file
        listing (see :meth:`snapshot`). Held for microseconds to milliseconds."""
        fd = _open_lock(self.root / COMMIT_LOCK, create=not self.read_only)
        if fd is None:  # a read-only store without the file: no writer ever committed here
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _table_dir(self, table: str) -> Path:
        return self.root / "tables" / table

    def _journals(self) -> list[Path]:
        """Pending journals: the store's, and per-table ones left by older versions."""
        if self._journal_names is None:
            self._journal_names = [str(self.root / JOURNAL)] + [
                str(self._table_dir(t) / JOURNAL) for t in TABLES]
        return [Path(p) for p in self._journal_names if os.path.lexists(p)]

    def read_journal(self, path: Path) -> Journal:
        """Read and check a pending journal (:func:`prevad.journal.read_journal`).

        Raises:
            CorruptStoreError: unreadable, or a path in it leaves the store or is not what its
                operation needs (nothing is applied).
        """
        return _read_journal_file(path, self.root, PARTITION_COLUMNS)

    def _recover_all(self) -> None:
        """Finish interrupted commits and drop orphan temp files (cheap when nothing to do).

        Never waits for a live writer: when one holds the lock, it does this itself.
        """
        if self.read_only:
            return
        if not self._journals() and not (self.root / WRITING_MARKER).exists():
            return
        if not self._try_lock():
            return
        try:
            self._recover_locked()
        finally:
            self._unlock()

    def _recover_locked(self) -> None:
        for journal in self._journals():
            self._roll_forward(journal)
        if (self.root / WRITING_MARKER).exists():
            self.remove_orphans()
            (self.root / WRITING_MARKER).unlink(missing_ok=True)

    def _roll_forward(self, path: Path) -> None:
        """Check a pending journal as a whole, then apply it (idempotent) and remove it.

        Raises:
            CorruptStoreError: the journal fails its checks; nothing is applied.
        """
        journal = self.read_journal(path)
        with self._commit_lock():
            self._apply(journal)

    def _publish(self, journal: Journal, payload: dict[str, Any]) -> None:
        """Write a journal (the commit point) and apply it, under the exclusive commit lock."""
        with self._commit_lock():
            atomic_write_json(journal.path, payload)
            self._apply(journal)

    def _apply(self, journal: Journal, *, journalled: bool = True) -> None:
        """Apply a checked journal's operations (idempotent), then remove its file."""
        folders = {}
        for src, dst in journal.renames:
            if src.exists():
                os.replace(src, dst)
                folders[dst.parent] = True
        for folder in folders:  # once per folder, before the journal goes
            fsync_dir(folder)
        for swap in journal.swaps:
            self._apply_swap(swap)
        for path in journal.unlinks:
            path.unlink(missing_ok=True)
        if journalled:
            journal.path.unlink(missing_ok=True)
            fsync_dir(journal.path.parent)

    def _apply_swap(self, swap: Swap) -> None:
        """Put a compacted partition folder in place of the live one (idempotent)."""
        staging, live = swap.staging, swap.partition
        if (staging.exists() and not (live / swap.marker).exists()
                and exchange_paths(staging, live)):
            fsync_dir(live.parent)
        # Exchanged: staging holds the old parts and is removed. Not exchangeable (or resumed
        # halfway): move the new files in, remove the old ones, key indexes first (a key index
        # without its part file means a lost part to `prevad verify`).
        if staging.exists():
            for name in swap.new:
                if (staging / name).exists() and not (live / name).exists():
                    os.replace(staging / name, live / name)
            gone = [n for n in swap.old if n not in swap.new]
            for name in sorted(gone, key=lambda n: not n.endswith(".keys.npy")):
                (live / name).unlink(missing_ok=True)
            fsync_dir(live)
            shutil.rmtree(staging, ignore_errors=True)

    def orphan_files(self) -> list[Path]:
        """Temp files and staging folders left by interrupted writes (none while healthy)."""
        return orphan_files(self.root)

    def remove_orphans(self) -> list[Path]:
        """Remove :meth:`orphan_files` (under the lock, so no live writer owns them)."""
        with self._locked():
            removed = self.orphan_files()
            for p in removed:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        return removed

    def _begin_write(self) -> None:
        """Under the lock: clean a crashed writer's leftovers, then mark temp files as ours."""
        for journal in self._journals():
            self._roll_forward(journal)
        marker = self.root / WRITING_MARKER
        if marker.exists():
            self.remove_orphans()
        marker.touch()

    def _end_write(self) -> None:
        (self.root / WRITING_MARKER).unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading
    def part_files(self, table: str) -> list[Path]:
        """Committed Parquet part files of a table, in write order."""
        _spec(table)
        files = [p for p in self._table_dir(table).glob("*=*/part-*.parquet")
                 if p.is_file() and not p.is_symlink()]
        return sorted(files, key=lambda p: (p.name, str(p)))

    def _partition_dirs(self, table: str) -> list[Path]:
        return sorted(p for p in self._table_dir(table).glob("*=*") if p.is_dir())

    def _list_parts(self, table: str) -> list[str]:
        """Part files of a table: regular files in real partition folders (no symlinks)."""
        out: list[str] = []
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for d in os.scandir(self._table_dir(table)):
                if "=" not in d.name or not d.is_dir(follow_symlinks=False):
                    continue
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    out += [e.path for e in os.scandir(d.path)
                            if e.name.startswith("part-") and e.name.endswith(".parquet")
                            and e.is_file(follow_symlinks=False)]
        return out

    def snapshot(self) -> Snapshot:
        """The part files of every table at one point between commits.

        The listing is taken under the shared commit lock, which every commit holds exclusively
        while it renames its files in: a reader never sees half a commit, nor one table after a
        commit and another before it. A journal left by a crashed writer is read (checked) and
        its outcome listed as if applied; the files it names are complete (fsynced before the
        journal was written).

        Raises:
            CorruptStoreError: a pending journal fails its checks.
        """
        self._recover_all()
        with self._commit_lock(shared=True):
            listing = {t: self._list_parts(t) for t in TABLES}
            pending = [self.read_journal(j) for j in self._journals()]
        for journal in pending:
            _as_if_applied(listing, journal)
        return Snapshot({t: tuple(sorted(f, key=_write_order)) for t, f in listing.items()})

    def read(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole table as a pa.Table with the record's schema (empty if no rows).

        The files are those of one :meth:`snapshot`, so the table is never half a commit.

        Raises:
            CorruptStoreError: a part file cannot be read (named in the message).
        """
        spec = _spec(table)
        schema = spec.schema
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        for attempt in range(1, _READ_ATTEMPTS + 1):
            try:
                files = self.snapshot().files[table]
                parts = [_read_part(Path(p), spec, schema.names) for p in files]
                break
            except FileNotFoundError:
                if attempt == _READ_ATTEMPTS:
                    raise
                # a compaction swapped the partition between listing and reading: list again
        if not parts:
            return schema.empty_table()
        return pa.concat_tables(parts).select(schema.names)

    def records(self, table: str) -> list[Any]:
        """The whole table as validated records."""
        return rec.from_table(self.read(table), _spec(table).record)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A guarded in-memory DuckDB connection with the store's views.

        Views are named like the tables (over the live Parquet files, like ``catalog.duckdb``)
        plus the result views (:data:`queries.RESULT_VIEWS`). The connection has the guards of
        :meth:`query` (file access limited to reading ``tables/``, no extensions, configuration
        locked); unlike :meth:`query` it does not check statements, and each statement reads
        the files present when it runs (use :meth:`query` for one consistent snapshot).
        """
        self._recover_all()
        con = _guarded_connection(self.root)
        self._create_views(con, snapshot=False)
        return con

    def _create_views(self, con: duckdb.DuckDBPyConnection, *, snapshot: bool) -> None:
        """Table views (over globs, or over the snapshot variable) and the result views."""
        if snapshot:
            con.execute(f"SET VARIABLE {queries.SNAPSHOT_VARIABLE} = $f",
                        {"f": {t: [self._schema_file(t)] for t in TABLES}})
        for spec in TABLES.values():
            if snapshot:
                source = queries.SNAPSHOT_SOURCE.format(view=spec.name)
            else:
                glob = str(self.root / "tables" / spec.name / "**" / "*.parquet")
                source = queries.CATALOG_SOURCE.format(glob=_sql_str(glob))
            # typed: a column added after some files were written reads as NULL (or its fill
            # value) in those files, and is there even while no file has it
            con.execute(queries.TABLE_VIEW.format(
                view=spec.name, select=queries.typed_select(spec.sql_columns, source)))
        for name, sql in queries.RESULT_VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")

    def _schema_file(self, table: str) -> str:
        return str(self._table_dir(table) / "_schema.parquet")

    def query(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> pa.Table:
        """Run read-only SQL over the store's views with bound parameters; returns a pa.Table.

        What a query may do (the same for ``prevad query``):

        - every statement must be a SELECT (DuckDB's parser decides; ``EXPLAIN [ANALYZE] X`` is
          judged as ``X``), so nothing is written, attached, installed, loaded or set;
        - it runs on a private in-memory DuckDB with external access off except reading
          files under ``<root>/tables/`` (so ``read_csv('/etc/passwd')``, URLs and symlinks that
          lead out are refused), extension installing/loading off, spilling to disk off, and
          the configuration locked;
        - the views (tables and :data:`queries.RESULT_VIEWS`) read the files of one
          :meth:`snapshot`: all tables as of one point between commits.

        A query that races a compaction (a listed part file vanishes) is run again on a new
        snapshot.

        Raises:
            ReadOnlyQueryError: a statement is not a read-only SELECT (named).
            QueryError: DuckDB rejected the query.
            CorruptStoreError: a part file cannot be read (named).
        """
        check_read_only(sql)
        for attempt in range(1, _READ_ATTEMPTS + 1):
            cur = self._reader_cursor(self.snapshot())
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return cur.execute(sql, params or None).to_arrow_table()
            except duckdb.Error as exc:
                if attempt < _READ_ATTEMPTS and _is_vanished_file(exc):
                    continue
                raise self._query_error(exc) from None
            finally:
                cur.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _reader_cursor(self, snap: Snapshot) -> duckdb.DuckDBPyConnection:
        """A cursor on this process's guarded reader connection, its views set to ``snap``.

        The connection (views created once) is kept per process; each cursor carries its own
        file lists in a DuckDB variable the table views read.
        """
        with self._thread_lock:
            cached = self._reader
            if cached is None or cached[0] != os.getpid():
                con = _guarded_connection(self.root)
                self._create_views(con, snapshot=True)
                cached = (os.getpid(), con)
                self._reader = cached
            cur = cached[1].cursor()
        files = {t: [self._schema_file(t), *snap.files[t]] for t in TABLES}
        cur.execute(f"SET VARIABLE {queries.SNAPSHOT_VARIABLE} = $f", {"f": files})
        return cur

    def _query_error(self, exc: duckdb.Error) -> Exception:
        msg = str(exc).splitlines()[0]
        if "read-only" in msg.lower():
            return ReadOnlyQueryError(f"query would write to the store: {msg}")
        m = _PARQUET_IN_MSG.search(msg)
        if m and Path(m.group(1)).exists() and isinstance(
            exc, duckdb.InvalidInputException | duckdb.IOException
        ):
            return CorruptStoreError(
                f"part file {m.group(1)} is unreadable ({msg}); run `prevad verify "
                f"{self.root}` and `prevad repair {self.root}` to quarantine it"
            )
        return QueryError(f"query failed: {msg}")

    # ------------------------------------------------------------------ key lookups
    def _lookup(self) -> duckdb.DuckDBPyConnection:
        """This process's in-memory DuckDB connection for key lookups (not the catalog)."""
        if self._con is None or self._con_pid != os.getpid():
            # after a fork the parent's connection is not ours to use
            self._con = duckdb.connect(":memory:")
            self._con.execute("SET parquet_metadata_cache = true")
            self._con_pid = os.getpid()
        return self._con

    def _lookup_files(self, spec: TableSpec, batch: pa.Table, prune: bool) -> list[str]:
        """Part files that may hold the batch's keys: only its partitions when ``prune``."""
        if prune and spec.partition in batch.column_names:
            dirs = [
                self._table_dir(spec.name) / f"{spec.partition}={_quote(v)}"
                for v in pc.unique(batch.column(spec.partition)).to_pylist()
            ]
        else:
            dirs = self._partition_dirs(spec.name)
        files: list[str] = []
        for d in dirs:
            with contextlib.suppress(FileNotFoundError):
                files += [
                    e.path for e in os.scandir(d)
                    if e.name.startswith("part-") and e.name.endswith(".parquet")
                    and e.is_file(follow_symlinks=False)
                ]
        return sorted(files)

    def lookup(self, table: str, keys: pa.Table, columns: Sequence[str] | None = None
               ) -> pa.Table:
        """Stored rows whose key columns match a row of ``keys`` (reads only those rows).

        Args:
            table: a store table.
            keys: a table with (some of) the key columns, leading key columns first.
            columns: columns to return (default all).

        Raises:
            CorruptStoreError: a part file cannot be read.
        """
        spec = _spec(table)
        cols = list(columns) if columns is not None else spec.schema.names
        with self._thread_lock:
            files = self._lookup_files(spec, keys, prune=True)
            if not files or keys.num_rows == 0:
                return pa.schema([spec.schema.field(c) for c in cols]).empty_table()
            sql = queries.key_lookup(keys.column_names, cols, spec.sql_columns)
            return self._run_lookup(sql, files, keys).cast(
                pa.schema([spec.schema.field(c) for c in cols])
            )

    def _run_lookup(self, sql: str, files: list[str] | None, batch: pa.Table) -> pa.Table:
        con = self._lookup()
        params = None if files is None else {"files": files}
        for attempt in (1, 2):
            con.register("__batch", batch)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return con.execute(sql, params).to_arrow_table()
            except duckdb.Error as exc:
                if attempt == 1 and _is_vanished_file(exc):
                    continue
                err = self._query_error(exc)
                raise (err if isinstance(err, CorruptStoreError) else
                       CorruptStoreError(f"key lookup failed: {exc}")) from None
            finally:
                con.unregister("__batch")
        raise AssertionError("unreachable")  # pragma: no cover

    def stored_mask(self, table: str, keys: pa.Table) -> np.ndarray:
        """For each row of ``keys`` (all key columns of ``table``), whether the key may be
        stored: searched in the part files' key indexes only (cached), no row is read.

        A 64-bit hash match is a "may be" (collisions are possible, and rare): confirm hits
        with a query when it matters.
        """
        spec = _spec(table)
        hashes = key_hashes(spec, keys.select(list(spec.key)))
        found = np.zeros(len(hashes), dtype=bool)
        with self._thread_lock:
            files = self._lookup_files(spec, keys, prune=spec.partition in spec.key)
            for f in files:
                have = self._file_hashes(spec, Path(f))
                if len(have):
                    pos = np.searchsorted(have, hashes)
                    pos[pos == len(have)] = 0
                    found |= have[pos] == hashes
        return found

    def has_keys(self, table: str, hashes: np.ndarray) -> bool:
        """Whether every key hash (see :func:`key_hashes`) is stored in ``table``.

        Reads only the part files' key indexes (cached), not the rows.
        """
        spec = _spec(table)
        self._recover_all()
        want = np.unique(np.asarray(hashes, dtype=np.uint64))
        found = np.zeros(len(want), dtype=bool)
        for part in self.part_files(table):
            have = self._file_hashes(spec, part)
            if len(have):
                pos = np.searchsorted(have, want)
                pos[pos == len(have)] = 0
                found |= have[pos] == want
        return bool(found.all())

    # ------------------------------------------------------------------ writing
    def write_file(self, rel: str, data: bytes, *, durable: bool = True) -> Path:
        """Write a store-relative file atomically, under the lock (a crash leaves no temp file
        behind after the next command). For bookkeeping files: claims, run summaries.

        Args:
            rel: the file's path relative to the root (checked: :meth:`inside`).
            data: its bytes.
            durable: fsync before the rename (``False`` for files a crash may lose, such as
                claims: still atomic for readers, several times cheaper).

        Raises:
            ValidationError: ``rel`` leaves the store or names a bookkeeping file.
            SpecialFileError: a directory, FIFO, socket or device is at that path.
        """
        path = self.inside(rel)
        with self._locked():
            if not durable:  # one fixed temp name under the lock: a crash's leftover is
                _replace_quickly(path, data)  # overwritten by the next write (or `repair`)
                return path
            self._begin_write()
            try:
                atomic_write_bytes(path, data)
            finally:
                self._end_write()
        return path

    def append(self, table: str, rows: Sequence[Any] | pa.Table) -> AppendResult:
        """Append records (or a pa.Table with the exact schema) to a table, all or nothing.

        A pa.Table may lack added columns (``records.ADDED_FIELDS``): they are filled as for
        rows stored before the column existed.

        Rows whose key is already stored (or repeated in the batch) with identical content are
        skipped; timestamps (``created_at``, ``time``) are ignored in that comparison.

        Raises:
            UnknownTableError: bad table name.
            SchemaMismatchError: a pa.Table with a missing/extra column or a wrong type.
            ValidationError: a row breaks a record rule.
            DuplicateIdError: a key comes with different content; nothing is written.
        """
        return self.append_many({table: rows})[table]

    def append_many(
        self,
        rows: Mapping[str, Sequence[Any] | pa.Table],
        files: Mapping[str, bytes] | None = None,
    ) -> dict[str, AppendResult]:
        """Append rows to several tables (and write files) in ONE atomic commit.

        Either every table gets its new rows and every file appears, or nothing changes (a
        crash after the commit point is rolled forward by the next access).

        Args:
            rows: table name -> records (or a pa.Table with the exact schema).
            files: store-relative path -> bytes, e.g. a feature file. A path that already holds
                the same bytes is skipped.

        Returns:
            table name -> :class:`AppendResult`.

        Raises:
            UnknownTableError, SchemaMismatchError, ValidationError: bad input; nothing written.
            DuplicateIdError: a key (or a file) exists with different content; nothing written.
        """
        batches = {t: self._as_table(_spec(t), r) for t, r in rows.items()}
        results: dict[str, AppendResult] = {}
        with self._locked():
            self._begin_write()
            try:
                keep: dict[str, pa.Table] = {}
                for t, batch in batches.items():
                    kept, skipped = self._dedup(TABLES[t], batch)
                    results[t] = AppendResult(written=kept.num_rows, skipped=skipped)
                    if kept.num_rows:
                        keep[t] = kept
                new_files = self._check_files(files or {})
                touched = self._commit(keep, new_files) if keep or new_files else []
            finally:
                self._end_write()
            self._auto_compact(touched)
        return results

    @staticmethod
    def _as_table(spec: TableSpec, rows: Sequence[Any] | pa.Table) -> pa.Table:
        if isinstance(rows, pa.Table):
            for name in spec.added:  # a table shaped like an older schema: filled as on read
                if name not in rows.column_names:
                    rows = rows.append_column(spec.schema.field(name),
                                              spec.fill(name, rows.num_rows))
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

    def _dedup(self, spec: TableSpec, batch: pa.Table) -> tuple[pa.Table, int]:
        """The batch rows to write and the number skipped; raise on conflicts.

        Only the batch's keys are looked up: their 64-bit hashes are searched in each part
        file's sorted key-hash index (cached per immutable file), and only the files with a hit
        are read, through DuckDB, to compare the rows.
        """
        n = batch.num_rows
        if n == 0:
            return batch, 0
        cols = spec.content_columns
        hashes = key_hashes(spec, batch)
        indexed = batch.select(cols).append_column("__i", pa.array(np.arange(n), pa.int64()))
        drop: set[int] = set()
        if n > 1 and len(np.unique(hashes)) < n:
            sql = queries.batch_duplicates(spec.key, cols)
            for d in self._run_lookup(sql, None, indexed).to_pylist():
                if not d["same"]:
                    _conflict(spec, _row(indexed, d["first"], cols), _row(indexed, d["__i"], cols),
                              "earlier in the same batch")
                drop.add(d["__i"])
        files = self._lookup_files(spec, batch, prune=spec.partition in spec.key)
        probe = np.unique(hashes)
        hit_files = [f for f in files if _any_in(self._file_hashes(spec, Path(f)), probe)]
        if hit_files:
            hits = self._run_lookup(queries.stored_matches(spec.key, cols, spec.sql_columns),
                                    hit_files, indexed)
            for h in hits.to_pylist():
                if h["__i"] in drop:
                    continue
                if not h["same"]:
                    new = _row(indexed, h["__i"], cols)
                    old = self.lookup(spec.name, pa.table(
                        {k: [new[k]] for k in spec.key},
                        schema=pa.schema([spec.schema.field(k) for k in spec.key])), cols)
                    _conflict(spec, old.to_pylist()[0], new, "already stored")
                drop.add(h["__i"])
        if not drop:
            return batch, 0
        mask = np.ones(n, dtype=bool)
        mask[list(drop)] = False
        return batch.filter(pa.array(mask)), len(drop)

    def _file_hashes(self, spec: TableSpec, part: Path) -> np.ndarray:
        """Sorted key hashes of a part file: cache, else its sidecar, else computed (and saved).

        Part files never change once named, so a cached or saved index stays true.
        """
        key = str(part)
        got = self._hash_cache.get(key)
        if got is not None:
            return got
        side = sidecar_path(part)
        rows = part_rows(part)
        got = None
        with contextlib.suppress(OSError, ValueError):
            if side.is_symlink() or not side.is_file():  # never read a FIFO or a link
                raise ValueError("not a regular file")
            arr = np.load(side, allow_pickle=False)
            if arr.dtype == np.uint64 and arr.shape == (rows,):
                got = arr
        if got is None:
            got = np.sort(key_hashes(spec, _read_part(part, spec, spec.key)))
            if not self.read_only and not os.path.lexists(side):
                with contextlib.suppress(OSError):
                    _save_sidecar(side, got)
        self._hash_cache[key] = got
        return got

    def _check_files(self, files: Mapping[str, bytes]) -> dict[str, bytes]:
        """Files to write: refuse a path holding other bytes, skip one holding the same."""
        out = {}
        for rel, data in files.items():
            path = self.inside(rel)
            refuse_special(path)  # reading a FIFO would hang; a folder is not replaced
            if path.is_symlink():
                raise ValidationError(f"{rel} is a symbolic link in the store; nothing was "
                                      f"written")
            if path.exists():
                if path.read_bytes() != data:
                    raise DuplicateIdError(
                        f"{rel} already exists in the store with different content; "
                        f"nothing was written"
                    )
                continue
            out[rel] = data
        return out

    def inside(self, rel: str) -> Path:
        """The path of a store-relative file name, checked to stay inside the store.

        For names that come from the store's own files (rows' ``location``, fingerprints) or
        from callers: relative, no ``..``, no symbolic link on the way, not one of the store's
        bookkeeping files.

        Raises:
            ValidationError: the name leaves the store or names a bookkeeping file.
        """
        try:
            path = inside_root(self.root, rel, "store file")
        except UnsafePathError as exc:
            raise ValidationError(str(exc)) from None
        top = path.relative_to(self.root).parts[0]
        if top in (QUARANTINE, STAGING) or str(path.relative_to(self.root)) in BOOKKEEPING:
            raise ValidationError(f"file path {rel!r} names one of the store's own files")
        return path

    _inside = inside

    def _commit(self, tables: Mapping[str, pa.Table], files: Mapping[str, bytes]) -> list[Path]:
        """Write temp files, then journal + renames (one visible file alone needs no journal).

        Key indexes are renamed in after their part files, so a key index without its part
        file always means a lost part (never a crash).

        Returns:
            The partition folders that received a part file.
        """
        stamp = _stamp()
        renames: list[tuple[Path, Path]] = []
        sidecars: list[tuple[Path, Path]] = []
        touched: list[Path] = []
        published = False
        try:
            for name, table in tables.items():
                spec = TABLES[name]
                if table.num_rows > 1:
                    table = table.sort_by([(k, "ascending") for k in spec.key])
                col = table.column(spec.partition)
                for value in pc.unique(col).to_pylist():
                    part = table.filter(pc.equal(col, pa.scalar(value, col.type)))
                    folder = self._partition_folder(name, value)
                    final = folder / f"part-{stamp}-n{part.num_rows}.parquet"
                    tmp = folder / f".part-{stamp}{TMP_SUFFIX}"
                    renames.append((tmp, final))
                    side = sidecar_path(final)
                    side_tmp = folder / f".{side.name}.tmp"
                    sidecars.append((side_tmp, side))
                    hashes = np.sort(key_hashes(spec, part))
                    _save_npy(side_tmp, hashes)
                    self._hash_cache[str(final)] = hashes
                    _write_parquet(tmp, part)
                    touched.append(folder)
            for rel, data in files.items():
                final = self.inside(rel)
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = final.with_name(f".{final.name}.{stamp}.tmp")
                renames.append((tmp, final))
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            journal = Journal(self.root / JOURNAL, tuple(renames + sidecars), (), ())
            if len(renames) == 1:  # one visible file: its rename is atomic by itself
                with self._commit_lock():
                    self._apply(journal, journalled=False)
                return touched
            payload = {"renames": [[str(a.relative_to(self.root)), str(b.relative_to(self.root))]
                                   for a, b in journal.renames]}
            with self._commit_lock():
                atomic_write_json(journal.path, payload)  # the commit point
                published = True
                self._apply(journal)
        except BaseException:
            if not published:  # after the commit point the temp files are the commit
                for tmp in [t for t, _ in renames + sidecars]:
                    with contextlib.suppress(OSError):
                        tmp.unlink(missing_ok=True)
            raise
        return touched

    def _partition_folder(self, table: str, value: Any) -> Path:
        """A partition folder (made when missing), refused when a symlink leads elsewhere."""
        folder = self._table_dir(table) / f"{TABLES[table].partition}={_quote(value)}"
        folder.mkdir(parents=True, exist_ok=True)
        if folder.resolve() != folder:
            raise CorruptStoreError(
                f"partition folder {folder} is a symbolic link to {folder.resolve()}; the "
                f"store's folders must be real folders (`prevad verify {self.root}`)")
        return folder

    # ------------------------------------------------------------------ compaction
    def compact(self, table: str | None = None, *, full: bool = True) -> CompactionResult:
        """Merge each partition's part files into one file sorted by key.

        Args:
            table: one table, or None for all.
            full: merge every part file (``prevad compact``); False merges only part files
                under ``BIG_PART_ROWS`` rows (what automatic compaction does).

        Returns:
            Part-file counts before/after per compacted partition folder.
        """
        result = CompactionResult()
        names = [_spec(table).name] if table else list(TABLES)
        with self._locked():
            self._recover_locked()
            for name in names:
                for folder in self._partition_dirs(name):
                    counts = self._compact_partition(TABLES[name], folder, full=full)
                    if counts:
                        result.partitions[str(folder.relative_to(self.root))] = counts
        return result

    def _auto_compact(self, folders: Sequence[Path]) -> None:
        if self.compact_threshold <= 0:
            return
        for folder in dict.fromkeys(folders):
            try:
                n = sum(1 for e in os.scandir(folder) if e.name.endswith(".parquet"))
            except FileNotFoundError:
                continue
            if n > self.compact_threshold:
                spec = TABLES[folder.parent.name]
                with self._locked():
                    self._compact_partition(spec, folder, full=False)

    def _tiered(self, parts: list[Path]) -> list[Path]:
        """The part files automatic compaction merges: the smallest size tiers (a tier is a
        factor of 8 in rows) until at least a quarter of the threshold is gathered, so each
        row is rewritten about once per tier (n log n) instead of with every compaction."""
        small = sorted((part_rows(p), p) for p in parts if part_rows(p) < BIG_PART_ROWS)
        want = max(2, self.compact_threshold // 4)
        merge: list[Path] = []
        for i, (rows, p) in enumerate(small):
            merge.append(p)
            tier = int(np.log(max(rows, 1)) / np.log(8))
            nxt = int(np.log(max(small[i + 1][0], 1)) / np.log(8)) if i + 1 < len(small) else None
            if len(merge) >= want and nxt != tier:
                break
        return merge

    def _compact_partition(self, spec: TableSpec, folder: Path, *, full: bool,
                           select: Callable[[pa.Table], pa.Table] | None = None
                           ) -> tuple[int, int] | None:
        """Compact one partition folder (under the lock); returns (files before, after).

        Rows repeating an earlier row exactly (same key and content; timestamps aside) are
        dropped. ``select`` (repair) filters the merged rows further; with it, every part file
        is rewritten even when there is just one.
        """
        parts = sorted(p for p in folder.glob("part-*.parquet") if not p.is_symlink())
        merge = parts if full or select else self._tiered(parts)
        if len(merge) < (1 if select else 2):
            return None
        keep = [p for p in parts if p not in merge]
        table = pa.concat_tables([_read_part(p, spec, spec.schema.names) for p in merge])
        hashes = np.sort(np.concatenate([self._file_hashes(spec, p) for p in merge]))
        if len(hashes) > 1 and (hashes[1:] == hashes[:-1]).any():
            table = self._drop_exact_duplicates(spec, table)
        if select is not None:
            table = select(table)
        if table.num_rows != len(hashes):
            hashes = np.sort(key_hashes(spec, table))
        table = table.sort_by([(k, "ascending") for k in spec.key])
        self._begin_write()
        try:
            staging = self.root / STAGING / f"{folder.name}.{uuid.uuid4().hex[:12]}"
            staging.mkdir(parents=True)
            new = list(keep)
            if table.num_rows:
                name = f"part-{_stamp()}-n{table.num_rows}.parquet"
                _save_npy(sidecar_path(staging / name), hashes)
                _write_parquet(staging / name, table)
                self._hash_cache[str(folder / name)] = hashes
                new.insert(0, folder / name)
            else:  # nothing left: an empty marker part keeps the swap idempotent
                name = f"part-{_stamp()}-n0.parquet"
                _save_npy(sidecar_path(staging / name), hashes)
                _write_parquet(staging / name, spec.schema.empty_table())
                new.insert(0, folder / name)
            for p in keep:  # kept files travel by hard link: no copy, same inode
                os.link(p, staging / p.name)
                if sidecar_path(p).exists():
                    os.link(sidecar_path(p), sidecar_path(staging / p.name))
            fsync_dir(staging)
            swap = Swap(staging, folder, name,
                        tuple(x for p in new for x in _with_sidecar(p)),
                        tuple(x for p in parts for x in _with_sidecar(p)))
            self._publish(Journal(self.root / JOURNAL, (), (swap,), ()), {"swaps": [{
                "staging": str(staging.relative_to(self.root)),
                "partition": str(folder.relative_to(self.root)),
                "marker": name, "new": list(swap.new), "old": list(swap.old),
            }]})  # the commit point
        finally:
            self._end_write()
        return len(parts), len(new)

    def _drop_exact_duplicates(self, spec: TableSpec, table: pa.Table) -> pa.Table:
        """Rows whose key and content both repeat an earlier row are dropped (first kept)."""
        indexed = table.append_column("__i", pa.array(np.arange(table.num_rows), pa.int64()))
        rows = self._run_lookup(queries.exact_repeats(spec.content_columns), None, indexed)
        drop = rows.column("__i").to_numpy()
        if not len(drop):
            return table
        mask = np.ones(table.num_rows, dtype=bool)
        mask[drop] = False
        return table.filter(pa.array(mask))

    # ------------------------------------------------------------------ features
    def feature_path(self, video_id: str, model_id: str) -> str:
        """Location (relative to the root) of a video's feature file for a model."""
        return f"features/{_quote(model_id)}/{_quote(video_id)}.npy"

    def feature_commit(
        self,
        video_id: str,
        model_id: str,
        array: np.ndarray,
        frame_stride: int = 8,
        frame_offset: int = 4,
        frame_size: int = 224,
        frames: int | None = None,
        dtype: str = "float32",
    ) -> tuple[rec.Feature, dict[str, bytes]]:
        """Check a feature array and build its Feature row and file for :meth:`append_many`.

        Returns:
            ``(feature_row, {location: npy bytes})``.

        Raises:
            ValidationError: not a finite 2-D array, or ``frames`` inconsistent with T.
            DuplicateIdError: a feature of this (video, model) already exists with other values.
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
        if path.exists():
            old = np.load(path, allow_pickle=False)
            if old.dtype != arr.dtype or not np.array_equal(old, arr):
                raise DuplicateIdError(
                    f"features of video {video_id!r} for model {model_id!r} already exist "
                    f"at {location} with different values; nothing was written"
                )
            return feat, {}
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        return feat, {location: buf.getvalue()}

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
        extra_rows: Mapping[str, Sequence[Any]] | None = None,
    ) -> rec.Feature:
        """Save a [T, D] feature array and append its Feature row, in one atomic commit.

        The array is stored as ``dtype`` ("float32" default, or "float16" to halve disk use);
        :meth:`load_features` returns float32 either way. ``frames`` (the source frame count)
        is accepted for provenance and checked against the array length when given.
        ``extra_rows`` (table -> records, e.g. the item's ``stage_results`` row) land in the
        same commit.

        Raises:
            ValidationError: not a finite 2-D array, or ``frames`` inconsistent with T.
            DuplicateIdError: a feature of this (video, model) already exists with other content.
        """
        with self._locked():
            feat, files = self.feature_commit(video_id, model_id, array, frame_stride,
                                              frame_offset, frame_size, frames, dtype)
            rows: dict[str, Sequence[Any]] = {"features": [feat], **(extra_rows or {})}
            self.append_many(rows, files=files)
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
        vid = row.video_id if isinstance(row, rec.Feature) else row.get("video_id")
        try:
            path = self.inside(location)
        except ValidationError as exc:
            raise CorruptStoreError(
                f"the feature row of video {vid!r} is refused: {exc}; run `prevad verify "
                f"{self.root}`") from None
        if path.is_symlink() or not path.is_file():
            raise FeatureFileMissingError(
                f"feature file {path} is missing or not a regular file "
                f"(Feature.location={location!r})"
            )
        arr = np.load(path, allow_pickle=False)
        if count is not None and arr.shape != (count, dim):
            raise ValidationError(
                f"feature file {path} has shape {arr.shape}, its row says ({count}, {dim})"
            )
        _check_finite(arr, path, vid)
        return arr.astype(np.float32, copy=False)

    def _feature_row(self, video_id: str, model_id: str | None) -> dict[str, Any]:
        rows = self.lookup("features", pa.table({"video_id": [video_id]})).to_pylist()
        rows = [r for r in rows if model_id is None or r["model_id"] == model_id]
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


# ---------------------------------------------------------------------- helpers
def orphan_files(root: Path) -> list[Path]:
    """Temp files and staging folders of ``root`` left by interrupted writes.

    A key index (``part-….keys.npy``) without its part file is not an orphan: key indexes are
    renamed in after their part file, so one left alone means its part file was lost
    (:func:`lost_parts`).
    """
    found: list[Path] = []
    for d in LOCKED_WRITE_DIRS:
        base = root / d
        if base.is_dir() and not base.is_symlink():
            found += [p for p in base.rglob("*.tmp") if p.name.startswith(".")]
    found += list(root.glob(".*.tmp"))
    found += list(root.glob(".catalog.*.duckdb*"))
    staging = root / STAGING
    if staging.is_dir() and not staging.is_symlink():
        found += list(staging.iterdir())
    return sorted(set(found))


def lost_parts(root: Path) -> list[Path]:
    """Key indexes whose part file is gone: the part was committed, then lost (deleted, or moved
    away by hand). The index still says how many rows and which key hashes were lost."""
    tables = root / "tables"
    if not tables.is_dir():
        return []
    return sorted(p for p in tables.glob("*/*=*/part-*.keys.npy")
                  if p.is_file() and not p.is_symlink()
                  and not p.with_name(p.name.removesuffix(".keys.npy") + ".parquet").exists())


def _check_threshold(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{what} must be a whole number >= 0 (0 turns automatic "
                              f"compaction off), got {value!r}")
    return value


def _marker_problem(meta: Any) -> str | None:
    """What is wrong with a parsed ``store.json`` (None when it is a valid marker)."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT \
            or meta.get("version") != FORMAT_VERSION:
        return f"not a {FORMAT} v{FORMAT_VERSION} marker, got {str(meta)[:80]!r}"
    if "root" in meta and not isinstance(meta["root"], str):
        return f"field 'root' must be a string (the folder), got {meta['root']!r}"
    threshold = meta.get("compact_threshold")
    if "compact_threshold" in meta and (
            isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0):
        return (f"field 'compact_threshold' must be a whole number >= 0, got "
                f"{str(threshold)[:40]!r}")
    catalog = meta.get("catalog")
    if "catalog" in meta and (isinstance(catalog, bool) or not isinstance(catalog, int)):
        return f"field 'catalog' must be a whole number, got {str(catalog)[:40]!r}"
    if "schema" in meta and not isinstance(meta["schema"], str):
        return f"field 'schema' must be a string (a digest), got {str(meta['schema'])[:40]!r}"
    return None


def read_marker(root: Path, shown: str | None = None) -> dict[str, Any]:
    """Read and check ``store.json`` (format, version, and the type of every known field).

    Raises:
        StoreNotFoundError: no marker.
        CorruptStoreError: unreadable, not a store marker, or a field of the wrong type.
    """
    marker = root / "store.json"
    if marker.is_symlink() or (marker.exists() and not marker.is_file()):
        raise CorruptStoreError(f"{marker} is not a regular file; `prevad repair {root}` "
                                f"moves it to quarantine and writes a new one")
    if not marker.is_file():
        raise StoreNotFoundError(
            f"{root} is not a PreVAD store (no store.json); create it with "
            f"Store.init or `prevad init {shown or root}`"
        )
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptStoreError(
            f"{marker} is not valid JSON ({str(exc)[:80]}); `prevad repair {root}` rewrites it"
        ) from None
    problem = _marker_problem(meta)
    if problem:
        raise CorruptStoreError(f"{marker}: {problem}; `prevad repair {root}` rewrites it")
    return meta


#: table -> its partition column (what a journal's partition folders must be named after).
PARTITION_COLUMNS: dict[str, str] = {t: s.partition for t, s in TABLES.items()}
#: A read retries when a compaction removed a listed file in between (each retry lists again).
_READ_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Part files of every table at one point between commits (see :meth:`Store.snapshot`).

    Attributes:
        files: table -> absolute paths of its part files, in write order.
    """

    files: Mapping[str, tuple[str, ...]]


def _write_order(path: str) -> tuple[str, str]:
    return os.path.basename(path), path


def _as_if_applied(listing: dict[str, list[str]], journal: Journal) -> None:
    """Change a file listing to what it is once ``journal`` is applied (for readers while a
    crashed writer's journal waits for the next writer)."""
    def table_of(path: Path) -> str | None:
        parts = path.parts
        i = len(parts) - 4  # .../tables/<table>/<col>=<value>/<file>
        return parts[i + 1] if i >= 0 and parts[i] == "tables" and parts[i + 1] in TABLES \
            else None

    for src, dst in journal.renames:
        t = table_of(dst)
        if t and dst.name.endswith(".parquet") and src.exists() and str(dst) not in listing[t]:
            listing[t].append(str(src))  # not renamed yet: the complete temp file is the part
    for swap in journal.swaps:
        t = table_of(swap.partition / swap.marker)
        if t is None:
            continue
        if (swap.partition / swap.marker).exists():  # swapped in; old files may linger
            stale = {str(swap.partition / n) for n in swap.old if n not in swap.new}
            listing[t] = [f for f in listing[t] if f not in stale]
        elif swap.staging.is_dir():  # not swapped yet: the staging folder is the partition
            with contextlib.suppress(FileNotFoundError):
                staged = [e.path for e in os.scandir(swap.staging)
                          if e.name in swap.new and e.name.endswith(".parquet")]
                listing[t] = [f for f in listing[t]
                              if Path(f).parent != swap.partition] + staged
    gone = {str(p) for p in journal.unlinks}
    for t in listing:
        listing[t] = [f for f in listing[t] if f not in gone]


def _open_lock(path: Path, *, create: bool) -> int | None:
    """Open a lock file without following a symlink; None when absent and not created."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as exc:
        raise CorruptStoreError(
            f"lock file {path} cannot be opened ({exc.strerror}); it must be a regular file: "
            f"remove it (no writer may be running)"
        ) from None


def _guarded_connection(root: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that may read files under ``<root>/tables/`` and nothing else.

    External access is off (no other file, no URL, no ATTACH outside), extensions are never
    installed or loaded, nothing spills to disk, and the configuration is locked so no later
    statement can undo this.
    """
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
    })
    allowed = str(root / "tables") + os.sep
    for stmt in (f"SET allowed_directories = ['{_sql_str(allowed)}']",
                 "SET temp_directory = ''",
                 "SET enable_external_access = false",
                 "SET parquet_metadata_cache = true",  # part files never change once named
                 "SET lock_configuration = true"):
        con.execute(stmt)
    return con


def _read_part(path: Path, spec: TableSpec, columns: Sequence[str]) -> pa.Table:
    try:
        # ParquetFile.read: no dataset discovery (several times faster on small files)
        pf = pq.ParquetFile(path)
        have = set(pf.schema_arrow.names)
        table = pf.read(columns=[c for c in columns if c in have])
        for c in columns:  # files written before a column was added (records.ADDED_FIELDS)
            if c not in have:
                table = table.append_column(spec.schema.field(c), spec.fill(c, table.num_rows))
        return table.select(list(columns)).cast(
            pa.schema([spec.schema.field(c) for c in columns]))
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise CorruptStoreError(
            f"part file {path} of table {spec.name!r} is unreadable ({exc}); run `prevad "
            f"repair` to quarantine it"
        ) from None


def key_hashes(spec: TableSpec, table: pa.Table) -> np.ndarray:
    """64-bit hash (blake2b) of each row's key, stable across processes and versions."""
    cols = [table.column(k).to_pylist() for k in spec.key]
    keys = ("\x1f".join(map(str, t)).encode() for t in zip(*cols, strict=True))
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(k, digest_size=8).digest(), "little") for k in keys),
        dtype=np.uint64, count=table.num_rows,
    )


def sidecar_path(part: Path) -> Path:
    """The key-hash index file of a part file (``part-….keys.npy``, not matched by the views)."""
    return part.with_name(part.name.removesuffix(".parquet") + ".keys.npy")


def _with_sidecar(part: Path) -> list[str]:
    return [part.name, sidecar_path(part).name]


def _replace_quickly(path: Path, data: bytes) -> None:
    """Temp file + rename without fsync: readers see old or new bytes, a crash may keep old."""
    refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    refuse_special(tmp)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save_npy(path: Path, hashes: np.ndarray) -> None:
    """Write a key-hash array to ``path`` (no fsync: a torn index fails its length check)."""
    with open(path, "wb") as fh:
        np.save(fh, hashes, allow_pickle=False)


def _save_sidecar(path: Path, hashes: np.ndarray) -> None:
    """Write a key index (temp + rename; no fsync: a torn index fails its length check)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, hashes, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _any_in(sorted_hashes: np.ndarray, probe: np.ndarray) -> bool:
    """Whether any of ``probe`` (sorted, unique) is in ``sorted_hashes``."""
    if not len(sorted_hashes):
        return False
    pos = np.searchsorted(sorted_hashes, probe)
    pos[pos == len(sorted_hashes)] = 0
    return bool((sorted_hashes[pos] == probe).any())


def _write_parquet(path: Path, table: pa.Table) -> None:
    with open(path, "wb") as fh:
        pq.write_table(table, fh, row_group_size=ROW_GROUP_ROWS)
        fh.flush()
        os.fsync(fh.fileno())


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def _row(table: pa.Table, i: int, cols: Sequence[str]) -> dict[str, Any]:
    return table.slice(i, 1).select(list(cols)).to_pylist()[0]


def _conflict(spec: TableSpec, old: dict, new: dict, where: str) -> None:
    key = tuple(new[c] for c in spec.key)
    col = next((c for c in old if old[c] != new[c]), next(iter(old)))
    keytxt = ", ".join(f"{c}={v!r}" for c, v in zip(spec.key, key, strict=True))
    raise DuplicateIdError(
        f"{spec.name}: key ({keytxt}) is {where} with different content (column {col!r}: "
        f"{old[col]!r} vs {new[col]!r}); keys are unique, nothing was written"
    )


_PARSER_LOCK = threading.Lock()
_PARSER: list[Any] = [0, None]  # pid, connection


def _close_connections_before_fork() -> None:
    """Close cached DuckDB connections: a forked child must not inherit their worker threads'
    locks (it would hang on its first query). Both sides reopen lazily."""
    if _PARSER[1] is not None:
        with contextlib.suppress(Exception):
            _PARSER[1].close()
        _PARSER[:] = [0, None]
    for store in list(_LIVE_STORES):
        store._close_connections()


_LIVE_STORES: weakref.WeakSet[Store] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_close_connections_before_fork)


def _parser() -> duckdb.DuckDBPyConnection:
    """A cached in-memory connection used only to parse SQL (opening one costs ~30 ms)."""
    if _PARSER[0] != os.getpid():
        _PARSER[:] = [os.getpid(), duckdb.connect(":memory:")]
    return _PARSER[1]


def check_read_only(sql: str) -> None:
    """Raise ReadOnlyQueryError unless every statement of ``sql`` is a read-only SELECT.

    DuckDB's own parser classifies the statements (not a regex). ``EXPLAIN`` is judged by the
    statement it explains (``EXPLAIN ANALYZE`` runs it): only ``EXPLAIN [ANALYZE] SELECT ...``
    passes. The connection that runs the query is guarded as well (see :meth:`Store.query`).
    """
    try:
        with _PARSER_LOCK:
            statements = _parser().extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"query does not parse: {str(exc).splitlines()[0]}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        # a NUL character, or a statement type the Python API does not know (UPDATE
        # EXTENSIONS): not something this check can call read-only
        raise ReadOnlyQueryError(f"store queries are read-only: statement refused ({exc}); "
                                 f"only SELECT (and EXPLAIN [ANALYZE] SELECT) is allowed"
                                 ) from None
    if not statements:
        raise QueryError("query is empty")
    for st in statements:
        kind = _statement_kind(st)
        if kind != "SELECT":
            raise ReadOnlyQueryError(
                f"store queries are read-only: {kind} statement refused "
                f"({st.query.strip()[:60]!r}); only SELECT (and EXPLAIN [ANALYZE] SELECT) "
                f"is allowed"
            )


def _kind(st: Any) -> str:
    try:
        return str(st.type).rsplit(".", 1)[-1]
    except ValueError:  # a statement type the Python API has no name for (UPDATE EXTENSIONS)
        return "UNKNOWN"


def _statement_kind(st: Any) -> str:
    """The kind of a parsed statement; for EXPLAIN, ``EXPLAIN <kind of what it explains>``
    (``SELECT`` when that is a SELECT), or ``EXPLAIN (unclear)`` when it cannot be told."""
    kind = _kind(st)
    if kind != "EXPLAIN":
        return kind
    inner = _explained_text(st.query)
    try:
        with _PARSER_LOCK:
            parsed = _parser().extract_statements(inner) if inner is not None else []
    except (duckdb.Error, ValueError, TypeError, RuntimeError):  # a statement type unknown
        parsed = []  # to the Python API raises ValueError: unclear, so refused
    if len(parsed) != 1 or _kind(parsed[0]) == "EXPLAIN":
        return "EXPLAIN (unclear)"
    inner_kind = _kind(parsed[0])
    return "SELECT" if inner_kind == "SELECT" else f"EXPLAIN {inner_kind}"


def _explained_text(text: str) -> str | None:
    """The statement text after ``EXPLAIN``, an optional ``ANALYZE`` and an optional
    parenthesised option list (DuckDB's tokenizer; comments skipped)."""
    tokens = duckdb.tokenize(text)
    ends = [pos for pos, _ in tokens[1:]] + [len(text)]
    words = [(pos, text[pos:end].strip()) for (pos, kind), end in zip(tokens, ends, strict=True)
             if kind != duckdb.token_type.comment]
    if not words or words[0][1].upper() != "EXPLAIN":
        return None
    i = 1
    if i < len(words) and words[i][1].upper() == "ANALYZE":
        i += 1
    if i < len(words) and words[i][1].startswith("("):
        depth = 0
        while i < len(words):
            depth += words[i][1].count("(") - words[i][1].count(")")
            i += 1
            if depth <= 0:
                break
    return text[words[i][0]:] if i < len(words) else None


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
