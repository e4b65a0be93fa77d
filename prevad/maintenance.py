"""Checking and repairing a store: ``prevad verify`` and ``prevad repair``.

:func:`verify` reads without writing (it works on a read-only store too) and lists every problem
it finds, each naming its file and what is lost:

- the marker (``store.json``: format, version and the type of every field), pending journals and
  journals that fail their checks (a path leaving the store, a swap that is not a compaction),
  the catalog and its views, the tables' schema files, malformed claims files;
- symbolic links and special files (FIFOs, sockets, devices) inside the store's folders;
- every part file (readable Parquet with the table's columns and types), orphan temp files of
  interrupted writes, and **lost part files**: a part's key index (``part-….keys.npy``) is
  renamed in after the part itself, so an index without its part means the part was deleted or
  moved away; the index still says how many rows were lost and, matched against the ids other
  tables refer to, which ones;
- with ``full`` (the default; ``prevad init`` checks without it): keys stored more than once
  (a part file copied under a second name), rows that refer to what is not stored
  (annotations and features of clips/videos that are gone, segments without their video), and
  the feature files that ``features`` rows point to.

:func:`repair` fixes what can be fixed without losing anything: it rewrites a bad
``store.json`` (keeping its valid fields), rolls a valid journal forward and sets a refused one
aside (its commit is rolled back; nothing it names is touched), moves unreadable part files,
symlinks, special files and malformed claims files into ``quarantine/<time>/`` with a
``report.json``, removes orphan temp files, drops exact duplicate rows (a copied part file
goes to quarantine, repeats inside a partition are compacted away), and rebuilds
``catalog.duckdb``. Lost rows are not guessed back: repair reports them and does not call the
store ok while they are missing, until they are restored (put the part file back, re-import,
re-run the stage) or the loss is accepted with ``accept_loss`` (``prevad repair
--accept-loss``), which moves the lost parts' key indexes and the rows that refer to missing
rows into quarantine (as Parquet, so nothing is deleted).
"""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prevad import queries
from prevad.errors import CorruptStoreError, PrevadError, StoreNotFoundError
from prevad.io import atomic_write_json
from prevad.journal import BOOKKEEPING, UnsafePathError, inside_root
from prevad.journal import read_journal as read_journal_file
from prevad.store import (
    CATALOG_VERSION,
    FORMAT,
    FORMAT_VERSION,
    JOURNAL,
    PARTITION_COLUMNS,
    QUARANTINE,
    SCHEMA_ID,
    TABLES,
    WRITING_MARKER,
    Store,
    TableSpec,
    _guarded_connection,
    key_hashes,
    lost_parts,
    orphan_files,
    part_rows,
    read_marker,
)

#: Folders whose entries must be real files and folders (no symlink, FIFO, socket or device).
CHECKED_DIRS = ("tables", "features", "claims", "imports", "stage_runs")

#: Where other tables refer to a table's key (single-column keys): lost rows are named by
#: matching these ids against the lost part's key index.
REFERENCES: dict[str, list[tuple[str, str]]] = {
    "videos": [("annotations", "video_id"), ("segments", "video_id"), ("features", "video_id"),
               ("scores", "video_id"), ("stage_results", "id")],
    "segments": [("annotations", "video_id"), ("features", "video_id"),
                 ("stage_results", "id")],
    "candidates": [("stage_results", "id")],
    "annotations": [("stage_results", "id")],
}

#: Rows that must find what they refer to: (table, column, [(target table, its key column)]).
#: A clip id (D1) is a segment id or a video id, so annotations and features accept either.
LINKS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("annotations", "video_id", [("videos", "video_id"), ("segments", "segment_id")]),
    ("features", "video_id", [("videos", "video_id"), ("segments", "segment_id")]),
    ("segments", "video_id", [("videos", "video_id")]),
]


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


def _journal_paths(root: Path) -> list[Path]:
    return [p for p in [root / JOURNAL] + [root / "tables" / t / JOURNAL for t in TABLES]
            if p.exists() or p.is_symlink()]


