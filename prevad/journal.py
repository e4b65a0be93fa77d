"""The commit journal and the paths the store reads from its own files.

A store's own files (the commit journal, claims, markers, feature rows' ``location``) are input
like any other: a damaged or hostile file must never make the store touch anything outside its
folder. Every path read from them goes through :func:`inside_root`, and a journal is checked as
a whole by :func:`read_journal` before any of its operations runs, so a journal that fails is
refused with one error naming it and nothing is moved or deleted.

What a valid journal may hold (anything else refuses the whole journal):

- ``renames``: ``[src, dst]`` pairs in one folder, ``src`` a hidden temp file (``.*.tmp``),
  ``dst`` a visible name that is not one of the store's own bookkeeping files;
- ``swaps`` (compaction): ``staging`` a folder directly under ``.staging/``, ``partition`` a
  partition folder ``tables/<table>/<partition column>=<value>`` of a known table, ``marker``
  one of ``new``, and ``new`` / ``old`` plain part-file names (``part-*.parquet``,
  ``part-*.keys.npy``);
- ``unlinks``: part files or key indexes inside a partition folder.

Every path is relative, without ``..``, and reaches its target through no symbolic link.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from prevad.errors import CorruptStoreError

JOURNAL = "_journal.json"
STAGING = ".staging"
QUARANTINE = "quarantine"
#: Store files a journal may never rename onto or delete.
BOOKKEEPING = frozenset({"store.json", "catalog.duckdb", ".lock", ".commit.lock", JOURNAL,
                         ".writing"})
_PART_NAME = re.compile(r"^part-[^/\\\x00]+\.(parquet|keys\.npy)$")
_KEYS = ("renames", "swaps", "unlinks")
_SWAP_KEYS = {"staging", "partition", "marker", "new", "old"}


class UnsafePathError(CorruptStoreError):
    """A path read from a store file leaves the store (absolute, ``..``, or via a symlink)."""


def inside_root(root: Path, rel: Any, what: str) -> Path:
    """``root / rel`` when ``rel`` is a relative path that stays inside ``root``.

    Args:
        root: the store folder (already resolved).
        rel: the path as read from a store file.
        what: names the value in the error (e.g. "journal /s/_journal.json rename target").

    Raises:
        UnsafePathError: ``rel`` is not a non-empty string, is absolute, holds ``..`` or a NUL,
            or one of its folders is a symbolic link (which could lead out of the store).
    """
    if not isinstance(rel, str) or not rel.strip() or "\x00" in rel:
        raise UnsafePathError(f"{what}: {rel!r} is not a path")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise UnsafePathError(
            f"{what}: {rel!r} leaves the store {root} (paths must be relative, without '..')")
    full = root.joinpath(*pure.parts)
    parent = full.parent
    # resolve() follows every symlink on the way: equal means there is none (a folder that does
    # not exist yet resolves to itself)
    if parent.resolve() != parent:
        raise UnsafePathError(
            f"{what}: {rel!r} goes through a symbolic link ({parent} -> {parent.resolve()}); "
            f"the store's folders must be real folders")
    return full


@dataclass(frozen=True, slots=True)
class Swap:
    """A compaction swap: the staging folder replaces the live partition folder."""

    staging: Path
    partition: Path
    marker: str
    new: tuple[str, ...]
    old: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Journal:
    """A checked journal: every path inside the store and of the kind its operation needs."""

    path: Path
    renames: tuple[tuple[Path, Path], ...]
    swaps: tuple[Swap, ...]
    unlinks: tuple[Path, ...]


def _refuse(path: Path, why: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"journal {path} is refused ({why}); nothing was applied and nothing was changed: "
        f"`prevad repair {path.parent}` sets it aside (its commit is rolled back)"
    )


def read_journal(path: Path, root: Path, tables: Mapping[str, str]) -> Journal:
    """Read and check a commit journal (see the module docstring for what it may hold).

    Args:
        path: the journal file.
        root: the store folder (resolved).
        tables: table name -> its partition column.

    Raises:
        CorruptStoreError: unreadable, or any operation fails a check (the message names the
            journal and the first bad value; nothing has been done).
    """
    if path.is_symlink() or not path.is_file():  # a FIFO would block the reader forever
        raise _refuse(path, "not a regular file")
    try:
        ops = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise _refuse(path, "not valid JSON") from None
    except OSError as exc:  # a folder, a FIFO opened elsewhere, ...
        raise _refuse(path, f"unreadable: {exc.strerror}") from None
    if not isinstance(ops, dict) or set(ops) - set(_KEYS) or not all(
            isinstance(ops.get(k, []), list) for k in _KEYS):
        raise _refuse(path, "not an object of renames / swaps / unlinks lists")
    try:
        return Journal(
            path,
            tuple(_rename(root, path, r) for r in ops.get("renames", [])),
            tuple(_swap(root, path, s, tables) for s in ops.get("swaps", [])),
            tuple(_unlink(root, path, u, tables) for u in ops.get("unlinks", [])),
        )
    except UnsafePathError as exc:
        raise _refuse(path, str(exc)) from None


def _rename(root: Path, journal: Path, pair: Any) -> tuple[Path, Path]:
    what = f"rename {pair!r}"[:200]
    if not (isinstance(pair, list) and len(pair) == 2):
        raise UnsafePathError(f"{what}: not a [source, target] pair")
    src = inside_root(root, pair[0], what)
    dst = inside_root(root, pair[1], what)
    if src.parent != dst.parent or not (src.name.startswith(".") and src.name.endswith(".tmp")):
        raise UnsafePathError(f"{what}: the source must be a hidden .tmp file next to the target")
    rel = dst.relative_to(root)
    if (dst.name.startswith(".") or str(rel) in BOOKKEEPING
            or rel.parts[0] in (QUARANTINE, STAGING)):
        raise UnsafePathError(f"{what}: the target is not a file a commit may write")
    return src, dst


def _partition(root: Path, rel: Any, what: str, tables: Mapping[str, str]) -> Path:
    full = inside_root(root, rel, what)
    parts = full.relative_to(root).parts
    if (len(parts) != 3 or parts[0] != "tables" or parts[1] not in tables
            or not parts[2].startswith(f"{tables[parts[1]]}=")):
        raise UnsafePathError(f"{what}: {rel!r} is not a partition folder "
                              f"tables/<table>/<partition column>=<value>")
    return full


def _swap(root: Path, journal: Path, swap: Any, tables: Mapping[str, str]) -> Swap:
    what = "swap"
    if not isinstance(swap, dict) or set(swap) != _SWAP_KEYS:
        raise UnsafePathError(f"{what}: needs exactly the fields {sorted(_SWAP_KEYS)}")
    staging = inside_root(root, swap["staging"], what)
    rel = staging.relative_to(root).parts
    if len(rel) != 2 or rel[0] != STAGING:
        raise UnsafePathError(f"{what}: staging {swap['staging']!r} is not a folder directly "
                              f"under {STAGING}/")
    if staging.is_symlink():
        raise UnsafePathError(f"{what}: staging {swap['staging']!r} is a symbolic link")
    partition = _partition(root, swap["partition"], what, tables)
    if partition.is_symlink():
        raise UnsafePathError(f"{what}: partition {swap['partition']!r} is a symbolic link")
    names = {}
    for key in ("new", "old"):
        value = swap[key]
        if not isinstance(value, list) or not all(
                isinstance(n, str) and _PART_NAME.match(n) for n in value):
            raise UnsafePathError(f"{what}: {key!r} must list part-file names, got "
                                  f"{str(value)[:120]!r}")
        names[key] = tuple(value)
    if swap["marker"] not in names["new"]:
        raise UnsafePathError(f"{what}: marker {swap['marker']!r} is not one of the new files")
    return Swap(staging, partition, swap["marker"], names["new"], names["old"])


def _unlink(root: Path, journal: Path, rel: Any, tables: Mapping[str, str]) -> Path:
    what = "unlink"
    full = inside_root(root, rel, what)
    parts = full.relative_to(root).parts
    if len(parts) != 4 or not _PART_NAME.match(parts[3]):
        raise UnsafePathError(f"{what}: {rel!r} is not a part file of a partition folder")
    _partition(root, str(PurePosixPath(*parts[:3])), what, tables)
    return full
