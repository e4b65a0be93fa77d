"""Frames for the multimodal stages: N frames spread uniformly over a kept span (PyAV).

:func:`sample_frames` decodes from the span's start (one seek) and converts only the frames
picked: the one at or after each target time ``start + (i + 0.5) * (end - start) / N``.
:class:`FrameCache` keeps each item's frames as a ``.npy`` under the store, so an item is decoded
once and shared by every stage that needs it (describe, verify, describe-anomaly).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from curation.options import check_number, opt
from prevad.errors import PrevadError
from prevad.io import atomic_write


class FrameError(PrevadError):
    """A video cannot give frames (missing file, unreadable, no decodable frame in the span)."""


@dataclass(frozen=True, slots=True)
class FrameConfig:
    """How many frames to sample and their size (square ``size`` x ``size`` RGB)."""

    n: int = opt(8, "Frames sampled uniformly from each item's span.", "--frames", key="frames")
    size: int = opt(224, "Frame side in pixels (square, >= 8).", "--frame-size",
                    key="frame_size")

    def __post_init__(self) -> None:
        check_number(self, "n", integer=True, minimum=1, strict=False)
        check_number(self, "size", integer=True, minimum=8, strict=False)


def _targets(start: float, end: float, n: int) -> np.ndarray:
    step = (end - start) / n
    return start + (np.arange(n) + 0.5) * step


def _rgb(frame: av.VideoFrame, size: int, scaler: VideoReformatter) -> np.ndarray:
    return scaler.reformat(frame, size, size, "rgb24", threads=1).to_ndarray()


def sample_frames(path: str | Path, start_s: float | None, end_s: float | None,
                  cfg: FrameConfig) -> np.ndarray:
    """``cfg.n`` uint8 RGB frames [n, size, size, 3] spread uniformly over [start_s, end_s].

    Args:
        path: the video file.
        start_s: span start in seconds (None: 0).
        end_s: span end in seconds (None: the stream's duration).
        cfg: number and size of frames.

    Raises:
        FrameError: the file is missing or unreadable, or no frame decodes in the span.
    """
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"video file {str(path)!r} does not exist")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise FrameError(f"cannot open video {str(path)!r}: {exc}") from None
    with container:
        if not container.streams.video:
            raise FrameError(f"{str(path)!r} has no video stream")
        stream = container.streams.video[0]
        start = float(start_s or 0.0)
        end = end_s
        if end is None:
            if stream.duration is not None and stream.time_base is not None:
                end = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                end = container.duration / av.time_base
        if end is not None and end <= start:
            end = start + 1e-3
        picked: list[np.ndarray | None] = [None] * cfg.n
        last: av.VideoFrame | None = None
        scaler = VideoReformatter()  # one scaling context for the item, not one per frame
        try:
            if start > 0 and stream.time_base is not None:
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            targets = _targets(start, end, cfg.n) if end is not None else None
            k = 0
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else 0.0
                if t < start - 1e-6:
                    continue
                if end is not None and t > end + 1e-6:
                    break
                last = frame
                if targets is None:
                    continue
                if k < cfg.n and t + 1e-6 >= targets[k]:
                    rgb = _rgb(frame, cfg.size, scaler)
                    while k < cfg.n and t + 1e-6 >= targets[k]:
                        picked[k] = rgb
                        k += 1
                    if k == cfg.n:
                        break
        except av.error.FFmpegError as exc:
            if last is None:
                raise FrameError(f"cannot decode {str(path)!r}: {exc}") from None
        if last is None:
            raise FrameError(
                f"no decodable frame in {str(path)!r} between {start:.3f}s and "
                f"{'the end' if end is None else f'{end:.3f}s'}"
            )
        if targets is None:
            # Unknown duration: only the last frame is known; repeat it (rare, e.g. raw streams).
            picked = [_rgb(last, cfg.size, scaler)] * cfg.n
        tail = None
        for i in range(cfg.n):
            if picked[i] is None:  # targets after the last decodable frame
                tail = _rgb(last, cfg.size, scaler) if tail is None else tail
                picked[i] = tail
    return np.stack(picked)  # type: ignore[arg-type]


class FrameCache:
    """Sampled frames of each item as ``<root>/<hash>.npy`` (shared across stages and runs)."""

    def __init__(self, root: str | Path) -> None:
        """Cache folder ``root`` (created on first write)."""
        self.root = Path(root)

    def key(self, path: Path, start_s: float | None, end_s: float | None,
            cfg: FrameConfig) -> str:
        """Hash of the file (path, size, mtime), the span and the frame config."""
        st = path.stat()
        payload = [str(path.resolve()), st.st_size, st.st_mtime_ns, start_s, end_s, cfg.n,
                   cfg.size]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]

    def get(self, path: str | Path, start_s: float | None, end_s: float | None,
            cfg: FrameConfig) -> np.ndarray:
        """The item's frames: from the cache, else decoded once and stored.

        Raises:
            FrameError: as :func:`sample_frames`.
        """
        path = Path(path)
        if not path.is_file():
            raise FrameError(f"video file {str(path)!r} does not exist")
        f = self.root / f"{self.key(path, start_s, end_s, cfg)}.npy"
        if f.is_file():
            try:
                return np.load(f, allow_pickle=False)
            except (OSError, ValueError):
                os.unlink(f)  # a damaged cache entry is decoded again
        frames = sample_frames(path, start_s, end_s, cfg)
        with atomic_write(f) as fh:
            np.save(fh, frames, allow_pickle=False)
        return frames
