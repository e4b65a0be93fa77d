"""LaGoVAD forward: shapes, language steering, padding, and the temporal encoder vs RoFormer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import RoFormerConfig
from transformers.models.roformer.modeling_roformer import (
    RoFormerEncoder,
    RoFormerSinusoidalPositionalEmbedding,
)

import lagovad
from lagovad.convert import ours_to_official
from lagovad.factory import UnknownModelError, build_model, get_model_config
from lagovad.model import (
    AdaptiveBinaryHead,
    ModelConfigError,
    ModelInputError,
    TemporalEncoder,
    count_parameters,
)

DEFN = lagovad.AnomalyDefinition.from_strings(["Fighting", "Explosion"])


def _video(b: int = 2, t: int = 24, d: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, d, generator=g)


def test_forward_shapes_and_normal_first(tiny_model):
    with torch.no_grad():
        out = tiny_model(_video(), torch.ones(2, 24, dtype=torch.bool), DEFN)
    assert out.frame_logits.shape == (2, 24)
    assert out.class_logits.shape == (2, 24, 3)
    assert out.temporal.shape == out.fused.shape == (2, 24, 32)
    assert out.text.shape == (3, 32)
    torch.testing.assert_close(out.text[0], tiny_model.encode_text(["Normal"])[0])


def test_definition_steers_detection(tiny_model):
    v = _video(1, 24)
    with torch.no_grad():
        with_fight = tiny_model(v, None, lagovad.AnomalyDefinition.from_strings(["Fighting"]))
        without = tiny_model(v, None, lagovad.AnomalyDefinition.from_strings(["Snowfall"]))
    assert (with_fight.frame_logits - without.frame_logits).abs().max() > 1e-4


def test_padding_does_not_change_valid_outputs(tiny_model):
    v = _video(1, 17, seed=3)
    padded = torch.cat([v, torch.randn(1, 9, 32) * 5], dim=1)
    mask = torch.zeros(1, 26, dtype=torch.bool)
    mask[:, :17] = True
    with torch.no_grad():
        ref = tiny_model(v, None, DEFN)
        out = tiny_model(padded, mask, DEFN)
    torch.testing.assert_close(out.frame_logits[:, :17], ref.frame_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.class_logits[:, :17], ref.class_logits, atol=1e-5, rtol=1e-5)


def test_batch_rows_are_independent(tiny_model):
    v = _video(3, 20, seed=5)
    with torch.no_grad():
        batch = tiny_model(v, None, DEFN).frame_logits
        single = tiny_model(v[1:2], None, DEFN).frame_logits
    torch.testing.assert_close(batch[1:2], single, atol=1e-5, rtol=1e-5)


def test_per_sample_text_features(tiny_model):
    v = _video(2, 10)
    with torch.no_grad():
        t = tiny_model.encode_definition(DEFN)
        shared = tiny_model(v, None, text=t)
        per_sample = tiny_model(v, None, text=t.expand(2, -1, -1))
        via_defn = tiny_model(v, None, DEFN)
    torch.testing.assert_close(shared.frame_logits, per_sample.frame_logits)
    torch.testing.assert_close(shared.frame_logits, via_defn.frame_logits)


def test_binary_head_unpadded_equals_replicate_conv_blend():
    torch.manual_seed(0)
    head = AdaptiveBinaryHead(8, kernel_size=5, alpha_init=0.25, alpha_scale=10.0)
    a, b = torch.randn(2, 11, 8), torch.randn(2, 11, 8)
    with torch.no_grad():
        got = head(a, b, torch.ones(2, 11, dtype=torch.bool))

        def conv(conv_mod, x):
            x = F.pad(x.transpose(1, 2), (2, 2), mode="replicate")
            return F.conv1d(x, conv_mod.weight, conv_mod.bias).squeeze(1)

        w = torch.sigmoid(torch.tensor(2.5))
        expected = w * conv(head.temporal_conv, a) + (1 - w) * conv(head.fused_conv, b)
    torch.testing.assert_close(got, expected)
    assert abs(head.weight.item() - 0.924) < 1e-3


def test_temporal_encoder_equals_transformers_roformer_with_band_mask():
    torch.manual_seed(0)
    enc = TemporalEncoder(hidden=32, layers=2, heads=2, ffn=48, window=5, rotary_positions=64,
                          dropout=0.1, attention_dropout=0.1, layer_norm_eps=1e-12).eval()
    cfg = RoFormerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=48, max_position_embeddings=64, hidden_act="gelu",
                         layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
    ref = RoFormerEncoder(cfg).eval()
    official = ours_to_official({f"temporal.{k}": v for k, v in enc.state_dict().items()})
    ref.load_state_dict({k.removeprefix("temporal_encoder."): v for k, v in official.items()})
    table = RoFormerSinusoidalPositionalEmbedding(64, 16).create_weight()
    torch.testing.assert_close(enc.rotary_table, table)

    x = torch.randn(2, 20, 32)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 13:] = False
    idx = torch.arange(20)
    allowed = ((idx[:, None] - idx[None]).abs() <= 2)[None] & mask[:, None, :]
    extended = (1.0 - allowed[:, None].float()) * torch.finfo(torch.float32).min
    with torch.no_grad():
        expected = x + ref(x, attention_mask=extended).last_hidden_state
        got = enc(x, mask)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1, :13], expected[1, :13], atol=1e-5, rtol=1e-5)


def test_temporal_attention_is_local():
    torch.manual_seed(0)
    enc = TemporalEncoder(hidden=16, layers=1, heads=2, ffn=32, window=5, rotary_positions=64,
                          dropout=0.0, attention_dropout=0.0, layer_norm_eps=1e-12).eval()
    x = torch.randn(1, 30, 16)
    y = x.clone()
    y[0, 20] = torch.randn(16)
    mask = torch.ones(1, 30, dtype=torch.bool)
    with torch.no_grad():
        hx, hy = enc(x, mask), enc(y, mask)
    torch.testing.assert_close(hx[0, :18], hy[0, :18])  # 20 - 2 is the window's edge
    assert (hx[0, 18] - hy[0, 18]).abs().max() > 1e-5


def test_b16_parameter_counts_match_the_authors():
    # A randomly initialised HF CLIP text model with clip-vit-base-patch16's text shape (the
    # CLIPTextConfig defaults): no download.
    model = lagovad.create_model("lagovad-b16", clip={"random_init": True, "text_config": {}})
    assert count_parameters(model, trainable=True) == 18_939_908
    assert count_parameters(model.text.backbone) == 63_165_952
    assert model.temporal.rotary_table.shape == (1536, 128)


def test_bad_inputs_raise_clear_errors(tiny_model):
    with pytest.raises(ModelInputError, match=r"video must be \[B, T, 32\]"):
        tiny_model(torch.randn(1, 5, 31), None, DEFN)
    with pytest.raises(ModelInputError, match="no valid step"):
        tiny_model(torch.randn(2, 5, 32), torch.tensor([[True] * 5, [False] * 5]), DEFN)
    with pytest.raises(ModelInputError, match="exactly one of definition or text"):
        tiny_model(torch.randn(1, 5, 32), None)
    with pytest.raises(ModelInputError, match="exceeds the rotary table"):
        tiny_model(torch.randn(1, 300, 32), None, DEFN)


def test_unknown_model_and_bad_config():
    with pytest.raises(UnknownModelError, match="lagovad-b16.*lagovad-tiny"):
        lagovad.create_model("lagovad-huge")
    assert lagovad.list_models() == ["lagovad-b16", "lagovad-tiny"]
    cfg = get_model_config("lagovad-tiny")
    cfg["binary_head"]["kernel_size"] = 4
    with pytest.raises(ModelConfigError, match="odd integer >= 1, got 4"):
        build_model(cfg)


def test_training_step_updates_prompts_and_heads():
    model = lagovad.create_model("lagovad-tiny").train()
    g = torch.Generator().manual_seed(0)
    video = _video(2, 12)
    frame_target = torch.randint(0, 2, (2, 12), generator=g).float()
    class_target = torch.randint(0, len(DEFN), (2, 12), generator=g)

    def loss_of(out):
        return (F.binary_cross_entropy_with_logits(out.frame_logits, frame_target)
                + F.cross_entropy(out.class_logits.flatten(0, 1), class_target.flatten()))

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert {"text.prompt_embedding", "binary_head.alpha", "binary_head.temporal_conv.weight",
            "binary_head.fused_conv.weight", "class_head.temperature"} <= trainable.keys()
    frozen = {n: p.detach().clone() for n, p in model.text.backbone.named_parameters()}
    assert frozen and not any(p.requires_grad for p in model.text.backbone.parameters())
    before = {n: p.detach().clone() for n, p in trainable.items()}
    torch.manual_seed(0)  # same dropout masks for both evaluations of the loss
    loss = loss_of(model(video, None, DEFN))
    loss.backward()
    no_grad = [n for n, p in trainable.items()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().max() == 0]
    assert no_grad == []  # every trainable parameter, heads and prompts included, is reached
    # Plain SGD (no weight decay, no momentum): a parameter moves only through its gradient.
    torch.optim.SGD(trainable.values(), lr=1e-2).step()
    unchanged = [n for n, p in trainable.items() if torch.equal(p, before[n])]
    assert unchanged == []
    for n, p in model.text.backbone.named_parameters():
        torch.testing.assert_close(p, frozen[n], atol=0, rtol=0)
    torch.manual_seed(0)
    with torch.no_grad():
        assert loss_of(model(video, None, DEFN)) < loss.detach()
