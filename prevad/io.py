"""Atomic file writes: temp file in the same folder, fsync, os.replace.

A reader never sees a half-written file: either the old content (or no file) or the new one.
An output never replaces a special file: a directory, FIFO, socket or device already at the
destination is refused with :class:`~prevad.errors.SpecialFileError` before anything is written
(a symbolic link is replaced as a link; what it points to is never touched).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from prevad.errors import SpecialFileError

_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_file_kind(path: str | os.PathLike[str]) -> str | None:
    """What special file sits at ``path`` ("a FIFO (named pipe)", ...), or None.

    None when nothing is there, or a regular file or a symbolic link (the link itself is what an
    atomic write replaces). Not followed: ``lstat``.
    """
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return next((name for test, name in _KINDS if test(mode)), None)


def refuse_special(path: str | os.PathLike[str]) -> None:
    """Raise SpecialFileError when ``path`` is a directory, FIFO, socket or device."""
    kind = special_file_kind(path)
    if kind is not None:
        raise SpecialFileError(
            f"{path} is {kind}; an output must be a regular file (choose another path or "
            f"remove it)"
        )


def _default_mode() -> int:
    """0o666 minus the process umask (mkstemp creates 0o600 files; keep normal permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry so a rename inside it survives a power loss (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on clean exit fsync it and rename it over ``path``.

    Args:
        path: Final destination. Parent folders are created.
        mode: "wb" (binary) or "w" (text, UTF-8).

    Yields:
        The open temp file. If the block raises, the temp file is removed and ``path`` is untouched.

    Raises:
        SpecialFileError: ``path`` is a directory, FIFO, socket or device (checked before the
            temp file is made, and again just before the rename).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    dest = Path(path)
    refuse_special(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.chmod(tmp, _default_mode())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        refuse_special(dest)  # made while we wrote: still not replaced
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON and write it atomically (floats keep their repr)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` made without pyplot, for files only.

    Library code never calls ``matplotlib.use`` nor keeps pyplot state: the caller's backend
    (a notebook's inline one, an interactive window) is left alone, and the figure needs no
    ``plt.close`` (it is freed with its last reference). Save it with :func:`atomic_save_png`.

    Args:
        **kwargs: ``matplotlib.figure.Figure`` arguments (``figsize``, ``dpi``).
    """
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def atomic_save_png(fig: Any, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically (tight bounding box); returns the path."""
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)
