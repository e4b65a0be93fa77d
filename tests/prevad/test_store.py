"""Store: append/dedup, queries, read-only enforcement, atomicity, features."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import duckdb
import numpy as np
import pytest

from prevad import Store, latest_status, work_list
from prevad.errors import (
    DuplicateIdError,
    FeatureFileMissingError,
    QueryError,
    ReadOnlyQueryError,
    StoreNotFoundError,
    UnknownTableError,
    ValidationError,
)
from prevad.records import StageResult, Video, replace


def _videos(n: int, source: str = "yt") -> list[Video]:
    return [Video.create(source, f"v{i}", duration_s=float(i + 1)) for i in range(n)]


def _snapshot(store: Store) -> dict[str, list]:
    return {t: store.read(t).to_pylist() for t in ("videos", "annotations", "stage_results")}


def _visible_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "tables").rglob("*.parquet"))


def test_open_missing_store_fails(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="not a PreVAD store"):
        Store(tmp_path)


def test_init_is_idempotent_and_views_work_when_empty(tmp_path: Path) -> None:
    s = Store.init(tmp_path / "s")
    s.append("videos", _videos(2))
    s2 = Store.init(tmp_path / "s")
    assert s2.query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 2
    for table in ("candidates", "segments", "annotations", "features", "scores"):
        assert s2.query(f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py() == 0


def test_hive_layout_and_dedup(store: Store) -> None:
    vids = _videos(3, "yt") + _videos(2, "vimeo")
    assert store.append("videos", vids).written == 5
    assert (store.root / "tables/videos/source=yt").is_dir()
    assert (store.root / "tables/videos/source=vimeo").is_dir()
    again = store.append("videos", vids + vids[:1])  # duplicate inside the batch too
    assert (again.written, again.skipped) == (0, 6)
    assert store.read("videos").num_rows == 5


def test_duplicate_key_with_different_content_writes_nothing(store: Store) -> None:
    vids = _videos(3)
    store.append("videos", vids)
    before, files = _snapshot(store), _visible_files(store.root)
    changed = replace(vids[1], uri="other.mp4")
    new = Video.create("yt", "new")
    with pytest.raises(DuplicateIdError, match=f"video_id='{vids[1].video_id}'.*'uri'"):
        store.append("videos", [new, changed])
    with pytest.raises(DuplicateIdError, match="same batch"):
        store.append("videos", [new, replace(new, uri="x")])
    assert _snapshot(store) == before
    assert _visible_files(store.root) == files


def test_unknown_table(store: Store) -> None:
    with pytest.raises(UnknownTableError, match="'video'"):
        store.read("video")


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO videos SELECT * FROM videos",
        "DELETE FROM videos",
        "UPDATE videos SET uri = 'x'",
        "CREATE TABLE t AS SELECT 1",
        "COPY (SELECT 1) TO 'x.csv'",
        "ATTACH 'other.duckdb' AS o",
        "SELECT 1; DROP VIEW videos",
    ],
)
def test_writing_queries_are_refused(store: Store, sql: str, tmp_path: Path) -> None:
    store.append("videos", _videos(2))
    before = _snapshot(store)
    with pytest.raises(ReadOnlyQueryError, match="read-only"):
        store.query(sql)
    assert _snapshot(store) == before
    assert not (Path.cwd() / "x.csv").exists()


def test_connection_is_guarded(store: Store, tmp_path: Path) -> None:
    store.append("videos", _videos(2))
    con = store.connect()
    assert con.execute("SELECT count(*) FROM videos").fetchone() == (2,)
    for sql in (f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", "SELECT * FROM read_csv("
                "'/etc/passwd')", f"ATTACH '{tmp_path / 'o.duckdb'}'",
                "SET enable_external_access = true", "INSTALL httpfs"):
        with pytest.raises(duckdb.Error, match="disabled|locked|Permission"):
            con.execute(sql)
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_bad_sql_is_a_query_error(store: Store) -> None:
    with pytest.raises(QueryError, match="nope"):
        store.query("SELECT nope FROM videos")


def test_latest_status_and_work_list(store: Store) -> None:
    v = _videos(4)
    store.append("videos", v)
    store.append("stage_results", [
        StageResult(v[0].video_id, "probe", "1", "ok"),
        StageResult(v[1].video_id, "probe", "1", "failed", error="boom"),
        StageResult(v[1].video_id, "probe", "1", "ok", attempt=2),
        StageResult(v[2].video_id, "probe", "1", "failed"),
        StageResult(v[3].video_id, "probe", "0", "rejected"),
    ])
    todo = work_list(store, "probe", "1")
    assert sorted(todo.column("video_id").to_pylist()) == sorted([v[2].video_id, v[3].video_id])
    nxt = dict(zip(todo.column("video_id").to_pylist(), todo.column("next_attempt").to_pylist(),
                   strict=True))
    assert nxt == {v[2].video_id: 2, v[3].video_id: 1}
    latest = {r["id"]: r for r in latest_status(store, "probe").to_pylist()}
    assert latest[v[1].video_id]["status"] == "ok" and latest[v[1].video_id]["attempt"] == 2
    assert len(latest) == 4
    assert work_list(store, "other", "1").num_rows == 4


def _crash_before_rename(root: str) -> None:
    """Child process: append, but die (no cleanup) at the rename of the first part file."""
    s = Store(root)

    def die(*_args: object, **_kw: object) -> None:
        os._exit(17)

    os.replace = die  # the journal write is the first os.replace of the commit
    s.append("videos", [Video.create("crash", f"c{i}") for i in range(5)])


def test_killed_write_leaves_store_unchanged(store: Store) -> None:
    store.append("videos", _videos(3))
    before, files = _snapshot(store), _visible_files(store.root)
    proc = mp.get_context("fork").Process(target=_crash_before_rename, args=(str(store.root),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 17
    # the temp file was fully written, yet neither queries nor reads see it
    assert list(store.root.rglob("*.tmp")), "the crash should leave a temp file behind"
    reopened = Store(store.root)
    assert _snapshot(reopened) == before
    assert _visible_files(store.root) == files
    assert reopened.query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 3
    assert reopened.append("videos", [Video.create("crash", "c0")]).written == 1


def test_crash_after_commit_point_rolls_forward(store: Store, monkeypatch) -> None:
    store.append("videos", _videos(1))
    real = os.replace
    calls = {"n": 0}

    def flaky(src, dst):
        if str(dst).endswith(".parquet"):
            calls["n"] += 1
            if calls["n"] == 2:  # journal done, first part renamed, second rename fails
                raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="disk gone"):
        store.append("videos", _videos(2, "a") + _videos(2, "b"))
    monkeypatch.setattr(os, "replace", real)
    journal = store.root / "_journal.json"  # one journal for all tables
    renames = json.loads(journal.read_text())["renames"]
    assert journal.exists() and len([d for _, d in renames if d.endswith(".parquet")]) == 2
    s = Store(store.root)
    assert s.read("videos").num_rows == 5  # all or nothing: the committed batch is complete
    assert not journal.exists()


def test_failure_before_commit_point_changes_nothing(store: Store, monkeypatch) -> None:
    store.append("videos", _videos(2))
    before = _snapshot(store)

    def boom(*_a, **_k):
        raise OSError("no space")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="no space"):
        store.append("videos", _videos(4, "z"))
    monkeypatch.undo()
    assert _snapshot(Store(store.root)) == before
    assert not list(store.root.rglob("*.tmp"))


def test_features_round_trip_and_errors(store: Store) -> None:
    v = _videos(2)
    arr = np.random.default_rng(0).standard_normal((7, 16)).astype(np.float32)
    feat = store.write_features(v[0].video_id, "ViT-B-16/openai", arr, frames=56)
    assert feat.count == 7 and feat.dim == 16 and not Path(feat.location).is_absolute()
    np.testing.assert_array_equal(store.load_features(feat), arr)
    np.testing.assert_array_equal(store.load_features(v[0].video_id), arr)
    row = store.read("features").to_pylist()[0]
    assert store.load_features(row).dtype == np.float32
    half = store.write_features(v[1].video_id, "m16", arr, dtype="float16")
    out = store.load_features(half)
    assert out.dtype == np.float32 and np.allclose(out, arr, atol=1e-2)
    # same call again: identical -> no-op; different values -> refused, file unchanged
    store.write_features(v[0].video_id, "ViT-B-16/openai", arr)
    with pytest.raises(DuplicateIdError, match="different"):
        store.write_features(v[0].video_id, "ViT-B-16/openai", arr + 1)
    np.testing.assert_array_equal(store.load_features(feat), arr)
    with pytest.raises(ValidationError, match="56 frames|frames"):
        store.write_features("x", "m", arr, frames=100)
    (store.root / feat.location).unlink()
    with pytest.raises(FeatureFileMissingError, match="missing"):
        store.load_features(feat)
    with pytest.raises(FeatureFileMissingError, match="no features"):
        store.load_features("nope")
