"""The store against hostile input: its own files, query text, output paths, concurrent readers.

Each class of attack from the hostile pass (issue 21) is tried with many cases, not only the
reported one. Cases per class (the parametrize lists below): read-only queries (every statement
kind DuckDB parses, EXPLAIN and EXPLAIN ANALYZE of each, multi-statements, reads of outside
files and URLs), commit journals, ``store.json`` fields, claims files, special files at output
paths, paths and links read from the store, lost / duplicated / dangling rows, concurrent
readers. ``CASES`` counts them (printed by ``python -m pytest ... -k count -s``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from prevad import Store, interop
from prevad import store as store_mod
from prevad.cli import app
from prevad.errors import (
    CorruptStoreError,
    FeatureFileMissingError,
    QueryError,
    ReadOnlyQueryError,
    SpecialFileError,
    ValidationError,
)
from prevad.io import atomic_save_png, atomic_write_bytes, atomic_write_json, atomic_write_text
from prevad.maintenance import repair, verify
from prevad.records import Annotation, Segment, StageResult, Video
from prevad.stage import Ok, Stage, run_stage

runner = CliRunner()


# ---------------------------------------------------------------------- helpers
def _tree(*roots: Path) -> dict[str, tuple]:
    """Every entry under ``roots``: type, size, mtime and content hash (links not followed)."""
    out: dict[str, tuple] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                digest = ""
                if stat.S_ISREG(st.st_mode):
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    digest = os.readlink(p)
                out[str(p)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, digest)
    return out


def _one_error_line(result: Any, *names: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def _videos(n: int, source: str = "yt") -> list[Video]:
    return [Video.create(source, f"v{i:03d}", duration_s=float(i + 1)) for i in range(n)]


def _annotations(videos: list[Video], kind: str = "human") -> list[Annotation]:
    return [Annotation(f"{kind}-{v.video_id}", v.video_id, "prevad", kind, kind,
                       "Explosion" if i % 2 else "Normal", bool(i % 2), split="train")
            for i, v in enumerate(videos)]


@pytest.fixture()
def filled(tmp_path: Path) -> Store:
    """A store with 10 videos and their annotations, plus an ``outside`` folder beside it."""
    s = Store.init(tmp_path / "store")
    vids = _videos(10)
    s.append_many({"videos": vids, "annotations": _annotations(vids)})
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("precious")
    (out / "sub" / "data.parquet").write_bytes(s.part_files("videos")[0].read_bytes())
    return s


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"a,b\n1,2\n")

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_probe() -> Any:
    """A local HTTP server that records every request (no query may reach it)."""
    _Counter.hits = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Counter.hits
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def query_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One store (and an ``outside`` folder) shared by the query cases: none may change it."""
    base = tmp_path_factory.mktemp("q")
    s = Store.init(base / "store")
    vids = _videos(10)
    s.append_many({"videos": vids, "annotations": _annotations(vids)})
    out = base / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("precious")
    (out / "in.csv").write_text("video_id\nx\n")
    (out / "sub" / "data.parquet").write_bytes(s.part_files("videos")[0].read_bytes())
    (s.root / "claims").mkdir()
    (s.root / "claims" / "x.json").write_text("{}")
    (s.root / "tables" / "escape").symlink_to(out)
    return s


# ====================================================================== 1. read-only queries
#: One or more SQL samples per statement kind DuckDB parses ({part} = a live part file,
#: {tmp} = a writable folder outside the store, {url} = the probe server).
STATEMENTS = {
    "INSERT": ["INSERT INTO videos SELECT * FROM videos",
               "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a"],
    "UPDATE": ["UPDATE videos SET uri = 'x'"],
    "DELETE": ["DELETE FROM videos", "TRUNCATE videos"],
    "CREATE": ["CREATE TABLE t AS SELECT 1", "CREATE VIEW v AS SELECT 1", "CREATE SCHEMA s",
               "CREATE SEQUENCE q", "CREATE MACRO m(a) AS a", "CREATE FUNCTION f(a) AS a + 1",
               "CREATE TYPE e AS ENUM ('a')", "CREATE INDEX i ON videos(video_id)",
               "CREATE OR REPLACE TEMP TABLE z AS SELECT 1", "CREATE SECRET (TYPE s3)",
               "CREATE PERSISTENT SECRET p (TYPE s3, KEY_ID 'k', SECRET 's')"],
    "PREPARE": ["PREPARE p AS SELECT 1"],
    "EXECUTE": ["EXECUTE p"],
    "ALTER": ["ALTER TABLE videos RENAME TO v2", "ALTER VIEW videos RENAME TO v3",
              "ALTER TABLE videos ADD COLUMN z INT", "COMMENT ON TABLE videos IS 'x'"],
    "TRANSACTION": ["BEGIN", "COMMIT", "ROLLBACK"],
    "COPY": ["COPY (SELECT 1 AS junk) TO '{part}' (FORMAT parquet)",
             "COPY videos TO '{tmp}/out.csv'", "COPY (SELECT 1) TO 'relative.csv'",
             "COPY videos FROM '{tmp}/in.csv'"],
    "VACUUM": ["VACUUM", "ANALYZE"],
    "DROP": ["DROP VIEW videos", "DROP TABLE t", "DEALLOCATE p", "DROP SECRET s"],
    "EXPORT": ["EXPORT DATABASE '{tmp}/export'"],
    "PRAGMA": ["PRAGMA version", "IMPORT DATABASE '{tmp}/export'",
               "COPY FROM DATABASE memory TO other"],
    "CALL": ["CALL pragma_version()", "CHECKPOINT", "FORCE CHECKPOINT"],
    "SET": ["SET threads = 1", "RESET threads", "SET GLOBAL enable_external_access = true",
            "SET VARIABLE x = 1", "RESET VARIABLE x", "USE memory",
            "SET allowed_directories = ['/']", "SET lock_configuration = false"],
    "LOAD": ["LOAD httpfs", "INSTALL httpfs", "FORCE INSTALL httpfs",
             "INSTALL httpfs FROM '{url}'"],
    "ATTACH": ["ATTACH '{tmp}/new.duckdb' AS n", "ATTACH OR REPLACE '{tmp}/y.duckdb'",
               "ATTACH '{url}/remote.duckdb'"],
    "DETACH": ["DETACH n"],
    "MERGE_INTO": ["MERGE INTO videos USING (SELECT 1 AS a) s ON false "
                   "WHEN NOT MATCHED THEN INSERT VALUES (1)"],
    "MULTI": ["PIVOT videos ON source"],
    "unknown to the Python API": ["UPDATE EXTENSIONS", "UPDATE EXTENSIONS (httpfs)"],
}
#: Statement types DuckDB never returns for SQL text (internal, or folded into another kind
#: above: ANALYZE -> VACUUM, COPY DATABASE -> PRAGMA, SET VARIABLE -> SET, CREATE FUNCTION ->
#: CREATE).
NEVER_FROM_TEXT = {"INVALID", "RELATION", "LOGICAL_PLAN", "EXTENSION", "COPY_DATABASE",
                   "ANALYZE", "VARIABLE_SET", "CREATE_FUNC", "SELECT", "EXPLAIN"}

