"""What ``prevad curate run STAGE -p key=value`` and the flows accept for each stage, and the
check of values before anything runs.

A stage factory (:mod:`curation.stages`) takes its own keyword parameters plus, through
``**settings``, the options of the stage's config dataclass (``AcquireSettings``,
``CleanPolicy``, ``DescribeConfig``, ...) and, for model stages, the engine options
(:class:`curation.cli_options.EngineOptions`). Those dataclasses are the one declaration of a
stage's options (:mod:`curation.options`): the stage's command is generated from the same
fields, so :func:`accepted_params` (read from them; :data:`KEYWORD_SOURCES` says where each
registered factory's ``**settings`` go) lists exactly the command's options.

:func:`check_params` checks what was given before any stage is built: unknown names, and
values of the wrong type for their field (a list for a number, a text for a flag, ``null`` where
a value is needed) are refused with a :class:`~prevad.errors.ValidationError` naming the
parameter, the value and what was expected; then it builds the config objects, whose own checks
(ranges, NaN and infinities, choices, files) are the ones the command runs, with the same
message. ``prevad curate run``, the stage flows and ``flows.curate.curate`` call it for every
stage before the first item of any is touched.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prevad.errors import ValidationError

ENGINE = "curation.cli_options:EngineOptions"

#: Registered factory -> the dataclasses its ``**settings`` keywords go to.
KEYWORD_SOURCES: dict[str, tuple[str, ...]] = {
    "curation.stages:acquire": ("curation.acquire:AcquireSettings",),
    "curation.stages:record": ("curation.record:RecordSettings",),
    "curation.stages:dedup": ("curation.dedup:DedupConfig",),
    "curation.stages:clean": ("curation.clean:CleanPolicy",),
    "curation.stages:describe": (ENGINE, "curation.describe:DescribeConfig"),
    "curation.stages:verify": (ENGINE, "curation.verify:VerifyConfig"),
    "curation.stages:judge": (ENGINE, "curation.judge:JudgeConfig"),
    "curation.stages:describe_anomaly": (ENGINE,
                                         "curation.describe_anomaly:DescribeAnomalyConfig"),
    "curation.stages:retrieve_settings": ("curation.retrieve:Settings",),
}


@dataclass(frozen=True, slots=True)
class Param:
    """One keyword a stage factory accepts.

    Attributes:
        name: the keyword (``-p name=value``).
        hint: its type hint (``int``, ``float | None``, ``tuple[str, ...]``, ...).
        default: its default (``inspect.Parameter.empty`` when required).
        origin: where it is defined, e.g. ``AcquireSettings.max_height``.
        source: the config dataclass that checks its value when built (None: a keyword of the
            factory itself, checked here for a finite value only).
    """

    name: str
    hint: Any
    default: Any
    origin: str
    source: type | None = None


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _from_signature(fn: Any, origin: str) -> tuple[dict[str, Param], bool]:
    """Named keywords of ``fn`` (hints resolved) and whether it also takes ``**kwargs``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: keep them unchecked
        hints = {}
    out, var_kw = {}, False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            out[p.name] = Param(p.name, hints.get(p.name, Any), p.default, f"{origin}({p.name})")
    return out, var_kw


def _from_dataclass(cls: type) -> dict[str, Param]:
    """The options of a config dataclass (flattened fields expanded)."""
    from curation.options import option_fields

    return {o.keyword: Param(o.keyword, o.hint, o.default, o.origin, cls)
            for o in option_fields(cls)}


def factory_path(ref: str) -> str:
    """The ``module:function`` path of a stage reference (a registered name or a path)."""
    from curation.registry import STAGES

    return STAGES.get(ref, ref)


def accepted_params(ref: str) -> tuple[dict[str, Param], bool]:
    """The keywords a stage reference's factory accepts.

    Returns:
        (name -> :class:`Param`, complete): ``complete`` is False when the factory takes
        ``**kwargs`` that go somewhere this module does not know (an unregistered factory), so
        names outside the list may still be valid.

    Raises:
        ValidationError: the reference names no importable factory.
    """
    from curation.registry import resolve_factory

    factory = resolve_factory(ref)
    path = factory_path(ref)
    params, var_kw = _from_signature(factory, path.rpartition(":")[2])
    params.pop("store", None)  # given by the command's STORE argument
    sources = KEYWORD_SOURCES.get(path)
    if sources is None:
        return params, not var_kw
    for src in sources:
        params.update(_from_dataclass(_import(src)))
    return params, True