# ---------------------------------------------------------------------- verify
def verify(store: Store | str | os.PathLike[str], *, full: bool = True) -> VerifyReport:
    """Check a store without changing it.

    Args:
        store: a Store or its folder (a folder works even when ``store.json`` is garbage).
        full: also read every part file completely, reconcile the tables (duplicate keys,
            rows referring to missing rows) and check every feature file (``False``: Parquet
            footers, lost parts and bookkeeping files only; what ``prevad init`` runs).

    Raises:
        StoreNotFoundError: the folder is not a store at all (no store.json, no tables/).
    """
    root = _root_of(store)
    report = VerifyReport(str(root))
    add = report.problems.append
    if not (root / "store.json").exists() and not (root / "tables").is_dir():
        raise StoreNotFoundError(f"{root} is not a PreVAD store (no store.json, no tables/)")
    try:
        meta = read_marker(root)
        if meta.get("catalog", CATALOG_VERSION) > CATALOG_VERSION:
            add(Problem("marker", str(root / "store.json"), f"catalog version "
                        f"{meta['catalog']} is newer than this prevad ({CATALOG_VERSION})"))
    except PrevadError as exc:
        add(Problem("marker", str(root / "store.json"), str(exc).split("; ")[0]))
    for journal in _journal_paths(root):
        try:
            read_journal_file(journal, root, PARTITION_COLUMNS)
            add(Problem("journal", str(journal), "an interrupted commit is pending "
                        "(the next write or `prevad repair` rolls it forward)"))
        except CorruptStoreError as exc:
            add(Problem("journal", str(journal), str(exc).split(": `prevad repair")[0]))
    _check_catalog(root, add)
    for path, why in special_entries(root):
        add(Problem("special", str(path), why))
    for path, why in claims_problems(root):
        add(Problem("claims", str(path), why))
    healthy: dict[str, list[Path]] = {}
    for spec in TABLES.values():
        healthy[spec.name] = _check_table(root, spec, full, report)
    for side in lost_parts(root):
        add(Problem("lost", str(side.with_name(side.name.removesuffix(".keys.npy")
                                               + ".parquet")),
                    _lost_message(root, side, healthy)))
    for p in orphan_files(root):
        add(Problem("orphan", str(p), "temp file of an interrupted write"))
    if full:
        unreadable = {t for t in TABLES if len(healthy[t]) < len(_parts(root, TABLES[t]))}
        with _reader(root) as con:
            for spec in TABLES.values():
                if spec.name not in unreadable:
                    for msg in _duplicate_messages(con, spec, healthy[spec.name]):
                        add(Problem("duplicate", str(root / "tables" / spec.name), msg))
            for table, col, targets in LINKS:
                missing = _dangling(con, table, col, targets, healthy)
                if missing:
                    add(Problem("orphan-rows", str(root / "tables" / table),
                                _dangling_message(table, col, targets, missing, unreadable)))
        if "features" not in unreadable:
            _check_feature_files(root, report, healthy["features"])
    return report


def _parts(root: Path, spec: TableSpec) -> list[Path]:
    return sorted(p for p in (root / "tables" / spec.name).glob("*=*/part-*.parquet")
                  if p.is_file() and not p.is_symlink())


class _reader:  # noqa: N801 - a context manager used like a function
    """A guarded in-memory DuckDB connection (reads only under ``tables/``)."""

    def __init__(self, root: Path) -> None:
        self.con = _guarded_connection(root)

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.con

    def __exit__(self, *exc: object) -> None:
        self.con.close()


def _check_catalog(root: Path, add: Callable[[Problem], None]) -> None:
    catalog = root / "catalog.duckdb"
    if not catalog.is_file() or catalog.is_symlink():
        add(Problem("catalog", str(catalog), "catalog is missing (or not a regular file)"))
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
    missing = sorted((set(TABLES) | set(queries.RESULT_VIEWS)) - views)
    if missing:
        add(Problem("catalog", str(catalog), f"views missing: {missing}"))


def special_entries(root: Path) -> list[tuple[Path, str]]:
    """Symlinks and special files inside the store's folders and among its bookkeeping files
    (each with what it is)."""
    out = []
    for name in sorted(BOOKKEEPING):
        path = root / name
        if path.is_symlink():
            out.append((path, f"symbolic link to {os.readlink(path)}: the store's own files "
                              "must be regular files"))
        elif path.exists() and not path.is_file():
            out.append((path, "not a regular file (the store's own files must be)"))
    for name in CHECKED_DIRS:
        base = root / name
        if base.is_symlink():
            out.append((base, f"symbolic link to {os.readlink(base)}: the store's folders must "
                              "be real folders"))
            continue
        for path in _walk(base):
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                out.append((path, f"symbolic link to {os.readlink(path)}: the store's files "
                                  "must be real files (a link could lead out of the store)"))
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                out.append((path, "special file (FIFO, socket or device) inside the store"))
    return out