#: SELECTs that try to read or reach what a query may not (files outside ``tables/``, URLs).
OUTSIDE_READS = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('{tmp}/keep.txt')",
    "SELECT * FROM read_parquet('{tmp}/sub/data.parquet')",
    "SELECT * FROM read_parquet('{root}/tables/../../outside/sub/data.parquet')",
    "SELECT * FROM read_parquet('{root}/tables/escape/sub/data.parquet')",  # symlink out
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM glob('{tmp}/**')",
    "SELECT * FROM read_json('{root}/store.json')",
    "SELECT * FROM read_text('{root}/claims/x.json')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM read_csv('{url}/x.csv')",
    "SELECT * FROM read_parquet('{url}/x.parquet')",
    "SELECT * FROM read_json('{url}/x.json')",
    "SELECT * FROM read_csv('s3://bucket/x.csv')",
    "SELECT * FROM query('COPY (SELECT 1) TO ''{tmp}/q.csv''')",
    "SELECT * FROM query_table('{tmp}/keep.txt')",
    "SELECT getenv('HOME')",
    "SELECT * FROM duckdb_extensions() WHERE installed",
    "SELECT * FROM read_csv('file:///etc/passwd')",
    "SELECT * FROM sqlite_scan('{tmp}/x.db', 't')",
]


def _expand(sql: str, s: Store, tmp: Path, url: str) -> str:
    return sql.format(part=s.part_files("videos")[0], tmp=tmp, url=url, root=s.root)


def _statement_cases() -> list[tuple[str, str]]:
    cases = []
    for kind, sqls in STATEMENTS.items():
        for sql in sqls:
            cases += [(kind, sql), (kind, f"EXPLAIN {sql}"), (kind, f"EXPLAIN ANALYZE {sql}"),
                      (kind, f"/* c */ explain (analyze) {sql}"), (kind, f"SELECT 1; {sql}"),
                      (kind, f"{sql}; SELECT 1")]
    return cases


STATEMENT_CASES = _statement_cases()


def test_every_statement_kind_has_samples() -> None:
    con = duckdb.connect()
    seen = set()
    for sqls in STATEMENTS.values():
        for sql in sqls:
            with contextlib.suppress(ValueError):  # a type the Python enum does not know
                seen.add(str(con.extract_statements(sql.format(
                    part="p", tmp="t", url="u"))[0].type).rsplit(".", 1)[-1])
    missing = set(duckdb.StatementType.__members__) - seen - NEVER_FROM_TEXT
    assert not missing, f"statement kinds without a sample: {missing}"


@pytest.mark.parametrize(("kind", "sql"), STATEMENT_CASES,
                         ids=[f"{k}:{s[:40]}" for k, s in STATEMENT_CASES])
def test_query_refuses_every_writing_statement(query_store: Store, http_probe: Any,
                                               monkeypatch: pytest.MonkeyPatch, kind: str,
                                               sql: str) -> None:
    url, hits = http_probe
    base = query_store.root.parent
    monkeypatch.chdir(base)  # relative paths land where the snapshot looks
    sql = _expand(sql, query_store, base / "outside", url)
    before = _tree(base)
    # refused before it runs (a statement that does not even parse under EXPLAIN is a
    # QueryError: refused as well)
    with pytest.raises(ReadOnlyQueryError if "EXPLAIN" not in sql.upper() else
                       (ReadOnlyQueryError, QueryError), match="read-only|parse"):
        query_store.query(sql)
    assert _tree(base) == before
    assert hits == []
    assert query_store.query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 10


