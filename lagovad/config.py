"""The model config, parsed into typed objects; every default lives here and nowhere else.

A config is stored as JSON (``lagovad/model_configs/<name>.json``, a checkpoint's
``config.json["model_config"]``). :meth:`ModelConfig.from_dict` checks it field by field before
anything is built: unknown or missing keys, wrong types and non-finite numbers (JSON allows
``NaN``, which would silently turn every score into NaN) are refused with the field's full name.
Range rules that belong to one module (an odd kernel, heads dividing the width) stay with it.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, get_type_hints

from lagovad.errors import LagovadError


class ModelConfigError(LagovadError, ValueError):
    """A model config value is missing, of the wrong type, out of range or inconsistent."""


@dataclass(frozen=True)
class TemporalConfig:
    """The RoFormer temporal encoder (post-LN, local band attention)."""

    layers: int
    heads: int
    ffn: int
    window: int
    rotary_positions: int
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12


@dataclass(frozen=True)
class FusionConfig:
    """The co-attention fusion of video and text."""

    layers: int
    heads: int
    ffn: int
    dropout: float = 0.1


@dataclass(frozen=True)
class BinaryHeadConfig:
    """The adaptive binary head (two convolutions blended by a learned weight)."""

    kernel_size: int
    alpha_init: float = 0.25
    alpha_scale: float = 10.0


@dataclass(frozen=True)
class ClassHeadConfig:
    """The cosine-similarity class head."""

    temperature_init: float = 0.2


@dataclass(frozen=True)
class PromptConfig:
    """Learnable soft prompts around class names (front and back of the name tokens)."""

    front: int = 16
    back: int = 16
    init_std: float = 0.02


@dataclass(frozen=True)
class ModelConfig:
    """A whole LaGoVAD config.

    Attributes:
        name: Config name (``lagovad-b16``, ``lagovad-tiny``).
        video_dim: Feature width D of the video features (equals ``hidden``).
        hidden: Model width H (equals the CLIP text width).
        max_len: Longest sequence trained on / scored in one piece.
        temporal, fusion, binary_head, class_head, prompts: The parts, see their classes.
        clip: The frozen CLIP text model: ``{"backend": "hf"|"open_clip", "name": ...}`` (see
            :func:`lagovad.text.load_clip_text`; backend-specific keys pass through).
        image_clip: The image encoder the features come from (``lagovad detect``).
        features: The feature protocol (frame stride, offset, size).
        seed: Seed of a random CLIP initialisation (tests only).
    """

    name: str
    video_dim: int
    hidden: int
    max_len: int
    temporal: TemporalConfig
    fusion: FusionConfig
    binary_head: BinaryHeadConfig
    clip: dict[str, Any]
    class_head: ClassHeadConfig = field(default_factory=ClassHeadConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    image_clip: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def from_dict(cls, data: Any, source: str = "model config") -> ModelConfig:
        """Parse and check a config dict.

        Args:
            data: The JSON object.
            source: Where it comes from, for messages (e.g. a checkpoint's config.json path).

        Raises:
            ModelConfigError: Naming the field (``temporal.heads``) and the rule it breaks.
        """
        if isinstance(data, ModelConfig):
            return data
        cfg = _parse(cls, data, "", source)
        if cfg.video_dim != cfg.hidden:
            raise ModelConfigError(
                f"{source}: video_dim ({cfg.video_dim}) must equal hidden ({cfg.hidden}): the "
                "temporal encoder runs directly on the features"
            )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (every default filled in)."""
        return asdict(self)


def _parse(cls: type, data: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "the config"
    if not isinstance(data, dict):
        raise ModelConfigError(f"{source}: {where} must be an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ModelConfigError(f"{source}: unknown key(s) {unknown} in {where}; known: "
                               f"{sorted(known)}")
    values: dict[str, Any] = {}
    for name, f in known.items():
        full = prefix + name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ModelConfigError(f"{source}: {full} is missing")
            continue
        values[name] = _value(hints[name], data[name], full, source)
    return cls(**values)


def _value(hint: Any, value: Any, full: str, source: str) -> Any:
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _parse(hint, value, full + ".", source)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelConfigError(f"{source}: {full} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelConfigError(f"{source}: {full} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ModelConfigError(f"{source}: {full} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ModelConfigError(f"{source}: {full} must be a string, got {value!r}")
        return value
    # dict[str, Any]: backend-specific settings; still no NaN/Inf anywhere inside
    if not isinstance(value, dict):
        raise ModelConfigError(f"{source}: {full} must be an object, got {value!r}")
    _check_finite(value, full, source)
    return dict(value)


def _check_finite(value: Any, full: str, source: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ModelConfigError(f"{source}: {full} must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{full}.{k}", source)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{full}[{i}]", source)
