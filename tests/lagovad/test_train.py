"""The trainer end to end through the CLI on a small prevad store, exact resume, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from prevad import Store
from prevad.records import Annotation, Video, video_id_for
from tests.lagovad.helpers import DESCRIPTIONS, DIM, MODEL_ID, make_store


def cli_app() -> typer.Typer:
    """The real `lagovad` app; a bare app with only `train` if other commands are missing."""
    try:
        from lagovad.cli import app
    except ImportError:
        from lagovad.commands import train

        app = typer.Typer()
        train.register(app)
        app.command("noop", hidden=True)(lambda: None)  # keeps `train` a sub-command
    return app


def run_train(root: Path, out: Path, *extra: str) -> object:
    args = ["train", "--store", str(root), "--model", "lagovad-tiny", "--out", str(out)]
    args += ["--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress"]
    args += ["--seed", "7", "--warmup-steps", "2", "--lr", "1e-3", *extra]
    return CliRunner().invoke(cli_app(), args)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    make_store(root)
    return root


@pytest.fixture(scope="module")
def full_run(store_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_train(store_root, out)
    assert result.exit_code == 0, result.output
    return out


def test_cli_trains_lagovad_tiny_end_to_end(full_run: Path, store_root: Path):
    import lagovad

    assert json.loads((full_run / "latest.json").read_text())["checkpoint"] == "epoch-002"
    ckpt = full_run / "epoch-002"
    config = json.loads((ckpt / "config.json").read_text())
    extra = config["extra"]
    assert extra["epoch"] == 2 and extra["step"] == 2 * math.ceil(2 * 16 / 8)
    assert extra["train_config"]["model"] == "lagovad-tiny"
    assert config["model_config"]["name"] == "lagovad-tiny"
    for key in ("loss", "mil", "frame_bce", "pseudo_mil", "mil_align", "contrastive"):
        assert math.isfinite(extra["metrics"][key]), key
    assert 0.0 <= extra["metrics"]["val_auc"] <= 1.0
    assert 0.0 <= extra["metrics"]["val_ap"] <= 1.0
    assert len(extra["history"]) == 2
    assert (full_run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the checkpoint loads as a model that scores video
    model, loaded_extra = lagovad.load_checkpoint(ckpt)
    assert loaded_extra["epoch"] == 2
    out = model(torch.zeros(1, 5, DIM), None, lagovad.AnomalyDefinition.from_strings(["Assault"]))
    assert out.frame_logits.shape == (1, 5)
    # training changed the weights away from the seeded initialisation
    torch.manual_seed(7)
    init = lagovad.create_model("lagovad-tiny").trainable_state_dict()
    trained = load_file(str(ckpt / "model.safetensors"))
    assert any(not torch.equal(init[k], trained[k]) for k in init)
    # the neighbour index was stored in the dataset
    assert (store_root / "indexes" / f"neighbours-{MODEL_ID}.parquet").is_file()


def test_resume_reaches_bit_identical_weights(full_run: Path, store_root: Path, tmp_path):
    out = tmp_path / "resumed"
    result = run_train(store_root, out, "--resume", str(full_run / "epoch-001"))
    assert result.exit_code == 0, result.output
    assert not (out / "epoch-001").exists()  # it continued, it did not restart
    a = load_file(str(full_run / "epoch-002" / "model.safetensors"))
    b = load_file(str(out / "epoch-002" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ea = json.loads((full_run / "epoch-002" / "config.json").read_text())["extra"]
    eb = json.loads((out / "epoch-002" / "config.json").read_text())["extra"]
    assert ea["metrics"]["loss"] == eb["metrics"]["loss"]
    assert ea["metrics"]["val_auc"] == eb["metrics"]["val_auc"]


def test_keep_last_prunes_old_epochs(store_root: Path, tmp_path):
    out = tmp_path / "pruned"
    result = run_train(store_root, out, "--epochs", "3", "--keep-last", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("epoch-*")) == ["epoch-003"]
    assert json.loads((out / "latest.json").read_text())["checkpoint"] == "epoch-003"


def _ids_with(store: Store, split: str) -> list[str]:
    return [r["video_id"] for r in store.read("annotations").to_pylist() if r["split"] == split]


def test_missing_features_fail_before_training(tmp_path):
    root = tmp_path / "store"
    store = make_store(root, n_train=2, n_val=1)
    extra_id = video_id_for("synthetic", "no-features")
    store.append("videos", [Video(video_id=extra_id, source="synthetic", source_video_id="x")])
    store.append(
        "annotations",
        [Annotation("ann-x", extra_id, "prevad", "human", "t", "Explosion", True, split="train")],
    )
    result = run_train(root, tmp_path / "out")
    assert result.exit_code == 2
    assert extra_id in result.output and "no 'synthetic-clip' features" in result.output
    assert not list((tmp_path / "out").glob("epoch-*"))


def test_wrong_dimension_and_empty_split_fail_before_training(tmp_path):
    root = tmp_path / "store"
    store = make_store(root, n_train=2, n_val=1, dim=16)
    result = run_train(root, tmp_path / "out")
    assert result.exit_code == 2
    assert "expects 32-d features" in result.output and "[16]" in result.output
    assert _ids_with(store, "train")[0][:8] in result.output

    root2 = tmp_path / "store2"
    make_store(root2, n_train=2, splits=("train",))
    result = run_train(root2, tmp_path / "out2")
    assert result.exit_code == 2
    assert "split 'val'" in result.output and "has no annotations" in result.output
    assert not (tmp_path / "out2").exists() or not list((tmp_path / "out2").glob("epoch-*"))


def test_learning_rate_schedule_warms_up_then_decays():
    from lagovad.train import lr_at

    lrs = [lr_at(s, total=100, warmup=20, base_lr=5e-5) for s in range(100)]
    assert lrs[0] == pytest.approx(5e-5 / 20)
    assert lrs[19] == pytest.approx(5e-5)
    assert max(lrs) == pytest.approx(5e-5)
    assert all(a >= b for a, b in zip(lrs[19:], lrs[20:], strict=False))
    assert lrs[60] == pytest.approx(5e-5 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))


def test_batch_definition_excludes_a_class_and_relabels_its_videos():
    from lagovad.synthesis import SynthSample, collate
    from lagovad.train import batch_definition

    def sample(cat: str, label: int) -> SynthSample:
        return SynthSample(
            np.zeros((4, DIM), np.float32),
            np.full(4, label, np.float32),
            label,
            cat,
            DESCRIPTIONS.get(cat, ""),
        )

    batch = collate([sample("Assault", 1), sample("Explosion", 1), sample("Normal", 0)])
    cats = ["Assault", "Explosion"]
    seen = set()
    for k in range(80):
        rng = np.random.default_rng(k)
        defn, labels, targets, frames = batch_definition(batch, rng, cats, 0.5, 0.5)
        kind = defn.kinds[1]
        # under either kind, a class is in the definition by its name or its description
        text_of = (lambda c: c) if kind == "name" else DESCRIPTIONS.__getitem__
        for row, cat in enumerate(cats):
            if text_of(cat) in defn.texts:
                assert labels[row] == 1 and defn.texts[targets[row]] == text_of(cat)
                assert frames[row].sum() == 4
            else:
                seen.add((kind, "excluded"))
                assert labels[row] == 0 and targets[row] == 0 and frames[row].sum() == 0
        assert labels[2] == 0 and targets[2] == 0
        seen.add((kind, "any"))
    assert seen == {(k, s) for k in ("name", "description") for s in ("any", "excluded")}
