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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
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


#: Query block of the banded attention: each block of this many steps attends to the keys of its
#: own steps and ``radius`` more on either side.
BAND_BLOCK = 64


@dataclass
class BandBias:
    """Additive attention bias of a local band, laid out per query block (see
    :func:`banded_attention`).

    Attributes:
        bias: [B, 1, n_blocks, block, block + 2 * radius] 0 where a query may attend to a key
            (inside the band, key valid), else the dtype's minimum (as the full bias: never
            -inf, so a query without any valid key stays finite).
        radius: band half-width.
        block: query block length.
    """

    bias: Tensor
    radius: int
    block: int


def _key_blocks(x: Tensor, radius: int, block: int, n_blocks: int) -> Tensor:
    """[..., T, d] -> [..., n_blocks, block + 2 radius, d]: the keys each query block sees
    (zero rows outside the sequence; the bias masks them)."""
    t = x.shape[-2]
    pad_end = n_blocks * block - t + radius
    padded = F.pad(x, (0, 0, radius, pad_end))
    return padded.unfold(-2, block + 2 * radius, block).transpose(-1, -2)


def band_bias(mask: Tensor, radius: int, dtype: torch.dtype, block: int = BAND_BLOCK) -> BandBias:
    """The :class:`BandBias` of key mask ``mask`` [B, T] (True = valid step)."""
    t = mask.shape[1]
    n_blocks = -(-t // block)
    keys = _key_blocks(mask[:, :, None].to(dtype), radius, block, n_blocks)[..., 0] > 0.5
    i = torch.arange(block, device=mask.device)[:, None]
    m = torch.arange(block + 2 * radius, device=mask.device)[None, :]
    band = (m - i >= 0) & (m - i <= 2 * radius)  # key step q - radius + (m - i) in the band
    allowed = band[None, None] & keys[:, :, None, :]  # [B, n_blocks, block, keys]
    bias = (1.0 - allowed.to(dtype))[:, None] * torch.finfo(dtype).min
    return BandBias(bias, radius, block)


def banded_attention(q: Tensor, k: Tensor, v: Tensor, bias: BandBias, dropout_p: float) -> Tensor:
    """Local-band attention computed block by block: the same result as full attention with the
    band bias (keys outside the band get weight exactly 0 either way), at a cost linear in T.

    Args:
        q, k, v: [B, heads, T, d].
        bias: from :func:`band_bias` for this T.
        dropout_p: attention dropout (on the in-band weights; the others are 0 anyway).

    Returns:
        [B, heads, T, d].
    """
    b, heads, t, d = q.shape
    n_blocks = bias.bias.shape[2]
    qb = F.pad(q, (0, 0, 0, n_blocks * bias.block - t)).view(b, heads, n_blocks, bias.block, d)
    kb = _key_blocks(k, bias.radius, bias.block, n_blocks)
    vb = _key_blocks(v, bias.radius, bias.block, n_blocks)
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bias.bias, dropout_p=dropout_p)
    return out.reshape(b, heads, n_blocks * bias.block, d)[:, :, :t]


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

    def forward(self, x: Tensor, bias: Tensor | BandBias, table: Tensor) -> Tensor:
        b, t, h = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        q = apply_rotary(split(self.query(x)), table)
        k = apply_rotary(split(self.key(x)), table)
        v = split(self.value(x))
        p = self.attn_dropout if self.training else 0.0
        if isinstance(bias, BandBias):
            ctx = banded_attention(q, k, v, bias, p)
        else:
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

    def attention_bias(self, mask: Tensor, dtype: torch.dtype) -> Tensor | BandBias:
        """The band bias: per query block (:class:`BandBias`) when that is cheaper than the full
        [B, 1, T, T] bias (sequences longer than a few windows), else the full bias."""
        if mask.shape[1] > 2 * BAND_BLOCK and 2 * self.radius < BAND_BLOCK:
            return band_bias(mask, self.radius, dtype)
        return self.full_attention_bias(mask, dtype)

    def full_attention_bias(self, mask: Tensor, dtype: torch.dtype) -> Tensor:
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


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, length, h = x.shape
    return x.view(b, length, heads, h // heads).transpose(1, 2)


def _attend(attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor,
            key_pad: Tensor | None) -> Tensor:
    """``attn``'s attention and output projection on already projected q, k, v [B, L, E].

    The same computation as ``nn.MultiheadAttention.forward`` (its weights, no dropout, a key
    padding mask), without its sequence-first transposes, so that a projection can be shared.
    """
    heads = attn.num_heads
    mask = None if key_pad is None else (~key_pad)[:, None, None, :]
    ctx = F.scaled_dot_product_attention(
        _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads), attn_mask=mask
    )
    b, _, length, d = ctx.shape
    return attn.out_proj(ctx.transpose(1, 2).reshape(b, length, heads * d))