def _walk(base: Path) -> Iterator[Path]:
    """Every entry under ``base``, never following a symlink."""
    if not base.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if n in dirnames and not p.is_symlink():
                continue  # walked into
            yield p


def claims_problems(root: Path) -> list[tuple[Path, str]]:
    """Claims files (``claims/<stage>.json``) that are not a JSON object of valid claims."""
    from prevad.stage import claims_file_problem

    base = root / "claims"
    if not base.is_dir() or base.is_symlink():
        return []
    out = []
    for path in sorted(base.glob("*.json")):
        if path.is_file() and not path.is_symlink():
            why = claims_file_problem(path)
            if why:
                out.append((path, f"{why}; `prevad repair {root}` resets it (claims only "
                                  "reserve items for running workers)"))
    return out


def _check_table(root: Path, spec: TableSpec, full: bool, report: VerifyReport) -> list[Path]:
    """Check a table's files; returns its readable part files."""
    add = report.problems.append
    tdir = root / "tables" / spec.name
    schema_file = tdir / "_schema.parquet"
    try:
        # an older schema (added columns missing) is a supported evolution: readers fill the
        # columns in and the next writable open upgrades the file
        why = spec.schema_problem(pq.read_schema(schema_file))
        if why:
            add(Problem("schema", str(schema_file), f"schema file does not match the table: "
                        f"{why}"))
    except (OSError, pa.ArrowException) as exc:
        add(Problem("schema", str(schema_file), f"schema file unreadable ({exc})"))
    healthy = []
    for part in _parts(root, spec):
        report.files_checked += 1
        msg = part_problem(part, spec, full)
        if msg:
            add(Problem("part", str(part), msg))
        else:
            healthy.append(part)
    return healthy


def part_problem(part: Path, spec: TableSpec, full: bool = True) -> str | None:
    """What is wrong with a part file (unreadable; a foreign, mistyped or missing column), or
    None. A file written before a column was added (``records.ADDED_FIELDS``) is fine."""
    try:
        why = spec.schema_problem(pq.read_schema(part))
        if why:
            return why
        if full:
            pq.read_table(part, schema=spec.schema)
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable Parquet ({str(exc).splitlines()[0]})"
    return None


# ---------------------------------------------------------------------- reconciliation
def _column_values(con: duckdb.DuckDBPyConnection, spec: TableSpec, files: list[Path],
                   column: str) -> pa.Array:
    if not files:
        return pa.array([], pa.string())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Arrow output on a DB-API result makes a copy"
        return con.execute(
            f"SELECT DISTINCT {queries._ident(column)} AS v FROM ({_typed(spec)}) "
            "WHERE v IS NOT NULL", {"f": [str(p) for p in files]}
        ).to_arrow_table().column("v").combine_chunks()


def _typed(spec: TableSpec, filename: bool = False) -> str:
    """The table's columns (typed, added ones filled) from the part files ``$f``."""
    source = f"read_parquet($f, union_by_name = true{', filename = true' if filename else ''})"
    columns = spec.sql_columns + ([("filename", "VARCHAR", None)] if filename else [])
    return queries.typed_select(columns, source)


def _lost_message(root: Path, side: Path, healthy: dict[str, list[Path]]) -> str:
    """What a lost part held: its row count, and the ids other tables name that were in it."""
    table = side.parent.parent.name
    spec = TABLES.get(table)
    try:
        rows = part_rows(side.with_name(side.name.removesuffix(".keys.npy") + ".parquet"))
    except (OSError, pa.ArrowException, ValueError):
        rows = None
    what = f"part file of table {table!r} is missing: its {rows} rows are lost"
    if spec is None or len(spec.key) != 1 or table not in REFERENCES:
        return what + _lost_hint(root)
    try:
        hashes = np.load(side, allow_pickle=False)
        if hashes.dtype != np.uint64:
            raise ValueError("not a key index")
    except (OSError, ValueError):
        return what + " (its key index is unreadable)" + _lost_hint(root)
    named: set[str] = set()
    with _reader(root) as con:
        for ref_table, col in REFERENCES[table]:
            ids = _column_values(con, TABLES[ref_table], healthy.get(ref_table, []), col)
            if len(ids):
                probe = key_hashes(spec, pa.table({spec.key[0]: ids.cast(pa.string())}))
                named |= {str(v) for v, hit in zip(ids.to_pylist(), np.isin(probe, hashes),
                                                   strict=True) if hit}
    if named:
        first = sorted(named)[:5]
        what += (f"; {len(named)} of them are named by other tables ({spec.key[0]}: "
                 f"{', '.join(first)}{', ...' if len(named) > 5 else ''})")
    return what + _lost_hint(root)


