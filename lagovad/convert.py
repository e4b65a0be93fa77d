"""Map the authors' Lightning checkpoints onto our parameter names (and back).

Their keys (``state_dict`` of the Lightning module; the frozen CLIP text weights are left out):

=============================================================  =================================
theirs                                                         ours
=============================================================  =================================
temporal_encoder.embed_positions.weight                        temporal.rotary_table
temporal_encoder.layer.N.attention.self.{query,key,value}.*    temporal.layers.N.{query,key,value}.*
temporal_encoder.layer.N.attention.output.dense.*              temporal.layers.N.attn_out.*
temporal_encoder.layer.N.attention.output.LayerNorm.*          temporal.layers.N.attn_norm.*
temporal_encoder.layer.N.intermediate.dense.*                  temporal.layers.N.ffn_in.*
temporal_encoder.layer.N.output.dense.*                        temporal.layers.N.ffn_out.*
temporal_encoder.layer.N.output.LayerNorm.*                    temporal.layers.N.ffn_norm.*
fusion.layers.N.*                                              fusion.layers.N.* (same names)
bin_head.adp_alpha                                             binary_head.alpha
bin_head.bin_head.convs.0.*                                    binary_head.temporal_conv.*
bin_head.bin_fused_head.convs.0.*                              binary_head.fused_conv.*
sim_head.sim_head.temperature                                  class_head.temperature
clip_text_model.prompt_embedding.weight                        text.prompt_embedding
=============================================================  =================================

A common key prefix (e.g. ``model.``) is detected and stripped. CLIP text weights, if a checkpoint
carries them, are ignored (ours come from the named CLIP). Loading uses
``torch.load(weights_only=True)``: no arbitrary code runs.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from lagovad.checkpoint import load_weights
from lagovad.errors import LagovadError
from lagovad.model import LaGoVAD

_RULES: list[tuple[str, str]] = [
    (r"temporal_encoder\.embed_positions\.weight", "temporal.rotary_table"),
    (r"temporal_encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)",
     r"temporal.layers.\1.\2.\3"),
    (r"temporal_encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)",
     r"temporal.layers.\1.attn_out.\2"),
    (r"temporal_encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|bias)",
     r"temporal.layers.\1.attn_norm.\2"),
    (r"temporal_encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)",
     r"temporal.layers.\1.ffn_in.\2"),
    (r"temporal_encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)",
     r"temporal.layers.\1.ffn_out.\2"),
    (r"temporal_encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|bias)",
     r"temporal.layers.\1.ffn_norm.\2"),
    (r"fusion\.layers\.(\d+)\.((?:vis|text)_(?:attn|ffn|norm[12])\..+)", r"fusion.layers.\1.\2"),
    (r"bin_head\.adp_alpha", "binary_head.alpha"),
    (r"bin_head\.bin_head\.convs\.0\.(weight|bias)", r"binary_head.temporal_conv.\1"),
    (r"bin_head\.bin_fused_head\.convs\.0\.(weight|bias)", r"binary_head.fused_conv.\1"),
    (r"sim_head\.sim_head\.temperature", "class_head.temperature"),
    (r"clip_text_model\.prompt_embedding\.weight", "text.prompt_embedding"),
]
_ANCHORS = ("bin_head.adp_alpha", "temporal_encoder.embed_positions.weight")
_IGNORED = re.compile(r"clip_text_model\.(?!prompt_embedding\.).+|.*position_ids")


class ConversionError(LagovadError, RuntimeError):
    """An official checkpoint cannot be read or does not fit the model."""


@dataclass
class ConversionReport:
    """What a conversion mapped, ignored and could not place."""

    mapped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    prefix: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every key was placed and nothing is missing."""
        return not self.unexpected and not self.missing


def _map_key(key: str) -> str | None:
    for pattern, repl in _RULES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def _strip_prefix(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    for key in state:
        for anchor in _ANCHORS:
            if key.endswith(anchor):
                prefix = key[: -len(anchor)]
                if prefix:
                    return {k[len(prefix):] if k.startswith(prefix) else k: v
                            for k, v in state.items()}, prefix
                return state, ""
    return state, ""


def official_to_ours(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], ConversionReport]:
    """Rename an official state dict to our names.

    Returns:
        (our state dict, report with mapped/ignored/unexpected keys; ``missing`` is filled by
        :func:`load_official_into`).
    """
    state, prefix = _strip_prefix(state)
    report = ConversionReport(prefix=prefix)
    ours: dict[str, Tensor] = {}
    for key, value in state.items():
        new = _map_key(key)
        if new is not None:
            ours[new] = value
            report.mapped.append(key)
        elif _IGNORED.fullmatch(key):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    return ours, report