def _in_proj(attn: nn.MultiheadAttention, x: Tensor, which: slice) -> Tensor:
    """Rows ``which`` (of q, k, v in that order) of ``attn``'s packed input projection on x."""
    e = attn.embed_dim
    rows = slice(which.start * e, which.stop * e)
    return F.linear(x, attn.in_proj_weight[rows], attn.in_proj_bias[rows])


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
        return self.forward_many(v, [t], pad)[0]

    def forward_many(self, v: Tensor, ts: list[Tensor], pad: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The layer on one video stream against several text streams (one per branch).

        What depends on the video stream alone (its query projection for video->text attention,
        its key/value projections for text->video attention) is computed once and shared by the
        branches; the rest, dropout included, runs per branch as separate forwards would.
        """
        vis_q = _in_proj(self.vis_attn, v, slice(0, 1))
        text_k, text_v = _in_proj(self.text_attn, v, slice(1, 3)).chunk(2, dim=-1)
        outs = []
        for t in ts:
            text_q = _in_proj(self.text_attn, t, slice(0, 1))
            t_new = self.text_norm1(t + _attend(self.text_attn, text_q, text_k, text_v, pad))
            vis_k, vis_v = _in_proj(self.vis_attn, t, slice(1, 3)).chunk(2, dim=-1)
            v_new = self.vis_norm1(v + _attend(self.vis_attn, vis_q, vis_k, vis_v, None))
            t_new = self.text_norm2(t_new + self.text_ffn(t_new))
            v_new = self.vis_norm2(v_new + self.vis_ffn(v_new))
            outs.append((v_new, t_new))
        return outs


class CoAttentionFusion(nn.Module):
    """A stack of co-attention layers."""

    def __init__(self, hidden: int, layers: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            CoAttentionLayer(hidden, heads, ffn, dropout) for _ in range(layers)
        )

    def forward(self, v: Tensor, t: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_many(v, [t], mask)[0]

    def forward_many(
        self, v: Tensor, ts: list[Tensor], mask: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        """Fuse one video stream with each of several text streams (the first layer shares its
        video-side projections, :meth:`CoAttentionLayer.forward_many`)."""
        pad = ~mask
        if not self.layers:
            return [(v, t) for t in ts]
        outs = []
        for v_i, t_i in self.layers[0].forward_many(v, ts, pad):
            for layer in self.layers[1:]:
                v_i, t_i = layer(v_i, t_i, pad)
            outs.append((v_i, t_i))
        return outs


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
        h1 = single_channel_conv(self.temporal_conv, temporal)
        h2 = single_channel_conv(self.fused_conv, fused)
        w = self.weight
        return w * h1 + (1 - w) * h2


def single_channel_conv(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """``conv`` (H -> 1 channel, odd kernel k, replicate padding) on x [B, T, H] -> [B, T].

    The same sum as ``conv(x.transpose(1, 2))``, computed as one [B, T + k - 1, H] x [H, k]
    product and k shifted adds: a one-channel convolution's backward is slow on CPU, a product's
    is not.
    """
    k = conv.kernel_size[0]
    pad = (k - 1) // 2
    t = x.shape[1]
    if pad:
        x = torch.cat([x[:, :1].expand(-1, pad, -1), x, x[:, -1:].expand(-1, pad, -1)], dim=1)
    z = torch.matmul(x, conv.weight[0])  # [B, T + k - 1, k]
    out = z[:, 0:t, 0]
    for j in range(1, k):
        out = out + z[:, j : j + t, j]
    return out + conv.bias if conv.bias is not None else out


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
        if (definition is None) == (text is None):
            raise ModelInputError("pass exactly one of definition or text")
        if definition is not None:
            if not isinstance(definition, AnomalyDefinition):
                raise ModelInputError(
                    f"definition must be an AnomalyDefinition, got {type(definition).__name__}"
                )
            text = self.encode_definition(definition)
        return self.forward_texts(video, mask, [text])[0]

    def forward_texts(
        self, video: Tensor, mask: Tensor | None, texts: Sequence[Tensor]
    ) -> list[LaGoVADOutput]:
        """Score video features under several text sets at once (the training branches).

        The temporal encoder runs once (one dropout draw shared by the branches, as in the
        authors' training forward); the fusion and heads run once per text set, sharing the
        first fusion layer's video-side projections. Rows run in groups of similar length
        (:func:`length_groups`), each group cut to its own longest row, so padded steps cost
        nothing; every row's valid steps get the values a full-batch forward gives them (rows
        are independent and padded steps are masked everywhere). Outputs are laid out as the
        input, [B, T, ...], with zeros at steps after a row's last valid one.

        Args:
            video: [B, T, D] float features.
            mask: [B, T] bool, True = valid step (default: all valid).
            texts: pre-fusion text features per set, each [C_i, H] or per sample [B, C_i, H].

        Returns:
            One :class:`LaGoVADOutput` per text set (``temporal`` is shared).
        """
        video, mask = self._check_inputs(video, mask)
        texts = [self._check_text(t, video) for t in texts]
        b, t = mask.shape
        steps = torch.arange(1, t + 1, device=mask.device)
        ends = (mask * steps).amax(dim=1).tolist()  # one past each row's last valid step
        groups = length_groups(ends, GROUP_OVERHEAD.get(video.device.type, 4096))
        if len(groups) == 1 and max(ends) == t:
            return self._forward_rows(video, mask, texts)
        parts = []
        for rows in groups:
            idx = torch.tensor(rows, device=video.device)
            n = max(ends[r] for r in rows)
            own = [x[idx] if x.dim() == 3 else x for x in texts]
            parts.append((idx, self._forward_rows(video[idx, :n], mask[idx, :n], own)))
        inverse = torch.argsort(torch.cat([idx for idx, _ in parts]))

        def join(get) -> Tensor:
            return torch.cat([_pad_steps(get(outs), t) for _, outs in parts])[inverse]

        temporal = join(lambda outs: outs[0].temporal)
        return [
            LaGoVADOutput(
                frame_logits=join(lambda outs, i=i: outs[i].frame_logits),
                class_logits=join(lambda outs, i=i: outs[i].class_logits),
                temporal=temporal,
                fused=join(lambda outs, i=i: outs[i].fused),
                text=text,
                fused_text=torch.cat([outs[i].fused_text for _, outs in parts])[inverse],
            )
            for i, text in enumerate(texts)
        ]

    def _forward_rows(
        self, video: Tensor, mask: Tensor, texts: list[Tensor]
    ) -> list[LaGoVADOutput]:
        b = video.shape[0]
        temporal = self.temporal(video, mask)
        per_row = [x.expand(b, -1, -1) if x.dim() == 2 else x for x in texts]
        outs = []
        for text, (fused, fused_text) in zip(
            texts, self.fusion.forward_many(temporal, per_row, mask), strict=True
        ):
            frame_logits = self.binary_head(temporal, fused, mask)
            class_logits = self.class_head(fused, fused_text)
            outs.append(LaGoVADOutput(frame_logits, class_logits, temporal, fused, text,
                                      fused_text))
        return outs

    def _check_text(self, text: Tensor, video: Tensor) -> Tensor:
        text = text.to(device=video.device, dtype=video.dtype)
        if text.dim() not in (2, 3) or text.shape[-1] != self.hidden or (
            text.dim() == 3 and text.shape[0] != video.shape[0]
        ):
            raise ModelInputError(f"text must be [C, {self.hidden}] or [B, C, {self.hidden}] "
                                  f"(B = {video.shape[0]}), got {tuple(text.shape)}")
        return text

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


#: The work of running a group of rows on its own, in padded steps (kernel launches, smaller
#: products): rows are split into groups only where the padding this saves is larger.
GROUP_OVERHEAD = {"cpu": 256, "cuda": 16384}
MAX_GROUPS = 8


def length_groups(
    lengths: Sequence[int], overhead: int, max_groups: int = MAX_GROUPS
) -> list[list[int]]:
    """Split rows into groups of similar length so that padding each group to its own longest
    row costs least: minimise sum over groups (rows x longest + ``overhead``).

    Args:
        lengths: steps each row needs.
        overhead: cost of one more group, in steps.
        max_groups: at most this many groups.

    Returns:
        Row indices per group, shortest group first; every row in exactly one group.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    n = len(order)
    if n < 2:
        return [order]
    size = np.array([lengths[i] for i in order], dtype=np.float64)
    start = np.arange(n)
    # best[j]: least cost of the first j sorted rows; cut[g][j]: where that group starts
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    cuts = []
    for _ in range(max_groups):
        new = np.full(n + 1, np.inf)
        cut = np.zeros(n + 1, dtype=np.int64)
        for j in range(1, n + 1):
            cost = best[:j] + (j - start[:j]) * size[j - 1] + overhead
            cut[j] = int(np.argmin(cost))
            new[j] = cost[cut[j]]
        if not new[n] < best[n]:
            break
        best = new
        cuts.append(cut)
    groups, j = [], n
    for cut in reversed(cuts):
        if j == 0:
            break
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def _pad_steps(x: Tensor, steps: int) -> Tensor:
    """Zero-pad dim 1 (time) of x [B, t, ...] to ``steps``."""
    missing = steps - x.shape[1]
    if not missing:
        return x
    return F.pad(x, (0, 0) * (x.dim() - 2) + (0, missing))


def count_parameters(model: nn.Module, trainable: bool | None = None) -> int:
    """Number of parameters (all, trainable only, or frozen only)."""
    return sum(
        p.numel() for p in model.parameters() if trainable is None or p.requires_grad == trainable
    )


__all__ = [
    "LaGoVAD",
    "LaGoVADOutput",
    "length_groups",
    "ModelConfigError",
    "ModelInputError",
    "count_parameters",
]