def _lost_hint(root: Path) -> str:
    return (f" (put the part file back, or re-import / re-run the stage that wrote it; "
            f"`prevad repair --accept-loss {root}` records the loss)")


def _duplicate_messages(con: duckdb.DuckDBPyConnection, spec: TableSpec,
                        files: list[Path]) -> list[str]:
    """Keys stored more than once across a table's part files (never written by a commit)."""
    if len(files) < 1:
        return []
    key = ", ".join(queries._ident(k) for k in spec.key)
    content = ", ".join(queries._ident(c) for c in spec.content_columns)
    keys, total, conflicting, names = con.execute(f"""
        WITH g AS (
            SELECT count(*) AS n, count(DISTINCT row({content})) AS variants,
                   list(DISTINCT filename) AS fs
            FROM ({_typed(spec, filename=True)})
            GROUP BY {key} HAVING count(*) > 1)
        SELECT count(*), sum(n), count(*) FILTER (WHERE variants > 1),
               (SELECT list(DISTINCT f ORDER BY f) FROM (SELECT unnest(fs) AS f FROM g))
        FROM g
    """, {"f": [str(p) for p in files]}).fetchone()
    if not keys:
        return []
    names = names[:4]
    shown = ", ".join(Path(n).name for n in names)
    msg = (f"table {spec.name!r}: {keys} keys are stored {total} times (keys are unique; a "
           f"part file copied under a second name?) in {shown}")
    if conflicting:
        return [msg + f"; {conflicting} of them with different content: remove the wrong "
                      "copy by hand (repair keeps both)"]
    return [msg + "; the copies are identical: `prevad repair` drops them"]


def _dangling(con: duckdb.DuckDBPyConnection, table: str, col: str,
              targets: list[tuple[str, str]], healthy: dict[str, list[Path]]) -> list[str]:
    """Distinct values of ``table.col`` found in none of the targets."""
    have = _column_values(con, TABLES[table], healthy[table], col)
    if not len(have):
        return []
    known = [_column_values(con, TABLES[t], healthy[t], k) for t, k in targets]
    con.register("__have", pa.table({"v": have.cast(pa.string())}))
    con.register("__known", pa.table({"v": pa.concat_arrays(
        [k.cast(pa.string()) for k in known]) if known else pa.array([], pa.string())}))
    try:
        return [r[0] for r in con.execute(
            "SELECT v FROM __have ANTI JOIN __known USING (v) ORDER BY v").fetchall()]
    finally:
        con.unregister("__have")
        con.unregister("__known")


def _dangling_message(table: str, col: str, targets: list[tuple[str, str]], missing: list[str],
                      unreadable: set[str]) -> str:
    names = " or ".join(t for t, _ in targets)
    first = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    msg = (f"rows of {table!r} refer to {len(missing)} {col} values stored in no {names} row "
           f"({first}): those rows are lost")
    if unreadable & {t for t, _ in targets}:
        msg += " (a part file of theirs is unreadable: `prevad repair` quarantines it)"
    return msg + (" (restore them, or `prevad repair --accept-loss` moves these rows to "
                  "quarantine)")


def _check_feature_files(root: Path, report: VerifyReport, parts: list[Path]) -> None:
    spec = TABLES["features"]
    if not parts:
        return
    rows = pa.concat_tables(
        pq.read_table(p, columns=["video_id", "model_id", "location", "count", "dim"],
                      schema=spec.schema) for p in parts
    ).to_pylist()
    for r in rows:
        report.files_checked += 1
        try:
            path = inside_root(root, r["location"], f"feature location of {r['video_id']!r}")
        except UnsafePathError as exc:
            report.problems.append(Problem("feature", str(root / "tables" / "features"),
                                           str(exc)))
            continue
        if path.is_symlink() or (path.exists() and not path.is_file()):
            report.problems.append(Problem("feature", str(path), "not a regular file"))
            continue
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


