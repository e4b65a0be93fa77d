"""The root of every error :mod:`lagovad` raises on purpose.

Each module's domain error (``CheckpointError``, ``TrainError``, ``DefinitionError``, ...)
derives from :class:`LagovadError` (and, where callers relied on it, from the built-in it used
to be, e.g. ``ValueError``), so a caller can catch one class, as with ``prevad.PrevadError``.
The ``lagovad`` command line turns it into one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations


class LagovadError(Exception):
    """Base class of every error raised by :mod:`lagovad` (bad input, missing file, bad config)."""


class LagovadWarning(UserWarning):
    """Legal but surprising input (a cut definition, a resume with changed settings, ...).

    The ``lagovad`` command line prints it as one ``warning: ...`` line.
    """


class EvalError(LagovadError, ValueError):
    """Evaluation and metric errors (bad benchmark, bad file, missing data, bad metric input)."""
