"""Locate an ffmpeg binary without root: PATH first, then the one shipped by `imageio-ffmpeg`.

yt-dlp (merging formats) and PySceneDetect (splitting videos) shell out to ffmpeg; a fresh
machine has none on PATH, so the pip-installed binary is the fallback and is passed explicitly.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path


class FfmpegNotFoundError(RuntimeError):
    """No usable ffmpeg binary was found."""


@lru_cache(maxsize=1)
def ffmpeg_path() -> Path:
    """Return the path of a working ffmpeg binary.

    Returns:
        The ffmpeg on PATH if there is one, else the binary bundled with `imageio-ffmpeg`.

    Raises:
        FfmpegNotFoundError: neither is available.
    """
    on_path = shutil.which("ffmpeg")
    if on_path:
        return Path(on_path)
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise FfmpegNotFoundError(
            "ffmpeg is not on PATH and imageio-ffmpeg is not installed; "
            "install it with `pip install imageio-ffmpeg`"
        ) from exc
    try:
        return Path(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise FfmpegNotFoundError(
            f"imageio-ffmpeg ships no binary for this platform: {exc}"
        ) from exc


def ffmpeg_version() -> str:
    """Return the first line of `ffmpeg -version` (proves the binary runs)."""
    out = subprocess.run(
        [str(ffmpeg_path()), "-hide_banner", "-version"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.splitlines()[0]


@lru_cache(maxsize=1)
def ffmpeg_dir() -> Path:
    """A folder holding an executable named ``ffmpeg`` (for tools that look for that name).

    yt-dlp's ``ffmpeg_location`` maps a file path to ``<its folder>/ffmpeg``, so the versioned
    name of the imageio-ffmpeg binary (``ffmpeg-linux-x86_64-v7...``) is not found. When the
    binary is not called ``ffmpeg``, a symlink of that name is made in a private cache folder.
    """
    exe = ffmpeg_path()
    if exe.name == "ffmpeg":
        return exe.parent
    import hashlib
    import os
    import tempfile

    tag = hashlib.sha256(str(exe).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"curation-ffmpeg-{os.getuid()}-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "ffmpeg"
    if not link.exists():
        tmp = folder / f".ffmpeg.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(exe)
        os.replace(tmp, link)  # atomic: concurrent callers never see a half-made link
    return folder
