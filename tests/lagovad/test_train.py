"""The trainer end to end through the CLI on a small prevad store, exact resume, bad input."""

from __future__ import annotations

import json
import math
import shutil
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


# -- bad input: run folders, resume, numbers, stores ---------------------------------------
def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _error_line(result) -> str:
    """The one `error: ...` line of a refused command (no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_out_holding_a_run_is_refused_unless_overwrite(full_run: Path, store_root: Path,
                                                       tmp_path):
    before = _tree(full_run)
    line = _error_line(run_train(store_root, full_run))
    assert str(full_run) in line and "--overwrite" in line and "--resume" in line
    assert _tree(full_run) == before  # nothing deleted, nothing mixed in

    # --overwrite with an input that fails its checks still loses nothing
    copy = tmp_path / "copy"
    shutil.copytree(full_run, copy)
    line = _error_line(run_train(tmp_path / "no-store", copy, "--overwrite"))
    assert "not a PreVAD store" in line
    assert _tree(copy) == before

    # --overwrite with good input replaces the run: no epoch of the old one survives
    result = run_train(store_root, copy, "--overwrite", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in copy.glob("epoch-*")) == ["epoch-001"]
    assert json.loads((copy / "latest.json").read_text())["checkpoint"] == "epoch-001"
    assert (copy / "epoch-001" / "model.safetensors").read_bytes() != \
        before["epoch-001/model.safetensors"]  # a new run (1 epoch, other schedule)


def test_resume_with_changed_settings_says_so(full_run: Path, store_root: Path, tmp_path):
    # --epochs 1 from epoch 1: nothing left to train, so only the checks run
    result = run_train(store_root, tmp_path / "r", "--resume", str(full_run / "epoch-001"),
                       "--epochs", "1", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    warning = [ln for ln in result.output.splitlines() if ln.startswith("warning: ")]
    assert len(warning) == 1, result.output
    assert "batch_size 8 -> 16" in warning[0] and "epochs 2 -> 1" in warning[0]
    assert "lr" not in warning[0].replace("will not", "")  # unchanged settings are not listed
    same = run_train(store_root, tmp_path / "s", "--resume", str(full_run / "epoch-001"),
                     "--epochs", "2", "--keep-last", "3", "--no-progress")
    assert same.exit_code == 0 and "warning:" not in same.output


def test_latest_naming_a_deleted_epoch_falls_back_to_the_newest_complete_one(
    full_run: Path, store_root: Path, tmp_path
):
    from lagovad.errors import LagovadWarning
    from lagovad.train import TrainError, resolve_resume

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    shutil.rmtree(run / "epoch-002")  # latest.json still names it
    with pytest.warns(LagovadWarning, match="epoch-002.*newest complete epoch.*epoch-001"):
        assert resolve_resume(run) == run / "epoch-001"
    (run / "latest.json").write_text('{"checkpoint": "epo')  # truncated
    with pytest.warns(LagovadWarning, match="cannot be read"):
        assert resolve_resume(run) == run / "epoch-001"
    # through the CLI: resuming the run in its own folder is allowed, with the warning
    result = run_train(store_root, run, "--resume", str(run), "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "newest complete epoch" in result.output
    (run / "epoch-001" / "model.safetensors").unlink()  # incomplete now: nothing to resume
    with pytest.raises(TrainError, match="complete epoch-NNN"):
        resolve_resume(run)


@pytest.mark.parametrize("flag, value, rule", [
    ("--lr", "inf", "lr must be a finite number"),
    ("--lr", "nan", "lr must be a finite number"),
    ("--grad-clip", "inf", "grad_clip must be a finite number"),
    ("--lr", "0", "lr must be > 0"),
])
def test_non_finite_or_bad_numbers_are_refused(store_root: Path, tmp_path, flag, value, rule):
    line = _error_line(run_train(store_root, tmp_path / "out", flag, value))
    assert rule in line
    assert not (tmp_path / "out").exists()


def test_nan_in_a_feature_file_is_refused_before_training(tmp_path):
    root = tmp_path / "store"
    store = make_store(root, n_train=2, n_val=1)
    row = store.read("features").to_pylist()[3]
    arr = np.load(root / row["location"])
    arr[5, 2] = np.nan
    arr[9, 0] = np.inf
    np.save(root / row["location"], arr)
    line = _error_line(run_train(root, tmp_path / "out"))
    assert row["video_id"] in line and row["location"] in line
    assert "NaN/Inf" in line and "[5, 9]" in line
    assert not list((tmp_path / "out").glob("epoch-*"))


def test_missing_store_and_store_without_anomalies(tmp_path):
    line = _error_line(run_train(tmp_path / "nope", tmp_path / "out"))
    assert str(tmp_path / "nope") in line and "not a PreVAD store" in line

    root = tmp_path / "normal-only"
    store = Store.init(root)
    videos, annotations = [], []
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(4):
            vid = video_id_for("synthetic", f"{split}-{i}")
            videos.append(Video(video_id=vid, source="synthetic", source_video_id=f"{split}-{i}"))
            annotations.append(Annotation(f"a-{split}-{i}", vid, "prevad", "human", "t",
                                          "Normal", False, split=split))
            store.write_features(vid, MODEL_ID, rng.normal(size=(30, DIM)).astype(np.float32))
    store.append("videos", videos)
    store.append("annotations", annotations)
    line = _error_line(run_train(root, tmp_path / "out2"))
    assert "split 'train'" in line and "no abnormal" in line
    assert not (tmp_path / "out2").exists() or not list((tmp_path / "out2").glob("epoch-*"))

# ------------------------------------------------------------------ recipes (the training step)
def _batch(rows: list[tuple[str, str]]):
    from lagovad.synthesis import SynthSample, collate

    return collate([
        SynthSample(np.random.default_rng(i).normal(size=(6, DIM)).astype(np.float32),
                    np.full(6, float(cat != "Normal"), np.float32), int(cat != "Normal"), cat,
                    desc)
        for i, (cat, desc) in enumerate(rows)
    ])


def test_official_plan_uses_every_prevad_name_and_one_description_per_abnormal_video():
    from lagovad.definition import NORMAL_PROMPT
    from lagovad.recipe import PREVAD_NAMES, names_vocabulary, plan_official

    d = DESCRIPTIONS["Assault"]
    batch = _batch([("Assault", d), ("Explosion", ""), ("Normal", ""), ("Assault", d)])
    plan = plan_official(batch, names_vocabulary(["Assault", "Explosion"]),
                         np.random.default_rng(0))
    assert plan.names == list(PREVAD_NAMES) and len(plan.names) == 36
    assert plan.names[:2] == ["Normal", "Vehicle Accident"]
    # duplicates kept (each abnormal video is its own class); no description -> its class name
    assert plan.descriptions == [NORMAL_PROMPT, d, "Explosion", d]
    assert plan.desc_targets.tolist() == [1, 2, 0, 3]
    assert [plan.names[i] for i in plan.name_targets.tolist()] == [
        "Assault", "Explosion", "Normal", "Assault"]
    assert plan.excluded is None
    # a store with other classes: every training class, every step
    assert names_vocabulary(["Zebra crossing", "Fighting"]) == [
        "Normal", "Fighting", "Zebra crossing"]


def test_official_plan_exclusion_removes_a_class_from_both_definitions():
    from lagovad.recipe import names_vocabulary, plan_official

    batch = _batch([("Assault", "a"), ("Explosion", "b"), ("Normal", "")])
    names = names_vocabulary(["Assault", "Explosion"])
    excluded = set()
    for k in range(40):
        plan = plan_official(batch, names, np.random.default_rng(k), exclude_prob=0.5)
        if plan.excluded is None:
            assert plan.labels.tolist() == [1, 1, 0] and len(plan.names) == 36
            continue
        excluded.add(plan.excluded)
        row = batch.categories.index(plan.excluded)
        # that step's names definition: Normal + the other class present
        other = ({"Assault", "Explosion"} - {plan.excluded}).pop()
        assert plan.names == ["Normal", other]
        assert plan.labels[row] == 0 and plan.frame_labels[row].sum() == 0
        assert plan.name_targets[row] == 0 and plan.desc_targets[row] == 0
        assert len(plan.descriptions) == 2  # normal prompt + the other video's description
    assert excluded == {"Assault", "Explosion"}


def _prompt_grad_of_contrastive(recipe: str, detach_pool: bool) -> float:
    import lagovad
    from lagovad.train import TrainConfig, train_step_terms

    torch.manual_seed(0)
    model = lagovad.create_model("lagovad-tiny").eval()
    batch = _batch([("Assault", DESCRIPTIONS["Assault"]), ("Explosion", ""), ("Normal", "")])
    # description_prob 0: the paper recipe's batch uses the names definition
    cfg = TrainConfig(store="-", out="-", recipe=recipe, description_prob=0.0,
                      detach_pool=detach_pool)
    terms = train_step_terms(model, batch, cfg, ["Assault", "Explosion"],
                             np.random.default_rng(0), torch.device("cpu"))
    assert set(terms) == {"mil", "frame_bce", "pseudo_mil", "mil_align", "contrastive", "loss"}
    terms["contrastive"].backward()
    grad = model.text.prompt_embedding.grad
    return 0.0 if grad is None else float(grad.abs().max())


def test_official_contrastive_anchors_never_reach_the_soft_prompts():
    # the authors' anchors are description features (no prompts): with the pooling weights
    # detached nothing of the term reaches the prompts; the paper recipe's anchors in a names
    # batch are the prompted class names
    assert _prompt_grad_of_contrastive("official", detach_pool=True) == 0.0
    assert _prompt_grad_of_contrastive("paper", detach_pool=True) > 0.0
    # their pooling weights are the names branch's logits, which do depend on the prompts
    assert _prompt_grad_of_contrastive("official", detach_pool=False) > 0.0


def test_retrieval_cache_becomes_the_neighbour_index(tmp_path):
    from lagovad.data import DataError, load_retrieval_cache, load_split

    store = make_store(tmp_path / "store", n_train=2, n_val=1)
    videos = load_split(store, "train", MODEL_ID, DIM).videos
    ids = {r["source_video_id"]: r["video_id"] for r in store.read("videos").to_pylist()}
    cache = tmp_path / "train_search_cache.json"
    cache.write_text(json.dumps({
        "features/train-Assault-0.npy": [
            "train-normal-3", "train-Assault-1", "nowhere", "x/train-normal-0.mp4"
        ],
        "not-in-store": ["train-normal-1"],
    }))
    index = load_retrieval_cache(store, cache, videos)
    # abnormal and unknown neighbours dropped; order kept; paths and extensions ignored
    assert index == {ids["train-Assault-0"]: [ids["train-normal-3"], ids["train-normal-0"]]}
    cache.write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        load_retrieval_cache(store, cache, videos)
    cache.write_text(json.dumps({"train-Assault-0": "train-normal-3"}))
    with pytest.raises(DataError, match="list of neighbour"):
        load_retrieval_cache(store, cache, videos)
    cache.write_text(json.dumps({"elsewhere": []}))
    with pytest.raises(DataError, match="names none of the"):
        load_retrieval_cache(store, cache, videos)


def test_cli_paper_recipe_with_the_authors_neighbour_cache(store_root: Path, tmp_path):
    store = Store(store_root)
    names = [r["source_video_id"] for r in store.read("videos").to_pylist()]
    normals = [n for n in names if n.startswith("train-normal")]
    cache = tmp_path / "train_search_cache.json"
    cache.write_text(json.dumps({n: normals[:3] for n in names if n.startswith("train-")}))
    out = tmp_path / "paper"
    result = run_train(store_root, out, "--epochs", "1", "--recipe", "paper",
                       "--neighbour-cache", str(cache), "--synth-cut", "first")
    assert result.exit_code == 0, result.output
    extra = json.loads((out / "epoch-001" / "config.json").read_text())["extra"]
    assert extra["train_config"]["recipe"] == "paper"
    assert extra["train_config"]["synth_cut"] == "first"
    assert math.isfinite(extra["metrics"]["contrastive"])


def test_cli_rejects_an_unknown_recipe_or_cut(store_root: Path, tmp_path):
    for flag, value, expected in (("--recipe", "authors", "recipe must be one of"),
                                  ("--synth-cut", "middle", "synth_cut must be one of")):
        result = run_train(store_root, tmp_path / "bad", flag, value)
        assert result.exit_code == 2, result.output
        assert expected in result.output
    missing = run_train(store_root, tmp_path / "bad", "--neighbour-cache",
                        str(tmp_path / "no.json"))
    assert missing.exit_code == 2 and "not found" in missing.output


def test_training_data_keeps_every_description_and_synthesis_uses_them_all(tmp_path):
    from lagovad.data import load_split
    from lagovad.synthesis import DynamicSynthesizer

    store = make_store(tmp_path / "store", n_train=1, n_val=1)
    rows = store.read("annotations").to_pylist()
    target = next(r for r in rows if r["split"] == "train" and r["category"] == "Assault")
    descs = ["He punches him.", "A street fight.", "Two men fight near a car."]
    store.append("annotations", [Annotation(
        "ann-more", target["video_id"], "prevad", "human", "second-pass", "Assault", True,
        description=descs[0], split="train", descriptions=descs,
    )])
    videos = load_split(store, "train", MODEL_ID, DIM).videos
    video = next(v for v in videos if v.video_id == target["video_id"])
    assert video.descriptions == tuple(descs)  # not only the first
    synth = DynamicSynthesizer(videos, {}, seed=0)
    index = [synth.clips.video_ids[row] for row in synth.abnormal].index(video.video_id)
    used = {synth.sample(index, epoch).description for epoch in range(60)}
    assert used == set(descs)