_INVERSE_RULES: list[tuple[str, str]] = [
    (r"temporal\.rotary_table", "temporal_encoder.embed_positions.weight"),
    (r"temporal\.layers\.(\d+)\.(query|key|value)\.(weight|bias)",
     r"temporal_encoder.layer.\1.attention.self.\2.\3"),
    (r"temporal\.layers\.(\d+)\.attn_out\.(weight|bias)",
     r"temporal_encoder.layer.\1.attention.output.dense.\2"),
    (r"temporal\.layers\.(\d+)\.attn_norm\.(weight|bias)",
     r"temporal_encoder.layer.\1.attention.output.LayerNorm.\2"),
    (r"temporal\.layers\.(\d+)\.ffn_in\.(weight|bias)",
     r"temporal_encoder.layer.\1.intermediate.dense.\2"),
    (r"temporal\.layers\.(\d+)\.ffn_out\.(weight|bias)",
     r"temporal_encoder.layer.\1.output.dense.\2"),
    (r"temporal\.layers\.(\d+)\.ffn_norm\.(weight|bias)",
     r"temporal_encoder.layer.\1.output.LayerNorm.\2"),
    (r"fusion\.layers\.(\d+)\.(.+)", r"fusion.layers.\1.\2"),
    (r"binary_head\.alpha", "bin_head.adp_alpha"),
    (r"binary_head\.temporal_conv\.(weight|bias)", r"bin_head.bin_head.convs.0.\1"),
    (r"binary_head\.fused_conv\.(weight|bias)", r"bin_head.bin_fused_head.convs.0.\1"),
    (r"class_head\.temperature", "sim_head.sim_head.temperature"),
    (r"text\.prompt_embedding", "clip_text_model.prompt_embedding.weight"),
]


def ours_to_official(state: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Inverse renaming: export our trainable weights under the authors' names (for running
    their code on our weights). Frozen CLIP text weights are left out, as in their checkpoints.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("text.backbone."):
            continue
        for pattern, template in _INVERSE_RULES:
            if re.fullmatch(pattern, key):
                out[prefix + re.sub(pattern, template, key)] = value
                break
        else:
            raise ConversionError(f"no official name for parameter {key!r}")
    return out


class StandIn:
    """Inert replacement for a class or function an authors' checkpoint pickles.

    Lightning's ``Trainer.save_checkpoint`` pickles the authors' config classes (hyper-parameters,
    callbacks, loop states) next to the weights. :func:`read_official_checkpoint` never imports
    or runs them: each such name is bound to a fresh subclass of this class, whose construction
    and state restoring do nothing, inside ``torch.load(weights_only=True)``'s restricted
    unpickler. Only tensors and plain containers are kept from what comes back.
    """

    def __new__(cls, *args: object, **kwargs: object) -> StandIn:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass  # the pickled state (a config's fields) is dropped, not applied

    def __repr__(self) -> str:
        return f"<stand-in for {type(self).pickled_name}>"

    pickled_name = ""


def _stand_ins(names: list[str]) -> list[tuple[type, str]]:
    out = []
    for full in names:
        module = full.rsplit(".", 1)[0]
        if module.split(".")[0] in ("sys", "os", "posix", "nt"):
            continue  # torch refuses these modules outright; the load then fails with a message
        out.append((type(f"StandIn[{full}]", (StandIn,), {"pickled_name": full}), full))
    return out


def _torch_load_restricted(path: Path) -> object:
    """``torch.load(weights_only=True)``, unknown pickled classes bound to inert stand-ins."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        if not unknown:
            raise
    with torch.serialization.safe_globals(_stand_ins(unknown)):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_official_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """Read a Lightning checkpoint (or a bare state dict) without running any of its code.

    ``torch.load(weights_only=True)`` only: a checkpoint written by Lightning's own
    ``Trainer.save_checkpoint`` also pickles the authors' config classes, which are replaced by
    inert :class:`StandIn` objects (never imported, never called), and everything but the
    ``state_dict`` tensors and the integer ``epoch``/``global_step`` is dropped.

    Returns:
        (state dict, meta with epoch/global_step when present).

    Raises:
        ConversionError: Missing or unreadable file, or no tensor state dict in it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"official checkpoint not found: {path}")
    try:
        blob = _torch_load_restricted(path)
    except Exception as exc:  # pickle/zip errors come in many types
        raise ConversionError(
            f"cannot read {path} with torch.load(weights_only=True) (pickled classes bound to "
            f"inert stand-ins): {exc}. Re-save its 'state_dict' alone "
            "(torch.save(ckpt['state_dict'], 'sd.pt')) and convert that."
        ) from None
    if not isinstance(blob, dict):
        raise ConversionError(f"{path} holds a {type(blob).__name__}, expected a dict")
    state = blob.get("state_dict", blob)
    if not isinstance(state, dict) or not state or \
            not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ConversionError(f"{path}: 'state_dict' must map names to tensors")
    meta = {k: blob[k] for k in ("epoch", "global_step")
            if isinstance(blob.get(k), int) and not isinstance(blob.get(k), bool)}
    return dict(state), meta


def load_official_into(model: LaGoVAD, path: str | Path) -> ConversionReport:
    """Load an official checkpoint into ``model`` strictly.

    Raises:
        ConversionError: Unreadable file, unknown keys, missing keys or shape mismatches.
    """
    state, meta = read_official_checkpoint(path)
    ours, report = official_to_ours(state)
    report.meta = meta
    expected = model.trainable_state_dict()
    report.missing = sorted(set(expected) - set(ours))
    if not report.ok:
        raise ConversionError(
            f"{path} does not fit {model.config.get('name')}: unexpected official keys "
            f"{report.unexpected}, missing ours {report.missing}"
        )
    try:
        load_weights(model, ours, source=str(path))
    except RuntimeError as exc:
        raise ConversionError(str(exc)) from exc
    return report


def stand_in_clip(hidden: int) -> dict:
    """A ``clip`` entry for a tiny random CLIP text model of width ``hidden``.

    Conversion never encodes text: this avoids loading the real CLIP (which may need a
    download) while the converted config.json still names the real one.
    """
    return {"backend": "hf", "random_init": True,
            "text_config": {"hidden_size": hidden, "intermediate_size": 4, "num_hidden_layers": 1,
                            "num_attention_heads": 1, "vocab_size": 49408,
                            "max_position_embeddings": 77}}
