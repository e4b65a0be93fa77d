"""A stage's options, declared once: the fields of its config dataclass.

Every curation stage is configured by one dataclass (``AcquireSettings``, ``CleanPolicy``,
``DescribeConfig``, ...). Its fields carry their command-line flag and help text (:func:`opt`)
and the class checks its own values when it is built (``__post_init__``, with the helpers
below). From that one declaration come:

- the stage command's options (:func:`settings_parameters`, :func:`stage_command`): one option
  per field, with the field's default, so ``prevad curate <stage> --help`` lists them all;
- what ``prevad curate run <stage> -p key=value`` and the flows accept
  (:mod:`curation.stage_params` reads the same fields, :func:`settings_from` builds the class);
- the checks, whichever way the stage is started: the class refuses a bad value when it is
  built, before any item is touched, with one :class:`~prevad.errors.ValidationError` naming the
  option (``--timeout (timeout_s) must be ...``).

A field whose value is itself a small dataclass (a model stage's ``frames: FrameConfig``) is
flattened: its own fields become options of their own (``--frames``, ``--frame-size``;
keywords ``frames``, ``frame_size``, from their ``key`` metadata).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

import typer

from prevad.errors import ValidationError


def opt(default: Any = None, help: str = "", flag: str | None = None, *,  # noqa: A002
        factory: Callable[[], Any] | None = None, key: str | None = None,
        required: bool = False, envvar: str | None = None, flatten: bool = False) -> Any:
    """A config field with its command-line option.

    Args:
        default: the default value (use ``factory`` for mutable ones).
        help: the option's help text.
        flag: the option's flag (default ``--<field-name>``).
        factory: a default factory.
        key: the keyword of ``-p`` and flows (default: the field's name; for the fields of a
            flattened dataclass, the name its option has there).
        required: the command requires the option (no default shown).
        envvar: an environment variable the command reads the option from.
        flatten: the field is a dataclass whose fields are options of their own (fields
            whose type is a dataclass always are).
    """
    meta = {"help": help, "flag": flag, "key": key, "required": required, "envvar": envvar,
            "flatten": flatten}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field[Any]) -> str:
    """The command-line flag of a field."""
    return f.metadata.get("flag") or "--" + keyword_of(f).replace("_", "-")


def keyword_of(f: dataclasses.Field[Any]) -> str:
    """The keyword (``-p`` name, flow parameter) of a field."""
    return f.metadata.get("key") or f.name


# ------------------------------------------------------------------------------ the fields
@dataclasses.dataclass(frozen=True, slots=True)
class OptionField:
    """One option of a config class (a field, or a field of a flattened field).

    Attributes:
        keyword: the ``-p`` keyword and the command function's parameter name.
        flag: the command-line flag.
        help: the help text.
        hint: the field's type hint.
        default: its default (``inspect.Parameter.empty`` when it has none).
        required: the command requires it.
        envvar: the environment variable the command also reads.
        name: the field's name in its class.
        parent: the flattened field it belongs to (None: a field of the class itself).
        owner: the class that declares it.
    """

    keyword: str
    flag: str
    help: str
    hint: Any
    default: Any
    required: bool
    envvar: str | None
    name: str
    parent: str | None
    owner: type

    @property
    def origin(self) -> str:
        """``Class.field`` (``Class.parent.field`` for a flattened one)."""
        return f"{self.owner.__name__}.{self.name}"


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return inspect.Parameter.empty


def option_fields(cls: type) -> list[OptionField]:
    """The options of a config dataclass, flattened fields expanded, in field order."""
    hints = typing.get_type_hints(cls)
    out: list[OptionField] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.metadata.get("flatten") or dataclasses.is_dataclass(hints[f.name]):
            inner_cls = hints[f.name]
            outer_default = _default(f)
            inner_hints = typing.get_type_hints(inner_cls)
            for g in dataclasses.fields(inner_cls):
                d = getattr(outer_default, g.name, inspect.Parameter.empty)
                out.append(OptionField(keyword_of(g), flag_of(g), g.metadata.get("help", ""),
                                       inner_hints[g.name], d, bool(g.metadata.get("required")),
                                       g.metadata.get("envvar"), g.name, f.name, inner_cls))
            continue
        out.append(OptionField(keyword_of(f), flag_of(f), f.metadata.get("help", ""),
                               hints[f.name], _default(f), bool(f.metadata.get("required")),
                               f.metadata.get("envvar"), f.name, None, cls))
    return out


# ------------------------------------------------------------------------------------ checks
def _name(attr: str, cls: type) -> str:
    """``--flag (keyword)`` of a field, for messages."""
    for f in dataclasses.fields(cls):
        if f.name == attr:
            return f"{flag_of(f)} ({keyword_of(f)})"
    return attr


def check_number(settings: Any, name: str, *, integer: bool = False,
                 minimum: float | None = 0.0, strict: bool = True, optional: bool = False,
                 maximum: float | None = None) -> None:
    """Raise unless ``settings.name`` is a finite number above ``minimum`` (None: any) and at
    most ``maximum``, or None if allowed. A whole float for an integer becomes an int, an int
    for a float becomes a float (so both spellings make one stage version).

    Raises:
        ValidationError: naming the option, the value and the rule.
    """
    value = getattr(settings, name)
    given = value  # shown as given (27, not the 27.0 it is stored as)
    if value is None and optional:
        return
    bound = "" if minimum is None else (f" > {minimum:g}" if strict else f" >= {minimum:g}")
    rule = ("a whole number" if integer else "a finite number") + bound + \
        (f" and <= {maximum:g}" if maximum is not None else "")
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
        if ok:
            object.__setattr__(settings, name, int(value))
            value = int(value)
    if ok and not integer and isinstance(value, int):
        # 27 and 27.0 are one setting: one stage version whichever way it was given
        try:
            object.__setattr__(settings, name, float(value))
        except OverflowError:
            ok = False
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if ok:
        ok = (minimum is None or (value > minimum if strict else value >= minimum)) and \
            (maximum is None or value <= maximum)
    if not ok:
        raise ValidationError(f"{_name(name, type(settings))} must be {rule}"
                              f"{' or unset' if optional else ''}, got {shown(given)}")


def shown(value: Any) -> str:
    """A value as messages show it: a whole float as the integer it is (``-27``, whether it
    came as ``-27`` in JSON or ``-27.0`` from the command line), anything else by ``repr``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def check_text(settings: Any, name: str, *, optional: bool = True) -> None:
    """Raise unless ``settings.name`` is a non-empty one-line string (or None)."""
    value = getattr(settings, name)
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip() or \
            any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValidationError(f"{_name(name, type(settings))} must be a non-empty one-line "
                              f"text, got {value!r}")


