"""Helpers shared by the curation stages: errors, video probing, store paths, CLI plumbing."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import av
import typer

from prevad.errors import PrevadError
from prevad.stage import StageSummary
from prevad.store import Store

F = TypeVar("F", bound=Callable[..., Any])


class CurationError(PrevadError):
    """A curation stage cannot run (bad option, unreadable corpus, missing model)."""


class ProbeError(CurationError):
    """A file is not a complete, decodable video; the message says why."""


@dataclass(frozen=True, slots=True)
class ProbedVideo:
    """Metadata of a fully decoded video file."""

    duration_s: float
    fps: float
    n_frames: int
    width: int
    height: int
    codec: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for stage outputs)."""
        return {"duration_s": self.duration_s, "fps": self.fps, "n_frames": self.n_frames,
                "width": self.width, "height": self.height, "codec": self.codec}


#: Fraction of frames a file may miss against its own index before it counts as truncated.
TRUNCATION_TOLERANCE = 0.02


def probe_video(path: str | Path) -> ProbedVideo:
    """Open a file with PyAV, decode every frame and return its metadata.

    A full decode is the only reliable check: a truncated download often opens fine and fails
    (or stops early) only when the missing bytes are reached.

    Raises:
        ProbeError: the file is missing or empty, has no video stream, cannot be decoded, or
            yields clearly fewer frames than its index announces (truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"no file at {path}")
    if path.stat().st_size == 0:
        raise ProbeError(f"empty file (0 bytes): {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"not a readable video: {path.name}: {exc}") from exc
    try:
        if not container.streams.video:
            raise ProbeError(f"no video stream in {path.name}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        expected = int(stream.frames or 0)
        n, last_t = 0, 0.0
        try:
            for frame in container.decode(stream):
                n += 1
                if frame.time is not None:
                    last_t = float(frame.time)
        except (av.error.FFmpegError, OSError) as exc:
            raise ProbeError(f"undecodable after {n} frames: {path.name}: {exc}") from exc
        if n == 0:
            raise ProbeError(f"no frame could be decoded from {path.name}")
        if expected and expected - n > max(2, TRUNCATION_TOLERANCE * expected):
            raise ProbeError(
                f"truncated: decoded {n} of the {expected} frames in the index of {path.name}"
            )
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        duration = n / fps if fps > 0 else max(0.0, last_t - start)
        return ProbedVideo(
            duration_s=round(duration, 6), fps=fps, n_frames=n,
            width=int(stream.codec_context.width), height=int(stream.codec_context.height),
            codec=str(stream.codec_context.name),
        )
    finally:
        container.close()


def resolve_uri(store: Store, uri: str | None) -> Path:
    """A video ``uri`` as a path: relative uris are relative to the store root.

    Raises:
        CurationError: the uri is empty.
    """
    if not uri:
        raise CurationError("video has no uri (nothing was downloaded or recorded for it)")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    p = Path(uri)
    return p if p.is_absolute() else store.root / p


def load_json_arg(text: str | None, what: str) -> dict[str, Any]:
    """Parse a JSON object given on the command line (or {} for None).

    Raises:
        CurationError: not a JSON object.
    """
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise CurationError(f"{what} must be a JSON object, got {text!r}: {exc}") from None
    if not isinstance(obj, dict):
        raise CurationError(f"{what} must be a JSON object, got {text!r}")
    return obj


def clean_errors(fn: F) -> F:
    """CLI decorator: domain and I/O errors print one ``error: ...`` line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (PrevadError, OSError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def print_summary(summary: StageSummary) -> None:
    """Print a run summary: ok / rejected by reason / failed, items/s."""
    rej = ", ".join(f"{k}={v}" for k, v in sorted(summary.rejected.items())) or "none"
    typer.echo(
        f"{summary.stage} {summary.stage_version} run {summary.run_id}: {summary.items} items, "
        f"ok {summary.ok}, rejected {sum(summary.rejected.values())} ({rej}), "
        f"failed {summary.failed}, exhausted {summary.exhausted}, "
        f"{summary.items_per_s:.2f} items/s"
    )