# ---------------------------------------------------------------------- repair
def repair(store: Store | str | os.PathLike[str], *, accept_loss: bool = False
           ) -> RepairReport:
    """Fix what can be fixed (see the module docstring); returns what was done and what is left.

    Args:
        store: a Store or its folder.
        accept_loss: also record lost part files as lost (their key indexes go to quarantine)
            and move rows that refer to missing rows into quarantine; without it such a store
            stays "not ok".

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
        for path, why in special_entries(root):
            if path.name not in (".lock", ".commit.lock"):  # held open: reported only
                _quarantine(root, path, qdir, why, report)
        _repair_marker(root, report)
        for journal in _journal_paths(root):
            try:
                bare._roll_forward(journal)
                report.actions.append(f"rolled journal {journal} forward")
            except CorruptStoreError as exc:
                _quarantine(root, journal, qdir, f"{str(exc).split(';')[0]}; its commit is "
                            "rolled back", report)
        for path, why in claims_problems(root):
            _quarantine(root, path, qdir, why.split(";")[0], report)
        for spec in TABLES.values():
            _repair_table(root, spec, qdir, report)
        for p in bare.remove_orphans():
            report.actions.append(f"removed orphan {p}")
        (root / WRITING_MARKER).unlink(missing_ok=True)
        _drop_duplicates(bare, qdir, report)
        if accept_loss:
            _accept_loss(bare, qdir, report)
        bare._write_catalog()
        report.actions.append("rebuilt catalog.duckdb")
        _mark_current(root)
    if report.quarantined:
        atomic_write_json(qdir / "report.json", {
            "quarantined": report.quarantined, "actions": report.actions,
        })
    report.remaining = verify(root).problems
    return report


def _repair_marker(root: Path, report: RepairReport) -> None:
    try:
        read_marker(root)
        return
    except CorruptStoreError:
        verb = "rewrote"
    except StoreNotFoundError:
        verb = "wrote missing"
    meta: dict[str, Any] = {}
    try:
        old = json.loads((root / "store.json").read_text(encoding="utf-8"))
        if isinstance(old, dict):
            meta = old
    except (OSError, ValueError, RecursionError):
        pass
    keep = {}
    threshold = meta.get("compact_threshold")
    if isinstance(threshold, int) and not isinstance(threshold, bool) and threshold >= 0:
        keep["compact_threshold"] = threshold
    atomic_write_json(root / "store.json", {"format": FORMAT, "version": FORMAT_VERSION,
                                            "root": str(root), "catalog": CATALOG_VERSION,
                                            "schema": SCHEMA_ID,
                                            **keep})
    report.actions.append(f"{verb} {root / 'store.json'}")


def _mark_current(root: Path) -> None:
    """Record in a valid marker that the catalog and schema files are this code's."""
    try:
        meta = read_marker(root)
    except PrevadError:
        return
    now = {**meta, "root": str(root), "catalog": CATALOG_VERSION, "schema": SCHEMA_ID}
    if now != meta:
        atomic_write_json(root / "store.json", now)


def _repair_table(root: Path, spec: TableSpec, qdir: Path, report: RepairReport) -> None:
    tdir = root / "tables" / spec.name
    schema_file = tdir / "_schema.parquet"
    try:
        have = pq.read_schema(schema_file)
        why = spec.schema_problem(have)
    except (OSError, pa.ArrowException) as exc:
        have, why = None, f"unreadable ({str(exc).splitlines()[0]})"
    if why or not have.equals(spec.schema):
        if why and (schema_file.exists() or schema_file.is_symlink()):
            _quarantine(root, schema_file, qdir, f"bad schema file: {why}", report)
        from prevad.io import atomic_write

        with atomic_write(schema_file) as fh:
            pq.write_table(spec.schema.empty_table(), fh)
        added = [n for n in spec.schema.names if have is not None and n not in have.names]
        report.actions.append(f"rewrote {schema_file}" if why else
                              f"upgraded {schema_file} (added columns {added})")
    for part in _parts(root, spec):
        msg = part_problem(part, spec, full=True)
        if msg:
            _quarantine(root, part, qdir, msg, report)


