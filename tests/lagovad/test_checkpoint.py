"""Checkpoints: lossless round trip, no frozen CLIP weights, strict loading, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import lagovad
from lagovad.checkpoint import CheckpointError, load_training_state

DEFN = lagovad.AnomalyDefinition.from_strings(["Fighting", "Explosion"])


def _outputs(model, seed=0):
    v = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(v, None, DEFN)


def test_round_trip_gives_identical_outputs(tiny_model, tiny_lagovad_checkpoint):
    loaded, extra = lagovad.load_checkpoint(tiny_lagovad_checkpoint)
    assert extra == {"step": 0, "note": "test fixture"}
    for key, value in tiny_model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value), key
    # Outputs agree to float noise (text batches of different composition round differently).
    a, b = _outputs(tiny_model), _outputs(loaded)
    torch.testing.assert_close(a.frame_logits, b.frame_logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.class_logits, b.class_logits, atol=1e-6, rtol=1e-6)


def test_checkpoint_leaves_out_clip_weights_and_names_the_clip(tiny_model,
                                                               tiny_lagovad_checkpoint):
    keys = set(load_file(tiny_lagovad_checkpoint / "model.safetensors"))
    assert keys == set(tiny_model.trainable_state_dict())
    assert not any(k.startswith("text.backbone.") for k in keys)
    assert "text.prompt_embedding" in keys
    config = json.loads((tiny_lagovad_checkpoint / "config.json").read_text())
    assert config["model_config"]["clip"] == {"backend": "open_clip",
                                              "name": "lagovad-clip-tiny", "pretrained": None}
    assert not [p for p in tiny_lagovad_checkpoint.iterdir() if p.name.endswith(".tmp")]


def test_create_model_with_pretrained_directory(tiny_model, tiny_lagovad_checkpoint):
    model = lagovad.create_model("lagovad-tiny", pretrained=tiny_lagovad_checkpoint)
    torch.testing.assert_close(_outputs(model).frame_logits, _outputs(tiny_model).frame_logits)
    with pytest.raises(CheckpointError, match="does not match model 'lagovad-b16'"):
        lagovad.create_model("lagovad-b16", pretrained=tiny_lagovad_checkpoint)


@pytest.mark.parametrize("edit, match", [
    ("drop", r"missing=\['binary_head.alpha'\]"),
    ("add", r"unexpected=\['extra.weight'\]"),
    ("shape", r"class_head.temperature: \(2,\)"),
])
def test_strict_loading_names_bad_keys(tmp_path, tiny_lagovad_checkpoint, edit, match):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_bytes((tiny_lagovad_checkpoint / "config.json").read_bytes())
    tensors = load_file(tiny_lagovad_checkpoint / "model.safetensors")
    if edit == "drop":
        del tensors["binary_head.alpha"]
    elif edit == "add":
        tensors["extra.weight"] = torch.zeros(2)
    else:
        tensors["class_head.temperature"] = torch.ones(2)
    save_file(tensors, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=match):
        lagovad.load_checkpoint(ckpt)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="expected config.json and model.safetensors"):
        lagovad.load_checkpoint(tmp_path)


def _train_step(model, opt, sched, seed):
    out = model(torch.randn(2, 12, 32, generator=torch.Generator().manual_seed(seed)), None, DEFN)
    (out.frame_logits.mean() + out.class_logits.logsumexp(-1).mean()).backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def _make_opt(model):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    return opt, sched


def test_exact_resume_with_optimizer_and_scheduler_state(tmp_path):
    model = lagovad.create_model("lagovad-tiny")
    model.eval()  # no dropout: the comparison must be deterministic
    opt, sched = _make_opt(model)
    _train_step(model, opt, sched, seed=1)
    lagovad.save_checkpoint(tmp_path / "c", model, {"step": 1},
                            optimizer_state=opt.state_dict(), scheduler_state=sched.state_dict(),
                            training_state={"rng": torch.get_rng_state(), "epoch": 0})
    _train_step(model, opt, sched, seed=2)  # continue the original run

    resumed, extra = lagovad.load_checkpoint(tmp_path / "c")
    assert extra == {"step": 1}
    opt2, sched2 = _make_opt(resumed)
    state = load_training_state(tmp_path / "c")
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert state["training"]["epoch"] == 0 and state["training"]["rng"].dtype == torch.uint8
    _train_step(resumed, opt2, sched2, seed=2)

    for (k, a), b in zip(model.trainable_state_dict().items(),
                         resumed.trainable_state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=k)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_no_training_state_when_not_saved(tiny_lagovad_checkpoint):
    assert load_training_state(tiny_lagovad_checkpoint) is None


# -- damaged checkpoints: an error naming the file, through the library and the CLIs -------
def _damage(ckpt, kind: str) -> str:
    """Damage a copy of a checkpoint; return the file name the error must name."""
    config, weights = ckpt / "config.json", ckpt / "model.safetensors"
    if kind == "truncated-config":
        config.write_bytes(config.read_bytes()[:40])
        return "config.json"
    if kind == "no-model-config":
        data = json.loads(config.read_text())
        del data["model_config"]
        config.write_text(json.dumps(data))
        return "config.json"
    if kind == "nan-in-config":
        data = json.loads(config.read_text())
        data["model_config"]["class_head"]["temperature_init"] = float("nan")
        config.write_text(json.dumps(data))  # json writes NaN, and reads it back
        return "config.json"
    if kind == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[:100])
        return "model.safetensors"
    if kind == "not-safetensors":
        torch.save({"a": torch.zeros(1)}, weights)  # a pickle under the safetensors name
        return "model.safetensors"
    assert kind == "nan-in-weights"
    tensors = load_file(weights)
    tensors["binary_head.alpha"] = torch.tensor([float("nan")])
    save_file(tensors, str(weights))
    return "model.safetensors"


DAMAGE = {
    "truncated-config": "not valid JSON",
    "no-model-config": "no 'model_config'",
    "nan-in-config": "class_head.temperature_init must be a finite number, got nan",
    "truncated-weights": "not a readable safetensors file",
    "not-safetensors": "not a readable safetensors file",
    "nan-in-weights": "'binary_head.alpha' holds NaN/Inf",
}


@pytest.fixture
def damaged(request, tmp_path, tiny_lagovad_checkpoint):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_lagovad_checkpoint, ckpt)
    name = _damage(ckpt, request.param)
    return ckpt, ckpt / name, DAMAGE[request.param]


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_damaged_checkpoint_gives_an_error_naming_the_file(damaged):
    ckpt, file, rule = damaged
    with pytest.raises(CheckpointError, match=rule) as info:
        lagovad.load_checkpoint(ckpt)
    assert str(file) in str(info.value)


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from lagovad.cli import app

    return CliRunner().invoke(app, args)


def _one_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("damaged", ["truncated-config", "nan-in-config", "not-safetensors"],
                         indirect=True)
def test_detect_with_a_damaged_checkpoint_is_one_error_line(damaged, tmp_path):
    ckpt, file, rule = damaged
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")  # never reached: the checkpoint is read first
    line = _one_error(_cli(["detect", str(video), "--define", "Fighting",
                            "--checkpoint", str(ckpt), "--device", "cpu"]))
    assert str(file) in line and rule.split(" must")[0] in line


def test_missing_checkpoint_in_detect_and_rescore(tmp_path):
    from prevad import Store

    missing = tmp_path / "no-such-checkpoint"
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    line = _one_error(_cli(["detect", str(video), "--define", "Fighting", "--checkpoint",
                            str(missing), "--device", "cpu"]))
    assert str(missing) in line and "does not exist" in line
    Store.init(tmp_path / "store")
    line = _one_error(_cli(["rescore", "--store", str(tmp_path / "store"), "--define", "Fighting",
                            "--checkpoint", str(missing), "--device", "cpu"]))
    assert str(missing) in line and "does not exist" in line
