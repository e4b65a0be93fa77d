"""Stage references: how flows and commands name a stage (Prefect-free).

A reference is a short name registered in :data:`STAGES` or an import path
``"package.module:factory"``. A *factory* takes the stage's parameters as keyword arguments and
returns a :class:`prevad.stage.Stage`; it must be cheap where models are built lazily, because it
is called in the driver (for the stage's name and version) and once on each Ray actor (where the
model is loaded; see :mod:`curation.ray_exec`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from prevad.errors import ValidationError
from prevad.stage import Stage

#: Short stage names -> factory import paths (see :mod:`curation.stages`); unregistered
#: ``module:factory`` paths work too. ``retrieve`` is not here: its input is a corpus file, not a
#: work list (see :func:`curation.retrieve.retrieve`).
STAGES: dict[str, str] = {
    "acquire": "curation.stages:acquire",
    "record": "curation.stages:record",
    "dedup": "curation.stages:dedup",
    "clean": "curation.stages:clean",
    "describe": "curation.stages:describe",
    "verify": "curation.stages:verify",
    "judge": "curation.stages:judge",
    "describe-anomaly": "curation.stages:describe_anomaly",
}


def resolve_factory(ref: str) -> Callable[..., Stage]:
    """The stage factory a reference names (a :data:`STAGES` key or ``"module:function"``).

    Raises:
        ValidationError: unknown name, malformed path, or nothing callable at that path.
    """
    path = STAGES.get(ref, ref)
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValidationError(
            f"unknown stage {ref!r}: use one of {sorted(STAGES) or '(none registered)'} or an "
            f"import path 'package.module:factory'"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValidationError(f"stage factory {path!r} cannot be imported: {exc}") from exc
    if not callable(factory):
        raise ValidationError(f"stage factory {path!r} is not callable")
    return factory


def build_stage(ref: str, params: dict[str, Any] | None = None) -> Stage:
    """Call the factory of ``ref`` with ``params``; check that it returned a Stage.

    Raises:
        ValidationError: bad reference, parameters the factory does not take, or the factory
            returned something else.
    """
    factory = resolve_factory(ref)
    try:
        inspect.signature(factory).bind(**(params or {}))
    except TypeError as exc:
        raise ValidationError(f"stage factory {ref!r} does not take these parameters "
                              f"{sorted(params or {})}: {exc}") from exc
    stage = factory(**(params or {}))
    if not isinstance(stage, Stage):
        raise ValidationError(f"stage factory {ref!r} returned {type(stage).__name__}, "
                              f"expected prevad.stage.Stage")
    return stage


def stage_factory(ref: str, params: dict[str, Any] | None = None) -> Callable[[], Stage]:
    """A zero-argument, picklable factory for the stage (what each Ray actor calls once)."""
    return functools.partial(build_stage, ref, dict(params or {}))


def with_store(ref: str, params: dict[str, Any] | None, store: str) -> dict[str, Any]:
    """``params`` plus ``store=store`` when the factory of ``ref`` takes a ``store`` parameter
    (and ``params`` does not already name one)."""
    out = dict(params or {})
    if "store" not in out and "store" in inspect.signature(resolve_factory(ref)).parameters:
        out["store"] = str(store)
    return out


def short_name(ref: str) -> str:
    """A readable name for task names: the registered name or the factory's attribute."""
    return ref if ref in STAGES else ref.rpartition(":")[2]
