"""LaGoVAD: temporal encoder, text branch, co-attention fusion, binary and class heads.

Layout and numerics follow the authors' model (see ``docs``/official notes): a post-LN RoFormer
temporal encoder with a local band mask applied directly to the CLIP features (output
``v + Enc(v)``), a frozen prompted CLIP text branch, a co-attention fusion whose two streams are
updated in parallel, an adaptive binary head blending a convolution on the pre-fusion and on the
fused features, and a cosine-similarity class head. One deliberate difference: the binary head's
convolutions see each sequence replicate-padded at its *own* last valid step, so padded steps never
leak into valid scores (identical to the authors' output on unpadded input).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lagovad.config import ModelConfig, ModelConfigError
from lagovad.definition import AnomalyDefinition
from lagovad.errors import LagovadError
from lagovad.text import TextBackbone, TextBranch


class ModelInputError(LagovadError, ValueError):
    """Video features, mask or definition passed to the model are malformed."""


@dataclass
class LaGoVADOutput:
    """Forward outputs.

    Attributes:
        frame_logits: [B, T] raw binary logits (sigmoid when scoring). Undefined at padded steps.
        class_logits: [B, T, C] cosine similarity / temperature, class 0 = Normal.
        temporal: [B, T, H] pre-fusion temporal features.
        fused: [B, T, H] fused video features.
        text: [C, H] (or [B, C, H] when given per sample) pre-fusion text features.
        fused_text: [B, C, H] fused text features.
    """

    frame_logits: Tensor
    class_logits: Tensor
    temporal: Tensor
    fused: Tensor
    text: Tensor
    fused_text: Tensor


# --------------------------------------------------------------------------------------------
# temporal encoder (RoFormer)
# --------------------------------------------------------------------------------------------
def rotary_table(positions: int, dim: int) -> Tensor:
    """RoFormer sinusoid table [positions, dim]: sin half then cos half (float64 math)."""
    if dim % 2:
        raise ModelConfigError(f"rotary head dim must be even, got {dim}")
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty(positions, dim, dtype=torch.float64)
    table[:, : dim // 2] = torch.sin(angle[:, 0::2])
    table[:, dim // 2 :] = torch.cos(angle[:, 1::2])
    return table.float()


def apply_rotary(x: Tensor, table: Tensor) -> Tensor:
    """Rotate interleaved pairs (2i, 2i+1) of x [..., T, d] by the table rows [T, d]."""
    sin, cos = table.chunk(2, dim=-1)
    sin = sin.repeat_interleave(2, dim=-1)
    cos = cos.repeat_interleave(2, dim=-1)
    rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).reshape_as(x)
    return x * cos + rotated * sin


class RoFormerLayer(nn.Module):
    """Post-LN transformer layer with rotary self-attention (GELU FFN)."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float, attn_dropout: float,
                 eps: float):
        super().__init__()
        if hidden % heads:
            raise ModelConfigError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = attn_dropout

    def forward(self, x: Tensor, bias: Tensor, table: Tensor) -> Tensor:
        b, t, h = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        q = apply_rotary(split(self.query(x)), table)
        k = apply_rotary(split(self.key(x)), table)
        v = split(self.value(x))
        p = self.attn_dropout if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        ctx = ctx.transpose(1, 2).reshape(b, t, h)
        x = self.attn_norm(x + self.dropout(self.attn_out(ctx)))
        y = self.ffn_out(F.gelu(self.ffn_in(x)))
        return self.ffn_norm(x + self.dropout(y))


