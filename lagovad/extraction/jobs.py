"""Extraction settings and bookkeeping: protocol, jobs, summary, errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lagovad.errors import LagovadError
from lagovad.image_encoder import ImageEncoder
from lagovad.video import (
    resolve_offset,
)

VIDEO_EXTENSIONS = (
    ".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts",
)
STAGE = "extract_features"
LOCAL_SOURCE = "local"
PROTOCOL_FILE = "extract_protocol.json"
FAILURES_FILE = "failures.jsonl"


class ExtractError(LagovadError):
    """Extraction cannot start as configured (bad inputs, conflicting outputs or protocol)."""


@dataclass(frozen=True)
class Protocol:
    """How frames are sampled and sized.

    Attributes:
        stride: One frame every `stride` decoded frames.
        offset: First sampled frame index (`stride // 2` = 4 by default, the authors' choice).
        size: Square side frames are resized to (no crop); must match the encoder's input size.
    """

    stride: int = 8
    offset: int = 4
    size: int = 224

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return {"frame_stride": self.stride, "frame_offset": self.offset, "frame_size": self.size}


def make_protocol(
    encoder: ImageEncoder, stride: int = 8, offset: int | None = None, size: int | None = None
) -> Protocol:
    """Protocol for `encoder`: `size` defaults to the encoder's input size and must equal it.

    Raises:
        ExtractError: If the size is not the encoder's square input size.
        ValueError: If stride/offset are invalid.
    """
    height, width = encoder.image_size
    if height != width:
        raise ExtractError(f"only square encoder inputs are supported, got {encoder.image_size}")
    size = height if size is None else size
    if size != height:
        raise ExtractError(
            f"frame size must equal the input size of {encoder.name} ({height}), got {size}"
        )
    return Protocol(stride=stride, offset=resolve_offset(stride, offset), size=size)


@dataclass
class VideoJob:
    """One video, or one clip of a video, to extract.

    Attributes:
        key: Output key: the clip id (store: a clip's segment id, or the video id of a video
            that was never split) or the file stem (folder).
        path: The video file (a clip's parent file).
        name: Stem used for exported .npy files (the source name, see ``sinks.export_names``).
        video: The store's clip row (store mode), else None.
        start_s: Clip start in the file, seconds (None: the file's start).
        end_s: Clip end, exclusive (None: the file's end).
    """

    key: str
    path: Path
    name: str
    video: Any = None
    start_s: float | None = None
    end_s: float | None = None


@dataclass
class ExtractSummary:
    """What a run did.

    Attributes:
        total: Videos considered.
        extracted: Videos extracted in this run.
        skipped: Videos already done (not decoded at all).
        failed: Videos that failed (see `failures`).
        decoded_videos: Videos whose decoding was started in this run.
        frames_decoded: Frames decoded in this run.
        features: Feature vectors computed in this run.
        seconds: Wall-clock time of the run.
        failures: One dict per failed video: key, path, error (type), reason.
        counts: Feature count per extracted video key.
        n_frames: Decoded frame count per extracted video key.
        exported: Arrays written to the export folder (store mode with an export folder:
            every requested clip, extracted in this run or before).
        commits: Store commits made (store mode; several clips per commit).
    """

    total: int = 0
    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    decoded_videos: int = 0
    frames_decoded: int = 0
    features: int = 0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    n_frames: dict[str, int] = field(default_factory=dict)
    exported: int = 0
    commits: int = 0

    @property
    def frames_per_s(self) -> float:
        """Decoded frames per second of wall-clock time."""
        return self.frames_decoded / self.seconds if self.seconds > 0 else 0.0


def unique_stems(paths: Sequence[Path]) -> None:
    """Raise ExtractError when two inputs share a file stem (outputs are named by stem)."""
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen and seen[p.stem].resolve() != p.resolve():
            raise ExtractError(
                f"two inputs share the file stem {p.stem!r} ({seen[p.stem]} and {p}); outputs are "
                f"named after the stem, so stems must be unique"
            )
        seen[p.stem] = p
