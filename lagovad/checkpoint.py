"""Checkpoints: safetensors weights + JSON config, never pickle.

A checkpoint is a directory::

    model.safetensors          trainable weights (+ the frozen rotary table), no CLIP text weights
    config.json                {"format": "lagovad-checkpoint", "format_version": 1,
                                "model_config": {... incl. "clip"}, "extra": {...}}
    training_state.safetensors optional: every tensor of the optimizer/scheduler states
    training_state.json        optional: the rest of those states, tensors replaced by references

Reading is :func:`read_checkpoint_config` + :func:`read_weights` here; building a model from them
is :func:`lagovad.factory.load_checkpoint` (this module sits below the factory: it imports no
model-building code).

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

from lagovad.config import ModelConfig, ModelConfigError
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
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a folder with "
                              f"{CONFIG} and {WEIGHTS})")
    directory = path.parent if path.is_file() else path
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise CheckpointError(
            f"{path} is not a LaGoVAD checkpoint: expected {CONFIG} and {WEIGHTS} in {directory}"
        )
    return directory


def read_checkpoint_config(path: str | Path) -> dict:
    """The parsed config.json of a checkpoint (directory or a file inside it).

    Raises:
        CheckpointError: The file is not JSON (truncated, another encoding), is not a lagovad
            checkpoint config, or its ``model_config`` is missing or invalid (e.g. a NaN) —
            each message names the file.
    """
    directory = _checkpoint_dir(path)
    file = directory / CONFIG
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON (truncated or corrupt?): {exc.msg} at "
                              f"line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} holds a JSON {type(data).__name__}, expected an object")
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{file} has format {data.get('format')!r}, "
                              f"expected {FORMAT!r}")
    version = data.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{directory} has format_version {version!r}; this "
                              f"lagovad reads up to {FORMAT_VERSION}")
    if "model_config" not in data:
        raise CheckpointError(f"{file} has no 'model_config': it cannot say which model the "
                              "weights belong to")
    try:
        ModelConfig.from_dict(data["model_config"], source=f"{file} model_config")
    except ModelConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return data


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint's model.safetensors (directory or a file inside it).

    Raises:
        CheckpointError: The file is truncated or not a safetensors file, or holds NaN/Inf
            (the message names the file and the tensor).
    """
    file = _checkpoint_dir(path) / WEIGHTS
    return _read_tensors(file)


def _read_tensors(file: Path) -> dict[str, Tensor]:
    try:
        tensors = st_load(file.read_bytes())
    except Exception as exc:  # safetensors raises its own SafetensorError (not exported)
        raise CheckpointError(f"{file} is not a readable safetensors file (truncated or another "
                              f"format?): {exc}") from None
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{file}: tensor {key!r} holds NaN/Inf values")
    return tensors


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


def load_training_state(path: str | Path) -> dict | None:
    """``{"optimizer": ..., "scheduler": ..., "training": ...}`` saved with a checkpoint (None
    entries for what was not given), or None if no state was saved."""
    directory = _checkpoint_dir(path)
    if not (directory / TRAIN_JSON).is_file():
        return None
    tensors = _read_tensors(directory / TRAIN_TENSORS)
    try:
        state = json.loads((directory / TRAIN_JSON).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory / TRAIN_JSON} is not valid JSON: {exc}") from None
    return unflatten_state(state, tensors)
