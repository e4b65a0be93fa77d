"""Locate an ffmpeg binary without root: PATH first, then the one shipped by `imageio-ffmpeg`.

yt-dlp (merging formats) and PySceneDetect (splitting videos) shell out to ffmpeg; a fresh
machine has none on PATH, so the pip-installed binary is the fallback and is passed explicitly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
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


# ------------------------------------------------------------------------------- running ffmpeg
#: Protocols ffmpeg may open when it reads from the network for us: HTTP(S) through our policy
#: proxy (``tcp`` to reach the proxy, ``httpproxy``/``tls`` for HTTPS tunnels, ``crypto`` for
#: AES-128 HLS). No ``file``, ``udp``, ``rtp``, ``concat``, ``data``, ...: a playlist cannot make
#: ffmpeg read a local file or open a socket of its own.
NETWORK_PROTOCOLS = "http,https,tcp,tls,crypto,httpproxy"
#: Only local files (cutting, scaling downloaded media).
LOCAL_PROTOCOLS = "file"
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class FfmpegFailed(RuntimeError):
    """ffmpeg exited with an error; the message is the tail of its own error output."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def ffmpeg_env(proxy_url: str | None) -> dict[str, str]:
    """The environment for an ffmpeg run: every proxy variable of ours removed, and ours set.

    ``no_proxy`` would let a host bypass the policy proxy, so it never reaches ffmpeg.
    """
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    if proxy_url:
        env["http_proxy"] = proxy_url
    return env


def run_ffmpeg(args: list[str], *, timeout_s: float, proxy_url: str | None = None,
               protocols: str = LOCAL_PROTOCOLS,
               on_start: Callable[[subprocess.Popen[bytes]], None] | None = None) -> None:
    """Run ``ffmpeg ARGS`` (quiet, no stdin, overwrite) and wait at most ``timeout_s``.

    Args:
        args: everything after the global options (inputs, filters, output).
        timeout_s: wall-clock limit; the process is killed when it runs out.
        proxy_url: the policy proxy every HTTP(S) request goes through.
        protocols: ``-protocol_whitelist`` of the inputs.
        on_start: called with the process (to kill it when a budget runs out).

    Raises:
        FfmpegFailed: non-zero exit (its error output), or killed at the timeout.
    """
    cmd = [str(ffmpeg_path()), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
           "-protocol_whitelist", protocols, *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=ffmpeg_env(proxy_url))
    if on_start is not None:
        on_start(proc)
    try:
        _, err = proc.communicate(timeout=max(0.01, timeout_s))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise FfmpegFailed(f"ffmpeg did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        text = err.decode("utf-8", "replace").strip()
        raise FfmpegFailed(text[-1000:] or f"ffmpeg exited with code {proc.returncode}",
                           proc.returncode)


def encode_args(*, reencode: bool, max_height: int | None) -> list[str]:
    """Output codec options: stream copy, or H.264/AAC scaled to at most ``max_height``."""
    if not reencode:
        return ["-c", "copy"]
    out = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "128k"]
    if max_height:
        # never upscale; -2 keeps the aspect ratio with an even width (H.264 needs even sizes)
        out += ["-vf", f"scale=w=-2:h='min(ih,{int(max_height)})'"]
    return out


def mp4_output(path: Path) -> list[str]:
    """Options and path of an mp4 output readable before it is complete (index first)."""
    return ["-movflags", "+faststart", "-f", "mp4", str(path)]


def cut_args(src: str, start: float | None, end: float | None) -> list[str]:
    """Input options for a section ``[start, end)`` of ``src`` (seconds; None = from the
    beginning / to the end). ``-ss`` before ``-i`` seeks fast and, when re-encoding, exactly."""
    out: list[str] = []
    if start:
        out += ["-ss", f"{start:.6f}"]
    out += ["-i", src]
    if end is not None:
        out += ["-t", f"{end - (start or 0.0):.6f}"]
    return out


def scale_args(src: Path, max_height: int) -> list[str]:
    """Arguments that re-encode ``src`` to at most ``max_height`` (all of it, audio kept)."""
    return ["-i", str(src), "-map", "0:v:0", "-map", "0:a:0?",
            *encode_args(reencode=True, max_height=max_height)]


def tls_args(url: str) -> list[str]:
    """Input options that make ffmpeg verify an https server against the same authorities as
    our own client (certifi's), not whatever store the binary was built to look for."""
    if not url.lower().startswith("https:"):
        return []  # (the option exists only for TLS inputs: ffmpeg refuses it otherwise)
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with requests
        return ["-tls_verify", "1"]
    return ["-tls_verify", "1", "-ca_file", certifi.where()]
