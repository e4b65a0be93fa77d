"""The fast training forward is exact: length groups, banded attention, shared fusion projections
and the product-form head convolution give the loss terms and every gradient of the plain
forward (the library modules run as they are, full-length padding, full attention bias)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lagovad
from lagovad.factory import build_model
from lagovad.loss import OfficialLoss
from lagovad.model import LaGoVADOutput, length_groups
from lagovad.recipe import forward_branches, plan_official
from lagovad.synthesis import SynthSample, collate


def _model(window: int = 5) -> lagovad.LaGoVAD:
    config = json.loads((Path(lagovad.__file__).parent / "model_configs/lagovad-tiny.json")
                        .read_text())
    config["temporal"].update(layers=2, window=window, rotary_positions=512)
    config["fusion"]["layers"] = 2
    torch.manual_seed(11)
    model = build_model(config).double().eval()  # eval: no dropout, so both paths are comparable
    with torch.no_grad():  # move every weight off its init, the conv biases included
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model


def _plain_outputs(model, video, mask, texts) -> list[LaGoVADOutput]:
    """The straightforward forward: whole batch, full bias, the modules' own forward()."""
    enc = model.temporal
    bias = enc.full_attention_bias(mask, video.dtype)
    table = enc.rotary_table[: video.shape[1]].to(video.dtype)
    h = video
    for layer in enc.layers:
        h = layer(h, bias, table)
    temporal = video + h
    outs = []
    for text in texts:
        v, t = temporal, text.expand(video.shape[0], -1, -1)
        for layer in model.fusion.layers:
            pad = ~mask
            t_new = layer.text_norm1(t + layer.text_attn(t, v, v, key_padding_mask=pad,
                                                         need_weights=False)[0])
            v_new = layer.vis_norm1(v + layer.vis_attn(v, t, t, need_weights=False)[0])
            t = layer.text_norm2(t_new + layer.text_ffn(t_new))
            v = layer.vis_norm2(v_new + layer.vis_ffn(v_new))
        head = model.binary_head
        filled_t = lagovad.model.fill_padding(temporal, mask)
        filled_f = lagovad.model.fill_padding(v, mask)
        h1 = head.temporal_conv(filled_t.transpose(1, 2)).squeeze(1)
        h2 = head.fused_conv(filled_f.transpose(1, 2)).squeeze(1)
        logits = head.weight * h1 + (1 - head.weight) * h2
        outs.append(LaGoVADOutput(logits, model.class_head(v, t), temporal, v, text, t))
    return outs


def _batch(lengths: list[int], dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    cats = ["Assault", "Explosion", "Fire"]
    samples = []
    for i, n in enumerate(lengths):
        abnormal = i % 2 == 0
        labels = np.zeros(n, np.float32)
        if abnormal:
            labels[n // 4 : max(n // 2, n // 4 + 1)] = 1.0
        cat = cats[i % 3] if abnormal else "Normal"
        samples.append(SynthSample(rng.standard_normal((n, dim)).astype(np.float32), labels,
                                   int(abnormal), cat, f"{cat} seen from a camera {i}"
                                   if abnormal else ""))
    batch = collate(samples)
    batch.features = batch.features.double()
    batch.frame_labels = batch.frame_labels.double()
    return batch


def _step(model, batch, fast: bool):
    model.zero_grad(set_to_none=True)
    plan = plan_official(batch, ["Normal", "Assault", "Explosion", "Fire"],
                         np.random.default_rng(0))
    texts = [model.encode_text(plan.names, prompts=True),
             model.encode_text(plan.descriptions, prompts=False)]
    run = forward_branches if fast else _plain_outputs
    named, described = run(model, batch.features, batch.mask, texts)
    terms = OfficialLoss()(named, described, batch.mask, plan.labels, plan.name_targets,
                           plan.desc_targets, plan.frame_labels)
    terms["loss"].backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return {k: float(v) for k, v in terms.items()}, grads, named


@pytest.mark.parametrize("lengths", [
    [300, 40, 7, 290, 150, 12, 300, 64],  # mixed: several length groups, banded attention
    [9, 9, 9, 9],  # one group, no band (short)
])
def test_fast_training_step_equals_the_plain_step(lengths):
    model = _model()
    batch = _batch(lengths)
    terms, grads, named = _step(model, batch, fast=True)
    ref_terms, ref_grads, ref_named = _step(model, batch, fast=False)
    for name, value in ref_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-10, abs=1e-12), name
    assert grads.keys() == ref_grads.keys()
    assert "text.prompt_embedding" in grads and "binary_head.fused_conv.weight" in grads
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-9, atol=1e-11, msg=name)
    valid = batch.mask
    torch.testing.assert_close(named.frame_logits[valid], ref_named.frame_logits[valid])
    torch.testing.assert_close(named.class_logits[valid], ref_named.class_logits[valid])


def test_banded_attention_equals_full_bias_attention():
    model = _model(window=25)
    enc = model.temporal
    video = torch.randn(3, 333, 32, dtype=torch.float64)
    mask = torch.ones(3, 333, dtype=torch.bool)
    mask[1, 200:] = False
    mask[2, :5] = False  # a leading gap too
    band = enc.attention_bias(mask, video.dtype)
    assert type(band).__name__ == "BandBias"  # the long sequence does take the banded path
    full = enc.full_attention_bias(mask, video.dtype)
    table = enc.rotary_table[:333].to(video.dtype)
    with torch.no_grad():
        a = enc.layers[0](video, band, table)
        b = enc.layers[0](video, full, table)
    torch.testing.assert_close(a[mask], b[mask], rtol=1e-10, atol=1e-12)


def test_length_groups_cover_every_row_once_and_save_padding():
    lengths = [512, 40, 38, 500, 45, 512, 80, 41]
    groups = length_groups(lengths, overhead=64)
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    padded = sum(len(g) * max(lengths[r] for r in g) for g in groups)
    assert padded < len(lengths) * 512 * 0.75
    assert length_groups(lengths, overhead=10**9) == [sorted(range(8), key=lambda i: lengths[i])]
    assert length_groups([7], overhead=0) == [[0]]
