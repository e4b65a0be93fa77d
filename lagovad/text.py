"""Text branch: a frozen CLIP text transformer with learnable soft prompts.

Two paths, as in the authors' model:

* **names** (``prompts=True``): the name is tokenized with a context of ``77 - front - back``
  tokens (end-token padded); ``front`` prompt vectors take the slots right after the start token
  (the name's tokens shift by ``front``); the ``back`` prompt vectors overwrite the end token and
  the slots after it; the end token is re-embedded at slot ``1 + front + back + n`` (``n`` content
  tokens) and the output is the final-LayerNorm state there. Prompt slots carry no position
  embedding; every other slot carries the position embedding of its slot. No text projection.
* **descriptions** (``prompts=False``): the plain CLIP text model's pooled output (final-LayerNorm
  state at the first end token), again without the text projection.

Backends: Hugging Face ``CLIPTextModel`` (hub id or local directory) and open_clip (model name +
pretrained tag or local checkpoint file). Tokenization always uses the CLIP BPE shipped inside
open_clip, which gives the same ids as the Hugging Face CLIP tokenizer.

The transformer is run by this module with an explicit causal mask (``is_causal=True``), layer by
layer, instead of through the library's top-level forward: transformers 5.x changed how CLIP builds
its masks and nests its modules, and code that relies on those internals can silently lose the
causal mask. Tests compare the plain path to each library's own pooled output.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lagovad.errors import LagovadError

log = logging.getLogger(__name__)

SOT_TOKEN = 49406
EOT_TOKEN = 49407
_CACHE_LIMIT = 65536
_CONFIG_DIR = Path(__file__).with_name("model_configs")


class ClipLoadError(LagovadError, RuntimeError):
    """A CLIP text model could not be built or loaded."""


# --------------------------------------------------------------------------------------------
# tokenization
# --------------------------------------------------------------------------------------------
_TOKENIZER = None


def _tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        from open_clip.tokenizer import SimpleTokenizer

        _TOKENIZER = SimpleTokenizer()
    return _TOKENIZER


def tokenize(texts: Sequence[str], context_length: int) -> Tensor:
    """Tokenize with CLIP's BPE: start, tokens (truncated), end, then end-token padding.

    Args:
        texts: Strings to tokenize.
        context_length: Output length (>= 2). Longer texts are truncated, keeping the end token.

    Returns:
        Long tensor [N, context_length].
    """
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2, got {context_length}")
    ids = _tokenizer()(list(texts), context_length=context_length)
    # open_clip pads with 0; the authors' Hugging Face tokenizer pads with the end token. Under
    # the causal mask the padding never reaches the pooled state, but keep their ids anyway.
    after_end = torch.cumsum((ids == EOT_TOKEN).int(), dim=1) > 0
    return torch.where(after_end, torch.full_like(ids, EOT_TOKEN), ids)


def token_count(text: str) -> int:
    """CLIP tokens of ``text`` before any truncation, start and end tokens included."""
    return len(_tokenizer().encode(text)) + 2


_WARNED_TOO_LONG: set[tuple[str, int]] = set()


def warn_if_truncated(texts: Sequence[str], context_length: int, path: str) -> None:
    """Warn (once per text) when a text is longer than the context CLIP reads for it.

    CLIP reads a fixed number of tokens; the rest of a longer text is cut off and has no effect
    on the score, which a user cannot tell from the output.

    Args:
        texts: The texts about to be tokenized.
        context_length: Tokens the path reads (start and end tokens included).
        path: "name" or "description", for the message.
    """
    from lagovad.errors import LagovadWarning

    for text in texts:
        if (text, context_length) in _WARNED_TOO_LONG:
            continue
        n = token_count(text)
        if n > context_length:
            _WARNED_TOO_LONG.add((text, context_length))
            shown = text if len(text) <= 60 else text[:57] + "..."
            warnings.warn(
                f"definition entry {shown!r} has {n} CLIP tokens but the {path} path reads "
                f"{context_length} (start and end included): everything after token "
                f"{context_length - 2} is ignored; shorten it or split it into several classes",
                LagovadWarning,
                stacklevel=3,
            )


def _first_end(ids: Tensor) -> Tensor:
    return (ids == EOT_TOKEN).int().argmax(dim=1)


# --------------------------------------------------------------------------------------------
# backbones
# --------------------------------------------------------------------------------------------
class TextBackbone(nn.Module):
    """A frozen CLIP text transformer exposing embeddings and a causal encoder."""

    width: int
    context_length: int

    def embed_tokens(self, ids: Tensor) -> Tensor:
        """Token embeddings [N, L, W] (no position embedding)."""
        raise NotImplementedError

    def positions(self) -> Tensor:
        """Position embedding table [context_length, W]."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Run the causal transformer on embeddings [N, L, W]; return final-LayerNorm states."""
        raise NotImplementedError


