"""The front door: build a LaGoVAD model by config name, optionally with weights.

The only module that turns configs and files into models (as open_clip's factory does):
:func:`create_model`, :func:`build_model`, :func:`load_checkpoint` and :func:`convert_official`.
It sits above :mod:`lagovad.checkpoint` (our files) and :mod:`lagovad.convert` (the authors'
files and key names), which import nothing from here, so there is no import cycle.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from lagovad.checkpoint import (
    CheckpointError,
    load_weights,
    read_checkpoint_config,
    read_weights,
    save_checkpoint,
)
from lagovad.config import ModelConfig
from lagovad.convert import ConversionReport, load_official_into, stand_in_clip
from lagovad.errors import LagovadError
from lagovad.model import LaGoVAD
from lagovad.text import load_clip_text

CONFIG_DIR = Path(__file__).with_name("model_configs")
# Files in model_configs/ that are not LaGoVAD model configs.
_NOT_MODELS = {"lagovad-clip-tiny"}
# Keys that change weight shapes: a checkpoint must agree with the named config on them.
_ARCH_KEYS = ("video_dim", "hidden", "temporal", "fusion", "binary_head", "prompts")


class UnknownModelError(LagovadError, ValueError):
    """A model name is not one of the packaged configs."""


def list_models() -> list[str]:
    """Names of the packaged model configs (e.g. ``lagovad-b16``, ``lagovad-tiny``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json") if p.stem not in _NOT_MODELS)


def get_model_config(name: str) -> dict:
    """A copy of the packaged config ``name``.

    Raises:
        UnknownModelError: If ``name`` is not packaged (the message lists the valid names).
    """
    path = CONFIG_DIR / f"{name}.json"
    if name in _NOT_MODELS or not path.is_file():
        raise UnknownModelError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return json.loads(path.read_text(encoding="utf-8"))


def merge_config(base: dict, override: dict | None) -> dict:
    """Recursively merge ``override`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_model(
    config: dict | ModelConfig,
    device: str | torch.device | None = None,
    text_backbone: nn.Module | None = None,
) -> LaGoVAD:
    """Build a randomly initialised model from a full config.

    The config is checked first (:class:`lagovad.config.ModelConfig`), then the frozen CLIP
    text weights are loaded as ``config["clip"]`` names them, unless ``text_backbone`` is given.

    Raises:
        lagovad.config.ModelConfigError: A config field is missing, mistyped or out of range.
        lagovad.text.ClipLoadError: The CLIP text model cannot be loaded.
    """
    cfg = ModelConfig.from_dict(copy.deepcopy(config) if isinstance(config, dict) else config)
    backbone = text_backbone or load_clip_text(cfg.clip, seed=cfg.seed)
    model = LaGoVAD(cfg, backbone)
    return model.to(device) if device is not None else model


def load_checkpoint(
    path: str | Path,
    clip: dict | None = None,
    device: str | torch.device | None = None,
) -> tuple[LaGoVAD, dict]:
    """Rebuild a model from one of our checkpoints.

    Args:
        path: Checkpoint directory, or its model.safetensors / config.json.
        clip: Optional override of the CLIP entry (e.g. a local copy of the named CLIP).
        device: Target device.

    Returns:
        (model in eval mode, extra dict).

    Raises:
        CheckpointError: Missing, truncated or invalid files (named), or weights that do not fit.
    """
    data = read_checkpoint_config(path)
    config = data["model_config"]
    if clip is not None:
        config["clip"] = merge_config(config["clip"], clip)
    tensors = read_weights(path)  # read (and checked) before the CLIP is loaded
    model = build_model(config)
    load_weights(model, tensors, source=str(Path(path)))
    if device is not None:
        model = model.to(device)
    return model.eval(), data.get("extra", {})


def convert_official(
    ckpt: str | Path,
    out_dir: str | Path,
    model_name: str = "lagovad-b16",
    clip: dict | None = None,
) -> ConversionReport:
    """Convert an authors' checkpoint to one of our checkpoint directories.

    Args:
        ckpt: The authors' Lightning ``.ckpt`` (also one written by ``Trainer.save_checkpoint``
            that pickles their config classes; see :func:`lagovad.convert.read_official_checkpoint`)
            or a bare state dict file.
        out_dir: Output checkpoint directory.
        model_name: Our config the weights belong to.
        clip: Optional override of the CLIP the config names (stored in config.json).

    Returns:
        The report.
    """
    config = get_model_config(model_name)
    if clip is not None:
        config["clip"] = merge_config(config["clip"], clip)
    # Conversion never encodes text: a stand-in CLIP of the right width, while config.json
    # still names the real one.
    backbone = load_clip_text(stand_in_clip(int(config["hidden"])))
    model = build_model(config, text_backbone=backbone)
    report = load_official_into(model, ckpt)
    extra = {"converted_from": str(ckpt), "official_meta": report.meta,
             "official_prefix": report.prefix, "ignored_official_keys": len(report.ignored)}
    save_checkpoint(out_dir, model, extra=extra)
    return report


def create_model(
    name: str,
    pretrained: str | Path | None = None,
    clip: dict | None = None,
    device: str | torch.device | None = None,
) -> LaGoVAD:
    """Create a LaGoVAD model.

    Args:
        name: A packaged config name (see :func:`list_models`).
        pretrained: None (random init), one of our checkpoints (directory, ``model.safetensors``
            or ``config.json``), or an authors' Lightning checkpoint (``.ckpt``/``.pt``/``.pth``,
            converted on the fly).
        clip: Override of the config's ``clip`` entry (e.g. a local directory for the HF text
            model: ``{"backend": "hf", "name": "/models/clip-vit-base-patch16"}``).
        device: Target device.

    Returns:
        The model in eval mode.

    Raises:
        UnknownModelError: Unknown name.
        CheckpointError: The checkpoint does not match the named architecture.
    """
    config = get_model_config(name)
    if clip is not None:
        config["clip"] = merge_config(config["clip"], clip)
    if pretrained is None:
        model = build_model(config, device)
        return model.eval()
    path = Path(pretrained)
    if path.suffix in (".ckpt", ".pt", ".pth"):
        model = build_model(config)
        load_official_into(model, path)
    else:
        stored = read_checkpoint_config(path)["model_config"]
        # compared as parsed configs: a default written out equals the same default left out
        ours, theirs = ModelConfig.from_dict(config), ModelConfig.from_dict(stored)
        mismatch = [k for k in _ARCH_KEYS if getattr(ours, k) != getattr(theirs, k)]
        if mismatch:
            raise CheckpointError(
                f"checkpoint {path} ({theirs.name}) does not match model {name!r} on "
                f"{mismatch}; load it with lagovad.load_checkpoint instead"
            )
        # The checkpoint names its CLIP; only an explicit `clip` argument overrides it.
        model, _ = load_checkpoint(path, clip=clip)
    return (model.to(device) if device is not None else model).eval()
