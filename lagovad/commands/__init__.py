"""The ``lagovad`` sub-commands; each module's ``register(app)`` adds its commands.

Every command is wrapped in :func:`handles_errors`: a :class:`~lagovad.errors.LagovadError`, a
:class:`~prevad.errors.PrevadError` (the store below) or an ``OSError`` becomes one
``error: ...`` line and exit code 2, exactly as in the ``prevad`` command line, and a
:class:`~lagovad.errors.LagovadWarning` one ``warning: ...`` line.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from lagovad.errors import LagovadError, LagovadWarning
from prevad.cli_errors import exit_on
from prevad.errors import PrevadError

F = TypeVar("F", bound=Callable[..., Any])

_exit_on_bad_input = exit_on(LagovadError, PrevadError, OSError)


def handles_errors(fn: F) -> F:
    """Wrap a command: domain errors -> ``error:`` + exit 2; LagovadWarning -> ``warning:``."""
    guarded = _exit_on_bad_input(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, LagovadWarning):
                    typer.echo(f"warning: {message}", err=True)
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            warnings.simplefilter("always", LagovadWarning)
            return guarded(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
