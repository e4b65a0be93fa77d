"""What ``prevad curate run STAGE -p key=value`` accepts for each stage, and the check of values.

A stage factory (:mod:`curation.stages`) takes its own keyword parameters plus, through
``**settings``, the fields of the stage's config dataclass (``AcquireSettings``, ``CleanPolicy``,
...) and, for model stages, the engine options of :func:`curation.stages.engine_config`.
:func:`accepted_params` lists them all with their type hints, read from those signatures and
dataclasses (so a field added to a config class is accepted and checked without a change here);
:data:`KEYWORD_SOURCES` says where each registered factory's ``**settings`` go.

:func:`check_params` checks every value against its type before any stage is built: wrong types,
NaN and infinities, negative numbers (and zero where a count, a size or a timeout is meant) are
refused with a :class:`~prevad.errors.ValidationError` naming the parameter, the value and what
was expected. The same list is what the CLI test compares with each stage command's options, so
no option is reachable only through ``-p``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prevad.errors import ValidationError

ENGINE = "curation.stages:engine_config"

#: Registered factory -> the callables / dataclasses its ``**settings`` keywords go to.
KEYWORD_SOURCES: dict[str, tuple[str, ...]] = {
    "curation.stages:acquire": ("curation.acquire:AcquireSettings",),
    "curation.stages:record": ("curation.record:RecordSettings",),
    "curation.stages:clean": ("curation.clean:CleanPolicy",),
    "curation.stages:describe": (ENGINE, "curation.describe:DescribeConfig"),
    "curation.stages:verify": (ENGINE, "curation.verify:VerifyConfig"),
    "curation.stages:judge": (ENGINE, "curation.judge:JudgeConfig"),
    "curation.stages:describe_anomaly": (ENGINE,
                                         "curation.describe_anomaly:DescribeAnomalyConfig"),
    "curation.stages:retrieve_settings": ("curation.retrieve:Settings",),
}

#: Config fields whose type is a small dataclass given as plain keywords on the command line:
#: field name -> {keyword: (field of the nested dataclass, type)} (see ``curation.stages._split``).
FLATTENED: dict[str, dict[str, tuple[str, type]]] = {
    "frames": {"frames": ("n", int), "frame_size": ("size", int)},
}

#: Numbers that may be negative (similarity thresholds; cosine scores go below 0).
SIGNED = frozenset({"min_score", "min_clip_mean"})
#: Numbers that must be > 0: counts, sizes, timeouts, rates.
POSITIVE = frozenset({
    "batch_size", "concurrency", "max_attempts", "max_tokens", "frames", "frame_size",
    "timeout", "socket_timeout_s", "io_timeout_s", "detect_width", "max_height", "top_k",
    "rrf_k", "rate_limit", "max_chars", "max_description_chars", "max_reason_chars",
    "max_claims", "max_claim_chars", "max_bytes", "max_duration_s", "wall_timeout_s",
    "max_corpus_bytes",
})
#: Numbers that are fractions in [0, 1].
FRACTIONS = frozenset({"black_fraction", "short_fraction", "unrelated_max_share"})


@dataclass(frozen=True, slots=True)
class Param:
    """One keyword a stage factory accepts.

    Attributes:
        name: the keyword (``-p name=value``).
        hint: its type hint (``int``, ``float | None``, ``tuple[str, ...]``, ...).
        default: its default (``inspect.Parameter.empty`` when required).
        origin: where it is defined, e.g. ``AcquireSettings.max_height``.
    """

    name: str
    hint: Any
    default: Any
    origin: str


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
    hints = typing.get_type_hints(cls)
    out: dict[str, Param] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
            else inspect.Parameter.empty)
        if f.name in FLATTENED:
            for kw, (inner, typ) in FLATTENED[f.name].items():
                out[kw] = Param(kw, typ, getattr(default, inner, inspect.Parameter.empty),
                                f"{cls.__name__}.{f.name}.{inner}")
            continue
        out[f.name] = Param(f.name, hints.get(f.name, Any), default, f"{cls.__name__}.{f.name}")
    return out


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
        obj = _import(src)
        if dataclasses.is_dataclass(obj):
            params.update(_from_dataclass(obj))
        else:
            params.update(_from_signature(obj, src.rpartition(":")[2])[0])
    return params, True


# ------------------------------------------------------------------ value checks
def _args(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _expected(name: str, kind: str) -> str:
    if kind not in ("an integer", "a number"):
        return kind
    if name in FRACTIONS:
        return f"{kind} between 0 and 1"
    if name in POSITIVE:
        return f"{kind} > 0"
    return kind if name in SIGNED else f"{kind} >= 0"


def _number(name: str, value: Any, integer: bool) -> Any:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        raise _bad(name, value, _expected(name, kind))
    if not math.isfinite(value):
        raise _bad(name, value, f"a finite {_expected(name, kind)[2:]}")
    low_ok = (value > 0 if name in POSITIVE else value >= 0) if name not in SIGNED else True
    if not low_ok or (name in FRACTIONS and value > 1):
        raise _bad(name, value, _expected(name, kind))
    return value if integer else float(value)


def _bad(name: str, value: Any, expected: str) -> ValidationError:
    text = repr(value)
    if len(text) > 80:  # a hostile value is named, never echoed whole
        text = f"{text[:60]}...({len(text)} characters)"
    return ValidationError(f"parameter {name}={text}: expected {expected}")


def check_value(name: str, value: Any, hint: Any, raw: str | None = None) -> Any:
    """``value`` checked against ``hint``; returns it (text re-read as text where needed).

    Args:
        name: the parameter (for the message and the range rules).
        value: the parsed value (JSON when it parsed, else the text).
        hint: the type hint.
        raw: the text as given on the command line (a ``str`` parameter keeps it as written:
            ``-p device=0`` means the text ``"0"``).

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
            return _check_one(name, value, opt, raw)
        except ValidationError as exc:
            errors.append(exc)
    raise errors[0] if len(errors) == 1 else _bad(name, value, _describe(hint))


def _check_one(name: str, value: Any, hint: Any, raw: str | None) -> Any:
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return value
    if origin is bool:
        if isinstance(value, bool):
            return value
        raise _bad(name, value, "true or false")
    if origin is int:
        return _number(name, value, integer=True)
    if origin is float:
        return _number(name, value, integer=False)
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
        items = [check_value(f"{name}[{i}]", v, inner[0]) for i, v in enumerate(value)]
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
    """Check every value given for a stage; unknown names are refused when the list is complete.

    Args:
        ref: the stage reference.
        values: name -> parsed value.
        raw: name -> the text as given (see :func:`check_value`).

    Returns:
        The values as the factory should get them (texts kept as written, lists as tuples
        where the field is a tuple).

    Raises:
        ValidationError: an unknown name, or a value of the wrong type or range.
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
            out[name] = check_value(name, value, accepted[name].hint, (raw or {}).get(name))
    return out
