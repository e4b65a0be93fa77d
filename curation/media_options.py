"""What the media stages (``acquire``, ``record``) share: fetch settings, their checks, their
command-line options, and the pool that runs items concurrently.

:class:`FetchSettings` holds the bounds and the network rules of one run. It is validated when it
is built (``__post_init__``), so a bad value — from ``prevad curate acquire``, from ``prevad
curate run -p`` or from a flow — is one :class:`~prevad.errors.ValidationError` naming the option
before any item is touched. Its fields carry their own help text and flag name; the stage
commands are generated from the fields (:func:`settings_parameters`), so every parameter a
stage's factory accepts is also an option of its command, with the same name and check.

Stage modules subclass :class:`FetchSettings` with their own fields (same metadata) and list in
``version()`` what changes results (see :meth:`FetchSettings.version_params`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import threading
import traceback
import types
import typing
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from curation.netpolicy import NetworkPolicy, UrlRefused
from prevad.errors import ValidationError
from prevad.stage import Failed, ItemResult

GIB = 1024**3


def opt(default: Any, help: str, flag: str | None = None, *,  # noqa: A002 - typer's name
        factory: Callable[[], Any] | None = None) -> Any:
    """A settings field with its command-line flag and help text."""
    meta = {"help": help, "flag": flag}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _flag(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


# ------------------------------------------------------------------------------------- checks
def _name(f: str, cls: type) -> str:
    for fld in dataclasses.fields(cls):
        if fld.name == f:
            return f"{_flag(fld)} ({f})"
    return f


def check_number(settings: Any, name: str, *, integer: bool = False, minimum: float = 0.0,
                 strict: bool = True, optional: bool = False) -> None:
    """Raise unless ``settings.name`` is a finite number above ``minimum`` (or None if allowed).

    Raises:
        ValidationError: naming the option, the value and the rule.
    """
    value = getattr(settings, name)
    if value is None and optional:
        return
    rule = ("a whole number" if integer else "a finite number") + \
        (f" > {minimum:g}" if strict else f" >= {minimum:g}")
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
        if ok:
            object.__setattr__(settings, name, int(value))
            value = int(value)
    if ok and not math.isfinite(value):
        ok = False
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        raise ValidationError(f"{_name(name, type(settings))} must be {rule}"
                              f"{' or unset' if optional else ''}, got {value!r}")


def check_text(settings: Any, name: str, *, optional: bool = True) -> None:
    """Raise unless ``settings.name`` is a one-line string (or None)."""
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


# ----------------------------------------------------------------------------------- settings
@dataclass(slots=True)
class FetchSettings:
    """Bounds and network rules shared by ``acquire`` and ``record`` (see the module docstring).

    Raises:
        ValidationError: a value breaks its rule (NaN, infinite, negative, wrong type, a proxy
            that is not ``http://host:port``, an unreadable cookies file, ...).
    """

    max_bytes: int = opt(2 * GIB, "Most bytes one item may download; more is rejected "
                         "(too_large).")
    max_duration_s: float = opt(3 * 3600.0, "Longest video (s) an item may have; longer is "
                                "rejected (too_long).", "--max-duration")
    timeout_s: float | None = opt(900.0, "Wall-clock seconds one item may take, retries "
                                  "included; then it fails (timeout).", "--timeout")
    socket_timeout_s: float = opt(20.0, "Longest silence of one connection (s).",
                                  "--socket-timeout")
    retries: int = opt(3, "Retries of transient errors (5xx, resets, socket timeouts) per item "
                       "and run.")
    backoff_s: float = opt(1.0, "First retry delay (s), doubled each retry.", "--backoff")
    rate_limit: int | None = opt(None, "Bytes/s per host, shared by concurrent downloads.")
    min_interval_s: float = opt(0.0, "Seconds between two requests to one host.",
                                "--min-interval")
    concurrency: int = opt(4, "Items fetched at once.")
    allow_private_network: bool = opt(False, "Also fetch from loopback, private and link-local "
                                      "addresses (refused by default, docs/DECISIONS.md D4).")
    allow_addresses: tuple[str, ...] = opt((), "A non-public network allowed anyway: CIDR or "
                                           "address, optional :port (repeatable).",
                                           "--allow-address", factory=tuple)
    proxy: str | None = opt(None, "Upstream proxy http://[user:pass@]host:port.")
    cookies: str | None = opt(None, "Netscape cookies file (as yt-dlp --cookies).")
    user_agent: str | None = opt(None, "User-Agent header.")
    max_attempts: int = opt(3, "Attempts per item across runs before it is given up.")

    def __post_init__(self) -> None:
        check_number(self, "max_bytes", integer=True, minimum=0)
        check_number(self, "max_duration_s", minimum=0)
        check_number(self, "timeout_s", minimum=0, optional=self._timeout_optional())
        check_number(self, "socket_timeout_s", minimum=0)
        check_number(self, "retries", integer=True, minimum=0, strict=False)
        check_number(self, "backoff_s", minimum=0, strict=False)
        check_number(self, "rate_limit", integer=True, minimum=0, optional=True)
        check_number(self, "min_interval_s", minimum=0, strict=False)
        check_number(self, "concurrency", integer=True, minimum=0)
        if self.concurrency > 64:
            raise ValidationError(f"--concurrency (concurrency) must be at most 64, got "
                                  f"{self.concurrency}")
        check_number(self, "max_attempts", integer=True, minimum=0)
        check_bool(self, "allow_private_network")
        if isinstance(self.allow_addresses, str):
            object.__setattr__(self, "allow_addresses", (self.allow_addresses,))
        if not isinstance(self.allow_addresses, list | tuple) or \
                not all(isinstance(a, str) for a in self.allow_addresses):
            raise ValidationError(f"--allow-address (allow_addresses) must be a list of "
                                  f"networks, got {self.allow_addresses!r}")
        object.__setattr__(self, "allow_addresses", tuple(self.allow_addresses))
        for name in ("proxy", "cookies", "user_agent"):
            check_text(self, name)
        try:
            NetworkPolicy(allow_addresses=self.allow_addresses)
            if self.proxy is not None:
                from curation.fetch import parse_proxy

                parse_proxy(self.proxy)
            if self.cookies is not None:
                from curation.fetch import load_cookies

                load_cookies(self.cookies)
        except (UrlRefused, ValueError) as exc:
            raise ValidationError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - CurationError from the loaders
            raise ValidationError(str(exc)) from None

    def _timeout_optional(self) -> bool:
        return False

    def policy(self, schemes: tuple[str, ...], allow_file: bool = False) -> NetworkPolicy:
        """The :class:`NetworkPolicy` of these settings."""
        return NetworkPolicy(allow_private_network=self.allow_private_network,
                             allow_file=allow_file, schemes=tuple(schemes),
                             allow_addresses=self.allow_addresses)

    def version_params(self) -> dict[str, Any]:
        """The fetch settings that change results: bounds (which items are rejected or time
        out), the request identity (cookies, user agent, proxy: what a server answers).

        Pacing (rate limit, interval, concurrency) and retry counts only change how hard and how
        fast the stage tries, not what counts as a result, so they stay out.
        """
        params: dict[str, Any] = {
            "max_bytes": self.max_bytes, "max_duration_s": self.max_duration_s,
            "timeout_s": self.timeout_s, "socket_timeout_s": self.socket_timeout_s,
        }
        if self.cookies:
            params["cookies_sha256"] = hashlib.sha256(Path(self.cookies).read_bytes()).hexdigest()
        if self.user_agent:
            params["user_agent"] = self.user_agent
        if self.proxy:
            parts = urllib.parse.urlsplit(self.proxy)
            params["proxy"] = f"{parts.hostname}:{parts.port}"  # never the credentials
        return params


def settings_from(cls: type, values: dict[str, Any], what: str) -> Any:
    """``cls(**values)`` with unknown keys and bad types named (for flows and ``-p``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValidationError(f"{what}: unknown parameter(s) {unknown}; expected some of "
                              f"{sorted(names)}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValidationError(f"{what}: bad parameters {values}: {exc}") from None


# ------------------------------------------------------------------------------ command options
def _cli_type(hint: Any) -> tuple[Any, str]:
    """(typer annotation, kind) of a settings field type."""
    optional, base = False, hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None))
    origin = typing.get_origin(base)
    if origin is tuple or origin is list:
        return list[str], "list"
    if origin is dict or base is dict:
        return str | None, "json"
    if base is bool:
        return bool, "bool"
    return (base | None if optional else base), "plain"


def settings_parameters(cls: type, skip: Sequence[str] = ()) -> list[inspect.Parameter]:
    """Keyword-only typer parameters, one per settings field (flag and help from the field)."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        annotation, kind = _cli_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = _flag(f)
        decls = [f"{flag}/--no-{flag[2:]}"] if kind == "bool" else [flag]
        if kind == "list":
            default = list(default)
        elif kind == "json":
            default = json.dumps(default) if default else None
        help_text = f.metadata.get("help", "") + (" (JSON object)" if kind == "json" else "")
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
            default=typer.Option(default, *decls, help=help_text, show_default=True)))
    return params


def settings_from_cli(cls: type, values: dict[str, Any]) -> Any:
    """Settings from the values of :func:`settings_parameters` (JSON fields parsed)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        kind = _cli_type(hints[f.name])[1]
        if kind == "json":
            try:
                value = json.loads(value) if value else {}
            except ValueError as exc:
                raise ValidationError(f"{_flag(f)} must be a JSON object, got {value!r}: "
                                      f"{exc}") from None
        elif kind == "list":
            value = tuple(value)
        out[f.name] = value
    return settings_from(cls, out, cls.__name__)


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


def stage_command(app: typer.Typer, name: str, cls: type, run: Callable[..., Any],
                  doc: str, *, limit_help: str = "at most this many items",
                  extra: Sequence[inspect.Parameter] = (),
                  before: Callable[..., None] | None = None) -> None:
    """Register ``prevad curate NAME STORE [options]`` for a stage configured by ``cls``.

    Every field of ``cls`` becomes an option (:func:`settings_parameters`), checked when the
    settings are built — before ``before(store, **extra values)`` and
    ``run(store, settings, limit=..., progress=True)`` touch anything; the run's summary is
    printed as one line (:func:`curation.common.print_summary`); errors are one ``error:`` line,
    exit 2.
    """
    from curation.common import clean_errors, print_summary
    from prevad.store import Store

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("root", kw, annotation=Path,
                          default=typer.Argument(..., help="the store")),
        *extra,
        *settings_parameters(cls),
        inspect.Parameter("limit", kw, annotation=int | None,
                          default=typer.Option(None, min=1, help=limit_help)),
    ]
    own = [p.name for p in extra]

    @clean_errors
    def body(root: Path, limit: int | None, **values: Any) -> None:
        extras = {k: values.pop(k) for k in own}
        settings = settings_from_cli(cls, values)  # checked before anything is written
        store = Store(root)
        if before is not None:
            before(store, **extras)
        print_summary(run(store, settings, limit=limit, progress=True))

    app.command(name)(command_from(body, params, doc, f"{name.replace('-', '_')}_cmd"))


