"""Checking and repairing a store: ``prevad verify`` and ``prevad repair``.

:func:`verify` reads without writing (it works on a read-only store too) and lists every problem
it finds, each naming its file: the marker, pending or unreadable journals, the catalog, the
tables' schema files, every part file (readable Parquet with the table's columns and types),
orphan temp files of interrupted writes, and the feature files that ``features`` rows point to.

:func:`repair` fixes what can be fixed without guessing: it rewrites a garbage ``store.json``,
rolls a readable journal forward (an unreadable one is set aside, which rolls its commit back),
moves unreadable part files into ``quarantine/<time>/`` with a ``report.json``, removes orphan
temp files, and rebuilds ``catalog.duckdb``. Feature rows whose file is missing are reported,
not deleted: re-run the extraction for them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prevad import queries
from prevad.errors import CorruptStoreError, PrevadError, StoreNotFoundError
from prevad.io import atomic_write_json
from prevad.store import (
    FORMAT,
    FORMAT_VERSION,
    JOURNAL,
    QUARANTINE,
    TABLES,
    WRITING_MARKER,
    Store,
    TableSpec,
    orphan_files,
    read_journal,
    read_marker,
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a store: its kind, the file, and what is wrong."""

    kind: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(slots=True)
class VerifyReport:
    """Problems found by :func:`verify` (empty when the store is healthy)."""

    root: str
    problems: list[Problem] = field(default_factory=list)
    files_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


@dataclass(slots=True)
class RepairReport:
    """What :func:`repair` did, and the problems left (see :func:`verify`)."""

    root: str
    actions: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    remaining: list[Problem] = field(default_factory=list)


def _root_of(store: Store | str | os.PathLike[str]) -> Path:
    return store.root if isinstance(store, Store) else Path(store).resolve()


def verify(store: Store | str | os.PathLike[str], *, full: bool = True) -> VerifyReport:
    """Check a store without changing it.

    Args:
        store: a Store or its folder (a folder works even when ``store.json`` is garbage).
        full: also read every part file completely and check every feature file (``False``:
            Parquet footers only, no feature files; what ``prevad init`` runs).

    Raises:
        StoreNotFoundError: the folder is not a store at all (no store.json, no tables/).
    """
    root = _root_of(store)
    report = VerifyReport(str(root))
    add = report.problems.append
    if not (root / "store.json").exists() and not (root / "tables").is_dir():
        raise StoreNotFoundError(f"{root} is not a PreVAD store (no store.json, no tables/)")
    try:
        read_marker(root)
    except PrevadError as exc:
        add(Problem("marker", str(root / "store.json"), str(exc).split("; ")[0]))
    for journal in [root / JOURNAL] + [root / "tables" / t / JOURNAL for t in TABLES]:
        if journal.exists():
            try:
                read_journal(journal)
                add(Problem("journal", str(journal), "an interrupted commit is pending "
                            "(the next write or `prevad repair` rolls it forward)"))
            except CorruptStoreError:
                add(Problem("journal", str(journal), "journal is unreadable"))
    _check_catalog(root, add)
    features_ok = True
    for spec in TABLES.values():
        features_ok &= _check_table(root, spec, full, report)
    for p in orphan_files(root):
        add(Problem("orphan", str(p), "temp file of an interrupted write"))
    if full and features_ok:
        _check_feature_files(root, report)
    return report


def _check_catalog(root: Path, add) -> None:  # noqa: ANN001 - list.append
    catalog = root / "catalog.duckdb"
    if not catalog.exists():
        add(Problem("catalog", str(catalog), "catalog is missing"))
        return
    try:
        con = duckdb.connect(str(catalog), read_only=True)
    except duckdb.Error as exc:
        add(Problem("catalog", str(catalog), f"not a readable DuckDB database "
                    f"({str(exc).splitlines()[0]})"))
        return
    try:
        views = {r[0] for r in con.execute(queries.CATALOG_VIEWS).fetchall()}
    finally:
        con.close()
    missing = sorted(set(TABLES) - views)
    if missing:
        add(Problem("catalog", str(catalog), f"views missing: {missing}"))


def _check_table(root: Path, spec: TableSpec, full: bool, report: VerifyReport) -> bool:
    """Check a table's files; returns whether all its part files are readable."""
    add = report.problems.append
    tdir = root / "tables" / spec.name
    schema_file = tdir / "_schema.parquet"
    try:
        if not pq.read_schema(schema_file).equals(spec.schema):
            add(Problem("schema", str(schema_file), "schema file does not match the table"))
    except (OSError, pa.ArrowException) as exc:
        add(Problem("schema", str(schema_file), f"schema file unreadable ({exc})"))
    healthy = True
    for part in sorted(tdir.glob("*=*/part-*.parquet")):
        report.files_checked += 1
        msg = part_problem(part, spec, full)
        if msg:
            healthy = False
            add(Problem("part", str(part), msg))
    return healthy


