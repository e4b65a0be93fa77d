"""Interop on the real benchmark files, PreVAD training format, manifests, CLI, data card."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prevad import Store, dataset_counts
from prevad.cli import app
from prevad.errors import DuplicateIdError, MalformedFileError, UnknownCategoryError
from prevad.interop import (
    export_benchmark,
    export_prevad,
    import_benchmark,
    import_prevad,
    manifest,
    write_manifest,
)

NAMES = ("ucf", "xd", "msad", "ubnormal", "dota", "tad", "lad")
runner = CliRunner()

PREVAD_ENTRIES = [
    {"path": "prevad_features/a.npy", "video_path": "videos/a.mp4", "class_name": "Car Accident",
     "descriptions": ["A car hits a pole.", "Collision at a crossing."],
     "anomaly_span": [[0.25, 0.5]]},
    {"path": "prevad_features/b.npy", "video_path": "videos/b.mp4", "class_name": "Robbery",
     "descriptions": ["A man grabs a bag."], "anomaly_span": [[0.0, 1.0]]},
    {"path": "prevad_features/c.npy", "video_path": "videos/c.mp4", "class_name": "Normal",
     "descriptions": None, "anomaly_span": []},
]


@pytest.fixture(scope="module")
def full_store(tmp_path_factory, benchmarks_dir: Path) -> Store:
    store = Store.init(tmp_path_factory.mktemp("bench") / "store")
    for name in NAMES:
        import_benchmark(store, name, benchmarks_dir / name / "test_annotations.json")
    return store


def _expected_counts(benchmarks_dir: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for name in NAMES:
        entries = json.loads((benchmarks_dir / name / "test_annotations.json").read_text())
        out[name] = (len(entries), sum(e["class_name"] != "Normal" for e in entries))
    return out


def test_all_seven_import_with_published_counts(full_store: Store, benchmarks_dir) -> None:
    rows = dataset_counts(full_store).to_pylist()
    got = {r["dataset"]: (r["videos"], r["abnormal"]) for r in rows}
    assert got == _expected_counts(benchmarks_dir)
    published = {"ucf": (290, 140), "xd": (800, 500), "msad": (240, 120),
                 "ubnormal": (211, 158), "dota": (1402, 1402), "tad": (100, 60),
                 "lad": (560, 280)}
    assert got == published


@pytest.mark.parametrize("name", NAMES)
def test_export_round_trips(full_store: Store, benchmarks_dir: Path, tmp_path, name) -> None:
    out = export_benchmark(full_store, name, tmp_path / f"{name}.json")
    original = json.loads((benchmarks_dir / name / "test_annotations.json").read_text())
    assert json.loads(out.read_text()) == original


def test_reimport_is_skipped(full_store: Store, benchmarks_dir: Path) -> None:
    res = import_benchmark(full_store, "tad", benchmarks_dir / "tad" / "test_annotations.json")
    assert (res.written, res.skipped) == (0, 200)


def test_bad_benchmark_files_change_nothing(full_store: Store, tmp_path: Path) -> None:
    before = full_store.read("annotations").num_rows
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"path": "a",\n  "video_path": }\n]')
    with pytest.raises(MalformedFileError, match=r"bad.json:3:\d+"):
        import_benchmark(full_store, "tad", bad)
    bad.write_text(json.dumps([{"path": "a", "video_path": "b", "class_name": "X"}]))
    with pytest.raises(MalformedFileError, match="entry 0 lacks key 'descriptions'"):
        import_benchmark(full_store, "tad", bad)
    entry = {"path": "p", "video_path": "v.mp4", "class_name": "Crash", "descriptions": None,
             "anomaly_span": [[0.1, 0.2]]}
    bad.write_text(json.dumps([entry]))
    with pytest.raises(UnknownCategoryError, match="'Crash'.*tad"):
        import_benchmark(full_store, "tad", bad, classes=["Normal", "Car Accident"])
    # same video path as a stored tad video but different label -> duplicate, nothing written
    first = json.loads(export_benchmark(full_store, "tad", tmp_path / "t.json").read_text())[0]
    new = {**entry, "video_path": "brand_new.mp4", "class_name": "Normal", "anomaly_span": []}
    bad.write_text(json.dumps([new, {**first, "anomaly_span": [[0.0, 0.1]]}]))
    with pytest.raises(DuplicateIdError, match="spans"):
        import_benchmark(full_store, "tad", bad)
    assert full_store.read("annotations").num_rows == before
    assert full_store.query(
        "SELECT count(*) AS n FROM videos WHERE uri = 'brand_new.mp4'").column("n")[0].as_py() == 0


def test_prevad_training_format_round_trip(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "train.json"
    src.write_text(json.dumps(PREVAD_ENTRIES, indent=4))
    import_prevad(store, src, split="train")
    out = export_prevad(store, tmp_path / "out.json", split="train")
    assert json.loads(out.read_text()) == PREVAD_ENTRIES
    tbl = manifest(store, dataset="prevad")
    rows = {r["video_uri"]: r for r in tbl.to_pylist()}
    assert rows["videos/a.mp4"]["parent_category"] == "Vehicle Accident"
    assert rows["videos/b.mp4"]["parent_category"] == "Robbery"
    assert rows["videos/c.mp4"]["label"] == 0 and rows["videos/a.mp4"]["label"] == 1
    assert rows["videos/a.mp4"]["description"] == "A car hits a pole."


def test_prevad_aliases_and_unknown_category(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "val.json"
    src.write_text(json.dumps([{**PREVAD_ENTRIES[0], "class_name": "car_accident"}]))
    import_prevad(store, src, split="val")
    assert store.read("annotations").column("category").to_pylist() == ["Car Accident"]
    src.write_text(json.dumps([{**PREVAD_ENTRIES[1], "class_name": "Robbbery"}]))
    with pytest.raises(UnknownCategoryError, match="'Robbbery'.*'Robbery'"):
        import_prevad(store, src, split="val")
    assert store.read("annotations").num_rows == 1


def test_manifest_with_features(store: Store, tmp_path: Path) -> None:
    import numpy as np

    src = tmp_path / "train.json"
    src.write_text(json.dumps(PREVAD_ENTRIES))
    import_prevad(store, src)
    vid = store.read("videos").column("video_id").to_pylist()[0]
    store.write_features(vid, "clip", np.ones((3, 4), np.float32))
    tbl = manifest(store, model_id="clip")
    assert tbl.column("feature_location").null_count == 2
    with pytest.raises(Exception, match="2 of 3"):
        manifest(store, model_id="clip", require_features=True)
    out = write_manifest(tbl, tmp_path / "m.parquet")
    assert pq.read_table(out).num_rows == 3
    lines = write_manifest(tbl, tmp_path / "m.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["split"] == "train"


def test_cli_end_to_end(tmp_path: Path, benchmarks_dir: Path) -> None:
    root = str(tmp_path / "s")
    assert runner.invoke(app, ["init", root]).exit_code == 0
    r = runner.invoke(app, ["import-benchmark", root, "ucf",
                            str(benchmarks_dir / "ucf" / "test_annotations.json")])
    assert r.exit_code == 0, r.output
    sql = ("SELECT count(*) AS videos, count(*) FILTER (WHERE is_anomaly) AS abnormal "
           "FROM annotations WHERE dataset = 'ucf'")
    r = runner.invoke(app, ["query", root, sql, "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.output) == [{"videos": 290, "abnormal": 140}]
    r = runner.invoke(app, ["query", root, sql, "--format", "csv"])
    assert r.output.splitlines() == ["videos,abnormal", "290,140"]
    r = runner.invoke(app, ["query", root, sql])
    assert "290" in r.output and "abnormal" in r.output
    r = runner.invoke(app, ["stats", root])
    assert r.exit_code == 0 and "RoadAccidents" in r.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["query", "{root}", "DELETE FROM videos"], "read-only"),
        (["query", "{root}", "SELEC 1"], "query"),
        (["query", "{root}/nope", "SELECT 1"], "not a PreVAD store"),
        (["import-benchmark", "{root}", "ucf", "{root}/missing.json"], "not found"),
        (["import-benchmark", "{root}", "x", "{root}/missing.json"], "no class list known"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    root = str(tmp_path / "s")
    runner.invoke(app, ["init", root])
    r = runner.invoke(app, [a.format(root=root) for a in args])
    assert r.exit_code == 2
    assert needle in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_card_writes_markdown_and_pngs(tmp_path: Path, benchmarks_dir: Path) -> None:
    from prevad.records import Video

    store = Store.init(tmp_path / "s")
    import_benchmark(store, "tad", benchmarks_dir / "tad" / "test_annotations.json")
    store.append("videos", [Video.create("youtube", f"y{i}", duration_s=5.0 + i % 17)
                            for i in range(60)])
    out = tmp_path / "cards" / "PreVAD.md"
    r = runner.invoke(app, ["card", str(store.root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "| tad | 100 | 60 |" in text and "Fire-related Accident" in text
    for kind in ("durations", "categories", "sources"):
        png = out.with_name(f"PreVAD_{kind}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000, kind
        assert f"]({png.name})" in text


# -- import-benchmark: the benchmark's real class list, span rules, repeats -----------------
TAD_ENTRY = {"path": "tad/x.npy", "video_path": "tad/x.mp4", "class_name": "Car Accident",
             "descriptions": None, "anomaly_span": [[0.1, 0.4]]}


def _cli_error(args: list[str]) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("error: ")
    return r.output


@pytest.mark.parametrize("entry, rule", [
    # a class of another benchmark: the list is tad's own, not the file's
    ({**TAD_ENTRY, "class_name": "Explosion"}, "'Explosion' is not in the tad class list"),
    ({**TAD_ENTRY, "class_name": "Normal"}, "class 'Normal' with anomaly_span"),
    ({**TAD_ENTRY, "anomaly_span": []}, "'Car Accident' with an empty anomaly_span"),
])
def test_import_benchmark_checks_each_entry(tmp_path: Path, entry: dict, rule: str) -> None:
    root = str(tmp_path / "s")
    runner.invoke(app, ["init", root])
    file = tmp_path / "tad.json"
    file.write_text(json.dumps([TAD_ENTRY, entry]))
    out = _cli_error(["import-benchmark", root, "tad", str(file)])
    assert rule in out and "tad.json: entry 1 (tad/x.mp4)" in out
    assert Store(root).read("annotations").num_rows == 0  # nothing half-imported


def test_import_benchmark_class_list_of_other_benchmarks(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    runner.invoke(app, ["init", root])
    file = tmp_path / "mine.json"
    file.write_text(json.dumps([{**TAD_ENTRY, "class_name": "Juggling"}]))
    out = _cli_error(["import-benchmark", root, "mine", str(file)])
    assert "no class list known for benchmark 'mine'" in out
    r = runner.invoke(app, ["import-benchmark", root, "mine", str(file),
                            "--classes", "Normal,Juggling"])
    assert r.exit_code == 0, r.output


def test_byte_identical_repeat_is_imported_once(tmp_path: Path) -> None:
    store = Store.init(tmp_path / "s")
    file = tmp_path / "tad.json"
    file.write_text(json.dumps([TAD_ENTRY, dict(TAD_ENTRY)]))
    res = import_benchmark(store, "tad", file)
    assert (res.written, res.skipped) == (2, 2)  # one video + one annotation; the repeat skipped
    assert store.read("annotations").num_rows == 1
    # the same video with another label is still a conflict
    file.write_text(json.dumps([TAD_ENTRY, {**TAD_ENTRY, "anomaly_span": [[0.5, 0.6]]}]))
    with pytest.raises(DuplicateIdError):
        import_benchmark(Store.init(tmp_path / "s2"), "tad", file)


def test_latin1_annotation_file_is_one_error_naming_it(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    runner.invoke(app, ["init", root])
    file = tmp_path / "latin1.json"
    text = json.dumps([{**TAD_ENTRY, "descriptions": ["Un café renversé"]}], ensure_ascii=False)
    file.write_bytes(text.encode("latin-1"))
    out = _cli_error(["import-benchmark", root, "tad", str(file)])
    assert str(file) in out and "not UTF-8" in out and "0xe9" in out
    with pytest.raises(MalformedFileError, match="not UTF-8"):
        import_prevad(Store(root), file)