# ------------------------------------------------------------------ value checks
def _args(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _number(name: str, value: Any, integer: bool, finite: bool) -> Any:
    kind = "an integer" if integer else "a number"
    if not integer and isinstance(value, str):
        # what the command line reads as a number (nan, inf, 1e3, " 2") is one here too
        with contextlib.suppress(ValueError):
            value = float(value)
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)  # 480.0 is 480, as the config classes read it
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        raise _bad(name, value, kind)
    if finite and isinstance(value, float) and not math.isfinite(value):
        raise _bad(name, value, f"a finite {kind[2:]}")
    return value


def _bad(name: str, value: Any, expected: str) -> ValidationError:
    text = repr(value)
    if len(text) > 80:  # a hostile value is named, never echoed whole
        text = f"{text[:60]}...({len(text)} characters)"
    return ValidationError(f"parameter {name}={text}: expected {expected}")


def check_value(name: str, value: Any, hint: Any, raw: str | None = None, *,
                finite: bool = True) -> Any:
    """``value`` checked against ``hint``; returns it (text re-read as text where needed).

    Ranges are the config classes' own checks (see :func:`check_params`); here a number is
    only checked to be one (and finite, with ``finite``).

    Args:
        name: the parameter (for the message).
        value: the parsed value (JSON when it parsed, else the text).
        hint: the type hint.
        raw: the text as given on the command line (a ``str`` parameter keeps it as written:
            ``-p device=0`` means the text ``"0"``).
        finite: refuse NaN and infinities here (a factory's own keyword: no class checks it).

    Raises:
        ValidationError: the value does not fit; the message names it and what was expected.
    """
    options = _args(hint)
    if value is None:
        if type(None) in options or Any in options:
            return None
        raise _bad(name, value, f"a value ({_describe(hint)}); null is not allowed")
    errors: list[ValidationError] = []
    for opt in options:
        if opt is type(None):
            continue
        try:
            return _check_one(name, value, opt, raw, finite)
        except ValidationError as exc:
            errors.append(exc)
    raise errors[0] if len(errors) == 1 else _bad(name, value, _describe(hint))


def _check_one(name: str, value: Any, hint: Any, raw: str | None, finite: bool) -> Any:
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return value
    if origin is bool:
        if isinstance(value, bool):
            return value
        raise _bad(name, value, "true or false")
    if origin is int:
        return _number(name, value, True, finite)
    if origin is float:
        return _number(name, value, False, finite)
    if origin in (str, Path):
        # a number or true/false typed for a text is the text as written; an object is not
        text = value if isinstance(value, str) else (
            raw if not isinstance(value, dict | list) else None)
        if text is None:
            raise _bad(name, value, "a text")
        if any(ord(c) < 32 and c not in "\t" for c in text):
            raise _bad(name, value, "a text without control characters")
        return text
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise _bad(name, value, f"a JSON list ({_describe(hint)})")
        inner = typing.get_args(hint)[:1] or (Any,)
        items = [check_value(f"{name}[{i}]", v, inner[0], finite=finite)
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(name, value, "a JSON object")
        return value
    return value  # another type (a class): left to the stage's own checks


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def check_params(ref: str, values: dict[str, Any], raw: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    """Check every value given for a stage, before anything is built or touched.

    Types come from the options' type hints; then the stage's config objects are built from
    the values (:func:`build_configs`), so their own rules (ranges, choices, files) refuse a
    bad value with the message its command gives.

    Args:
        ref: the stage reference.
        values: name -> parsed value.
        raw: name -> the text as given (see :func:`check_value`).

    Returns:
        The values as the factory should get them (texts kept as written, lists as tuples
        where the field is a tuple).

    Raises:
        ValidationError: an unknown name (when the list is complete), a value of the wrong
            type, or a value the stage's config refuses.
    """
    accepted, complete = accepted_params(ref)
    unknown = sorted(set(values) - set(accepted) - {"store"})
    if unknown and complete:
        raise ValidationError(
            f"stage {ref!r} has no parameter(s) {', '.join(unknown)}; it accepts: "
            f"{', '.join(sorted(accepted))}")
    out = dict(values)
    for name, value in values.items():
        if name in accepted:
            p = accepted[name]
            out[name] = check_value(name, value, p.hint, (raw or {}).get(name),
                                    finite=p.source is None)
    build_configs(ref, out)
    return out


def build_configs(ref: str, values: dict[str, Any]) -> list[Any]:
    """The config objects of a registered stage built from ``values`` (their own checks run;
    nothing else is touched). An unregistered factory's configs are its own business: [].

    Raises:
        ValidationError: a value a config refuses (its message names the option).
    """
    from curation.options import iter_keywords, settings_from

    sources = KEYWORD_SOURCES.get(factory_path(ref), ())
    built = []
    for src in sources:
        cls = _import(src)
        keys = set(iter_keywords(cls))
        built.append(settings_from(cls, {k: v for k, v in values.items() if k in keys},
                                   cls.__name__))
    return built