def check_bool(settings: Any, name: str) -> None:
    """Raise unless ``settings.name`` is a bool (JSON true/false)."""
    if not isinstance(getattr(settings, name), bool):
        raise ValidationError(f"{_name(name, type(settings))} must be true or false, got "
                              f"{getattr(settings, name)!r}")


def check_choice(settings: Any, name: str, choices: Sequence[str]) -> None:
    """Raise unless ``settings.name`` is one of ``choices``."""
    value = getattr(settings, name)
    if value not in choices:
        raise ValidationError(f"{_name(name, type(settings))} must be one of "
                              f"{', '.join(choices)}, got {value!r}")


def check_config(settings: Any, name: str, cls: type) -> None:
    """Raise unless ``settings.name`` is a ``cls`` (a nested config such as FrameConfig)."""
    value = getattr(settings, name)
    if not isinstance(value, cls):
        raise ValidationError(f"{_name(name, type(settings))} must be a {cls.__name__}, got "
                              f"{value!r}")


def none_text(settings: Any, name: str) -> None:
    """An empty text or ``none`` (any case) means None (options that can be switched off)."""
    value = getattr(settings, name)
    if isinstance(value, str) and value.strip().lower() in ("", "none"):
        object.__setattr__(settings, name, None)


# ------------------------------------------------------------------------------ building
def settings_from(cls: type, values: dict[str, Any], what: str | None = None) -> Any:
    """``cls`` built from option keywords (flattened fields gathered), checked by the class.

    Raises:
        ValidationError: an unknown keyword, a missing or mistyped one, or a value the class
            refuses.
    """
    what = what or cls.__name__
    options = option_fields(cls)
    known = {o.keyword: o for o in options}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValidationError(f"{what}: unknown parameter(s) {unknown}; expected some of "
                              f"{sorted(known)}")
    kwargs: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        o = known[key]
        if o.parent is None:
            kwargs[o.name] = value
        else:
            nested.setdefault(o.parent, {})[o.name] = value
    hints = typing.get_type_hints(cls)
    try:
        for parent, inner in nested.items():
            kwargs[parent] = hints[parent](**inner)
        return cls(**kwargs)
    except TypeError as exc:
        raise ValidationError(f"{what}: bad parameters {values}: {exc}") from None


def _cli_type(hint: Any) -> tuple[Any, str]:
    """(typer annotation, kind) of a field type: plain, bool, list or json."""
    optional, base = False, hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None))
    origin = typing.get_origin(base)
    if origin is tuple or origin is list:
        return list[str], "list"
    if origin is dict or base is dict:
        return JsonText, "json"
    if base is bool:
        return bool, "bool"
    return (base | None if optional else base), "plain"