def part_problem(part: Path, spec: TableSpec, full: bool = True) -> str | None:
    """What is wrong with a part file (unreadable, foreign columns), or None."""
    try:
        schema = pq.read_schema(part)
        for f in schema:
            if f.name not in spec.schema.names:
                return f"unexpected column {f.name!r} for table {spec.name!r}"
            if not f.type.equals(spec.schema.field(f.name).type):
                return (f"column {f.name!r} has type {f.type}, table {spec.name!r} "
                        f"expects {spec.schema.field(f.name).type}")
        if full:
            pq.read_table(part, schema=spec.schema)
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable Parquet ({str(exc).splitlines()[0]})"
    return None


def _check_feature_files(root: Path, report: VerifyReport) -> None:
    spec = TABLES["features"]
    parts = sorted((root / "tables" / "features").glob("*=*/part-*.parquet"))
    if not parts:
        return
    rows = pa.concat_tables(
        pq.read_table(p, columns=["video_id", "model_id", "location", "count", "dim"],
                      schema=spec.schema) for p in parts
    ).to_pylist()
    for r in rows:
        path = root / r["location"]
        report.files_checked += 1
        if not path.is_file():
            report.problems.append(Problem(
                "feature", str(path),
                f"feature file of video {r['video_id']!r} (model {r['model_id']!r}) is missing"))
            continue
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shape = arr.shape
        except (OSError, ValueError) as exc:
            report.problems.append(Problem("feature", str(path), f"unreadable .npy ({exc})"))
            continue
        if shape != (r["count"], r["dim"]):
            report.problems.append(Problem(
                "feature", str(path), f"shape {shape}, its row says ({r['count']}, {r['dim']})"))


def repair(store: Store | str | os.PathLike[str]) -> RepairReport:
    """Fix what can be fixed (see the module docstring); returns what was done and what is left.

    Raises:
        StoreNotFoundError: the folder is not a store at all.
    """
    root = _root_of(store)
    if not (root / "store.json").exists() and not (root / "tables").is_dir():
        raise StoreNotFoundError(f"{root} is not a PreVAD store (no store.json, no tables/)")
    report = RepairReport(str(root))
    qdir = root / QUARANTINE / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    bare = Store._bare(root)
    with bare._locked():
        _repair_marker(root, report)
        for journal in [root / JOURNAL] + [root / "tables" / t / JOURNAL for t in TABLES]:
            if not journal.exists():
                continue
            try:
                read_journal(journal)
            except CorruptStoreError:
                _quarantine(root, journal, qdir, "unreadable journal; its commit is rolled back",
                            report)
                continue
            bare._roll_forward(journal)
            report.actions.append(f"rolled journal {journal} forward")
        for spec in TABLES.values():
            _repair_table(root, spec, qdir, report)
        for p in bare.remove_orphans():
            report.actions.append(f"removed orphan {p}")
        (root / WRITING_MARKER).unlink(missing_ok=True)
        bare._write_catalog()
        report.actions.append("rebuilt catalog.duckdb")
    if report.quarantined:
        atomic_write_json(qdir / "report.json", {
            "quarantined": report.quarantined, "actions": report.actions,
        })
    report.remaining = verify(root).problems
    return report


def _repair_marker(root: Path, report: RepairReport) -> None:
    try:
        read_marker(root)
    except CorruptStoreError:
        atomic_write_json(root / "store.json",
                          {"format": FORMAT, "version": FORMAT_VERSION, "root": str(root)})
        report.actions.append(f"rewrote {root / 'store.json'}")
    except StoreNotFoundError:
        atomic_write_json(root / "store.json",
                          {"format": FORMAT, "version": FORMAT_VERSION, "root": str(root)})
        report.actions.append(f"wrote missing {root / 'store.json'}")


def _repair_table(root: Path, spec: TableSpec, qdir: Path, report: RepairReport) -> None:
    tdir = root / "tables" / spec.name
    schema_file = tdir / "_schema.parquet"
    try:
        good = pq.read_schema(schema_file).equals(spec.schema)
    except (OSError, pa.ArrowException):
        good = False
    if not good:
        if schema_file.exists():
            _quarantine(root, schema_file, qdir, "bad schema file", report)
        from prevad.io import atomic_write

        with atomic_write(schema_file) as fh:
            pq.write_table(spec.schema.empty_table(), fh)
        report.actions.append(f"rewrote {schema_file}")
    for part in sorted(tdir.glob("*=*/part-*.parquet")):
        msg = part_problem(part, spec, full=True)
        if msg:
            _quarantine(root, part, qdir, msg, report)


def _quarantine(root: Path, path: Path, qdir: Path, why: str, report: RepairReport) -> None:
    dest = qdir / path.relative_to(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(dest))
    report.quarantined.append(json.dumps({"file": str(path.relative_to(root)), "why": why,
                                          "moved_to": str(dest.relative_to(root))}))
    report.actions.append(f"quarantined {path} ({why}) -> {dest}")
