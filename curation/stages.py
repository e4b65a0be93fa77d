"""Stage factories with plain keyword parameters (what flows, ``prevad curate run`` and Ray call).

Each stage module's ``make_stage`` takes a :class:`~prevad.store.Store` and config objects; the
factories here take the store root as ``store`` plus JSON-able keywords (strings, numbers, lists,
dicts), build the config objects and return the :class:`~prevad.stage.Stage`. They are registered
by short name in :data:`curation.registry.STAGES`. A bad keyword fails with a
:class:`~prevad.errors.ValidationError` naming it (before any model is loaded).

Model stages (describe, verify, judge, describe-anomaly) take the engine options of the CLI
(``engine``, ``model``, ``device``, ...) and their config as keywords (``frames``, ``frame_size``,
``min_chars``, ...).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prevad.errors import ValidationError
from prevad.stage import Stage
from prevad.store import Store

__all__ = ["acquire", "clean", "dedup", "describe", "describe_anomaly", "engine_config", "judge",
           "record", "retrieve_settings", "verify"]


def _config(cls: type, what: str, values: dict[str, Any]) -> Any:
    """``cls(**values)`` for a dataclass; unknown keys -> ValidationError naming them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValidationError(f"{what}: unknown parameter(s) {unknown}; expected some of "
                              f"{sorted(names)}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValidationError(f"{what}: bad parameters {values}: {exc}") from exc


def _store(store: str | Path) -> Store:
    """The store at ``store`` (a clear error when there is none)."""
    if not str(store):
        raise ValidationError("store: expected the path of a prevad store, got ''")
    return Store(store)


# ------------------------------------------------------------------ network / file stages
def acquire(store: str, **settings: Any) -> Stage:
    """The ``acquire`` stage; keywords are :class:`curation.acquire.AcquireSettings` fields."""
    from curation.acquire import AcquireSettings, make_stage

    if "schemes" in settings:
        settings["schemes"] = tuple(settings["schemes"])
    return make_stage(_store(store), _config(AcquireSettings, "acquire", settings))


def record(store: str, **settings: Any) -> Stage:
    """The ``record`` stage; keywords are :class:`curation.record.RecordSettings` fields."""
    from curation.record import RecordSettings, make_stage

    return make_stage(_store(store), _config(RecordSettings, "record", settings))


def dedup(store: str, **config: Any) -> Stage:
    """The ``dedup`` stage; keywords are :class:`curation.dedup.DedupConfig` fields."""
    from curation.dedup import DedupConfig, make_stage

    return make_stage(_store(store), _config(DedupConfig, "dedup", config))


def clean(store: str, **policy: Any) -> Stage:
    """The ``clean`` stage; keywords are :class:`curation.clean.CleanPolicy` fields."""
    from curation.clean import CleanPolicy, make_stage

    return make_stage(_store(store), _config(CleanPolicy, "clean", policy))


def retrieve_settings(**settings: Any) -> Any:
    """:class:`curation.retrieve.Settings` from JSON-able keywords (paths as strings)."""
    from curation.retrieve import Settings

    for key in ("queries", "model_dir"):
        if settings.get(key) is not None:
            settings[key] = Path(settings[key])
    return _config(Settings, "retrieve", settings)


# ------------------------------------------------------------------ model stages
def engine_config(engine: str = "transformers", model: str = "", device: str = "auto",
                  batch_size: int = 8, base_url: str = "", api_key: str = "EMPTY",
                  concurrency: int = 8, timeout: float = 120.0, max_tokens: int = 512,
                  temperature: float = 0.0, seed: int = 0, cache: bool = True) -> Any:
    """A :class:`curation.mllm.EngineConfig` from the same options as the stage commands.

    Raises:
        ValidationError: no model given.
        EngineError: unknown engine, or openai without ``base_url``.
    """
    from curation.cli_options import engine_config as build

    if not model:
        raise ValidationError("model: expected a model directory, hub id or served model name")
    return build(engine, model, device, batch_size, base_url, api_key, concurrency, timeout,
                 max_tokens, temperature, seed, not cache)


_ENGINE_KEYS = frozenset(
    ("engine", "model", "device", "batch_size", "base_url", "api_key", "concurrency",
     "timeout", "max_tokens", "temperature", "seed", "cache")
)


def _split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine keywords, config keywords); ``frames``/``frame_size`` become a FrameConfig."""
    from curation.frames import FrameConfig

    eng = {k: v for k, v in params.items() if k in _ENGINE_KEYS}
    cfg = {k: v for k, v in params.items() if k not in _ENGINE_KEYS}
    if "frames" in cfg or "frame_size" in cfg:
        cfg["frames"] = FrameConfig(int(cfg.pop("frames", 8)), int(cfg.pop("frame_size", 224)))
    return eng, cfg


def describe(store: str, input_table: str | None = None, **params: Any) -> Stage:
    """The ``describe`` stage: engine options + :class:`curation.describe.DescribeConfig`."""
    from curation.describe import DescribeConfig, make_stage

    eng, cfg = _split(params)
    return make_stage(_store(store), engine_config(**eng),
                      _config(DescribeConfig, "describe", cfg), input_table=input_table)


def verify(store: str, input_table: str | None = None, **params: Any) -> Stage:
    """The ``verify`` stage: engine options + :class:`curation.verify.VerifyConfig`."""
    from curation.verify import VerifyConfig, make_stage

    eng, cfg = _split(params)
    return make_stage(_store(store), engine_config(**eng),
                      _config(VerifyConfig, "verify", cfg), input_table=input_table)


def judge(store: str, input_table: str | None = None, **params: Any) -> Stage:
    """The ``judge`` stage: engine options + :class:`curation.judge.JudgeConfig`."""
    from curation.judge import JudgeConfig, make_stage

    eng, cfg = _split(params)
    return make_stage(_store(store), engine_config(**eng), _config(JudgeConfig, "judge", cfg),
                      input_table=input_table)


def describe_anomaly(store: str, **params: Any) -> Stage:
    """The ``describe-anomaly`` stage: engine options + its config."""
    from curation.describe_anomaly import DescribeAnomalyConfig, make_stage

    eng, cfg = _split(params)
    return make_stage(_store(store), engine_config(**eng),
                      _config(DescribeAnomalyConfig, "describe-anomaly", cfg))
