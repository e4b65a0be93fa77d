"""Checkpoints: safetensors weights + JSON config, never pickle.

A checkpoint is a directory::

    model.safetensors          trainable weights (+ the frozen rotary table), no CLIP text weights
    config.json                {"format": "lagovad-checkpoint", "format_version": 1,
                                "model_config": {... incl. "clip"}, "extra": {...}}
    training_state.safetensors optional: every tensor of the optimizer/scheduler states
    training_state.json        optional: the rest of those states, tensors replaced by references

Every file is written atomically (temp file in the same folder, fsync, ``os.replace``); config.json
is written last, so a directory with a config.json is a complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from lagovad.errors import LagovadError
from lagovad.model import LaGoVAD
from prevad.io import atomic_write_bytes

FORMAT = "lagovad-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAIN_TENSORS = "training_state.safetensors"
TRAIN_JSON = "training_state.json"
FROZEN_PREFIX = "text.backbone."


class CheckpointError(LagovadError, RuntimeError):
    """A checkpoint is missing, malformed or does not fit the model."""


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _tensors_bytes(tensors: dict[str, Tensor]) -> bytes:
    # safetensors needs contiguous, non-shared CPU tensors.
    return st_save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})


# --------------------------------------------------------------------------------------------
# nested state (optimizer / scheduler) <-> tensors + JSON
# --------------------------------------------------------------------------------------------
def flatten_state(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Encode a nested state (dicts with str/int keys, lists, tuples, scalars, tensors) as JSON,
    moving tensors into ``tensors`` under generated keys."""
    if isinstance(obj, Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten_state(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [flatten_state(v, tensors) for v in obj],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store {type(obj).__name__} in a checkpoint state: {obj!r}")


def unflatten_state(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unflatten_state(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [unflatten_state(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------
def save_checkpoint(
    out_dir: str | Path,
    model: LaGoVAD,
    extra: dict | None = None,
    *,
    optimizer_state: dict | None = None,
    scheduler_state: dict | None = None,
    training_state: dict | None = None,
) -> Path:
    """Save a checkpoint directory.

    Args:
        out_dir: Target directory (created; existing files replaced).
        model: The model; its frozen CLIP text weights are left out, its config names the CLIP.
        extra: JSON-serialisable extras (train config, step, metrics, ...).
        optimizer_state: Optional ``optimizer.state_dict()`` for exact resume.
        scheduler_state: Optional ``scheduler.state_dict()`` for exact resume.
        training_state: Optional anything else needed to resume (RNG states such as
            ``torch.get_rng_state()``, sampler position, ...): nested dicts/lists of tensors and
            JSON scalars.

    Returns:
        The checkpoint directory.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    states = {"optimizer": optimizer_state, "scheduler": scheduler_state,
              "training": training_state}
    has_state = any(v is not None for v in states.values())
    try:
        config_bytes = _json_bytes({"format": FORMAT, "format_version": FORMAT_VERSION,
                                    "model_config": model.config, "extra": extra or {},
                                    "has_training_state": has_state})
    except TypeError as exc:
        raise CheckpointError(f"extra must be JSON-serialisable: {exc}") from exc
    atomic_write_bytes(out / WEIGHTS, _tensors_bytes(model.trainable_state_dict()))
    if has_state:
        tensors: dict[str, Tensor] = {}
        state = flatten_state(states, tensors)
        atomic_write_bytes(out / TRAIN_TENSORS, _tensors_bytes(tensors))
        atomic_write_bytes(out / TRAIN_JSON, _json_bytes(state))
    atomic_write_bytes(out / CONFIG, config_bytes)
    return out


def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path)
    directory = path.parent if path.is_file() else path
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise CheckpointError(
            f"{path} is not a LaGoVAD checkpoint: expected {CONFIG} and {WEIGHTS} in {directory}"
        )
    return directory


def read_checkpoint_config(path: str | Path) -> dict:
    """The parsed config.json of a checkpoint (directory or a file inside it)."""
    directory = _checkpoint_dir(path)
    data = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{directory / CONFIG} has format {data.get('format')!r}, "
                              f"expected {FORMAT!r}")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{directory} has format_version {data['format_version']}; this "
                              f"lagovad reads up to {FORMAT_VERSION}")
    return data


def load_weights(model: LaGoVAD, tensors: dict[str, Tensor], source: str = "weights") -> None:
    """Load trainable weights strictly; only the frozen CLIP text weights may be absent.

    Raises:
        CheckpointError: Missing or unexpected keys, or shape mismatches (all listed).
    """
    expected = model.trainable_state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(k for k in set(tensors) - set(expected) if not k.startswith(FROZEN_PREFIX))
    shapes = [f"{k}: {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(tensors))
              if tensors[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} do not fit the model: missing={missing} unexpected={unexpected} "
            f"shape_mismatch={shapes}"
        )
    model.load_state_dict({k: tensors[k] for k in expected}, strict=False)
    model.text.clear_cache()


def load_checkpoint(
    path: str | Path,
    clip: dict | None = None,
    device: str | torch.device | None = None,
) -> tuple[LaGoVAD, dict]:
    """Rebuild a model from a checkpoint.

    Args:
        path: Checkpoint directory, or its model.safetensors / config.json.
        clip: Optional override of the CLIP entry (e.g. a local copy of the named CLIP).
        device: Target device.

    Returns:
        (model in eval mode, extra dict).
    """
    from lagovad.factory import build_model, merge_config

    directory = _checkpoint_dir(path)
    data = read_checkpoint_config(directory)
    config = data["model_config"]
    if clip is not None:
        config["clip"] = merge_config(config["clip"], clip)
    model = build_model(config)
    tensors = st_load((directory / WEIGHTS).read_bytes())
    load_weights(model, tensors, source=str(directory / WEIGHTS))
    if device is not None:
        model = model.to(device)
    return model.eval(), data.get("extra", {})


def load_training_state(path: str | Path) -> dict | None:
    """``{"optimizer": ..., "scheduler": ..., "training": ...}`` saved with a checkpoint (None
    entries for what was not given), or None if no state was saved."""
    directory = _checkpoint_dir(path)
    if not (directory / TRAIN_JSON).is_file():
        return None
    tensors = st_load((directory / TRAIN_TENSORS).read_bytes())
    state = json.loads((directory / TRAIN_JSON).read_text(encoding="utf-8"))
    return unflatten_state(state, tensors)
