"""Domain exceptions of the dataset layer. Each message names the bad value and states the rule."""

from __future__ import annotations


class PrevadError(Exception):
    """Base class of every error raised by :mod:`prevad`."""


class ValidationError(PrevadError, ValueError):
    """A record field breaks its rule (enum, range, type)."""


class UnknownCategoryError(ValidationError):
    """A category name is not in the taxonomy (or the benchmark's class list)."""


class SchemaMismatchError(PrevadError, TypeError):
    """A pa.Table does not have the exact schema of the table it is written to."""


class DuplicateIdError(PrevadError):
    """A key already stored (or repeated in one batch) comes with different content."""


class StoreNotFoundError(PrevadError, FileNotFoundError):
    """The folder is not a PreVAD store (no store.json)."""


class UnknownTableError(PrevadError, KeyError):
    """A table name is not one of the store's tables."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ReadOnlyQueryError(PrevadError):
    """A query would write (INSERT, COPY, ATTACH, ...); store queries are read-only."""


class QueryError(PrevadError):
    """DuckDB rejected a read-only query (syntax error, unknown column, ...)."""


class MalformedFileError(PrevadError, ValueError):
    """An input file cannot be parsed or has the wrong layout; the message gives file + position."""


class ReviewError(PrevadError):
    """The review round trip cannot run (no token, server refused or misbehaved, bad file, bad
    option); :mod:`prevad.review` re-exports it."""


class FeatureFileMissingError(PrevadError, FileNotFoundError):
    """A Feature row points at an .npy file that does not exist."""


class CorruptStoreError(PrevadError):
    """A store file (store.json, journal, catalog, a part file) cannot be read.

    The message names the file and says how to check (``prevad verify``) or fix it
    (``prevad repair``).
    """


class ReadOnlyStoreError(PrevadError):
    """A write was attempted on a store opened read-only (e.g. on a read-only path)."""


class SpecialFileError(PrevadError, OSError):
    """An output path holds a directory, FIFO, socket or device; outputs never replace one."""

    def __str__(self) -> str:  # OSError would format its args as a tuple
        return str(self.args[0]) if self.args else ""