class HFTextBackbone(TextBackbone):
    """Hugging Face ``CLIPTextModel`` (transformers 4.x and 5.x module layouts)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # transformers 4.x nests everything under `text_model`; 5.x flattens it.
        core = getattr(model, "text_model", model)
        self._core_path = "text_model" if core is not model else ""
        emb = core.embeddings
        self.width = emb.token_embedding.embedding_dim
        self.context_length = emb.position_embedding.num_embeddings

    @property
    def _core(self) -> nn.Module:
        return getattr(self.model, self._core_path) if self._core_path else self.model

    def embed_tokens(self, ids: Tensor) -> Tensor:
        return self._core.embeddings.token_embedding(ids)

    def positions(self) -> Tensor:
        return self._core.embeddings.position_embedding.weight

    def encode(self, x: Tensor) -> Tensor:
        core = self._core
        for layer in core.encoder.layers:
            x = _hf_layer(layer, x)
        return core.final_layer_norm(x)


def _hf_layer(layer: nn.Module, x: Tensor) -> Tensor:
    """One pre-LN CLIP encoder layer with an explicit causal mask."""
    attn = layer.self_attn
    n, length, width = x.shape
    heads = attn.num_heads
    h = layer.layer_norm1(x)

    def split(t: Tensor) -> Tensor:
        return t.view(n, length, heads, width // heads).transpose(1, 2)

    q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + attn.out_proj(o.transpose(1, 2).reshape(n, length, width))
    return x + layer.mlp(layer.layer_norm2(x))


class OpenClipTextBackbone(TextBackbone):
    """The text tower of an open_clip CLIP model (vision tower discarded)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        src = model.text if hasattr(model, "text") else model  # CustomTextCLIP vs CLIP
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.width = self.token_embedding.embedding_dim
        self.context_length = self.positional_embedding.shape[0]
        # Causal mask: rebuilt here so a model built without one still gets it.
        mask = torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def embed_tokens(self, ids: Tensor) -> Tensor:
        return self.token_embedding(ids)

    def positions(self) -> Tensor:
        return self.positional_embedding

    def encode(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        mask = self.attn_mask[:length, :length].to(x.dtype)
        x = self.transformer(x, attn_mask=mask)
        return self.ln_final(x)


def register_open_clip_configs() -> None:
    """Make ``lagovad-clip-tiny`` (any open_clip config in model_configs/) known to open_clip."""
    import open_clip

    if "lagovad-clip-tiny" not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def _seeded(seed: int):
    return torch.random.fork_rng(devices=[])


def load_clip_text(clip: dict, seed: int = 0) -> TextBackbone:
    """Build the frozen CLIP text backbone a model config names.

    Args:
        clip: ``{"backend": "hf", "name": HUB_ID_OR_DIR}`` or
            ``{"backend": "open_clip", "name": MODEL_NAME, "pretrained": TAG_OR_FILE_OR_None}``.
            ``pretrained: null`` (open_clip) or ``random_init: true`` (hf, with an optional
            ``text_config`` dict for ``CLIPTextConfig``) give deterministic random weights seeded
            by ``seed`` — meant for tests, never for scoring.
        seed: Seed of the random initialisation.

    Returns:
        The backbone, frozen (``requires_grad=False``) and in eval mode.

    Raises:
        ClipLoadError: Unknown backend or the weights cannot be loaded.
    """
    backend = clip.get("backend")
    name = clip.get("name")
    if backend == "hf":
        backbone = HFTextBackbone(_load_hf(name, clip, seed))
    elif backend == "open_clip":
        backbone = OpenClipTextBackbone(_load_open_clip(name, clip.get("pretrained"), seed))
    else:
        raise ClipLoadError(f"clip.backend must be 'hf' or 'open_clip', got {backend!r}")
    backbone.requires_grad_(False)
    return backbone.eval()


def _load_hf(name: str | None, clip: dict, seed: int) -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    if clip.get("random_init"):
        with _seeded(seed):
            torch.manual_seed(seed)
            return CLIPTextModel(CLIPTextConfig(**clip.get("text_config", {})))
    if not name:
        raise ClipLoadError("clip.name must be a Hugging Face id or a local directory, got None")
    try:
        return CLIPTextModel.from_pretrained(str(name))
    except (OSError, ValueError) as exc:
        raise ClipLoadError(
            f"could not load Hugging Face CLIPTextModel {name!r}: {exc}. Pass a local directory "
            "(save_pretrained) or allow downloads (HF_HUB_OFFLINE=0)."
        ) from exc


def _load_open_clip(name: str | None, pretrained: str | None, seed: int) -> nn.Module:
    import open_clip

    register_open_clip_configs()
    if not name:
        raise ClipLoadError("clip.name must be an open_clip model name, got None")
    if name not in open_clip.list_models() and not str(name).startswith(("hf-hub:", "local-dir:")):
        raise ClipLoadError(
            f"unknown open_clip model {name!r}; known: e.g. ViT-B-16, lagovad-clip-tiny"
        )
    try:
        if pretrained is None:
            with _seeded(seed):
                torch.manual_seed(seed)
                return open_clip.create_model(name, pretrained=None)
        return open_clip.create_model(name, pretrained=str(pretrained))
    except (OSError, RuntimeError, ValueError) as exc:
        raise ClipLoadError(
            f"could not load open_clip model {name!r} with pretrained={pretrained!r}: {exc}"
        ) from exc


# --------------------------------------------------------------------------------------------
# prompted text branch
# --------------------------------------------------------------------------------------------
class TextBranch(nn.Module):
    """Frozen CLIP text backbone + learnable soft prompts, with an embedding cache.

    Args:
        backbone: The frozen text transformer.
        front: Prompt vectors after the start token.
        back: Prompt vectors at and after the end token.
        init_std: Standard deviation of the prompts' normal initialisation.
    """

    def __init__(self, backbone: TextBackbone, front: int, back: int, init_std: float = 0.02):
        super().__init__()
        if front < 0 or back < 0:
            raise ValueError(f"prompt counts must be >= 0, got front={front}, back={back}")
        self.backbone = backbone
        self.front, self.back = int(front), int(back)
        self.name_context_length = backbone.context_length - self.front - self.back
        if self.name_context_length < 3:
            raise ValueError(
                f"front + back prompts ({front}+{back}) leave {self.name_context_length} < 3 "
                f"slots of the {backbone.context_length}-token context"
            )
        self.prompt_embedding = nn.Parameter(torch.randn(front + back, backbone.width) * init_std)
        self._cache: OrderedDict[tuple, Tensor] = OrderedDict()
        self._cache_stamp: tuple | None = None

    @property
    def width(self) -> int:
        """Text feature width."""
        return self.backbone.width

    def train(self, mode: bool = True) -> TextBranch:
        """Switch mode; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def clear_cache(self) -> None:
        """Drop every cached text embedding."""
        self._cache.clear()

    # -- public --------------------------------------------------------------------------------
    def forward(self, texts: Sequence[str], prompts: bool = True) -> Tensor:
        """Encode texts to [N, W] (see :meth:`encode`)."""
        return self.encode(texts, prompts)

    def encode(self, texts: Sequence[str], prompts: bool = True) -> Tensor:
        """Encode texts.

        Embeddings are cached per (path, text) whenever no gradient can flow: always for the
        description path (the backbone is frozen) and for the name path in no-grad/inference
        mode. The cache is dropped when the prompts change (in-place optimizer steps or a
        ``load_state_dict``), or device/dtype change.

        Args:
            texts: Strings (class names or descriptions).
            prompts: True for names (soft prompts), False for descriptions.

        Returns:
            Tensor [N, W].
        """
        texts = list(texts)
        if not texts:
            raise ValueError("texts must not be empty")
        trains_prompts = self.prompt_embedding.requires_grad and torch.is_grad_enabled()
        cacheable = not (prompts and trains_prompts)
        if not cacheable:
            return self._run(texts, prompts)
        self._check_stamp()
        mode = torch.is_inference_mode_enabled()
        missing = [t for t in dict.fromkeys(texts) if (prompts, mode, t) not in self._cache]
        if missing:
            with torch.no_grad():
                fresh = self._run(missing, prompts)
            for t, e in zip(missing, fresh, strict=True):
                self._cache[(prompts, mode, t)] = e
            while len(self._cache) > _CACHE_LIMIT:
                self._cache.popitem(last=False)
        return torch.stack([self._cache[(prompts, mode, t)] for t in texts])

    # -- internals -----------------------------------------------------------------------------
    def _check_stamp(self) -> None:
        p = self.prompt_embedding
        stamp = (p._version, p.data_ptr(), p.device, p.dtype)
        if stamp != self._cache_stamp:
            self._cache.clear()
            self._cache_stamp = stamp

    def _run(self, texts: list[str], prompts: bool) -> Tensor:
        device = self.prompt_embedding.device
        if prompts:
            warn_if_truncated(texts, self.name_context_length, "name (soft-prompt)")
            ids = tokenize(texts, self.name_context_length).to(device)
            return self._encode_names(ids)
        warn_if_truncated(texts, self.backbone.context_length, "description")
        ids = tokenize(texts, self.backbone.context_length).to(device)
        return self.encode_plain_ids(ids)

    def encode_plain_ids(self, ids: Tensor) -> Tensor:
        """Plain CLIP pooled output (no prompts) for token ids [N, L] (end-token padded)."""
        end = _first_end(ids)
        length = int(end.max()) + 1  # causal: later slots never reach the pooled state
        ids = ids[:, :length]
        x = self.backbone.embed_tokens(ids) + self.backbone.positions()[:length]
        h = self.backbone.encode(x)
        return h[torch.arange(ids.shape[0], device=ids.device), end]

    def _encode_names(self, ids: Tensor) -> Tensor:
        """Name path for ids [N, name_context_length] (see module docstring for the layout)."""
        n_rows, name_len = ids.shape
        device = ids.device
        n_content = _first_end(ids) - 1  # tokens between start and end token
        end_slot = 1 + self.front + self.back + n_content
        length = int(end_slot.max()) + 1
        slots = torch.arange(length, device=device)
        # Token id of every slot: start, (front prompt), name tokens shifted by `front`, end...
        slot_ids = torch.full((n_rows, length), EOT_TOKEN, dtype=ids.dtype, device=device)
        slot_ids[:, 0] = ids[:, 0]
        shifted = ids[:, 1:name_len][:, : max(length - 1 - self.front, 0)]
        slot_ids[:, 1 + self.front : 1 + self.front + shifted.shape[1]] = shifted
        x = self.backbone.embed_tokens(slot_ids) + self.backbone.positions()[:length]
        # Prompt index of every slot (-1: not a prompt slot). Prompt slots get no position.
        prompt_idx = torch.full((n_rows, length), -1, dtype=torch.long, device=device)
        front = (slots >= 1) & (slots < 1 + self.front)
        prompt_idx = torch.where(front.expand(n_rows, -1), slots - 1, prompt_idx)
        back_start = (1 + self.front + n_content)[:, None]
        back = (slots[None] >= back_start) & (slots[None] < back_start + self.back)
        prompt_idx = torch.where(back, self.front + slots[None] - back_start, prompt_idx)
        if self.front + self.back:
            prompt_vec = self.prompt_embedding.to(x.dtype)[prompt_idx.clamp(min=0)]
            x = torch.where((prompt_idx >= 0)[..., None], prompt_vec, x)
        h = self.backbone.encode(x)
        return h[torch.arange(n_rows, device=device), end_slot]
