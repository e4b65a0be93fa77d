"""Stores written before a field was added (records.ADDED_FIELDS) keep working.

The "old store" is made the way older code left it: every part file and ``_schema.parquet``
rewritten without the added columns, ``store.json`` without the schema digest and with the
previous catalog version. Each path a user takes is exercised on it: open, verify, init, read,
query (table views, result views, the catalog file, the snapshot views), append and duplicate
look-ups against the old part files, compaction, repair; and a foreign or mistyped column is
still refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prevad import Store, queries
from prevad import records as rec
from prevad import store as store_mod
from prevad.cli import app
from prevad.errors import CorruptStoreError, DuplicateIdError
from prevad.maintenance import repair, verify
from prevad.records import Annotation, Video

runner = CliRunner()


# ---------------------------------------------------------------------- helpers
def _videos(n: int) -> list[Video]:
    return [Video.create("yt", f"src{i}", duration_s=4.0, fps=25.0) for i in range(n)]


def _annotation(video: Video, kind: str = "model", **kw) -> Annotation:
    cat = "Explosion" if kind == "model" else "Assault"
    return Annotation(f"{kind}-{video.video_id}", video.video_id, "prevad", kind,
                      "judge@v1" if kind == "model" else "alice", cat, True,
                      description=kw.pop("description", "smoke rises"),
                      spans=[[0.1, 0.5]], **kw)


def _age(root: Path) -> None:
    """Rewrite a store as older code wrote it: no added column in any Parquet file, no schema
    digest in ``store.json``, the previous catalog version."""
    for table, spec in store_mod.TABLES.items():
        added = set(spec.added)
        if not added:
            continue
        tdir = root / "tables" / table
        for path in [tdir / "_schema.parquet", *tdir.glob("*=*/part-*.parquet")]:
            t = pq.read_table(path)
            t = t.drop_columns([c for c in t.column_names if c in added])
            pq.write_table(t, path)
            assert not added & set(pq.read_schema(path).names)
    meta = json.loads((root / "store.json").read_text())
    meta.pop("schema", None)
    meta["catalog"] = 2
    (root / "store.json").write_text(json.dumps(meta))


@pytest.fixture()
def old(tmp_path: Path) -> Path:
    """An old store: 3 videos, a model annotation each, one feature (float16 on disk)."""
    store = Store.init(tmp_path / "old")
    vids = _videos(3)
    store.append("videos", vids)
    store.append("annotations", [_annotation(v) for v in vids])
    store.write_features(vids[0].video_id, "clip", np.ones((2, 4), np.float32))
    _age(store.root)
    return store.root


def _part_bytes(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in (root / "tables").glob("*/*=*/part-*.parquet")}


# ---------------------------------------------------------------------- open, verify, init
def test_old_store_verifies_ok_and_a_writable_open_upgrades_its_schema_files(old: Path) -> None:
    parts = _part_bytes(old)
    assert verify(old).ok, verify(old).problems  # before anything was upgraded
    res = runner.invoke(app, ["verify", str(old)])
    assert res.exit_code == 0 and "store ok" in res.output, res.output

    store = Store.init(old)  # "store ready", not "damaged"
    for spec in store_mod.TABLES.values():
        assert pq.read_schema(old / "tables" / spec.name / "_schema.parquet").equals(
            spec.schema)
    meta = json.loads((old / "store.json").read_text())
    assert (meta["schema"], meta["catalog"]) == (store_mod.SCHEMA_ID, store_mod.CATALOG_VERSION)
    assert _part_bytes(old) == parts  # rows are never rewritten for this
    assert verify(store).ok


def test_a_read_only_open_changes_nothing(old: Path) -> None:
    before = {str(p): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    Store(old, read_only=True).query("SELECT * FROM annotations")
    assert {str(p): p.read_bytes() for p in old.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------- reading
def test_added_columns_read_as_null_or_their_fill_in_every_view(old: Path) -> None:
    store = Store(old, read_only=True)  # schema files still old: nothing rests on them
    ann = store.query("SELECT description_source, descriptions, source_index FROM annotations")
    assert ann.num_rows == 3 and set(map(tuple, (r.values() for r in ann.to_pylist()))) == {
        (None, None, None)}
    assert store.query("SELECT dtype FROM features").column("dtype").to_pylist() == ["float32"]
    assert store.query("SELECT feature_uri FROM videos").column(0).null_count == 3
    labels = store.query("SELECT description_source FROM final_labels")
    assert labels.num_rows == 3 and labels.column(0).null_count == 3
    # the connection with the catalog's glob views, and the Python readers
    con = store.connect()
    assert con.execute("SELECT count(description_source), count(*) FROM annotations"
                       ).fetchone() == (0, 3)
    con.close()
    assert store.read("annotations").column("description_source").null_count == 3
    [feat] = store.records("features")
    assert feat.dtype == "float32"
    np.testing.assert_array_equal(store.load_features(feat), np.ones((2, 4), np.float32))
    res = runner.invoke(app, ["query", str(old), "SELECT description_source FROM final_labels",
                              "--format", "json"])
    assert res.exit_code == 0 and json.loads(res.output) == [{"description_source": None}] * 3


def test_the_catalog_file_types_added_columns_in_plain_duckdb(old: Path) -> None:
    Store(old)  # writable open: the catalog is rebuilt for this code
    # even when no file has the column (schema file put back to the old one by hand)
    schema = old / "tables" / "annotations" / "_schema.parquet"
    t = pq.read_table(schema)
    pq.write_table(t.drop_columns(["description_source"]), schema)
    con = duckdb.connect(str(old / "catalog.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(description_source) FROM annotations"
                           ).fetchone() == (3, 0)
        assert con.execute("SELECT DISTINCT dtype FROM features").fetchall() == [("float32",)]
        assert con.execute("SELECT count(*) FROM final_labels WHERE description_source IS NULL"
                           ).fetchone() == (3,)
        # columns that are not the table's never show in a view
        cols = [r[0] for r in con.execute("DESCRIBE annotations").fetchall()]
        assert cols == rec.ANNOTATION_SCHEMA.names
    finally:
        con.close()


# ---------------------------------------------------------------------- writing
def test_appends_and_duplicate_lookups_against_old_part_files(old: Path) -> None:
    store = Store(old)
    vids = _videos(3)
    # the same rows again: found in the old part files, identical, skipped
    assert store.append("annotations", [_annotation(v) for v in vids]) == \
        store_mod.AppendResult(0, 3)
    assert store.append("features", store.records("features")).skipped == 1
    # a table shaped like the old schema (written by older code) appends as well
    legacy = rec.replace(_annotation(vids[0], "human"), annotation_id="legacy-0")
    old_shape = rec.to_table([legacy], Annotation).drop_columns(
        ["description_source", "descriptions"])
    assert store.append("annotations", old_shape).written == 1
    assert store.append("annotations", old_shape).skipped == 1  # then found identical
    # a stored key with the added column set is different content: refused, nothing written
    with pytest.raises(DuplicateIdError, match="description_source"):
        store.append("annotations", [_annotation(vids[0], description_source="reviewer")])
    # new rows carry the column; old rows keep reading NULL
    humans = [_annotation(v, "human", description_source="reviewer") for v in vids]
    assert store.append("annotations", humans).written == 3
    got = store.lookup("annotations", pa.table({"annotation_id": [humans[0].annotation_id,
                                                                  f"model-{vids[0].video_id}"]}))
    assert sorted(got.column("description_source").to_pylist(), key=str) == [None, "reviewer"]
    counts = store.query("SELECT annotator_kind, count(description_source) AS n FROM "
                         "annotations GROUP BY ALL ORDER BY ALL").to_pylist()
    assert counts == [{"annotator_kind": "human", "n": 3}, {"annotator_kind": "model", "n": 0}]
    assert store.query("SELECT DISTINCT description_source FROM final_labels"
                       ).column(0).to_pylist() == ["reviewer"]
    assert verify(store).ok


def test_compaction_merges_old_and_new_part_files(old: Path) -> None:
    store = Store(old)
    vids = _videos(3)
    store.append("annotations", [_annotation(v, "human", description_source="model-accepted")
                                 for v in vids])
    res = store.compact("annotations")
    assert res.files_after == 1
    [part] = store.part_files("annotations")
    assert pq.read_schema(part).equals(rec.ANNOTATION_SCHEMA)
    rows = store.query("SELECT annotator_kind, description_source FROM annotations "
                       "ORDER BY ALL").to_pylist()
    assert [(r["annotator_kind"], r["description_source"]) for r in rows] == \
        [("human", "model-accepted")] * 3 + [("model", None)] * 3
    store.compact("features")
    assert store.records("features")[0].dtype == "float32"
    assert verify(store).ok


def test_repair_upgrades_an_old_store_without_quarantining_anything(old: Path) -> None:
    report = repair(old)
    assert not report.remaining and not report.quarantined, report.actions
    assert any(a.startswith("upgraded") and "description_source" in a for a in report.actions)
    assert json.loads((old / "store.json").read_text())["schema"] == store_mod.SCHEMA_ID
    assert not (old / "quarantine").exists()


# ---------------------------------------------------------------------- still refused
def _rewrite_part(root: Path, table: str, change) -> Path:
    [part] = sorted((root / "tables" / table).glob("*=*/part-*.parquet"))[:1]
    pq.write_table(change(pq.read_table(part)), part)
    return part


@pytest.mark.parametrize("change, why", [
    (lambda t: t.append_column("bogus", pa.array(["x"] * t.num_rows)),
     "unexpected column 'bogus'"),
    (lambda t: t.append_column("description_source", pa.array([1] * t.num_rows, pa.int64())),
     "column 'description_source' has type int64"),
    (lambda t: t.drop_columns(["category"]), "column 'category' of table 'annotations' is "
                                             "missing"),
])
def test_a_foreign_mistyped_or_missing_column_is_still_refused(old: Path, change, why) -> None:
    part = _rewrite_part(old, "annotations", change)
    problems = [p for p in verify(old).problems if p.kind == "part"]
    assert [p.path for p in problems] == [str(part)] and why in problems[0].message, problems
    res = runner.invoke(app, ["verify", str(old)])
    assert res.exit_code == 2 and why in res.output
    with pytest.raises(CorruptStoreError, match="damaged store"):
        Store.init(old)
    report = repair(old)  # the file goes to quarantine: the rows are not guessed
    assert any(str(part.relative_to(old)) in q for q in report.quarantined)


def test_a_foreign_schema_file_is_still_refused(old: Path) -> None:
    path = old / "tables" / "annotations" / "_schema.parquet"
    pq.write_table(pq.read_table(path).append_column("bogus", pa.array([], pa.string())), path)
    [problem] = verify(old).problems
    assert problem.path == str(path) and "unexpected column 'bogus'" in problem.message
    Store(old)  # a writable open does not "upgrade" a foreign file
    assert "bogus" in pq.read_schema(path).names
    with pytest.raises(CorruptStoreError, match="damaged store"):
        Store.init(old)
    assert not repair(old).remaining
    assert pq.read_schema(path).equals(rec.ANNOTATION_SCHEMA)


# ---------------------------------------------------------------------- the registry itself
def test_every_added_field_has_a_fill_its_record_accepts() -> None:
    for cls, fields in rec.ADDED_FIELDS.items():
        schema = rec.SCHEMAS[cls]
        for name, fill in fields.items():
            assert name in schema.names
            default = next(f.default for f in rec.dataclasses.fields(cls) if f.name == name)
            assert default == fill, (cls.__name__, name)  # an old row reads as the default


def test_sql_types_are_what_duckdb_reads_from_the_parquet(tmp_path: Path) -> None:
    con = duckdb.connect()
    for table, spec in store_mod.TABLES.items():
        path = tmp_path / f"{table}.parquet"
        pq.write_table(spec.schema.empty_table(), path)
        read = [(r[0], r[1]) for r in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()]
        assert read == [(n, t) for n, t, _ in spec.sql_columns], table
    assert queries.sql_literal("it's") == "'it''s'"


def test_old_store_under_a_real_cli_round_trip(old: Path, tmp_path: Path) -> None:
    # stats and an export read the annotations through the views
    res = runner.invoke(app, ["stats", str(old)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "train.json"
    res = runner.invoke(app, ["export-prevad", str(old), str(out)])
    assert res.exit_code == 0, res.output
    assert len(json.loads(out.read_text())) == 3
    assert os.path.exists(old / "catalog.duckdb")