def _drop_duplicates(store: Store, qdir: Path, report: RepairReport) -> None:
    """Exact duplicate rows: whole copied part files go to quarantine, repeats inside a
    partition are compacted away (rows with one key but different content are left)."""
    root = store.root
    for spec in TABLES.values():
        parts = _parts(root, spec)
        if len(parts) < 2:
            continue
        hashes = np.sort(np.concatenate([store._file_hashes(spec, p) for p in parts]))
        if not (hashes[1:] == hashes[:-1]).any():
            continue  # no key stored twice (the key indexes say so without reading rows)
        seen: dict[bytes, Path] = {}
        # of identical copies, keep the one in the folder its rows belong to, then the oldest
        for part in sorted(parts, key=lambda p: (_misplaced(p, spec), p.name, str(p))):
            digest = _content_digest(part, spec)
            if digest in seen:
                _quarantine(root, part, qdir, f"identical copy of {seen[digest].name}", report)
            else:
                seen[digest] = part
        for folder in store._partition_dirs(spec.name):
            if len(list(folder.glob("part-*.parquet"))) < 2:
                continue
            hashes = np.sort(np.concatenate([
                store._file_hashes(spec, p) for p in folder.glob("part-*.parquet")]))
            if len(hashes) > 1 and (hashes[1:] == hashes[:-1]).any():
                counts = store._compact_partition(spec, folder, full=True)
                if counts:
                    report.actions.append(f"compacted {folder} (exact duplicate rows dropped): "
                                          f"{counts[0]} -> {counts[1]} part files")


def _misplaced(part: Path, spec: TableSpec) -> bool:
    """Whether a part file sits in another partition folder than its rows' value."""
    values = pq.read_table(part, columns=[spec.partition]).column(0).unique().to_pylist()
    return [f"{spec.partition}={urllib.parse.quote(str(v), safe='')}" for v in values] != [
        part.parent.name]


def _content_digest(part: Path, spec: TableSpec) -> bytes:
    """A digest of a part file's rows (content columns, in stored order)."""
    import hashlib

    table = pq.read_table(part, schema=spec.schema).select(spec.content_columns)
    h = hashlib.blake2b(digest_size=16)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    h.update(sink.getvalue().to_pybytes())
    return h.digest()


def _accept_loss(store: Store, qdir: Path, report: RepairReport) -> None:
    """Record lost parts as lost and move rows referring to missing rows into quarantine."""
    root = store.root
    for side in lost_parts(root):
        _quarantine(root, side, qdir, "key index of a lost part file (loss accepted)", report)
    healthy = {t: _parts(root, TABLES[t]) for t in TABLES}
    with _reader(root) as con:
        dangling = {(table, col): set(_dangling(con, table, col, targets, healthy))
                    for table, col, targets in LINKS}
    for (table, col), missing in dangling.items():
        if not missing:
            continue
        spec = TABLES[table]
        lost: list[pa.Table] = []

        def keep_rows(t: pa.Table, col: str = col, missing: set[str] = missing,
                      lost: list[pa.Table] = lost) -> pa.Table:
            mask = pa.array([v not in missing for v in t.column(col).to_pylist()])
            lost.append(t.filter(pa.compute.invert(mask)))
            return t.filter(mask)

        for folder in store._partition_dirs(table):
            before = len(lost)
            store._compact_partition(spec, folder, full=True, select=keep_rows)
            gone = sum(t.num_rows for t in lost[before:])
            if gone:
                dest = qdir / f"{table}-{folder.name}-orphans.parquet"
                dest.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.concat_tables(lost[before:]), dest)
                report.quarantined.append(json.dumps({
                    "file": str(folder.relative_to(root)), "rows": gone,
                    "why": f"{col} refers to rows that are not stored (loss accepted)",
                    "moved_to": str(dest.relative_to(root))}))
                report.actions.append(f"moved {gone} rows of {folder} whose {col} is not "
                                      f"stored to {dest}")


def _quarantine(root: Path, path: Path, qdir: Path, why: str, report: RepairReport) -> None:
    """Move ``path`` (a file, link or special file inside the store) under ``qdir``.

    The path comes from a scan of the store's own folders; a link is moved as a link (what it
    points to is never touched).
    """
    rel = path.relative_to(root)
    dest = qdir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, dest)  # same file system (inside the store); never follows a link
    report.quarantined.append(json.dumps({"file": str(rel), "why": why,
                                          "moved_to": str(dest.relative_to(root))}))
    report.actions.append(f"quarantined {path} ({why}) -> {dest}")
    side = path.with_name(path.name.removesuffix(".parquet") + ".keys.npy")
    if path.name.endswith(".parquet") and side.is_file() and not side.is_symlink():
        os.rename(side, dest.with_name(side.name))  # its key index goes with it