class JsonText(str):
    """The type of JSON options on the command line (the class checks what they hold)."""


def _json_or_text(value: Any) -> Any:
    """A JSON option's value: parsed when it is JSON, else the text (refused by the class with
    its rule, as one ``error:`` line)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def settings_parameters(cls: type, skip: Sequence[str] = ()) -> list[inspect.Parameter]:
    """Keyword-only typer parameters, one per option of ``cls`` (flag, help and default from
    the field)."""
    params = []
    for o in option_fields(cls):
        if o.keyword in skip:
            continue
        annotation, kind = _cli_type(o.hint)
        default = o.default
        decls = [f"{o.flag}/--no-{o.flag[2:]}"] if kind == "bool" else [o.flag]
        extra: dict[str, Any] = {}
        if kind == "list":
            default = list(default or ())
        elif kind == "json":
            extra = {"parser": _json_or_text, "metavar": "JSON"}
        if o.required or default is inspect.Parameter.empty:
            default = ...
        params.append(inspect.Parameter(
            o.keyword, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
            default=typer.Option(default, *decls, help=o.help, show_default=default is not ...,
                                 envvar=o.envvar, **extra)))
    return params


def settings_from_cli(cls: type, values: dict[str, Any]) -> Any:
    """Settings from the values of :func:`settings_parameters` (lists as tuples)."""
    kinds = {o.keyword: _cli_type(o.hint)[1] for o in option_fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in kinds:
            continue
        if kinds[key] == "list":
            value = tuple(value)
        out[key] = value
    return settings_from(cls, out)


# ------------------------------------------------------------------------------ commands
def command_from(body: Callable[..., None], params: list[inspect.Parameter],
                 doc: str | None, name: str) -> Callable[..., None]:
    """A typer command function with an explicit signature (for generated options)."""

    def command(**values: Any) -> None:
        body(**values)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    command.__name__ = name
    return command


def store_argument() -> inspect.Parameter:
    """The ``STORE`` argument of every stage command."""
    return inspect.Parameter("root", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                             default=typer.Argument(..., help="the store"))


def json_option() -> inspect.Parameter:
    """``--json``: print the run's summary as one JSON line instead of the human line."""
    return inspect.Parameter(
        "as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
        default=typer.Option(False, "--json", help="print the run's summary as one JSON line "
                             "(the file saved under stage_runs/) instead of the human line"))


def stage_command(app: typer.Typer, name: str, cls: type, run: Callable[..., Any],
                  doc: str, *, limit_help: str = "at most this many items",
                  extra: Sequence[inspect.Parameter] = (),
                  before: Callable[..., None] | None = None,
                  after: Callable[..., None] | None = None) -> None:
    """Register ``prevad curate NAME STORE [options]`` for a stage configured by ``cls``.

    Every option of ``cls`` becomes a command option (:func:`settings_parameters`), checked
    when the settings are built — before ``before(store, **extra values)`` and
    ``run(store, settings, limit=..., progress=True)`` touch anything; the run's summary is
    printed one way (:func:`curation.common.print_summary`, ``--json``), then
    ``after(store, settings, summary, **extra values)`` may print more; errors are one
    ``error:`` line, exit 2.
    """
    from curation.common import clean_errors, print_summary
    from prevad.store import Store

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        store_argument(),
        *extra,
        *settings_parameters(cls),
        inspect.Parameter("limit", kw, annotation=int | None,
                          default=typer.Option(None, help=limit_help)),
        json_option(),
    ]
    own = [p.name for p in extra]

    @clean_errors
    def body(root: Path, limit: int | None, as_json: bool, **values: Any) -> None:
        extras = {k: values.pop(k) for k in own}
        check_limit(limit)
        settings = settings_from_cli(cls, values)  # checked before anything is written
        store = Store(root)
        if before is not None:
            before(store, **extras)
        summary = run(store, settings, limit=limit, progress=True)
        print_summary(summary, as_json=as_json)
        if after is not None:
            after(store, settings, summary, **extras)

    app.command(name)(command_from(body, params, doc, f"{name.replace('-', '_')}_cmd"))


def check_limit(limit: int | None) -> None:
    """``--limit``: a whole number >= 1, or unset.

    Raises:
        ValidationError: naming the value.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValidationError(f"--limit must be a whole number >= 1, got {limit!r}")


def iter_keywords(cls: type) -> Iterator[str]:
    """The option keywords of ``cls`` (what ``-p`` accepts for it)."""
    return (o.keyword for o in option_fields(cls))