@pytest.mark.parametrize("sql", OUTSIDE_READS)
def test_query_cannot_read_outside_tables_nor_reach_the_network(
        query_store: Store, http_probe: Any, sql: str) -> None:
    url, hits = http_probe
    base = query_store.root.parent
    sql = _expand(sql, query_store, base / "outside", url)
    before = _tree(base)
    with pytest.raises((ReadOnlyQueryError, QueryError)):
        query_store.query(sql)
    assert _tree(base) == before
    assert hits == []


def test_the_reported_case_through_the_cli(filled: Store, tmp_path: Path) -> None:
    part = filled.part_files("videos")[0]
    before = _tree(tmp_path)
    r = runner.invoke(app, ["query", str(filled.root), f"EXPLAIN ANALYZE COPY (SELECT 1 AS junk)"
                            f" TO '{part}' (FORMAT parquet)"])
    _one_error_line(r, "read-only", "COPY")
    assert _tree(tmp_path) == before
    r = runner.invoke(app, ["query", str(filled.root), "SELECT * FROM read_csv('/etc/passwd')"])
    _one_error_line(r, "/etc/passwd")
    ok = runner.invoke(app, ["query", str(filled.root), "EXPLAIN ANALYZE SELECT count(*) FROM "
                             "videos", "--format", "json"])
    assert ok.exit_code == 0, ok.output


def test_reads_of_the_store_tables_work(filled: Store) -> None:
    glob = filled.root / "tables" / "videos" / "**" / "*.parquet"
    n = filled.query(f"SELECT count(*) AS n FROM read_parquet('{glob}')").column("n")
    assert n[0].as_py() == 10
    assert filled.query("SUMMARIZE videos").num_rows > 0
    assert filled.query("DESCRIBE final_labels").num_rows > 0


# ====================================================================== 2. journals
def _journals(live: str, ann: str, part: Path, out: str, tmp: Path) -> list[Any]:
    """Hostile journals: ``live``/``ann`` partition folders, ``part`` a live part file."""
    return [
        {"renames": [[out, "tables/videos/source=zz"]]},  # the reported case: outside moved in
        {"renames": [["../outside/keep.txt", f"{live}/part-x-n1.parquet"]]},
        {"renames": [[f"{live}/.x.tmp", "../outside/keep.txt"]]},
        {"renames": [[f"{live}/.x.tmp", f"{tmp}/outside/new.txt"]]},
        {"renames": [[f"{live}/.x.tmp", "store.json"]]},
        {"renames": [[f"{live}/.x.tmp", "catalog.duckdb"]]},
        {"renames": [[f"{live}/.x.tmp", "_journal.json"]]},
        {"renames": [[f"{live}/{part.name}", f"{ann}/{part.name}"]]},  # a live part moved away
        {"renames": [[f"{live}/.x.tmp", f"{ann}/part-y-n1.parquet"]]},  # across folders
        {"renames": [["tables/escape/.x.tmp", "tables/escape/x.parquet"]]},  # through a link
        {"renames": [[".x.tmp", "quarantine/x"]]},
        {"renames": [["a\u0000b.tmp", "x"]]},
        {"renames": [[1, 2]]},
        {"renames": [["only-one"]]},
        {"renames": "not a list"},
        {"swaps": [{"staging": live, "partition": ann, "marker": part.name,  # live as staging
                    "new": [part.name], "old": []}]},
        {"swaps": [{"staging": ".staging/x", "partition": out, "marker": "part-a.parquet",
                    "new": ["part-a.parquet"], "old": ["keep.txt"]}]},
        {"swaps": [{"staging": ".staging/x", "partition": live, "marker": "part-a.parquet",
                    "new": ["part-a.parquet"], "old": ["../../../store.json"]}]},
        {"swaps": [{"staging": "../outside", "partition": live, "marker": "part-a.parquet",
                    "new": ["part-a.parquet"], "old": []}]},
        {"swaps": [{"staging": ".staging/x", "partition": "tables/videos",
                    "marker": "part-a.parquet", "new": ["part-a.parquet"], "old": []}]},
        {"swaps": [{"staging": ".staging/x", "partition": "tables/videos/dataset=x",
                    "marker": "part-a.parquet", "new": ["part-a.parquet"], "old": []}]},
        {"swaps": [{"staging": ".staging/x", "partition": live, "marker": "other.parquet",
                    "new": ["part-a.parquet"], "old": []}]},
        {"swaps": [{"staging": ".staging/x", "partition": live}]},
        {"unlinks": [str(tmp / "outside" / "keep.txt")]},
        {"unlinks": ["../outside/keep.txt"]},
        {"unlinks": ["store.json"]},
        {"unlinks": [live]},  # a whole partition
        {"unlinks": [f"{live}/../../annotations"]},
        {"renames": [], "extra": "field"},
        ["renames"],
        "a string",
        None,
        json.loads("[" * 50 + "]" * 50),
    ]


JOURNAL_CASES = len(_journals("l", "a", Path("p"), "o", Path("t")))
RAW_JOURNALS = ["{", "\x00\x01garbage", "[" * 100_000, "\"" + "x" * 10 + "\""]