class TemporalEncoder(nn.Module):
    """Local-window RoFormer over the video features; returns ``v + Enc(v)``."""

    def __init__(self, hidden: int, layers: int, heads: int, ffn: int, window: int,
                 rotary_positions: int, dropout: float, attention_dropout: float,
                 layer_norm_eps: float):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ModelConfigError(f"temporal.window must be an odd integer >= 1, got {window}")
        self.radius = window // 2
        self.register_buffer("rotary_table", rotary_table(rotary_positions, hidden // heads))
        self.layers = nn.ModuleList(
            RoFormerLayer(hidden, heads, ffn, dropout, attention_dropout, layer_norm_eps)
            for _ in range(layers)
        )

    def attention_bias(self, mask: Tensor, dtype: torch.dtype) -> Tensor:
        """Additive bias [B, 1, T, T]: 0 inside the ±radius band on valid keys, else dtype min."""
        t = mask.shape[1]
        idx = torch.arange(t, device=mask.device)
        band = (idx[:, None] - idx[None, :]).abs() <= self.radius
        allowed = band[None] & mask[:, None, :]
        return (1.0 - allowed.to(dtype))[:, None] * torch.finfo(dtype).min

    def forward(self, v: Tensor, mask: Tensor) -> Tensor:
        t = v.shape[1]
        if t > self.rotary_table.shape[0]:
            raise ModelInputError(
                f"sequence length {t} exceeds the rotary table ({self.rotary_table.shape[0]}); "
                "split the video into chunks of at most that length"
            )
        bias = self.attention_bias(mask, v.dtype)
        table = self.rotary_table[:t].to(v.dtype)
        h = v
        for layer in self.layers:
            h = layer(h, bias, table)
        return v + h


# --------------------------------------------------------------------------------------------
# fusion
# --------------------------------------------------------------------------------------------
def _ffn(hidden: int, ffn: int, dropout: float) -> nn.Sequential:
    # Index layout (0: Linear, 3: Linear) mirrors the authors' checkpoint keys.
    return nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(ffn, hidden), nn.Dropout(dropout))


class CoAttentionLayer(nn.Module):
    """Video attends to text and text attends to video, both from the layer input (post-LN)."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ModelConfigError(f"hidden ({hidden}) must be divisible by fusion heads ({heads})")
        self.vis_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.text_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.vis_ffn = _ffn(hidden, ffn, dropout)
        self.text_ffn = _ffn(hidden, ffn, dropout)
        self.vis_norm1 = nn.LayerNorm(hidden)
        self.vis_norm2 = nn.LayerNorm(hidden)
        self.text_norm1 = nn.LayerNorm(hidden)
        self.text_norm2 = nn.LayerNorm(hidden)

    def forward(self, v: Tensor, t: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
        t_new = self.text_norm1(t + self.text_attn(t, v, v, key_padding_mask=pad,
                                                   need_weights=False)[0])
        v_new = self.vis_norm1(v + self.vis_attn(v, t, t, need_weights=False)[0])
        t_new = self.text_norm2(t_new + self.text_ffn(t_new))
        v_new = self.vis_norm2(v_new + self.vis_ffn(v_new))
        return v_new, t_new


class CoAttentionFusion(nn.Module):
    """A stack of co-attention layers."""

    def __init__(self, hidden: int, layers: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            CoAttentionLayer(hidden, heads, ffn, dropout) for _ in range(layers)
        )

    def forward(self, v: Tensor, t: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        pad = ~mask
        for layer in self.layers:
            v, t = layer(v, t, pad)
        return v, t


# --------------------------------------------------------------------------------------------
# heads
# --------------------------------------------------------------------------------------------
def fill_padding(x: Tensor, mask: Tensor) -> Tensor:
    """Replace invalid steps of x [B, T, H] by the nearest earlier valid step (first valid one
    for leading gaps), so a replicate-padded convolution sees each sequence as if unpadded."""
    t = mask.shape[1]
    idx = torch.arange(t, device=mask.device).expand_as(mask)
    last = torch.where(mask, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    first_valid = mask.int().argmax(dim=1, keepdim=True).expand_as(last)
    src = torch.where(last < 0, first_valid, last)
    return torch.gather(x, 1, src[..., None].expand_as(x))


class AdaptiveBinaryHead(nn.Module):
    """logit = w·conv(temporal) + (1 − w)·conv(fused), w = sigmoid(scale·α)."""

    def __init__(self, hidden: int, kernel_size: int, alpha_init: float, alpha_scale: float):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelConfigError(
                f"binary_head.kernel_size must be an odd integer >= 1, got {kernel_size}"
            )
        pad = (kernel_size - 1) // 2
        self.temporal_conv = nn.Conv1d(hidden, 1, kernel_size, padding=pad,
                                       padding_mode="replicate")
        self.fused_conv = nn.Conv1d(hidden, 1, kernel_size, padding=pad, padding_mode="replicate")
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init)))
        self.alpha_scale = float(alpha_scale)

    @property
    def weight(self) -> Tensor:
        """The blend weight w of the pre-fusion branch."""
        return torch.sigmoid(self.alpha * self.alpha_scale)

    def forward(self, temporal: Tensor, fused: Tensor, mask: Tensor) -> Tensor:
        if not bool(mask.all()):
            temporal, fused = fill_padding(temporal, mask), fill_padding(fused, mask)
        h1 = self.temporal_conv(temporal.transpose(1, 2)).squeeze(1)
        h2 = self.fused_conv(fused.transpose(1, 2)).squeeze(1)
        w = self.weight
        return w * h1 + (1 - w) * h2


class SimilarityClassHead(nn.Module):
    """cosine(video_t, text_c) / τ with a learnable temperature τ."""

    def __init__(self, temperature_init: float):
        super().__init__()
        if temperature_init <= 0:
            raise ModelConfigError(
                f"class_head.temperature_init must be > 0, got {temperature_init}"
            )
        self.temperature = nn.Parameter(torch.full((1,), float(temperature_init)))

    def forward(self, video: Tensor, text: Tensor) -> Tensor:
        video = F.normalize(video, dim=-1)
        text = F.normalize(text, dim=-1)
        return torch.einsum("bth,bch->btc", video, text) / self.temperature


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
class LaGoVAD(nn.Module):
    """Language-guided open-world video anomaly detector.

    Building one does no file or network I/O: the frozen CLIP text backbone is passed in,
    already loaded (:func:`lagovad.create_model` / :func:`lagovad.factory.build_model` load it
    as ``config.clip`` names it, as open_clip's factory does).

    Args:
        config: A model config, typed or as its JSON dict (see :mod:`lagovad.config`).
        text_backbone: The frozen CLIP text backbone (:func:`lagovad.text.load_clip_text`).

    Attributes:
        cfg: The typed config.
        config: The same as a plain JSON dict, every default filled in (what checkpoints store).
    """

    def __init__(self, config: ModelConfig | dict, text_backbone: TextBackbone):
        super().__init__()
        cfg = ModelConfig.from_dict(config)
        self.cfg = cfg
        self.config = cfg.to_dict()
        hidden = cfg.hidden
        if getattr(text_backbone, "width", None) != hidden:
            raise ModelConfigError(
                f"CLIP text width ({getattr(text_backbone, 'width', None)}) must equal hidden "
                f"({hidden}); clip={cfg.clip}"
            )
        tc, fc, bc, pc = cfg.temporal, cfg.fusion, cfg.binary_head, cfg.prompts
        self.text = TextBranch(text_backbone, pc.front, pc.back, pc.init_std)
        self.temporal = TemporalEncoder(
            hidden, tc.layers, tc.heads, tc.ffn, tc.window, tc.rotary_positions,
            tc.dropout, tc.attention_dropout, tc.layer_norm_eps,
        )
        self.fusion = CoAttentionFusion(hidden, fc.layers, fc.heads, fc.ffn, fc.dropout)
        self.binary_head = AdaptiveBinaryHead(hidden, bc.kernel_size, bc.alpha_init,
                                              bc.alpha_scale)
        self.class_head = SimilarityClassHead(cfg.class_head.temperature_init)

    @property
    def hidden(self) -> int:
        """Feature width H."""
        return int(self.config["hidden"])

    @property
    def device(self) -> torch.device:
        """Device of the trainable parameters."""
        return self.binary_head.alpha.device

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """State dict without the frozen CLIP text backbone (what checkpoints store)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("text.backbone.")}

    def encode_text(self, texts, prompts: bool = True) -> Tensor:
        """Encode texts to [N, H]; ``prompts=False`` for descriptions."""
        return self.text.encode(texts, prompts)

    def encode_definition(self, definition: AnomalyDefinition) -> Tensor:
        """Pre-fusion text features [C, H] of a definition (names with prompts, descriptions
        without)."""
        kinds = definition.kinds
        names = [c.text for c in definition if c.kind == "name"]
        descs = [c.text for c in definition if c.kind == "description"]
        parts = {}
        if names:
            parts["name"] = iter(self.encode_text(names, prompts=True))
        if descs:
            parts["description"] = iter(self.encode_text(descs, prompts=False))
        return torch.stack([next(parts[k]) for k in kinds])

    def forward(
        self,
        video: Tensor,
        mask: Tensor | None = None,
        definition: AnomalyDefinition | None = None,
        *,
        text: Tensor | None = None,
    ) -> LaGoVADOutput:
        """Score video features under a definition.

        Args:
            video: [B, T, D] float features.
            mask: [B, T] bool, True = valid step (default: all valid). Every row needs at least
                one valid step.
            definition: The anomaly definition (C classes, Normal first).
            text: Alternatively, precomputed text features [C, H] or per-sample [B, C, H].

        Returns:
            LaGoVADOutput.
        """
        video, mask = self._check_inputs(video, mask)
        if (definition is None) == (text is None):
            raise ModelInputError("pass exactly one of definition or text")
        if definition is not None:
            if not isinstance(definition, AnomalyDefinition):
                raise ModelInputError(
                    f"definition must be an AnomalyDefinition, got {type(definition).__name__}"
                )
            text = self.encode_definition(definition)
        text = text.to(device=video.device, dtype=video.dtype)
        if text.dim() not in (2, 3) or text.shape[-1] != self.hidden:
            raise ModelInputError(f"text must be [C, {self.hidden}] or [B, C, {self.hidden}], "
                                  f"got {tuple(text.shape)}")
        b = video.shape[0]
        text_b = text.expand(b, -1, -1) if text.dim() == 2 else text
        temporal = self.temporal(video, mask)
        fused, fused_text = self.fusion(temporal, text_b, mask)
        frame_logits = self.binary_head(temporal, fused, mask)
        class_logits = self.class_head(fused, fused_text)
        return LaGoVADOutput(frame_logits, class_logits, temporal, fused, text, fused_text)

    def _check_inputs(self, video: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        d = int(self.config["video_dim"])
        if video.dim() != 3 or video.shape[-1] != d:
            raise ModelInputError(f"video must be [B, T, {d}], got {tuple(video.shape)}")
        if not video.is_floating_point():
            raise ModelInputError(f"video must be a float tensor, got {video.dtype}")
        if mask is None:
            mask = torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)
        if mask.shape != video.shape[:2]:
            raise ModelInputError(
                f"mask must be [B, T] = {tuple(video.shape[:2])}, got {tuple(mask.shape)}"
            )
        mask = mask.to(device=video.device, dtype=torch.bool)
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ModelInputError(f"mask rows {empty} have no valid step; each needs at least one")
        return video, mask


def count_parameters(model: nn.Module, trainable: bool | None = None) -> int:
    """Number of parameters (all, trainable only, or frozen only)."""
    return sum(
        p.numel() for p in model.parameters() if trainable is None or p.requires_grad == trainable
    )


__all__ = [
    "LaGoVAD",
    "LaGoVADOutput",
    "ModelConfigError",
    "ModelInputError",
    "count_parameters",
]
