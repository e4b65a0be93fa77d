"""convert-official: the authors' key names and shapes onto our model, checked numerically
against an independent forward written from their state dict (transformers' RoFormerEncoder for
the temporal encoder, torch MultiheadAttention for the fusion, replicate-padded conv heads)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
import typer
from transformers import RoFormerConfig
from transformers.models.roformer.modeling_roformer import (
    RoFormerEncoder,
    RoFormerSinusoidalPositionalEmbedding,
)
from typer.testing import CliRunner

import lagovad
from lagovad.commands import convert as convert_cmd
from lagovad.convert import ConversionError, ours_to_official
from lagovad.factory import build_model, convert_official, get_model_config

DEFN = lagovad.AnomalyDefinition.from_strings(["Fighting", "Explosion", "Car Accident"])


def official_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly filled state dict with the authors' key names and shapes for config ``cfg``."""
    g = torch.Generator().manual_seed(seed)
    h, tc, fc = cfg["hidden"], cfg["temporal"], cfg["fusion"]
    k = cfg["binary_head"]["kernel_size"]
    n_prompts = cfg["prompts"]["front"] + cfg["prompts"]["back"]

    def w(*shape, scale=0.05, base=0.0):
        return base + scale * torch.randn(*shape, generator=g)

    sd = {"temporal_encoder.embed_positions.weight": RoFormerSinusoidalPositionalEmbedding(
        tc["rotary_positions"], h // tc["heads"]).create_weight()}
    for i in range(tc["layers"]):
        p = f"temporal_encoder.layer.{i}."
        for name in ("query", "key", "value"):
            sd[p + f"attention.self.{name}.weight"] = w(h, h)
            sd[p + f"attention.self.{name}.bias"] = w(h)
        sd[p + "attention.output.dense.weight"] = w(h, h)
        sd[p + "attention.output.dense.bias"] = w(h)
        sd[p + "attention.output.LayerNorm.weight"] = w(h, base=1.0)
        sd[p + "attention.output.LayerNorm.bias"] = w(h)
        sd[p + "intermediate.dense.weight"] = w(tc["ffn"], h)
        sd[p + "intermediate.dense.bias"] = w(tc["ffn"])
        sd[p + "output.dense.weight"] = w(h, tc["ffn"])
        sd[p + "output.dense.bias"] = w(h)
        sd[p + "output.LayerNorm.weight"] = w(h, base=1.0)
        sd[p + "output.LayerNorm.bias"] = w(h)
    for i in range(fc["layers"]):
        p = f"fusion.layers.{i}."
        for s in ("vis", "text"):
            sd[p + f"{s}_attn.in_proj_weight"] = w(3 * h, h, scale=0.2)
            sd[p + f"{s}_attn.in_proj_bias"] = w(3 * h)
            sd[p + f"{s}_attn.out_proj.weight"] = w(h, h, scale=0.2)
            sd[p + f"{s}_attn.out_proj.bias"] = w(h)
            sd[p + f"{s}_ffn.0.weight"] = w(fc["ffn"], h)
            sd[p + f"{s}_ffn.0.bias"] = w(fc["ffn"])
            sd[p + f"{s}_ffn.3.weight"] = w(h, fc["ffn"])
            sd[p + f"{s}_ffn.3.bias"] = w(h)
            for n in (1, 2):
                sd[p + f"{s}_norm{n}.weight"] = w(h, base=1.0)
                sd[p + f"{s}_norm{n}.bias"] = w(h)
    sd["bin_head.adp_alpha"] = w(1, base=0.25)
    for head in ("bin_head", "bin_fused_head"):
        sd[f"bin_head.{head}.convs.0.weight"] = w(1, h, k)
        sd[f"bin_head.{head}.convs.0.bias"] = w(1)
    sd["sim_head.sim_head.temperature"] = w(1, scale=0.01, base=0.2)
    sd["clip_text_model.prompt_embedding.weight"] = w(n_prompts, h, scale=0.5)
    return sd


def reference_forward(sd: dict, cfg: dict, video: torch.Tensor, text: torch.Tensor):
    """The authors' forward on unpadded input, written directly from their state dict."""
    h, tc, fc = cfg["hidden"], cfg["temporal"], cfg["fusion"]
    enc = RoFormerEncoder(RoFormerConfig(
        hidden_size=h, num_hidden_layers=tc["layers"], num_attention_heads=tc["heads"],
        intermediate_size=tc["ffn"], max_position_embeddings=tc["rotary_positions"],
        hidden_act="gelu", layer_norm_eps=1e-12)).eval()
    enc.load_state_dict({k.removeprefix("temporal_encoder."): v for k, v in sd.items()
                         if k.startswith("temporal_encoder.")})
    t_len = video.shape[1]
    idx = torch.arange(t_len)
    band = ((idx[:, None] - idx[None]).abs() <= tc["window"] // 2).float()
    ext = (1.0 - band)[None, None] * torch.finfo(torch.float32).min
    v = video + enc(video, attention_mask=ext).last_hidden_state
    temporal = v
    t = text.expand(video.shape[0], -1, -1)

    def mha(prefix, q, kv):
        m = torch.nn.MultiheadAttention(h, fc["heads"], batch_first=True).eval()
        m.load_state_dict({k.removeprefix(prefix): x for k, x in sd.items()
                           if k.startswith(prefix)})
        return m(q, kv, kv, need_weights=False)[0]

    def ln(prefix, x):
        return F.layer_norm(x, (h,), sd[prefix + ".weight"], sd[prefix + ".bias"])

    def ffn(prefix, x):
        y = F.gelu(F.linear(x, sd[prefix + ".0.weight"], sd[prefix + ".0.bias"]))
        return F.linear(y, sd[prefix + ".3.weight"], sd[prefix + ".3.bias"])

    for i in range(fc["layers"]):
        p = f"fusion.layers.{i}."
        t1 = ln(p + "text_norm1", t + mha(p + "text_attn.", t, v))
        v1 = ln(p + "vis_norm1", v + mha(p + "vis_attn.", v, t))
        t = ln(p + "text_norm2", t1 + ffn(p + "text_ffn", t1))
        v = ln(p + "vis_norm2", v1 + ffn(p + "vis_ffn", v1))

    def conv(prefix, x):
        k = sd[prefix + ".weight"].shape[-1]
        x = F.pad(x.transpose(1, 2), ((k - 1) // 2, (k - 1) // 2), mode="replicate")
        return F.conv1d(x, sd[prefix + ".weight"], sd[prefix + ".bias"]).squeeze(1)

    wgt = torch.sigmoid(10 * sd["bin_head.adp_alpha"])
    frame = (wgt * conv("bin_head.bin_head.convs.0", temporal)
             + (1 - wgt) * conv("bin_head.bin_fused_head.convs.0", v))
    vn = v / v.norm(dim=-1, keepdim=True)
    tn = t / t.norm(dim=-1, keepdim=True)
    cls = torch.einsum("bte,bce->btc", vn, tn) / sd["sim_head.sim_head.temperature"]
    return frame, cls


@pytest.fixture(scope="module")
def tiny_official(tmp_path_factory):
    cfg = get_model_config("lagovad-tiny")
    sd = official_state_dict(cfg)
    path = tmp_path_factory.mktemp("official") / "last.ckpt"
    # Lightning layout: module attribute prefix, training metadata, frozen CLIP weights absent.
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3,
                "global_step": 120}, path)
    return cfg, sd, path


def test_converted_forward_equals_official_forward(tiny_official, tmp_path):
    cfg, sd, path = tiny_official
    report = convert_official(path, tmp_path / "ours", model_name="lagovad-tiny")
    assert report.ok and report.prefix == "model." and report.meta == {"epoch": 3,
                                                                        "global_step": 120}
    model, extra = lagovad.load_checkpoint(tmp_path / "ours")
    assert extra["converted_from"] == str(path)
    torch.testing.assert_close(model.text.prompt_embedding.detach(),
                               sd["clip_text_model.prompt_embedding.weight"], atol=0, rtol=0)
    video = torch.randn(2, 40, cfg["video_dim"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(video, None, DEFN)
        frame, cls = reference_forward(sd, cfg, video, model.encode_definition(DEFN))
    assert (out.frame_logits - frame).abs().max() <= 1e-4
    assert (out.class_logits - cls).abs().max() <= 1e-4
    assert frame.std() > 1e-3  # the comparison is not between two constants


def test_round_trip_is_lossless(tiny_official, tmp_path):
    cfg, sd, path = tiny_official
    convert_official(path, tmp_path / "ours", model_name="lagovad-tiny")
    model, _ = lagovad.load_checkpoint(tmp_path / "ours")
    back = ours_to_official(model.trainable_state_dict())
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert torch.equal(back[key], value), key


def test_b16_official_layout_maps_completely_with_the_authors_count():
    cfg = get_model_config("lagovad-b16")
    sd = official_state_dict(cfg)
    trainable = sum(v.numel() for k, v in sd.items() if "embed_positions" not in k)
    assert trainable == 18_939_908
    model = build_model(dict(cfg, clip={"backend": "hf", "random_init": True,
                                        "text_config": {"num_hidden_layers": 1}}))
    from lagovad.convert import official_to_ours

    ours, report = official_to_ours(sd)
    assert report.ok and not report.ignored
    assert set(ours) == set(model.trainable_state_dict())
    assert all(ours[k].shape == v.shape for k, v in model.trainable_state_dict().items())


def test_create_model_loads_official_ckpt_directly(tiny_official):
    _, sd, path = tiny_official
    model = lagovad.create_model("lagovad-tiny", pretrained=path)
    assert torch.equal(model.binary_head.alpha.detach(), sd["bin_head.adp_alpha"])


def test_unknown_and_missing_keys_are_reported(tiny_official, tmp_path):
    _, sd, _ = tiny_official
    bad = dict(sd)
    del bad["bin_head.adp_alpha"]
    bad["bin_head.extra_scale"] = torch.ones(1)
    bad["clip_text_model.text_model.final_layer_norm.weight"] = torch.ones(32)  # ignored
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": bad}, path)
    with pytest.raises(ConversionError, match=r"bin_head.extra_scale.*binary_head.alpha"):
        convert_official(path, tmp_path / "out", model_name="lagovad-tiny")
    assert not (tmp_path / "out" / "config.json").exists()


def test_cli_convert_official(tiny_official, tmp_path):
    _, _, path = tiny_official
    app = typer.Typer()
    convert_cmd.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer in multi-command mode
        pass

    runner = CliRunner()
    out = tmp_path / "conv"
    res = runner.invoke(app, ["convert-official", str(path), str(out), "--model", "lagovad-tiny"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["model_config"]["name"] == "lagovad-tiny"
    res = runner.invoke(app, ["convert-official", str(tmp_path / "nope.ckpt"), str(out)])
    assert res.exit_code == 2
    assert "official checkpoint not found" in res.output


# -- a checkpoint from Lightning's own Trainer.save_checkpoint: pickled config classes ------
TRAP_LOG: list[str] = []


def _trap(*args):
    """Stands for code a pickled class would run on load; loading must never call it."""
    TRAP_LOG.append(repr(args))
    raise AssertionError("a pickled callable was executed while loading")


@dataclasses.dataclass
class AuthorsConfig:
    """Like the authors' config dataclasses that Lightning pickles into hyper_parameters."""

    lr: float = 5e-5
    classes: tuple = ("Fighting", "Shooting")


class RunsCodeOnLoad:
    """A class whose unpickling calls a function (as many real classes' __reduce__ do)."""

    def __init__(self, note: str):
        self.note = note

    def __reduce__(self):
        return (_trap, (self.note,))


def test_lightning_checkpoint_with_pickled_classes_converts_without_running_them(
    tiny_official, tmp_path
):
    cfg, sd, _ = tiny_official
    path = tmp_path / "trainer_saved.ckpt"
    torch.save({
        "epoch": 7, "global_step": 280, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in sd.items()},
        "hyper_parameters": {"config": AuthorsConfig(), "hook": RunsCodeOnLoad("boom")},
        "callbacks": {"ModelCheckpoint": {"best": torch.tensor(0.9)}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-5}]}],
    }, path)
    # torch's plain restricted load refuses the file ...
    with pytest.raises(Exception, match="AuthorsConfig|_trap|Unsupported global"):
        torch.load(path, weights_only=True)
    # ... ours converts it, and the pickled code never ran
    report = convert_official(path, tmp_path / "ours", model_name="lagovad-tiny")
    assert TRAP_LOG == []
    assert report.ok and report.meta == {"epoch": 7, "global_step": 280}
    model, _ = lagovad.load_checkpoint(tmp_path / "ours")
    assert torch.equal(model.binary_head.alpha.detach(), sd["bin_head.adp_alpha"])


def test_read_official_checkpoint_binds_unknown_classes_to_inert_stand_ins(tmp_path):
    from lagovad.convert import StandIn, _torch_load_restricted, read_official_checkpoint

    path = tmp_path / "c.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": AuthorsConfig(lr=1.0),
                "hook": RunsCodeOnLoad("x")}, path)
    blob = _torch_load_restricted(path)
    assert isinstance(blob["hyper_parameters"], StandIn)
    assert not hasattr(blob["hyper_parameters"], "lr")  # its state was dropped, not applied
    assert isinstance(blob["hook"], StandIn) and TRAP_LOG == []
    state, meta = read_official_checkpoint(path)
    assert list(state) == ["w"] and meta == {}
    # no tensors where the state dict should be: a clear error, not a stand-in passed on
    torch.save({"state_dict": AuthorsConfig()}, path)
    with pytest.raises(ConversionError, match="'state_dict' must map names to tensors"):
        read_official_checkpoint(path)
