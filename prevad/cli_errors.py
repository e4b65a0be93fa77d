"""How every command line of this repository reports bad input: one line, exit code 2.

``prevad``, ``prevad curate`` and ``lagovad`` wrap their commands with :func:`exit_on`, each
passing its package's exception root (:class:`prevad.errors.PrevadError`,
``lagovad.errors.LagovadError``) plus ``OSError`` (a missing or unreadable file the user named).
Anything else is a bug and keeps its traceback.

Numeric options are declared with :func:`number_option` (int or float, with its range): NaN,
infinities, text, fractions for whole numbers and values out of range end the same way, one
``error:`` line naming the option and its rule, before the command does anything.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status of a command that refused its input (typer's own usage errors use 2 as well).
EXIT_BAD_INPUT = 2


def fail(message: object) -> None:
    """Print ``error: MESSAGE`` on stderr and exit with :data:`EXIT_BAD_INPUT`.

    Args:
        message: The error or text; it should name the bad value and the rule it breaks.

    Raises:
        typer.Exit: Always.
    """
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def exit_on(*roots: type[BaseException]) -> Callable[[F], F]:
    """Decorate a typer command so the given exception types end in :func:`fail`.

    Args:
        *roots: Exception classes that mean bad input (a package's error root, ``OSError``).

    Returns:
        A decorator that keeps the command's signature (typer reads it).
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except roots as exc:
                # `from None`: the user gets the message, not the chain.
                try:
                    fail(exc)
                except typer.Exit as done:
                    raise done from None

        return wrapper  # type: ignore[return-value]

    return decorate


# ---------------------------------------------------------------------- numeric options
def number_rule(*, integer: bool, min: float | None = None, above: float | None = None,
                max: float | None = None) -> str:
    """The rule of a numeric option in words, e.g. ``a whole number >= 1``."""
    what = "a whole number" if integer else "a finite number"
    if min is not None and max is not None:
        return f"{what} in [{min:g}, {max:g}]"
    bounds = [f">= {min:g}" if min is not None else "", f"> {above:g}" if above is not None
              else "", f"<= {max:g}" if max is not None else ""]
    return " ".join([what, *(b for b in bounds if b)])


def check_number(value: Any, option: str, *, integer: bool, min: float | None = None,
                 above: float | None = None, max: float | None = None) -> Any:
    """``value`` when it keeps the rule of :func:`number_rule`, else :func:`fail` naming
    ``option``, the rule and the value (before any command work: nothing is written).

    NaN and infinities never pass, nor does a fraction for a whole-number option.
    """
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = isinstance(value, int)
    if ok:
        ok = ((min is None or value >= min) and (above is None or value > above)
              and (max is None or value <= max))
    if not ok:
        rule = number_rule(integer=integer, min=min, above=above, max=max)
        fail(f"{option} must be {rule}, got {value!r}")
    return value


def _parse_number(text: Any) -> Any:
    """Command-line text -> int, else float, else the text itself (the rule check names it)."""
    if not isinstance(text, str):
        return text
    s = text.strip()
    for kind in (int, float):
        try:
            return kind(s)
        except ValueError:
            pass
    return text


def number_option(default: Any, *param_decls: str, integer: bool, min: float | None = None,
                  above: float | None = None, max: float | None = None, help: str | None = None,
                  **kwargs: Any) -> Any:
    """A ``typer.Option`` for an int or float that refuses bad values with one line.

    Any value outside the rule (NaN, inf, text, a fraction for a whole number, out of range) is
    ``error: --OPTION must be RULE, got VALUE`` and exit code 2, before the command runs. The
    rule is added to the help text (in parentheses: square brackets are Rich markup).

    Args:
        default: the default (``None``: not given; a given value is still checked).
        *param_decls: option names, as for ``typer.Option``.
        integer: a whole number (int) or a float.
        min: smallest allowed value (inclusive).
        above: the value must be greater than this.
        max: largest allowed value (inclusive).
        help: the help text.
        **kwargs: passed to ``typer.Option``.
    """
    rule = number_rule(integer=integer, min=min, above=above, max=max)

    def check(param: typer.CallbackParam, value: Any) -> Any:
        names = [o for o in param.opts if o.startswith("--")] or list(param.opts)
        return check_number(value, names[0], integer=integer, min=min, above=above, max=max)

    return typer.Option(default, *param_decls, parser=_parse_number, callback=check,
                        metavar="INTEGER" if integer else "FLOAT",
                        help=f"{help} ({rule})" if help else f"({rule})", **kwargs)
