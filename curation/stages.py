"""Stage factories with plain keyword parameters (what flows, ``prevad curate run`` and Ray call).

Each stage module's ``make_stage`` takes a :class:`~prevad.store.Store` and config objects; the
factories here take the store root as ``store`` plus JSON-able keywords (strings, numbers, lists,
dicts), build the config objects and return the :class:`~prevad.stage.Stage`. They are registered
by short name in :data:`curation.registry.STAGES`. A bad keyword fails with a
:class:`~prevad.errors.ValidationError` naming it (before any model is loaded).

Every keyword is an option of the stage's config dataclass (its fields, :mod:`curation.options`),
the same options the stage's command has; model stages (describe, verify, judge,
describe-anomaly) also take the engine options of the commands
(:class:`curation.cli_options.EngineOptions`: ``engine``, ``model``, ``device``, ...). Every
config is built, and so checked, before the store is opened or any item touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prevad.errors import ValidationError
from prevad.stage import Stage
from prevad.store import Store

__all__ = ["acquire", "clean", "dedup", "describe", "describe_anomaly", "engine_config", "judge",
           "record", "retrieve_settings", "verify"]


def _config(cls: type, what: str, values: dict[str, Any]) -> Any:
    """``cls`` from option keywords (:func:`curation.options.settings_from`): unknown keys and
    bad values -> ValidationError naming them."""
    from curation.options import settings_from

    return settings_from(cls, values, what)


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
    cfg = _config(AcquireSettings, "acquire", settings)  # checked before the store is opened
    return make_stage(_store(store), cfg)


def record(store: str, **settings: Any) -> Stage:
    """The ``record`` stage; keywords are :class:`curation.record.RecordSettings` fields."""
    from curation.record import RecordSettings, make_stage

    cfg = _config(RecordSettings, "record", settings)  # checked before the store is opened
    return make_stage(_store(store), cfg)


def dedup(store: str, **config: Any) -> Stage:
    """The ``dedup`` stage; keywords are :class:`curation.dedup.DedupConfig` fields."""
    from curation.dedup import DedupConfig, make_stage

    cfg = _config(DedupConfig, "dedup", config)  # checked before the store is opened
    return make_stage(_store(store), cfg)


def clean(store: str, **policy: Any) -> Stage:
    """The ``clean`` stage; keywords are :class:`curation.clean.CleanPolicy` fields."""
    from curation.clean import CleanPolicy, make_stage

    cfg = _config(CleanPolicy, "clean", policy)  # checked before the store is opened
    return make_stage(_store(store), cfg)


def retrieve_settings(**settings: Any) -> Any:
    """:class:`curation.retrieve.Settings` from JSON-able keywords (paths as strings)."""
    from curation.retrieve import Settings

    for key in ("queries", "model_dir"):
        if settings.get(key) is not None:
            settings[key] = Path(settings[key])
    return _config(Settings, "retrieve", settings)


# ------------------------------------------------------------------ model stages
def engine_config(**options: Any) -> Any:
    """A :class:`curation.mllm.EngineConfig` from the engine options of the stage commands
    (:class:`curation.cli_options.EngineOptions` fields: ``engine``, ``model``, ``device``, ...).

    Raises:
        ValidationError: an unknown option, no model, or a value its option refuses.
    """
    from curation.cli_options import engine_config as build

    return build(**options)


def _split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine keywords, config keywords)."""
    from curation.cli_options import EngineOptions
    from curation.options import iter_keywords

    engine_keys = set(iter_keywords(EngineOptions))
    return ({k: v for k, v in params.items() if k in engine_keys},
            {k: v for k, v in params.items() if k not in engine_keys})


def _model_stage(module: str, store: str, params: dict[str, Any]) -> Stage:
    """A model stage (``module``'s SPEC) from engine options and its config's keywords; both
    are checked before the store is opened."""
    import importlib

    spec = importlib.import_module(module).SPEC
    eng, cfg = _split(params)
    ecfg, config = engine_config(**eng), _config(spec.config, spec.name, cfg)
    return spec.stage(_store(store), ecfg, config)


def describe(store: str, **params: Any) -> Stage:
    """The ``describe`` stage: engine options + :class:`curation.describe.DescribeConfig`."""
    return _model_stage("curation.describe", store, params)


def verify(store: str, **params: Any) -> Stage:
    """The ``verify`` stage: engine options + :class:`curation.verify.VerifyConfig`."""
    return _model_stage("curation.verify", store, params)


def judge(store: str, **params: Any) -> Stage:
    """The ``judge`` stage: engine options + :class:`curation.judge.JudgeConfig`."""
    return _model_stage("curation.judge", store, params)


def describe_anomaly(store: str, **params: Any) -> Stage:
    """The ``describe-anomaly`` stage: engine options + its config (describe's)."""
    return _model_stage("curation.describe_anomaly", store, params)
