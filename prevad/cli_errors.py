"""How every command line of this repository reports bad input: one line, exit code 2.

``prevad``, ``prevad curate`` and ``lagovad`` wrap their commands with :func:`exit_on`, each
passing its package's exception root (:class:`prevad.errors.PrevadError`,
``lagovad.errors.LagovadError``) plus ``OSError`` (a missing or unreadable file the user named).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
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
