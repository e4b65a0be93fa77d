"""Video decoding for feature extraction (PyAV).

Only the sampled frames are ever converted to RGB: every frame has to be decoded (inter-frame
codecs need their references), but a frame that is not sampled is dropped as soon as it leaves the
decoder, without `reformat`/`to_ndarray`. Sampled frames are scaled and converted to RGB in one
libswscale call with bicubic interpolation, which is what FFmpeg's `scale` filter (used by decord,
the authors' loader) and CLIP's own preprocessing use.

The frame count is the number of frames actually decoded, not the container's metadata: the
sampled indices follow `arange(offset, n_frames, stride)` over the decoded frames.

A *span* ``[start_s, end_s)`` (a clip of a longer file, D1 in ``docs/DECISIONS.md``) is decoded
after one seek to the keyframe before ``start_s``: frames whose presentation time lies in the
span count, numbered from 0 at the span's first frame, so a clip is sampled exactly as if it
were a file of its own. One `VideoReformatter` is reused for a whole pass: `to_ndarray(width=...)`
builds a new scaling context for every frame, which cost about a third of the decoding thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from lagovad.errors import LagovadError

#: Slack (seconds) when comparing frame times with span bounds (spans are stored rounded to
#: microseconds; frames are at least a millisecond apart).
SPAN_EPS = 1e-4

#: Decoded-vs-indexed frame shortfall tolerated before a file is called truncated: MP4 edit lists
#: can legitimately hide a couple of priming frames that the sample table still counts.
TRUNCATION_TOLERANCE = 0.01


class VideoError(LagovadError):
    """Base class of the errors raised while reading a video."""


class VideoOpenFailure(VideoError):
    """The file does not exist, is empty, is not a media file, or has no video stream."""


class VideoDecodeError(VideoError):
    """The file opened but its frames could not be decoded (corrupt, truncated or empty stream)."""


@dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about a video, read without decoding.

    Attributes:
        path: The file.
        fps: Average frame rate (frames per second); 0.0 when the container does not say.
        width: Frame width in pixels.
        height: Frame height in pixels.
        n_frames_meta: Frame count from the container index (0 when unknown; may be wrong).
        duration_s: Duration from the container, seconds (0.0 when unknown).
    """

    path: Path
    fps: float
    width: int
    height: int
    n_frames_meta: int
    duration_s: float


@dataclass
class FrameChunk:
    """A run of consecutive sampled frames of one video.

    Attributes:
        indices: Frame indices (in decoded-frame order) of the frames, shape [N].
        frames: RGB frames, uint8, shape [N, H, W, 3].
    """

    indices: np.ndarray
    frames: np.ndarray


@dataclass
class DecodeStats:
    """What a decode pass did; filled while iterating.

    Attributes:
        n_frames: Frames decoded (the true frame count once the pass has finished).
        n_sampled: Frames converted to RGB.
        finished: True once the whole stream has been decoded without error.
    """

    n_frames: int = 0
    n_sampled: int = 0
    finished: bool = False
    sampled_indices: list[int] = field(default_factory=list)


def sample_indices(n_frames: int, stride: int = 8, offset: int | None = None) -> np.ndarray:
    """Frame indices sampled by the authors' protocol: `arange(offset, n_frames, stride)`.

    Args:
        n_frames: Number of frames in the video.
        stride: Take one frame every `stride` frames.
        offset: First sampled index; `stride // 2` when None (4 for stride 8).

    Returns:
        int64 array of frame indices.

    Raises:
        ValueError: If stride < 1, offset is outside [0, stride) or n_frames < 0.
    """
    offset = resolve_offset(stride, offset)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    return np.arange(offset, n_frames, stride, dtype=np.int64)


def resolve_offset(stride: int, offset: int | None) -> int:
    """Validate stride/offset and return the effective offset (`stride // 2` when None)."""
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if offset is None:
        return stride // 2
    if not 0 <= offset < stride:
        raise ValueError(f"offset must be in [0, stride={stride}), got {offset}")
    return offset


