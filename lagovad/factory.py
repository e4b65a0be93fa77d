"""The front door: build a LaGoVAD model by config name, optionally with weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from lagovad.errors import LagovadError
from lagovad.model import LaGoVAD

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


def build_model(config: dict, device: str | torch.device | None = None) -> LaGoVAD:
    """Build a randomly initialised model from a full config dict (CLIP text weights loaded as
    the config names them)."""
    model = LaGoVAD(copy.deepcopy(config))
    return model.to(device) if device is not None else model


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
    from lagovad.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config

    path = Path(pretrained)
    if path.suffix in (".ckpt", ".pt", ".pth"):
        from lagovad.convert import load_official_into

        model = build_model(config)
        load_official_into(model, path)
    else:
        stored = read_checkpoint_config(path)["model_config"]
        mismatch = [k for k in _ARCH_KEYS if stored.get(k) != config.get(k)]
        if mismatch:
            raise CheckpointError(
                f"checkpoint {path} ({stored.get('name')}) does not match model {name!r} on "
                f"{mismatch}; load it with lagovad.load_checkpoint instead"
            )
        # The checkpoint names its CLIP; only an explicit `clip` argument overrides it.
        model, _ = load_checkpoint(path, clip=clip)
    return (model.to(device) if device is not None else model).eval()
