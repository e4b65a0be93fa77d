"""Produce the official-recipe goldens by running the AUTHORS' code (not run in CI).

    python tests/lagovad/golden/make_official_step_golden.py /path/to/LaGoVAD-PreVAD [out_dir]

Imports their release from the given path (commit recorded in the output; the goldens in this
folder came from commit 873de76f51e09778487f7b2cb5cf616fdd410add) and writes two goldens:

Everything runs in float64, so the goldens do not depend on thread counts or summation order
(in float32 two runs of their code differ by ~1e-5 relative in some gradients).

1. ``official_step.*``: their ``LaGoVADLightModel.training_step`` on one fixed, unpadded batch
   with fixed (seeded, perturbed) weights of a small config, in eval mode (no dropout): every
   loss term, and the gradients of the total on a handful of parameters and on the text
   features of both branches.
2. ``official_losses.*``: their loss functions (``losses.py``) on fixed padded tensors: every
   term and its gradients with respect to the inputs (padding is where our model's binary
   head, which ignores padded steps, and theirs differ; the step golden is therefore unpadded).

Their CLIP text encoder and tokenizer are replaced by a lookup of fixed text feature tensors
(the text encoder's parity is tested elsewhere, and no CLIP weights can be downloaded here); the
temporal encoder, fusion, heads, training step and losses are theirs. ``decord`` (imported by
their visualisation helpers) is stubbed.

Needs, besides torch: transformers 4.x (their RoFormer helpers were removed in 5.x), lightning,
einops, torchmetrics, e.g. ``pip install --target DEPS transformers==4.46.3
huggingface_hub==0.26.5 tokenizers==0.20.3 lightning==2.5.6 einops --no-deps`` and
``PYTHONPATH=DEPS``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

H = 32
T = 24
NAMES = [
    "Normal",
    "Vehicle Accident", "Air Accident", "Train Accident", "Car Accident",
    "Violence", "Vandalism", "Crowd Violence", "Riot", "Assault", "Range Shooting",
    "Shooting Accident", "War",
    "Robbery", "Carjacking", "Mugging", "Store Robbery",
    "Production Accident", "Mechanical Accident", "Object Impact", "Collapse",
    "Fall from Height",
    "Fire-related Accident", "Fume", "Fire", "Explosion",
    "Animal-related Violence", "Predation", "Animal Attack Animal", "Animal Attack Human",
    "Daily Accident", "Sport Fail", "Stunt Fail", "Fall into Water", "Fall to the Ground",
    "Drop Something",
]
NORMAL_PROMPT = (
    "Normal behavior, views or surveillance content captured by camera that not involve any "
    "unexpected or unusual events."
)
# (category, description, span [start, end) or None for normal; (0, 0) = clip cut away)
SAMPLES = [
    ("Assault", "A man punches another man in a parking lot.", (4, 15)),
    ("Normal", "", None),
    ("Explosion", "A gas tank explodes and a fireball rises.", (10, 24)),
    ("Normal", "", None),
    ("Assault", "A man punches another man in a parking lot.", (0, 24)),  # duplicate text
    ("Fire", "Flames spread over the roof of a warehouse.", (0, 0)),
    ("Normal", "", None),
    ("Explosion", "A car blows up on a highway.", (0, 6)),
]
GRAD_PARAMS = [
    "bin_head.adp_alpha",
    "bin_head.bin_head.convs.0.weight",
    "bin_head.bin_fused_head.convs.0.weight",
    "bin_head.bin_fused_head.convs.0.bias",
    "sim_head.sim_head.temperature",
    "fusion.layers.0.text_ffn.0.weight",
    "fusion.layers.0.vis_attn.in_proj_weight",
    "temporal_encoder.layer.0.attention.self.query.weight",
]


class _Table(nn.Module):
    """Stands in for their CLIP text model: returns fixed features by call position."""

    def __init__(self, names: torch.Tensor, descs: torch.Tensor):
        super().__init__()
        self.num_soft_prompts = 32
        self.model = nn.Module()  # their code freezes self.model's parameters
        self.prompt_embedding = nn.Embedding(32, H)
        self.names, self.descs = names, descs

    def forward(self, input_ids, attention_mask=None, use_soft_prompt=True):
        table = self.names if use_soft_prompt else self.descs
        return types.SimpleNamespace(pooler_output=table[input_ids[:, 0]])


class _Tokens:
    def __init__(self, n: int):
        self.input_ids = torch.arange(n)[:, None]
        self.attention_mask = torch.ones(n, 1, dtype=torch.long)

    def to(self, device):
        return self


def _import_theirs(repo: Path):
    sys.modules.setdefault("decord", types.ModuleType("decord"))
    for p in (repo, repo / "src"):
        sys.path.insert(0, str(p))
    from models.LaGoVAD import lagovad as theirs  # noqa: PLC0415
    from models.LaGoVAD import losses  # noqa: PLC0415

    return theirs, losses


def _step_golden(theirs, out: Path, commit: str) -> None:
    gen = torch.Generator().manual_seed(20240)
    seen: list[list[str]] = []

    def tokenizer(texts, **kwargs):
        seen.append(list(texts))
        return _Tokens(len(texts))

    descs = [NORMAL_PROMPT] + [d for c, d, s in SAMPLES if s is not None]
    names_feat = (torch.randn(len(NAMES), H, generator=gen) * 0.5).double().requires_grad_()
    desc_feat = (torch.randn(len(descs), H, generator=gen) * 0.5).double().requires_grad_()
    torch.manual_seed(3)
    table = _Table(names_feat, desc_feat)
    theirs.SoftPromptCLIPTextModel = lambda name, n: table
    theirs.AutoTokenizer = types.SimpleNamespace(from_pretrained=lambda name: tokenizer)

    mc = theirs.LaGoVADModelConfig(
        hidden_size=H, temp_encoder_layers=1, temp_attention_heads=4, num_soft_prompts=32,
        max_position_embeddings=256, clip_name="stub", verbalizer_type=None,
        temp_enc_type="RoFormer", temp_gate=None, temp_window_size=9, fusion_type="co_attn",
        fusion_num_layers=1, head_num_layers=1, head_activation="gelu", head_norm="layernorm",
        head_kernel_size=9, multi_head_type="sim", bin_head_type="adaptive",
    )
    tc = theirs.LaGoVADTrainingConfig(  # src/configs/default.yaml
        lr=5e-5, weight_decay=0.0, lr_scheduler_name="cosine",
        lr_scheduler_kwargs={"num_warmup_steps": 20}, mil_topk_pct=16, sup_mil_topk_pct=4,
        mul_mil_topk_pct=16, smooth_reg_weight=0.0, sparsity_reg_weight=0.0,
        mul_sparsity_reg_weight=0.0, pseudo_sup_weight=1.0, pseudo_sup_mil_weight=1.0,
        anomaly_cap_contrastive_weight=1.0, contrastive_neg_mining="n3", contrastive_temp=0.02,
        anomaly_cap_forward=True, score_type="binary", mul_score_type="vanilla",
        mul_mil_type="v1", temp_gate_init=0.0,
    )
    torch.manual_seed(7)
    model = theirs.LaGoVADLightModel(mc, tc)
    with torch.no_grad():  # perturb every weight so nothing sits at its init value
        for name, p in model.named_parameters():
            if name.startswith("clip_text_model"):
                continue
            scale = 0.1 if "bin_head" in name else 0.05
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    model.double().eval()
    model.train_class_names = NAMES

    b = len(SAMPLES)
    v_feat = torch.randn(b, T, H, generator=gen).double()
    # the last video repeats one step: constant scores, so it is not mined (range < 0.2)
    v_feat[-1] = v_feat[-1, :1].expand(T, H)
    # two normal videos vary little: their contrastive pooling weights are not saturated, so
    # the gradient through the pooling weights (which the authors do not detach) is visible
    v_feat[1] = v_feat[1, :1] + 0.05 * v_feat[1]
    v_feat[3] = v_feat[3, :1] + 0.05 * v_feat[3]
    frame = torch.zeros(b, T, dtype=torch.float64)
    for i, (_, _, span) in enumerate(SAMPLES):
        if span is not None:
            frame[i, span[0] : span[1]] = 1.0
    batch = {
        "v_feat": v_feat,
        "v_feat_l": torch.full((b,), T),
        "target_length": torch.full((b,), T),
        "cls_label_idx": torch.tensor([NAMES.index(c) for c, _, _ in SAMPLES]),
        "desc_label": [d for _, d, _ in SAMPLES],
        "pseudo_frame_label": frame,
    }
    terms = model.training_step(batch, 0)
    terms["loss"].backward()
    assert seen == [NAMES, descs], seen
    params = dict(model.named_parameters())
    # which abnormal videos the contrastive term mined (for the test's information)
    with torch.no_grad():
        logits = model(batch, NAMES, descs)["cls_bin_logits"].sigmoid()
    mined = [
        i for i, (c, _, _) in enumerate(SAMPLES)
        if c != "Normal" and float(logits[i].max() - logits[i].min()) >= 0.2
    ]
    weights = {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("clip_text_model.model")
    }
    tensors = {f"weights.{k}": v for k, v in weights.items()}
    tensors.update({
        "batch.v_feat": v_feat, "batch.frame": frame,
        "text.names": names_feat.detach().clone(), "text.descs": desc_feat.detach().clone(),
        "grad.text.names": names_feat.grad.clone(), "grad.text.descs": desc_feat.grad.clone(),
    })
    tensors.update({f"grad.{k}": params[k].grad.detach().clone() for k in GRAD_PARAMS})
    save_file(tensors, str(out / "official_step.safetensors"))
    meta = {
        "authors_commit": commit,
        "produced_by": "tests/lagovad/golden/make_official_step_golden.py",
        "config": {"hidden": H, "T": T, "temporal_layers": 1, "temporal_heads": 4,
                   "window": 9, "rotary_positions": 256, "fusion_layers": 1, "fusion_heads": 8,
                   "ffn": 4 * H, "kernel_size": 9, "prompts": 32},
        "samples": [
            {"category": c, "description": d, "span": list(s) if s else None}
            for c, d, s in SAMPLES
        ],
        "names": NAMES,
        "descriptions": descs,
        "mined": mined,
        "terms": {
            "mil": float(terms["loss_bin"].detach()),
            "frame_bce": float(terms["loss_sup"].detach()),
            "pseudo_mil": float(terms["loss_sup_mil"].detach()),
            "mil_align": float(terms["loss_mul_mil"].detach()),
            "contrastive": float(terms["loss_anomaly_cap_contrastive"].detach()),
            "loss": float(terms["loss"].detach()),
        },
        "grad_params": GRAD_PARAMS,
    }
    (out / "official_step.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("step terms:", meta["terms"], "mined:", mined)


def _losses_golden(losses, out: Path, commit: str) -> None:
    gen = torch.Generator().manual_seed(99)
    lengths = torch.tensor([20, 13, 7, 16, 11])
    b, t, c, e = len(lengths), 20, 5, 6
    valid = torch.arange(t)[None] < lengths[:, None]
    logits = torch.randn(b, t, generator=gen).double() * 2
    logits[1] *= 0.01  # unsaturated pooling weights: their gradient (not detached) shows
    logits = logits.masked_fill(~valid, 5.0).requires_grad_()
    sim = torch.randn(b, t, c, generator=gen).double()
    sim = sim.masked_fill(~valid[..., None], 9.0).requires_grad_()
    v_feats = torch.randn(b, t, e, generator=gen).double().requires_grad_()
    cls = torch.tensor([2, 0, 1, 3, 4])  # video 3: abnormal, its clip cut away (empty span)
    frame = torch.zeros(b, t, dtype=torch.float64)
    frame[0, 3:12] = 1.0
    frame[2, 0:5] = 1.0
    frame[4, 6:11] = 1.0
    t_feats = torch.randn(4, e, generator=gen).double().requires_grad_()
    labels = (cls != 0).double()
    terms = {
        "mil": losses.mil_loss(logits, labels, lengths, topk_pct=16),
        "frame_bce": losses.supervised_loss(logits, frame, lengths),
        "pseudo_mil": losses.pseudo_sup_mil_loss(logits, frame, lengths, topk_pct=4),
        "mil_align": losses.multi_class_mil_loss(sim, cls, lengths, topk_pct=16),
        "contrastive": losses.CapContrastLoss("n3", 0.02)(
            logits, lengths, v_feats, t_feats, cls, frame
        ),
    }
    tensors = {"logits": logits.detach(), "sim": sim.detach(), "v_feats": v_feats.detach(),
               "t_feats": t_feats.detach(), "lengths": lengths, "cls": cls, "frame": frame}
    for name, value in terms.items():
        inputs = [logits, sim, v_feats, t_feats]
        grads = torch.autograd.grad(value, inputs, allow_unused=True)
        for label, g in zip(("logits", "sim", "v_feats", "t_feats"), grads, strict=True):
            if g is not None:
                tensors[f"grad.{name}.{label}"] = g.contiguous()
    save_file(tensors, str(out / "official_losses.safetensors"))
    meta = {"authors_commit": commit,
            "produced_by": "tests/lagovad/golden/make_official_step_golden.py",
            "terms": {k: float(v.detach()) for k, v in terms.items()}}
    (out / "official_losses.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("loss terms:", meta["terms"])


def main() -> None:
    repo = Path(sys.argv[1]).resolve()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    theirs, losses = _import_theirs(repo)
    _losses_golden(losses, out, commit)
    _step_golden(theirs, out, commit)


if __name__ == "__main__":
    main()
