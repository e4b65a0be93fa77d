"""Helpers shared by the curation stages: errors, video probing, store paths, CLI plumbing."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
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
    """Metadata of a checked video file.

    Attributes:
        duration_s: from the first frame's timestamp to the end of the last frame (exact for
            variable frame rates).
        fps: average frame rate, ``n_frames / duration_s``.
        n_frames: video frames in the file.
        width, height: frame size in pixels.
        codec: video codec name.
        variable_frame_rate: the frame intervals differ by more than 1 % (VFR).
    """

    duration_s: float
    fps: float
    n_frames: int
    width: int
    height: int
    codec: str
    variable_frame_rate: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for stage outputs)."""
        return {"duration_s": self.duration_s, "fps": self.fps, "n_frames": self.n_frames,
                "width": self.width, "height": self.height, "codec": self.codec,
                "variable_frame_rate": self.variable_frame_rate}


#: Fraction of frames a file may miss against its own index before it counts as truncated
#: (MP4 edit lists can hide a couple of priming frames that the sample table still counts).
TRUNCATION_TOLERANCE = 0.02
#: Frames decoded from the start of the file to prove that the codec really decodes it.
DECODE_CHECK_FRAMES = 1


def probe_video(path: str | Path, *, full_decode: bool = False) -> ProbedVideo:
    """Check a video file and return its metadata.

    Every video packet is read (demuxed) but, by default, only the first
    :data:`DECODE_CHECK_FRAMES` frames are decoded: reading every packet finds what a truncated or
    cut download leaves behind (an unreadable index, an incomplete last packet, fewer packets than
    the index announces) at a fraction of a full decode's cost; decoding the first frames proves
    the codec works. Damage inside the coded picture data of a later frame is found only by
    ``full_decode=True`` (the ``clean`` stage decodes every frame anyway).

    Timing comes from the packets' timestamps: the duration runs from the earliest timestamp to
    the end of the latest frame (its timestamp plus its duration), so variable-frame-rate files
    get their true length (the container's average rate would not give it).

    Raises:
        ProbeError: the file is missing or empty, has no video stream, cannot be read or decoded,
            or is truncated.
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
        # frame threads delay the first picture by a frame per thread: one thread decodes the
        # check frame from the first packet; a full decode uses them all
        stream.thread_type = "AUTO" if full_decode else "NONE"
        timing = _read_packets(container, stream, path.name, full_decode)
        expected = int(stream.frames or 0)
        n = timing.n_frames
        if expected and expected - n > max(2, TRUNCATION_TOLERANCE * expected):
            raise ProbeError(
                f"truncated: read {n} of the {expected} frames in the index of {path.name}"
            )
        duration = timing.duration_s(stream)
        return ProbedVideo(
            duration_s=round(duration, 6), fps=n / duration if duration > 0 else 0.0,
            n_frames=n, width=int(stream.codec_context.width),
            height=int(stream.codec_context.height), codec=str(stream.codec_context.name),
            variable_frame_rate=timing.variable(),
        )
    finally:
        container.close()


@dataclass(slots=True)
class _Timing:
    """What the packet pass gathered (timestamps in the stream's time base)."""

    n_frames: int = 0
    first: int | None = None
    end: int | None = None
    deltas: list[int] = field(default_factory=list)
    pts: list[int] = field(default_factory=list)

    def add(self, pts: int | None, duration: int | None) -> None:
        self.n_frames += 1
        if pts is None:
            return
        self.pts.append(pts)
        self.first = pts if self.first is None else min(self.first, pts)
        stop = pts + (duration or 0)
        self.end = stop if self.end is None else max(self.end, stop)

    def _intervals(self) -> list[int]:
        ordered = sorted(self.pts)  # packets come in decode order; frames play in pts order
        return [b - a for a, b in zip(ordered, ordered[1:], strict=False) if b > a]

    def duration_s(self, stream: Any) -> float:
        tb = float(stream.time_base) if stream.time_base else 0.0
        if self.first is None or self.end is None or tb <= 0:
            rate = stream.average_rate or stream.guessed_rate
            return self.n_frames / float(rate) if rate else 0.0
        end = self.end
        if end <= max(self.pts):  # the last frame has no duration: use the typical interval
            steps = self._intervals()
            end = max(self.pts) + (sorted(steps)[len(steps) // 2] if steps else 0)
        return (end - self.first) * tb

    def variable(self) -> bool:
        steps = self._intervals()
        return bool(steps) and (max(steps) - min(steps)) > 0.01 * max(steps)


def _read_packets(container: Any, stream: Any, name: str, full_decode: bool) -> _Timing:
    """Demux every video packet (decoding the first few, or all); raise on damage."""
    timing = _Timing()
    decoded = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None:
                continue  # the demuxer's end-of-stream marker
            if packet.is_corrupt:
                raise ProbeError(f"truncated: frame {timing.n_frames + 1} of {name} is "
                                 "incomplete (the file ends inside it)")
            if packet.is_discard:
                continue  # outside the edit list: never shown
            timing.add(packet.pts, packet.duration)
            if full_decode or timing.n_frames <= DECODE_CHECK_FRAMES:
                decoded += len(packet.decode())
        if decoded < min(DECODE_CHECK_FRAMES, timing.n_frames):
            # the decoder holds pictures back for reordering: draining it hands them out
            # without decoding the packets that would push them out
            decoded += len(stream.codec_context.decode(None))
    except av.error.FFmpegError as exc:
        raise ProbeError(f"undecodable after {timing.n_frames} frames: {name}: {exc}") from exc
    if timing.n_frames == 0 or decoded == 0:
        raise ProbeError(f"no frame could be decoded from {name}")
    return timing


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


def summary_line(summary: StageSummary) -> str:
    """A stage run as one human line: items, ok / rejected by reason / failed, items/s."""
    rej = ", ".join(f"{k}={v}" for k, v in sorted(summary.rejected.items())) or "none"
    return (
        f"{summary.stage} {summary.stage_version} run {summary.run_id}: {summary.items} items, "
        f"ok {summary.ok}, rejected {sum(summary.rejected.values())} ({rej}), "
        f"failed {summary.failed}, exhausted {summary.exhausted}, "
        f"{summary.items_per_s:.2f} items/s"
    )


def print_summary(summary: Any, *, as_json: bool = False, lines: list[str] | None = None
                  ) -> None:
    """How every ``prevad curate`` command reports its run, one way for all of them.

    By default one human line on stdout (:func:`summary_line`, or the command's own ``lines``,
    the first being the totals) that names the summary file every run saves,
    ``stage_runs/<stage>/<run_id>.json``; with ``--json`` (``as_json``) exactly one line: that
    summary as JSON, for scripts.

    Args:
        summary: a :class:`~prevad.stage.StageSummary` (or any summary with ``to_dict()``
            holding ``stage`` and ``run_id``).
        as_json: print the JSON line instead.
        lines: the human lines (default: :func:`summary_line`).
    """
    data = summary.to_dict()
    if as_json:
        typer.echo(json.dumps(data))
        return
    lines = list(lines) if lines else [summary_line(summary)]
    lines[0] += f" (saved in stage_runs/{data['stage']}/{data['run_id']}.json)"
    for line in lines:
        typer.echo(line)