@pytest.mark.parametrize("case", range(JOURNAL_CASES + len(RAW_JOURNALS)))
def test_a_hostile_journal_is_refused_and_nothing_is_touched(filled: Store, tmp_path: Path,
                                                             case: int) -> None:
    (filled.root / "tables" / "escape").symlink_to(tmp_path / "outside")
    part = filled.part_files("videos")[0]
    journals = _journals(str(part.parent.relative_to(filled.root)),
                         str(filled.part_files("annotations")[0].parent.relative_to(filled.root)),
                         part, str(tmp_path / "outside"), tmp_path)
    jpath = filled.root / store_mod.JOURNAL
    if case < len(journals):
        jpath.write_text(json.dumps(journals[case]))
    else:
        jpath.write_text(RAW_JOURNALS[case - len(journals)])
    outside = _tree(tmp_path / "outside")
    tables = _tree(filled.root / "tables")
    with pytest.raises(CorruptStoreError, match="_journal.json"):
        Store(filled.root)
    if case in (0, len(journals)):  # the command line: one error line (same path for all)
        r = runner.invoke(app, ["query", str(filled.root), "SELECT count(*) FROM videos"])
        _one_error_line(r, "_journal.json")
    kinds = [p.kind for p in verify(filled.root, full=False).problems]
    assert [k for k in kinds if k != "special"] == ["journal"]
    assert _tree(tmp_path / "outside") == outside and _tree(filled.root / "tables") == tables
    repair(filled.root)
    assert _tree(tmp_path / "outside") == outside
    # repair set the journal aside (and the link), moved nothing in, deleted nothing live
    assert not jpath.exists()
    s = Store(filled.root)
    assert s.query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 10
    assert s.query("SELECT count(*) AS n FROM annotations").column("n")[0].as_py() == 10
    assert verify(s).ok, verify(s).problems


def test_a_valid_journal_still_rolls_forward(filled: Store) -> None:
    """The checks refuse what a commit never writes, not what it does."""
    part = filled.part_files("videos")[0]
    tmp = part.with_name(f".{part.name}.x.tmp")
    os.rename(part, tmp)
    (filled.root / store_mod.JOURNAL).write_text(json.dumps({"renames": [[
        str(tmp.relative_to(filled.root)), str(part.relative_to(filled.root))]]}))
    assert Store(filled.root).read("videos").num_rows == 10
    assert part.exists() and not (filled.root / store_mod.JOURNAL).exists()


# ====================================================================== 3. store.json
MARKERS = [
    {"compact_threshold": "abc"}, {"compact_threshold": -1}, {"compact_threshold": 1.5},
    {"compact_threshold": True}, {"compact_threshold": None}, {"compact_threshold": [3]},
    {"compact_threshold": 1e400}, {"root": 5}, {"root": ["a"]}, {"catalog": "x"},
    {"catalog": False}, {"format": "other"}, {"version": 2}, {"version": "1"},
]
RAW_MARKERS = ["[]", "null", "3", "\"store\"", "{", "[" * 100_000, "\xff\xfe", ""]


@pytest.mark.parametrize("case", range(len(MARKERS) + len(RAW_MARKERS)))
def test_a_malformed_marker_is_one_error_everywhere(filled: Store, case: int) -> None:
    marker = filled.root / "store.json"
    if case < len(MARKERS):
        meta = {**json.loads(marker.read_text()), **MARKERS[case]}
        marker.write_text(json.dumps(meta))
    else:
        marker.write_bytes(RAW_MARKERS[case - len(MARKERS)].encode("utf-8", "surrogateescape"))
    root = str(filled.root)
    commands = [["query", root, "SELECT 1"], ["stats", root], ["init", root], ["compact", root]]
    for args in commands if case in (0, len(MARKERS)) else commands[:1]:
        _one_error_line(runner.invoke(app, args), "store.json")
    with pytest.raises(CorruptStoreError, match="store.json"):
        Store(root)
    r = runner.invoke(app, ["verify", root])
    assert r.exit_code == 2 and "marker:" in r.output
    assert [p.kind for p in verify(root).problems] == ["marker"]
    assert repair(root).remaining == []
    assert Store(root).read("videos").num_rows == 10


def test_a_repaired_marker_keeps_its_valid_fields(tmp_path: Path) -> None:
    s = Store.init(tmp_path / "s", compact_threshold=5)
    meta = json.loads((s.root / "store.json").read_text())
    (s.root / "store.json").write_text(json.dumps({**meta, "root": 7}))
    repair(s.root)
    assert Store(s.root).compact_threshold == 5


# ====================================================================== 4. claims files
CLAIMS = ["{", "[]", "null", "\"x\"", '{"v1:a": 3}', '{"v1:a": {"until": "later"}}',
          '{"v1:a": {"until": Infinity, "pid": 1}}', '{"v1:a": {"pid": "12", "until": 1}}',
          '{"v1:a": {"pid": true, "until": 1}}', '{"v1:a": {"run_id": 5, "until": 1}}',
          '{"v1:a": {"host": [], "until": 1}}', "[" * 100_000, "\xff"]


def _noop_stage() -> Stage:
    return Stage("probe", "v1", "videos", lambda rows: [Ok() for _ in rows])