# ---------------------------------------------------------------------------------- item pool
class ItemPool:
    """Runs a stage's per-item function on ``concurrency`` threads, results in input order.

    Each thread keeps its own per-thread resources (yt-dlp instance, proxy) through
    :meth:`local`; an exception of one item becomes that item's :class:`Failed` result (so the
    stage runner never repeats the whole batch one by one).
    """

    def __init__(self, concurrency: int, name: str) -> None:
        self._size = concurrency
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def map(self, fn: Callable[[dict[str, Any]], ItemResult],
            rows: list[dict[str, Any]]) -> list[ItemResult]:
        """``fn`` over ``rows`` concurrently."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._size, thread_name_prefix=self._name)
        return list(self._pool.map(lambda r: _guard(fn, r), rows))

    def local(self, key: str, make: Callable[[], Any], close: Callable[[Any], None]) -> Any:
        """This thread's ``key`` resource, made on first use and closed by :meth:`close`."""
        value = getattr(self._local, key, None)
        if value is None:
            value = make()
            setattr(self._local, key, value)
            with self._lock:
                self._closers.append(lambda: close(value))
        return value

    def close(self) -> None:
        """Close every per-thread resource and stop the threads."""
        with self._lock:
            closers, self._closers = self._closers, []
        for c in closers:
            with contextlib.suppress(Exception):
                c()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _guard(fn: Callable[[dict[str, Any]], ItemResult], row: dict[str, Any]) -> ItemResult:
    try:
        return fn(row)
    except Exception:  # noqa: BLE001 - one item's bug must not fail its neighbours
        return Failed(traceback.format_exc(limit=4).strip()[-2000:])