def _open(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    if not path.is_file():
        raise VideoOpenFailure(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoOpenFailure(f"video file is empty (0 bytes): {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoOpenFailure(f"cannot open {path} as a video: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoOpenFailure(f"{path} has no video stream")
    return container, container.streams.video[0]


def probe(path: str | Path) -> VideoInfo:
    """Read container metadata without decoding frames.

    Raises:
        VideoOpenFailure: If the file cannot be opened as a video.
    """
    path = Path(path)
    container, stream = _open(path)
    try:
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        duration_s = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
        return VideoInfo(
            path=path,
            fps=fps,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            n_frames_meta=int(stream.frames or 0),
            duration_s=duration_s,
        )
    finally:
        container.close()


def _as_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) from an int (square) or a (height, width) pair."""
    if size is None:
        return None
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        return size, size
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    return int(width), int(height)


def iter_sampled_frames(
    path: str | Path,
    *,
    stride: int = 8,
    offset: int | None = None,
    size: int | tuple[int, int] | None = 224,
    chunk_size: int = 64,
    threads: int = 0,
    stats: DecodeStats | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Iterator[FrameChunk]:
    """Decode a video (or a span of it) and yield its sampled frames, resized to `size`, in chunks.

    Args:
        path: Video file.
        stride: Sample one frame every `stride` decoded frames.
        offset: Index of the first sampled frame (`stride // 2` when None).
        size: Output size; an int gives a square (no crop, aspect ratio not kept), a pair is
            (height, width); None keeps the native size.
        chunk_size: Frames per yielded chunk (the last one may be shorter).
        threads: Decoder threads (0 lets FFmpeg choose).
        stats: Filled in while decoding; `stats.n_frames` is the true frame count at the end.
        start_s: Span start, seconds of presentation time (None: the file's start).
        end_s: Span end, exclusive (None: the file's end).

    Yields:
        FrameChunk objects in frame order (indices relative to the span's first frame).

    Raises:
        VideoOpenFailure: If the file cannot be opened as a video.
        VideoDecodeError: If decoding fails, yields no frame, or (whole file) stops well short
            of the frame count in the container index (truncated file).
    """
    path = Path(path)
    offset = resolve_offset(stride, offset)
    out_size = _as_size(size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    spanned = _check_span(start_s, end_s)
    stats = stats if stats is not None else DecodeStats()
    container, stream = _open(path)
    # Frame + slice threading: the decoder runs in FFmpeg's own threads, without the GIL.
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    scaler = VideoReformatter()
    indices: list[int] = []
    frames: list[np.ndarray] = []
    index = -1
    try:
        try:
            for index, frame in enumerate(_frames(container, stream, start_s, end_s)):
                if index < offset or (index - offset) % stride:
                    continue  # never converted: the decoded frame is simply dropped
                frames.append(_to_rgb(scaler, frame, out_size))
                indices.append(index)
                stats.n_sampled += 1
                stats.sampled_indices.append(index)
                if len(frames) == chunk_size:
                    stats.n_frames = index + 1
                    yield FrameChunk(np.asarray(indices, dtype=np.int64), np.stack(frames))
                    indices, frames = [], []
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(
                f"decoding {path} failed after {index + 1} frames: {exc}"
            ) from exc
        stats.n_frames = index + 1
        if spanned:
            if not stats.n_frames:
                raise VideoDecodeError(f"{path} has no frame between {start_s or 0:.3f} s and "
                                       f"{'the end' if end_s is None else f'{end_s:.3f} s'}")
        else:
            _check_complete(path, stream, stats.n_frames)
        if frames:
            yield FrameChunk(np.asarray(indices, dtype=np.int64), np.stack(frames))
        stats.finished = True
    finally:
        container.close()


def _check_span(start_s: float | None, end_s: float | None) -> bool:
    """Whether a span was given; refuses NaN, infinite, negative or empty spans."""
    for name, v in (("start_s", start_s), ("end_s", end_s)):
        if v is not None and (not np.isfinite(v) or v < 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ValueError(f"end_s must be > start_s, got [{start_s}, {end_s})")
    return start_s is not None or end_s is not None


def _frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
            start_s: float | None, end_s: float | None) -> Iterator[av.VideoFrame]:
    """Decoded frames whose time lies in ``[start_s, end_s)`` (all frames without a span)."""
    if start_s and stream.time_base is not None:
        # to the keyframe at or before the span (a seek lands on keyframes only)
        container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
    for n, frame in enumerate(container.decode(stream)):
        if start_s is None and end_s is None:
            yield frame
            continue
        t = frame.time if frame.time is not None else n / float(stream.average_rate or 25)
        if start_s is not None and t < start_s - SPAN_EPS:
            continue
        if end_s is not None and t >= end_s - SPAN_EPS:
            return
        yield frame


def _to_rgb(scaler: VideoReformatter, frame: av.VideoFrame,
            out_size: tuple[int, int] | None) -> np.ndarray:
    if out_size is None:
        return scaler.reformat(frame, format="rgb24", threads=1).to_ndarray()
    width, height = out_size
    return scaler.reformat(frame, width, height, "rgb24", interpolation="BICUBIC",
                           threads=1).to_ndarray()


def _check_complete(path: Path, stream: av.video.stream.VideoStream, n_decoded: int) -> None:
    if n_decoded == 0:
        raise VideoDecodeError(f"{path} has a video stream but no frame could be decoded")
    expected = int(stream.frames or 0)
    missing = expected - n_decoded
    if expected and missing > max(2, TRUNCATION_TOLERANCE * expected):
        raise VideoDecodeError(
            f"{path} looks truncated: decoded {n_decoded} of the {expected} frames in its index "
            f"(at most {max(2, int(TRUNCATION_TOLERANCE * expected))} may be missing)"
        )


def count_frames(path: str | Path, threads: int = 0) -> int:
    """Decode a whole video and return how many frames it really has (no RGB conversion).

    Raises:
        VideoOpenFailure, VideoDecodeError: As for `iter_sampled_frames`.
    """
    stats = DecodeStats()
    # A stride larger than any video converts nothing.
    for _ in iter_sampled_frames(path, stride=2**62, offset=2**62 - 1, size=None,
                                 threads=threads, stats=stats):
        pass
    return stats.n_frames


def write_video(
    path: str | Path,
    n_frames: int,
    frame_fn: Callable[[int], np.ndarray],
    *,
    fps: int = 25,
    lossless: bool = True,
    faststart: bool = False,
) -> Path:
    """Encode an H.264 mp4 whose frame i is ``frame_fn(i)`` (uint8 RGB [H, W, 3]).

    Used to synthesise test and demo videos with known content and frame count.

    Args:
        path: Output file (.mp4).
        n_frames: Number of frames.
        frame_fn: Frame i as an RGB uint8 array; every frame must have the same even size.
        fps: Frame rate.
        lossless: qp=0, so decoded pixels equal the input (up to yuv420p chroma subsampling).
        faststart: Put the index at the front of the file (as web videos do).

    Returns:
        ``path``.
    """
    path = Path(path)
    first = frame_fn(0)
    height, width = first.shape[:2]
    options = {"movflags": "faststart"} if faststart else {}
    codec_options = {"qp": "0"} if lossless else {"preset": "veryfast"}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps, options=codec_options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            image = first if i == 0 else frame_fn(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
