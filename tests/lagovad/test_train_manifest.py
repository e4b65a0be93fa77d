"""A run records the dataset it trained on; --manifest trains on exactly that set later."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lagovad.manifest import MANIFEST, describe_checkpoint, read_manifest
from prevad import Store
from prevad.records import Annotation, Video, video_id_for
from tests.lagovad.helpers import DIM, MODEL_ID, make_store
from tests.lagovad.test_train import cli_app


def run_train(root: Path, out: Path, *extra: str):
    args = ["train", "--store", str(root), "--model", "lagovad-tiny", "--out", str(out),
            "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--no-progress",
            "--seed", "3", "--warmup-steps", "1", "--lr", "1e-3", "--workers", "0", *extra]
    return CliRunner().invoke(cli_app(), args)


def first_epoch_loss(out: Path) -> float:
    config = json.loads((out / "epoch-001" / "config.json").read_text())
    return config["extra"]["history"][0]["loss"]


def change_the_store(store: Store, seed: int = 1) -> None:
    """What happens to a curated store between two runs: new clips, and a reviewer relabels
    one (a newer human annotation wins)."""
    rng = np.random.default_rng(seed)
    rows = [r for r in store.read("annotations").to_pylist() if r["split"] == "train"]
    relabel = next(r for r in rows if not r["is_anomaly"])
    store.append("annotations", [Annotation(
        "ann-relabel", relabel["video_id"], "prevad", "human", "reviewer-2", "Explosion", True,
        description="A tank bursts into flames.", split="train")])
    videos, anns = [], []
    for i in range(6):
        vid = video_id_for("synthetic", f"late-{i}")
        store.write_features(vid, MODEL_ID, rng.standard_normal((30, DIM)).astype(np.float32))
        videos.append(Video(video_id=vid, source="synthetic", source_video_id=f"late-{i}"))
        abnormal = i % 2 == 0
        anns.append(Annotation(f"ann-late-{i}", vid, "prevad", "human", "t",
                               "Assault" if abnormal else "Normal", abnormal,
                               description="Two men fight." if abnormal else None,
                               split="train"))
    store.append("videos", videos)
    store.append("annotations", anns)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Path, float]:
    root = tmp_path_factory.mktemp("store") / "store"
    make_store(root, n_train=4, n_val=1)
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_train(root, out)
    assert result.exit_code == 0, result.output
    return root, out, first_epoch_loss(out)


def test_a_run_records_its_dataset_next_to_the_checkpoint(first_run):
    root, out, _ = first_run
    ckpt = out / "epoch-001"
    manifest = read_manifest(ckpt / MANIFEST)
    store = Store(root)
    train_ids = {r["annotation_id"] for r in store.read("annotations").to_pylist()
                 if r["split"] == "train"}
    listed = set(manifest.rows("train").column("annotation_id").to_pylist())
    assert listed == train_ids and manifest.rows("val").num_rows > 0
    assert manifest.meta["labels"] == "final" and manifest.meta["feature_model"] == MODEL_ID
    assert all(len(c) == 32 for c in manifest.table.column("checksum").to_pylist())
    extra = json.loads((ckpt / "config.json").read_text())["extra"]
    assert extra["dataset"]["digest"] == manifest.digest
    line = describe_checkpoint(ckpt)
    assert line.startswith("trained on: dataset " + manifest.digest[:12])
    assert str(root) in line and "labels final" in line and "train 16 videos" in line


def test_manifest_trains_on_the_same_set_after_the_store_changed(first_run, tmp_path):
    root, out, loss = first_run
    store_copy = tmp_path / "store"
    import shutil

    shutil.copytree(root, store_copy)
    change_the_store(Store(store_copy))
    pinned = run_train(store_copy, tmp_path / "pinned", "--manifest", str(out / "epoch-001"))
    assert pinned.exit_code == 0, pinned.output
    assert first_epoch_loss(tmp_path / "pinned") == loss
    assert read_manifest(tmp_path / "pinned" / MANIFEST).digest == read_manifest(
        out / MANIFEST).digest
    # without the manifest the same command trains on the changed store: another loss
    free = run_train(store_copy, tmp_path / "free")
    assert free.exit_code == 0, free.output
    assert first_epoch_loss(tmp_path / "free") != loss
    assert read_manifest(tmp_path / "free" / MANIFEST).digest != read_manifest(
        out / MANIFEST).digest


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_manifest_refuses_a_changed_or_missing_feature(first_run, tmp_path):
    root, out, _ = first_run
    import shutil

    manifest = read_manifest(out / MANIFEST)
    rows = manifest.rows("train").to_pylist()
    changed, gone = rows[1], rows[2]
    store_copy = tmp_path / "store"
    shutil.copytree(root, store_copy)
    arr = np.load(store_copy / changed["location"])
    np.save(store_copy / changed["location"], arr + 1.0)  # same shape, other values
    line = _error_line(run_train(store_copy, tmp_path / "o1", "--manifest", str(out / MANIFEST)))
    assert changed["video_id"] in line and "changed" in line and str(out / MANIFEST) in line
    (store_copy / gone["location"]).unlink()
    line = _error_line(run_train(store_copy, tmp_path / "o2", "--manifest", str(out / MANIFEST)))
    assert gone["video_id"] in line and "missing" in line and "no longer holds" in line
    assert not list((tmp_path / "o2").glob("epoch-*"))


def test_bad_manifest_files_give_one_error_line(first_run, tmp_path):
    root, out, _ = first_run
    line = _error_line(run_train(root, tmp_path / "o", "--manifest", str(tmp_path / "no.parquet")))
    assert "not found" in line
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    line = _error_line(run_train(root, tmp_path / "o", "--manifest",
                                 str(tmp_path / "junk.parquet")))
    assert "cannot be read" in line