@pytest.mark.parametrize("text", CLAIMS)
def test_a_malformed_claims_file_is_named_and_repair_resets_it(filled: Store, text: str
                                                               ) -> None:
    claims = filled.root / "claims" / "probe.json"
    claims.parent.mkdir(exist_ok=True)
    claims.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CorruptStoreError, match="probe.json.*prevad repair"):
        run_stage(filled, _noop_stage())
    assert [p.kind for p in verify(filled).problems] == ["claims"]
    assert repair(filled.root).remaining == []
    assert run_stage(Store(filled.root), _noop_stage()).ok == 10  # not stopped for good


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 200, "a\u0000b", 5])
def test_stage_names_and_run_ids_that_would_name_other_files_are_refused(filled: Store,
                                                                         name: Any) -> None:
    with pytest.raises(ValidationError):
        Stage(name, "v1", "videos", lambda rows: [])
    if name != "":  # an empty run id means "make one up"
        with pytest.raises(ValidationError, match="run_id"):
            run_stage(filled, _noop_stage(), run_id=name)


# ====================================================================== 5. special files
def _specials(tmp_path: Path) -> dict[str, Path]:
    out = {}
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out["fifo"] = fifo
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    sock.close()
    out["socket"] = sock_path
    (tmp_path / "dir").mkdir()
    out["directory"] = tmp_path / "dir"
    # a device node of our own (never the real /dev/null: a regression would replace it)
    with contextlib.suppress(PermissionError, OSError):
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        out["device"] = tmp_path / "null"
    return out


WRITERS = {
    "atomic_write_bytes": lambda p: atomic_write_bytes(p, b"x"),
    "atomic_write_text": lambda p: atomic_write_text(p, "x"),
    "atomic_write_json": lambda p: atomic_write_json(p, {"a": 1}),
    "atomic_save_png": lambda p: atomic_save_png(_figure(), p),
}


def _figure() -> Any:
    from prevad.io import new_figure

    fig = new_figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    return fig


