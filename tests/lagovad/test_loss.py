"""Loss terms on hand-computed cases; padding must never change a term."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lagovad.loss import (
    ContrastiveLoss,
    FrameBCELoss,
    LaGoVADLoss,
    LossError,
    MILAlignLoss,
    MILLoss,
    OfficialLoss,
    PseudoMILLoss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_mil_uses_k_len_over_16_and_ignores_padding():
    logits = torch.full((2, 40), 50.0)  # padded steps hold huge logits: must not be picked
    logits[0, :32] = torch.arange(32) / 10  # k = 32 // 16 = 2 -> mean(3.1, 3.0)
    logits[1, :5] = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])  # k = max(5 // 16, 1) = 1 -> 2.0
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, :32] = True
    mask[1, :5] = True
    out = MILLoss()(logits, mask, torch.tensor([1, 0]))
    expected = 0.5 * (softplus(-3.05) + softplus(2.0))  # BCE-with-logits: label 1, label 0
    assert out["mil"].item() == pytest.approx(expected, rel=1e-5)


def test_frame_bce_averages_valid_steps_only():
    logits = torch.tensor([[2.0, -1.0, 99.0], [0.0, 99.0, 99.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = FrameBCELoss()(logits, mask, labels)
    expected = (softplus(-2.0) + softplus(-1.0) + softplus(0.0)) / 3
    assert out["frame_bce"].item() == pytest.approx(expected, rel=1e-5)


def _pseudo_case():
    logits = torch.full((2, 24), -3.0)
    logits[0, :4] = 10.0  # outside the span: must be ignored for the abnormal video
    logits[0, 8:16] = torch.tensor([1.0, 0.5, 0.0, 0.0, -1.0, -1.0, -1.0, 2.0])
    frame_labels = torch.zeros(2, 24)
    frame_labels[0, 8:16] = 1.0  # 8 span frames -> k = 2 -> logits 2 and 1
    logits[1, :20] = torch.linspace(-2, 2, 20)  # normal, 20 valid -> k = 5
    logits[1, 20:] = 40.0  # padding
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 20:] = False
    return logits, mask, frame_labels


def test_pseudo_mil_paper_averages_top_k_probabilities_inside_the_span():
    logits, mask, frame_labels = _pseudo_case()
    out = PseudoMILLoss(scoring="paper")(logits, mask, frame_labels)
    sig = torch.sigmoid
    p_abn = (sig(torch.tensor(2.0)) + sig(torch.tensor(1.0))).item() / 2
    p_norm = sig(torch.linspace(-2, 2, 20)[-5:]).mean().item()
    expected = 0.5 * (-math.log(p_abn) - math.log(1 - p_norm))
    assert out["pseudo_mil"].item() == pytest.approx(expected, rel=1e-5)


def test_pseudo_mil_official_averages_top_k_logits_then_bce_with_logits():
    logits, mask, frame_labels = _pseudo_case()
    out = PseudoMILLoss(scoring="official")(logits, mask, frame_labels)
    z_abn = (2.0 + 1.0) / 2
    z_norm = torch.linspace(-2, 2, 20)[-5:].mean().item()
    expected = 0.5 * (softplus(-z_abn) + softplus(z_norm))
    assert out["pseudo_mil"].item() == pytest.approx(expected, rel=1e-5)


def test_pseudo_mil_scores_an_abnormal_sample_without_span_as_normal():
    # the first-max_len cut can drop the abnormal clip; the authors' rule: normal for this term
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    out = PseudoMILLoss(scoring="official")(
        logits, torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 4)
    )
    assert out["pseudo_mil"].item() == pytest.approx(softplus(3.0), rel=1e-5)  # k = 1, target 0


def test_mil_align_is_cross_entropy_of_per_class_top_k_means():
    torch.manual_seed(0)
    logits = torch.randn(2, 48, 3)
    mask = torch.ones(2, 48, dtype=torch.bool)
    mask[1, 17:] = False  # 17 valid -> k = 1
    logits[1, 17:] = 100.0
    targets = torch.tensor([2, 0])
    out = MILAlignLoss()(logits, mask, targets)
    row0 = logits[0].topk(3, dim=0).values.mean(0)  # 48 // 16 = 3
    row1 = logits[1, :17].max(dim=0).values
    expected = F.cross_entropy(torch.stack([row0, row1]), targets)
    assert out["mil_align"].item() == pytest.approx(expected.item(), rel=1e-5)


def _contrastive_case(mined_range: float):
    """One abnormal video (anchor e0) of two steps, one normal video; one-hot features."""
    eye = torch.eye(4)
    temporal = torch.stack([torch.stack([eye[0], eye[1]]), torch.stack([eye[2], eye[3]])])
    high = 10.0
    low = -10.0 if mined_range >= 0.2 else high - 0.01  # sigmoid range ~1 or ~0
    logits = torch.tensor([[high, low], [0.0, -10.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    anchors = eye[0][None]  # the abnormal video's text
    frame_labels = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    return logits, mask, temporal, anchors, torch.tensor([True, False]), frame_labels


def _smoothed_ce(log_p: list[float], target: int, eps: float = 0.1) -> float:
    n = len(log_p)
    return -sum(((1 - eps) * (i == target) + eps / n) * lp for i, lp in enumerate(log_p))


def test_contrastive_paper_matches_hand_computation_with_a_mined_negative():
    loss = ContrastiveLoss(similarity="cosine", second="video", empty_background="skip")
    out = loss(*_contrastive_case(mined_range=1.0))["contrastive"].item()
    # rows: fg(abnormal)=e0, fg(normal)=e2, bg(abnormal)=e1; anchor e0 -> cos/0.02 = [50, 0, 0]
    lse = math.log(math.exp(50) + 2)
    t2v = _smoothed_ce([50 - lse, -lse, -lse], 0)
    assert out == pytest.approx(0.5 * (t2v + 0.0), rel=1e-4)  # v2t over one text is 0


def test_contrastive_official_uses_the_raw_dot_product():
    out = ContrastiveLoss()(*_contrastive_case(mined_range=1.0))["contrastive"].item()
    # same rows, raw dot products with e0: [1, 0, 0] (no normalisation, no temperature)
    lse = math.log(math.e + 2)
    t2v = _smoothed_ce([1 - lse, -lse, -lse], 0)
    assert out == pytest.approx(0.5 * t2v, rel=1e-5)  # text vs one abnormal video: 0


def test_contrastive_second_term_text_vs_videos_differs_from_video_vs_texts():
    # two abnormal videos, anchors a0 = 2 e0, a1 = e0 + e1; pooled foregrounds e0 and e1
    eye = torch.eye(3)
    temporal = torch.stack([eye[0].expand(2, 3), eye[1].expand(2, 3)])
    logits = torch.zeros(2, 2)  # range 0: nothing mined
    anchors = torch.stack([2 * eye[0], eye[0] + eye[1]])
    args = (logits, torch.ones(2, 2, dtype=torch.bool), temporal, anchors,
            torch.tensor([True, True]), torch.ones(2, 2))
    sim = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # anchors x videos
    t2v = F.cross_entropy(sim, torch.tensor([0, 1]), label_smoothing=0.1)
    v2t = F.cross_entropy(sim.T, torch.tensor([0, 1]), label_smoothing=0.1)
    official = ContrastiveLoss(second="text")(*args)["contrastive"].item()
    video = ContrastiveLoss(second="video")(*args)["contrastive"].item()
    assert official == pytest.approx(t2v.item(), rel=1e-5)  # second term = t2v over abnormal
    assert video == pytest.approx(0.5 * (t2v + v2t).item(), rel=1e-5)
    assert abs(official - video) > 1e-3


def test_contrastive_mines_background_only_when_range_is_large():
    logits, mask, temporal, anchors, abnormal, frame_labels = _contrastive_case(0.0)
    loss = ContrastiveLoss(similarity="cosine", second="video")
    out = loss(logits, mask, temporal, anchors, abnormal, frame_labels)
    # No mined row: two rows, sims from anchor e0: fg(abnormal) ~ e0 (the two steps are nearly
    # tied, pooled = mix of e0 and e1), fg(normal) = e2.
    w = torch.softmax(logits[0] / 0.02, 0)
    fg = F.normalize(w[0] * torch.eye(4)[0] + w[1] * torch.eye(4)[1], dim=0)
    sims = torch.tensor([fg[0].item(), 0.0]) / 0.02
    expected = F.cross_entropy(sims[None], torch.tensor([0]), label_smoothing=0.1) / 2
    assert out["contrastive"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_contrastive_is_zero_without_abnormal_videos_and_keeps_a_graph():
    logits = torch.randn(2, 5, requires_grad=True)
    out = ContrastiveLoss()(
        logits,
        torch.ones(2, 5, dtype=torch.bool),
        torch.randn(2, 5, 4),
        torch.zeros(0, 4),
        torch.tensor([False, False]),
        torch.zeros(2, 5),
    )["contrastive"]
    assert out.item() == 0.0
    # "Keeps a graph": the total loss can call backward() on such a batch, and this term adds
    # exactly nothing to the gradient of the logits.
    assert out.requires_grad
    out.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_contrastive_detached_pooling_stops_the_gradient_into_the_logits():
    logits, mask, temporal, anchors, abnormal, frame_labels = _contrastive_case(1.0)
    logits = (logits * 0.001).requires_grad_()  # unsaturated pooling weights
    ContrastiveLoss()(logits, mask, temporal, anchors, abnormal, frame_labels)[
        "contrastive"
    ].backward()
    assert logits.grad.abs().max() > 1e-3
    logits.grad = None
    out = ContrastiveLoss(detach_pool=True)(
        logits, mask, temporal.requires_grad_(), anchors, abnormal, frame_labels
    )["contrastive"]
    out.backward()
    assert logits.grad is None or float(logits.grad.abs().max()) == 0.0
    assert temporal.grad.abs().max() > 0


def test_total_loss_is_invariant_to_padding():
    torch.manual_seed(1)
    b, t, c, h = 3, 40, 3, 8
    out = SimpleNamespace(
        frame_logits=torch.randn(b, t),
        class_logits=torch.randn(b, t, c),
        temporal=torch.randn(b, t, h),
        text=torch.randn(c, h),
    )
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 30:] = False
    mask[2, 18:] = False
    frame_labels = torch.zeros(b, t)
    frame_labels[0, 5:25] = 1
    frame_labels[2, 2:10] = 1
    labels, targets = torch.tensor([1, 0, 1]), torch.tensor([1, 0, 2])
    loss = LaGoVADLoss()
    ref = loss(out, mask, labels, targets, frame_labels)
    noisy = SimpleNamespace(
        frame_logits=out.frame_logits.masked_fill(~mask, 30.0),
        class_logits=out.class_logits.masked_fill(~mask[..., None], -30.0),
        temporal=out.temporal.masked_fill(~mask[..., None], 7.0),
        text=out.text,
    )
    frame_labels_noisy = frame_labels.masked_fill(~mask, 1.0)
    got = loss(noisy, mask, labels, targets, frame_labels_noisy)
    assert set(ref) == {"mil", "frame_bce", "pseudo_mil", "mil_align", "contrastive", "loss"}
    for name in ref:
        assert got[name].item() == pytest.approx(ref[name].item(), rel=1e-5), name
    total = sum(v.item() for k, v in ref.items() if k != "loss")
    assert ref["loss"].item() == pytest.approx(total, rel=1e-5)


def test_losses_reject_empty_videos_and_bad_targets():
    logits = torch.zeros(2, 4)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    with pytest.raises(LossError, match="rows \\[1\\]"):
        MILLoss()(logits, mask, torch.tensor([1, 0]))
    with pytest.raises(LossError, match="class targets must lie in \\[0, 3\\)"):
        MILAlignLoss()(torch.zeros(1, 4, 3), torch.ones(1, 4, dtype=torch.bool), torch.tensor([3]))
    with pytest.raises(LossError, match="one anchor per abnormal video"):
        ContrastiveLoss()(
            torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 4, 2),
            torch.zeros(2, 2), torch.tensor([True]), torch.ones(1, 4),
        )


# ------------------------------------------------------------------ goldens from the authors' code
GOLDEN = Path(__file__).parent / "golden"


def _close(ours: torch.Tensor, theirs: torch.Tensor, name: str, rel: float = 1e-5) -> None:
    """Equal to ``rel`` relative to the tensor's scale (elementwise relative error is noise on
    entries near zero)."""
    scale = theirs.abs().max().item()
    err = (ours.detach().double() - theirs.double()).abs().max().item()
    assert err <= rel * max(scale, 1e-12), f"{name}: max error {err:.3g} at scale {scale:.3g}"


def test_official_step_equals_the_authors_training_step():
    """Every term and the gradients of the total, against their training_step (golden)."""
    from safetensors.torch import load_file

    import lagovad
    from lagovad.convert import official_to_ours
    from lagovad.factory import build_model
    from lagovad.recipe import forward_branches, names_vocabulary, plan_official
    from lagovad.synthesis import Batch

    meta = json.loads((GOLDEN / "official_step.json").read_text())
    data = load_file(str(GOLDEN / "official_step.safetensors"))
    c = meta["config"]
    config = json.loads((Path(lagovad.__file__).parent / "model_configs/lagovad-tiny.json")
                        .read_text())
    config.update(video_dim=c["hidden"], hidden=c["hidden"], max_len=c["T"])
    config["temporal"].update(layers=c["temporal_layers"], heads=c["temporal_heads"],
                              ffn=c["ffn"], window=c["window"],
                              rotary_positions=c["rotary_positions"])
    config["fusion"].update(layers=c["fusion_layers"], heads=c["fusion_heads"], ffn=c["ffn"])
    config["binary_head"]["kernel_size"] = c["kernel_size"]
    config["prompts"].update(front=c["prompts"] // 2, back=c["prompts"] // 2)
    model = build_model(config)
    theirs = {k[len("weights."):]: v for k, v in data.items() if k.startswith("weights.")}
    weights, report = official_to_ours(theirs)
    assert report.ok or not report.unexpected, report
    lagovad.checkpoint.load_weights(model, weights)
    # their step was run in eval mode (no dropout) and in float64 (no summation-order noise)
    model.double().eval()

    samples = meta["samples"]
    b, t = data["batch.v_feat"].shape[:2]
    batch = Batch(
        features=data["batch.v_feat"],
        mask=torch.ones(b, t, dtype=torch.bool),
        frame_labels=data["batch.frame"],
        labels=torch.tensor([int(s["category"] != "Normal") for s in samples]),
        categories=[s["category"] for s in samples],  # the golden's tensors are float64
        descriptions=[s["description"] for s in samples],
    )
    categories = sorted({s["category"] for s in samples} - {"Normal"})
    plan = plan_official(batch, names_vocabulary(categories), np.random.default_rng(0))
    assert plan.names == meta["names"] and len(plan.names) == 36
    assert plan.descriptions == meta["descriptions"]  # duplicates kept, one per abnormal video

    names_text = data["text.names"].clone().requires_grad_()
    desc_text = data["text.descs"].clone().requires_grad_()
    named, described = forward_branches(model, batch.features, batch.mask, [names_text, desc_text])
    terms = OfficialLoss()(named, described, batch.mask, plan.labels, plan.name_targets,
                           plan.desc_targets, plan.frame_labels)
    for name, value in meta["terms"].items():
        _close(terms[name], torch.tensor(value), name)
    terms["loss"].backward()
    _close(names_text.grad, data["grad.text.names"], "grad names text (-> soft prompts)")
    _close(desc_text.grad, data["grad.text.descs"], "grad descriptions text")
    ours_by_name = dict(model.named_parameters())
    mapped, _ = official_to_ours({k: data[f"grad.{k}"] for k in meta["grad_params"]})
    assert len(mapped) == len(meta["grad_params"])
    for name, grad in mapped.items():
        _close(ours_by_name[name].grad, grad, f"grad {name}")


def test_official_loss_functions_equal_the_authors_on_padded_input():
    """Their losses.py on padded tensors (golden): our terms and input gradients equal theirs."""
    from safetensors.torch import load_file

    meta = json.loads((GOLDEN / "official_losses.json").read_text())
    data = load_file(str(GOLDEN / "official_losses.safetensors"))
    lengths = data["lengths"]
    t = data["logits"].shape[1]
    mask = torch.arange(t)[None] < lengths[:, None]
    cls, frame = data["cls"], data["frame"]
    labels = (cls != 0).long()
    inputs = {k: data[k].clone().requires_grad_() for k in ("logits", "sim", "v_feats", "t_feats")}
    logits = inputs["logits"]
    terms = {
        "mil": MILLoss()(logits, mask, labels)["mil"],
        "frame_bce": FrameBCELoss()(logits, mask, frame)["frame_bce"],
        "pseudo_mil": PseudoMILLoss(scoring="official")(logits, mask, frame)["pseudo_mil"],
        "mil_align": MILAlignLoss()(inputs["sim"], mask, cls)["mil_align"],
        "contrastive": ContrastiveLoss()(
            logits, mask, inputs["v_feats"], inputs["t_feats"], labels.bool(), frame
        )["contrastive"],
    }
    for name, value in terms.items():
        _close(value, torch.tensor(meta["terms"][name]), name)
        grads = torch.autograd.grad(value, list(inputs.values()), allow_unused=True)
        for label, g in zip(inputs, grads, strict=True):
            key = f"grad.{name}.{label}"
            if key in data:
                _close(torch.zeros_like(data[key]) if g is None else g, data[key], key)
            else:
                assert g is None or float(g.abs().max()) == 0.0, key


def test_paper_recipe_total_on_a_tiny_case_by_hand():
    """LaGoVADLoss (paper recipe) term by term on two 2-step videos, computed by hand."""
    eye = torch.eye(4)
    out = SimpleNamespace(
        frame_logits=torch.tensor([[2.0, -1.0], [0.5, -0.5]]),
        class_logits=torch.tensor([[[0.1, 0.9], [0.3, -0.2]], [[0.4, 0.0], [-0.1, 0.2]]]),
        temporal=torch.stack([torch.stack([eye[0], eye[1]]), torch.stack([eye[2], eye[3]])]),
        text=torch.stack([eye[3], eye[0] + eye[1]]),  # Normal, the anomaly class
    )
    mask = torch.ones(2, 2, dtype=torch.bool)
    labels, targets = torch.tensor([1, 0]), torch.tensor([1, 0])
    frame_labels = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    got = LaGoVADLoss()(out, mask, labels, targets, frame_labels)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # k = max(2 // 16, 1) = 1 and max(2 // 4, 1) = 1 everywhere
    mil = (softplus(-2.0) + softplus(0.5)) / 2
    frame_bce = (softplus(-2.0) + softplus(1.0) + softplus(0.5) + softplus(-0.5)) / 4
    pseudo = (-math.log(sig(2.0)) - math.log(1 - sig(0.5))) / 2
    v0, v1 = [0.3, 0.9], [0.4, 0.2]  # per-class max over time
    ce = lambda v, t: -v[t] + math.log(sum(math.exp(x) for x in v))  # noqa: E731
    mil_align = (ce(v0, 1) + ce(v1, 0)) / 2
    # pooled rows: fg(video 0) = e0, fg(video 1) = e2, mined bg(video 0) = e1 (range 0.61);
    # anchor e0 + e1: cosines 1/sqrt 2, 0, 1/sqrt 2, over 0.02
    s = (1 / math.sqrt(2)) / 0.02
    lse = math.log(2 * math.exp(s) + 1)
    contrastive = 0.5 * _smoothed_ce([s - lse, -lse, s - lse], 0)  # v2t over one text: 0
    expected = {"mil": mil, "frame_bce": frame_bce, "pseudo_mil": pseudo,
                "mil_align": mil_align, "contrastive": contrastive}
    for name, value in expected.items():
        assert got[name].item() == pytest.approx(value, rel=1e-4), name
    assert got["loss"].item() == pytest.approx(sum(expected.values()), rel=1e-4)