@contextlib.contextmanager
def _no_hang(seconds: int = 20) -> Any:
    """A refusal must not block on a FIFO: fail instead of hanging the suite."""
    def boom(*_: Any) -> None:
        raise TimeoutError("blocked on a special file")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("kind", ["fifo", "socket", "directory", "device"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_outputs_never_replace_special_files(tmp_path: Path, kind: str, writer: str) -> None:
    specials = _specials(tmp_path)
    if kind not in specials:
        pytest.skip("making a device node needs root")
    target = specials[kind]
    mode = target.lstat().st_mode
    with _no_hang(), pytest.raises(SpecialFileError, match=str(target)):
        WRITERS[writer](target)
    assert target.lstat().st_mode == mode
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["fifo", "socket", "directory"])
def test_store_files_and_commands_never_replace_special_files(filled: Store, tmp_path: Path,
                                                              kind: str) -> None:
    target = _specials(tmp_path)[kind]
    with _no_hang(), pytest.raises(SpecialFileError):
        atomic_write_text(target, "x")
    # inside the store: a payload file and a bookkeeping file
    inner = filled.root / "features" / "m" / "x.npy"
    inner.parent.mkdir(parents=True)
    os.rename(target, inner)
    with _no_hang(), pytest.raises(SpecialFileError):
        filled.append_many({}, files={"features/m/x.npy": b"data"})
    os.rename(inner, filled.root / "stage_runs")
    with _no_hang(), pytest.raises((SpecialFileError, ValidationError, OSError)):
        filled.write_file("stage_runs", b"x")
    os.rename(filled.root / "stage_runs", target)
    # the CLI: one error line, the special file left as it was
    with _no_hang():
        r = runner.invoke(app, ["card", str(filled.root), "--out", str(target)])
    _one_error_line(r, str(target))
    assert target.exists()


FIFO_PLACES = ["_journal.json", "store.json", "claims/probe.json", "catalog.duckdb",
               "{part}", "{side}", "{partdir}/part-fifo-n3.parquet",
               "{partdir}/part-fifo-n3.keys.npy", ".writing", "features/m/x.npy",
               "imports/" + "0" * 64 + ".npz"]


@pytest.mark.parametrize("place", FIFO_PLACES)
def test_a_fifo_among_the_store_files_never_blocks_a_command(filled: Store, place: str) -> None:
    part = filled.part_files("videos")[0]
    rel = place.format(part=part.relative_to(filled.root),
                       side=str(part.relative_to(filled.root)).replace(".parquet", ".keys.npy"),
                       partdir=part.parent.relative_to(filled.root))
    target = filled.root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    with _no_hang(60):
        for args in (["query", str(filled.root), "SELECT count(*) FROM videos"],
                     ["verify", str(filled.root)]):
            r = runner.invoke(app, args)
            assert "Traceback" not in r.output and r.exit_code in (0, 2), r.output
        with contextlib.suppress(CorruptStoreError):
            run_stage(Store(filled.root), _noop_stage())
        r = runner.invoke(app, ["repair", str(filled.root)])
        assert "Traceback" not in r.output, r.output
    left = [p for p, v in _tree(filled.root).items()
            if v[0] == stat.S_IFIFO and "/quarantine/" not in p]
    assert not left, f"repair left FIFOs in the store: {left}"


def test_a_link_at_an_output_path_is_replaced_not_followed(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "fifo")
    atomic_write_text(tmp_path / "link", "x")
    assert (tmp_path / "link").read_text() == "x" and stat.S_ISFIFO(
        (tmp_path / "fifo").lstat().st_mode)


# ====================================================================== 6. paths and links
def _feature_store(tmp_path: Path) -> tuple[Store, Video]:
    s = Store.init(tmp_path / "store")
    v = Video.create("yt", "f")
    s.append("videos", [v])
    s.write_features(v.video_id, "m", np.ones((2, 3), np.float32))
    (tmp_path / "outside").mkdir()
    np.save(tmp_path / "outside" / "secret.npy", np.full((2, 3), 7.0, np.float32))
    return s, v


LOCATIONS = ["{out}/secret.npy", "../outside/secret.npy", "features/../../outside/secret.npy",
             "store.json", "", "features/m/link.npy", "features/m/fifo.npy"]


@pytest.mark.parametrize("location", LOCATIONS)
def test_feature_locations_never_leave_the_store(tmp_path: Path, location: str) -> None:
    s, v = _feature_store(tmp_path)
    (s.root / "features" / "m" / "link.npy").symlink_to(tmp_path / "outside" / "secret.npy")
    os.mkfifo(s.root / "features" / "m" / "fifo.npy")
    row = {"video_id": v.video_id, "location": location.format(out=tmp_path / "outside"),
           "count": 2, "dim": 3}
    with _no_hang(), pytest.raises((CorruptStoreError, FeatureFileMissingError)):
        s.load_features(row)


def test_links_and_special_files_inside_the_store_are_reported_and_quarantined(
        filled: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    part = filled.part_files("videos")[0]
    (part.parent / "part-zz-n1.parquet").symlink_to(outside / "sub" / "data.parquet")
    (filled.root / "tables" / "videos" / "source=evil").symlink_to(outside / "sub")
    os.mkfifo(filled.root / "tables" / "annotations" / "fifo")
    (filled.root / "imports").mkdir()
    (filled.root / "imports" / ("0" * 64 + ".npz")).symlink_to(outside / "keep.txt")
    before_out = _tree(outside)
    # readers skip links: the outside copy is not read as stored rows
    assert filled.query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 10
    assert filled.read("videos").num_rows == 10
    kinds = [p.kind for p in verify(filled).problems]
    assert kinds.count("special") == 4, verify(filled).problems
    # a write into a linked partition folder is refused, nothing lands outside
    with pytest.raises(CorruptStoreError, match="symbolic link"):
        filled.append("videos", [Video.create("evil", "x")])
    assert repair(filled.root).remaining == []
    assert _tree(outside) == before_out  # links moved, never their targets
    assert filled.read("videos").num_rows == 10


def test_a_linked_or_forged_import_fingerprint_is_ignored(tmp_path: Path) -> None:
    s = Store.init(tmp_path / "s")
    f = tmp_path / "bench.json"
    f.write_text(json.dumps([{"path": "a.npy", "video_path": "v1.mp4", "class_name": "Normal",
                              "descriptions": None, "anomaly_span": []}]))
    interop.import_benchmark(s, "bench", f, classes=["Normal", "Fight"])
    fp = next((s.root / "imports").glob("*.npz"))
    np.savez(fp, videos=np.array(["a"]), annotations=np.array(["b"]), rows=np.int64(1))
    assert interop.import_benchmark(s, "bench", f, classes=["Normal", "Fight"]).written == 0
    fp.unlink()
    (tmp_path / "forged.npz").write_bytes(b"not numpy")
    fp.symlink_to(tmp_path / "forged.npz")
    assert interop.import_benchmark(s, "bench", f, classes=["Normal", "Fight"]).written == 0
    assert s.read("videos").num_rows == 1


# ====================================================================== 7. lost, duplicated,
#                                                                          dangling rows
def _lost_videos(s: Store) -> None:
    s.part_files("videos")[0].unlink()


def _copied_part(s: Store) -> None:
    p = s.part_files("videos")[0]
    shutil.copy(p, p.with_name(p.name.replace("part-", "part-9")))
    shutil.copy(p, p.with_name(p.name.replace("part-", "part-8")))


def _copied_into_other_partition(s: Store) -> None:
    p = s.part_files("annotations")[0]
    other = p.parent.with_name("dataset=elsewhere")
    other.mkdir()
    shutil.copy(p, other / p.name)


def _quarantined_videos(s: Store) -> None:
    p = s.part_files("videos")[0]
    p.write_bytes(p.read_bytes()[:60])  # unreadable: repair quarantines it


def _features_without_video(s: Store) -> None:
    s.write_features("no-such-video", "m", np.ones((2, 2), np.float32))


def _segments_without_parent(s: Store) -> None:
    s.append("segments", [Segment("seg-1", "no-such-video", "yt", 0.0, 1.0)])


def _annotation_of_missing_clip(s: Store) -> None:
    s.append("annotations", [Annotation("a-x", "no-such-clip", "prevad", "human", "h",
                                        "Normal", False)])


DAMAGE = {
    "deleted videos part": (_lost_videos, ["lost", "orphan-rows"], False),
    "part copied twice": (_copied_part, ["duplicate"], True),
    "part copied into another partition": (_copied_into_other_partition, ["duplicate"], True),
    "videos quarantined": (_quarantined_videos, ["orphan-rows", "part"], False),
    "features without video": (_features_without_video, ["orphan-rows"], False),
    "segments without parent": (_segments_without_parent, ["orphan-rows"], False),
    "annotation of a missing clip": (_annotation_of_missing_clip, ["orphan-rows"], False),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_verify_reconciles_tables_and_repair_never_calls_a_lossy_store_ok(filled: Store,
                                                                          damage: str) -> None:
    fn, kinds, fixable = DAMAGE[damage]
    fn(filled)
    report = verify(filled.root)
    assert sorted({p.kind for p in report.problems}) == sorted(kinds), report.problems
    r = runner.invoke(app, ["repair", str(filled.root)])
    if fixable:  # exact duplicates: dropped, nothing lost
        assert r.exit_code == 0, r.output
        s = Store(filled.root)
        assert s.query("SELECT count(*) AS n, count(DISTINCT video_id) AS k FROM videos"
                       ).to_pylist() == [{"n": 10, "k": 10}]
        assert s.query("SELECT count(*) AS n FROM annotations").column("n")[0].as_py() == 10
        return
    assert r.exit_code == 2 and "store ok" not in r.output, r.output
    assert verify(filled.root).problems  # still not ok
    r = runner.invoke(app, ["repair", "--accept-loss", str(filled.root)])
    assert r.exit_code == 0 and "store ok" in r.output, r.output
    assert list((filled.root / "quarantine").rglob("report.json"))


def test_a_lost_part_names_what_is_lost(filled: Store) -> None:
    vids = filled.read("videos").column("video_id").to_pylist()
    _lost_videos(filled)
    msgs = [p.message for p in verify(filled).problems if p.kind == "lost"]
    assert len(msgs) == 1 and "10 rows are lost" in msgs[0] and "10 of them" in msgs[0]
    assert sorted(vids)[0] in msgs[0]
    # the reported case: repair does not delete the key index and call the store ok
    r = runner.invoke(app, ["repair", str(filled.root)])
    assert r.exit_code == 2 and list(filled.root.rglob("part-*.keys.npy"))


def test_a_conflicting_copy_is_reported_and_kept(filled: Store) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = filled.part_files("videos")[0]
    t = pq.read_table(p)
    t = t.set_column(t.schema.get_field_index("uri"), "uri",
                     pa.array(["changed"] * t.num_rows, pa.string()))
    pq.write_table(t, p.with_name(p.name.replace("part-", "part-7")))
    msg = [q.message for q in verify(filled).problems if q.kind == "duplicate"]
    assert msg and "different content" in msg[0]
    assert repair(filled.root).remaining  # never "ok"
    assert filled.query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 20


def test_compaction_drops_exact_duplicates(filled: Store) -> None:
    _copied_part(filled)
    assert filled.read("videos").num_rows == 30
    filled.compact("videos")
    assert filled.read("videos").num_rows == 10
    assert verify(filled).ok, verify(filled).problems


# ====================================================================== 8. concurrent readers
def _slow_writer(root: str, n: int) -> None:
    """Child: commit a video and its annotation together, n times, renames slowed down so a
    reader without the commit lock would see one without the other."""
    real = os.replace

    def slow(src: Any, dst: Any) -> None:
        real(src, dst)
        if str(dst).endswith(".parquet"):
            time.sleep(0.004)

    os.replace = slow  # this child process only
    s = Store(root)
    for i in range(n):
        v = Video.create("w", f"x{i:04d}")
        s.append_many({"videos": [v], "annotations": _annotations([v])})
        if i % 15 == 14:
            s.compact()
    os._exit(0)


def test_readers_see_every_table_at_one_commit(filled: Store) -> None:
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_slow_writer, args=(str(filled.root), 60))
    p.start()
    reader = Store(filled.root)
    bad, reads = [], 0
    deadline = time.monotonic() + 120
    while (p.is_alive() or reads < 5) and reads < 2000 and time.monotonic() < deadline:
        row = reader.query("""
            SELECT (SELECT count(*) FROM videos) AS v, (SELECT count(*) FROM annotations) AS a,
                   (SELECT count(*) FROM annotations WHERE video_id NOT IN
                        (SELECT video_id FROM videos)) AS orphans""").to_pylist()[0]
        reads += 1
        if row["v"] != row["a"] or row["orphans"]:
            bad.append(row)
    p.join(60)
    assert p.exitcode == 0
    assert reads >= 5 and not bad, f"{len(bad)} of {reads} reads out of step: {bad[:3]}"
    assert reader.query("SELECT count(*) AS n FROM final_labels").column("n")[0].as_py() == 70


# ====================================================================== 9. views
def test_views_work_from_a_plain_duckdb_that_never_imports_prevad(filled: Store) -> None:
    vids = filled.read("videos").to_pylist()
    model = [Annotation(f"m-{v['video_id']}", v["video_id"], "prevad", "model", "judge",
                        "Riot", True, split="train") for v in vids]
    filled.append("annotations", model)
    code = (
        "import sys, duckdb\n"
        f"con = duckdb.connect({str(filled.root / 'catalog.duckdb')!r}, read_only=True)\n"
        "rows = con.execute('SELECT category, count(*) FROM final_labels GROUP BY 1 "
        "ORDER BY 1').fetchall()\n"
        "names = {r[0] for r in con.execute('SELECT view_name FROM duckdb_views()')"
        ".fetchall()}\n"
        "assert 'prevad' not in sys.modules\n"
        "print(rows, sorted(names))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert "[('Explosion', 5), ('Normal', 5)]" in out  # human over model, one row per video
    for view in ("clips", "final_labels", "descriptions", "verifications", "judgements",
                 "stage_status"):
        assert view in out


def test_views_survive_repair_and_are_added_to_old_stores(filled: Store) -> None:
    import duckdb as ddb

    catalog = filled.root / "catalog.duckdb"
    con = ddb.connect(str(catalog))
    con.execute("DROP VIEW final_labels")
    con.close()
    meta = json.loads((filled.root / "store.json").read_text())
    meta.pop("catalog")
    (filled.root / "store.json").write_text(json.dumps(meta))
    # an old store opened read-only still answers through the query connection's views
    assert Store(filled.root, read_only=True).query("SELECT count(*) AS n FROM final_labels"
                                                   ).column("n")[0].as_py() == 10
    Store(filled.root)  # opened writable: the catalog is brought up to date
    con = ddb.connect(str(catalog), read_only=True)
    assert con.execute("SELECT count(*) FROM final_labels").fetchone() == (10,)
    con.close()
    repair(filled.root)
    con = ddb.connect(str(catalog), read_only=True)
    assert con.execute("SELECT count(*) FROM clips").fetchone() == (10,)
    con.close()


def test_result_views_type_the_stage_outputs(filled: Store) -> None:
    v = filled.read("videos").column("video_id").to_pylist()
    seg = Segment("seg-a", v[0], "yt", 1.0, 3.5)
    filled.append("segments", [seg])
    filled.append("stage_results", [
        StageResult(v[0], "clean", "c1", "ok"),
        StageResult("seg-a", "describe", "d1", "ok", output_json=json.dumps(
            {"video_id": v[0], "segment_id": "seg-a", "description": "a fire", "model": "m"})),
        StageResult("seg-a", "verify", "f1", "rejected", reason="low_score", output_json=json.dumps(
            {"verdict": "no", "score": 0.2, "clip_mean": 0.1, "unsupported_claims": ["x"]})),
        StageResult("seg-a", "judge", "j1", "ok", output_json=json.dumps(
            {"anomaly": True, "category": "Fire", "confidence": 0.9, "reason": "flames"})),
        StageResult("seg-a", "judge", "j0", "failed", error="boom"),
    ])
    q = filled.query
    clip = q("SELECT * FROM clips WHERE clip_id = 'seg-a'").to_pylist()[0]
    assert (clip["video_id"], clip["start_s"], clip["end_s"], clip["duration_s"]) == (
        v[0], 1.0, 3.5, 2.5)
    assert q("SELECT count(*) AS n FROM clips WHERE clip_id = $v", {"v": v[0]}
             ).column("n")[0].as_py() == 0  # split by clean: its segments are its clips
    d = q("SELECT * FROM descriptions").to_pylist()
    assert [(r["clip_id"], r["video_id"], r["description"], r["newest_version"]) for r in d] == [
        ("seg-a", v[0], "a fire", True)]
    f = q("SELECT verdict, score, unsupported_claims, status FROM verifications").to_pylist()
    assert f == [{"verdict": "no", "score": 0.2, "unsupported_claims": ["x"],
                  "status": "rejected"}]
    j = q("SELECT category, anomaly, confidence, judge_reason, video_id FROM judgements"
          ).to_pylist()
    assert j == [{"category": "Fire", "anomaly": True, "confidence": 0.9,
                  "judge_reason": "flames", "video_id": v[0]}]
    st = q("SELECT stage, stage_version, status FROM stage_status WHERE id = 'seg-a' "
           "ORDER BY 1, 2").to_pylist()
    assert [(r["stage"], r["status"]) for r in st] == [
        ("describe", "ok"), ("judge", "failed"), ("judge", "ok"), ("verify", "rejected")]


# ====================================================================== 10. statistics
def test_stats_and_card_count_videos_not_annotation_rows(filled: Store, tmp_path: Path) -> None:
    vids = filled.read("videos").to_pylist()
    filled.append("annotations", [
        Annotation(f"m-{v['video_id']}", v["video_id"], "prevad", "model", "judge", "Explosion",
                   True, split="train") for v in vids])
    r = runner.invoke(app, ["stats", str(filled.root)])
    assert r.exit_code == 0, r.output
    splits = filled.query(store_mod.queries.COUNTS_BY_SPLIT).to_pylist()
    assert splits == [{"dataset": "prevad", "split": "train", "videos": 10,
                       "annotation_rows": 20}]
    cats = {r["category"]: r["videos"] for r in
            filled.query(store_mod.queries.COUNTS_BY_CATEGORY).to_pylist()}
    assert cats == {"Explosion": 5, "Normal": 5}  # human over model
    card = runner.invoke(app, ["card", str(filled.root), "--out", str(tmp_path / "c.md")])
    assert card.exit_code == 0, card.output
    text = (tmp_path / "c.md").read_text()
    assert "Labelled videos (clips): 10" in text and "Annotation rows: 20" in text


# ====================================================================== counts for the note
CASES = {
    "read-only queries": len(STATEMENT_CASES) + len(OUTSIDE_READS) + 2,
    "journals": JOURNAL_CASES + len(RAW_JOURNALS) + 1,
    "store.json": len(MARKERS) + len(RAW_MARKERS) + 1,
    "claims / names": len(CLAIMS) + 7,
    "special files": 4 * len(WRITERS) + 3 + 1 + len(FIFO_PLACES),
    "paths and links": len(LOCATIONS) + 2,
    "lost / duplicate / dangling rows": len(DAMAGE) + 3,
    "concurrent readers": 1,
    "views": 3,
    "statistics": 1,
}


def test_count_of_cases_per_class() -> None:
    print("\nhostile cases per class:", json.dumps(CASES), "total", sum(CASES.values()))
    assert sum(CASES.values()) > 300
