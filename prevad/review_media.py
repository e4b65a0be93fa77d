"""Review media: the file Label Studio plays for one clip, and how its frames map to the source.

A clip (docs/DECISIONS.md, D1) is a span of a parent video file, or a whole video. Label Studio
counts frames from the video's *time*: frame ``k`` (1-based) of a task whose ``frameRate`` is
``F`` is the time slot ``[(k - 1) / F, k / F)``. On a variable-frame-rate (VFR) file those slots
do not match the decoded frames, so what a reviewer marks drifts from what a frame-indexed reader
(feature extraction, another tool) sees. The review media are therefore, by default, **constant
frame rate** (``cfr=True``):

- a clip is decoded from its parent (PyAV, from the key frame before its start) and encoded as
  H.264 mp4 with ``n`` frames at ``F = n / D`` frames per second, ``D`` = the clip's duration and
  ``n = max(1, round(D * target_fps))``; so the ``n`` frames fill the clip exactly and frames
  ``a..b`` are the clip-relative span ``[(a - 1) / n, b / n]`` with no rounding of the clip's
  length;
- media frame ``k`` shows the source frame visible at the middle of its slot, i.e. the last
  source frame whose timestamp is ``<= start + (k - 0.5) / F`` (the first frame when none is);
  past the parent's last frame the last frame is repeated;
- ``target_fps`` (``--media-fps``) defaults to the source's typical rate (the median interval
  between its frames, at most :data:`MAX_FPS`), so a 30 fps phone video with dropped frames
  stays 30 fps and nothing is lost;
- a whole video that already has a constant frame rate is served in place (no copy).

With ``cfr=False`` a whole video is served in place as it is, and a clip of a longer video is cut
keeping its own frame timestamps (frames from the one visible at the start to the end).

Each media file is recorded with its **mapping**: ``<store>/cache/review_media/<media_id>.json``
(``source_pts_s[k - 1]`` = timestamp, in the parent file's seconds from its first frame, of the
source frame shown as media frame ``k``), next to ``<media_id>.mp4`` when a file was made. The
import reads the frame count from the mapping named by the task, never from the task file alone.
Files are written to a temp name and renamed (a crash leaves no half file); the cache is safe to
delete (the next export makes the media again). Audio is not carried into cut media.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import statistics
import uuid
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from prevad.errors import ReviewError
from prevad.io import atomic_write_json

#: Part of every media id: bump when the way media are made changes.
CODE_VERSION = 1
CACHE_DIR = ("cache", "review_media")
#: Highest target frame rate chosen automatically (``--media-fps`` may ask for up to MAX_FPS).
DEFAULT_MAX_FPS = 60.0
MAX_FPS = 240.0
#: Encoder settings of the review media (H.264 + yuv420p + faststart: plays in every browser).
ENCODER = "libx264"
ENCODER_OPTIONS = {"crf": "20", "preset": "veryfast"}
#: Time base of the media written here (fine enough for any frame rate up to MAX_FPS).
OUT_TIME_BASE = Fraction(1, 90000)
#: Tolerance of the CFR check on a file's frame intervals (relative).
CFR_TOLERANCE = 1e-3
_MEDIA_ID = re.compile(r"^[0-9a-f]{20}$")


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """What a clip is: its id, its parent video and the span of the parent file it covers.

    ``start_s``/``end_s`` are None for a whole video (a clip of itself).
    """

    clip_id: str
    parent_video_id: str
    uri: str | None
    start_s: float | None = None
    end_s: float | None = None

    @property
    def whole(self) -> bool:
        """True when the clip is its whole parent file."""
        return self.start_s is None or self.end_s is None


@dataclass(frozen=True, slots=True)
class ClipMedia:
    """The media of one clip as the task shows it, and where its frames come from.

    Attributes:
        media_id: Key of the mapping file (hash of clip, file, span and settings).
        clip_id / parent_video_id: The clip and its parent video.
        path: The file Label Studio plays (a cache file, or the parent itself when in place).
        in_place: True when the parent file is played as it is (nothing made).
        cfr: True when the media's frames are evenly spaced (``fps`` is exact).
        fps: Frame rate given to Label Studio (``n_frames / duration_s``).
        n_frames: Frames of the media.
        duration_s: Duration of the media = of the clip.
        start_s / end_s: The clip's span in the parent file's seconds.
        source_pts_s: Per media frame, the parent's frame shown (seconds from its first frame).
    """

    media_id: str
    clip_id: str
    parent_video_id: str
    path: Path
    in_place: bool
    cfr: bool
    fps: float
    n_frames: int
    duration_s: float
    start_s: float
    end_s: float
    source_pts_s: tuple[float, ...] = ()


# ------------------------------------------------------------------------------------ probe


@dataclass(frozen=True, slots=True)
class _Probe:
    pts: list[Fraction]  # sorted frame timestamps, seconds from the first frame
    first: Fraction  # timestamp of the first frame in the file's own timeline
    width: int
    height: int

    @property
    def intervals(self) -> list[Fraction]:
        return [b - a for a, b in zip(self.pts, self.pts[1:], strict=False)]

    def typical_interval(self) -> Fraction | None:
        gaps = [g for g in self.intervals if g > 0]
        return statistics.median(gaps) if gaps else None

    def short_interval(self) -> Fraction | None:
        """The interval of the file's fastest sustained rate (10th percentile of intervals):
        a VFR file's busy parts keep all their frames at that rate."""
        gaps = sorted(g for g in self.intervals if g > 0)
        return gaps[len(gaps) // 10] if gaps else None

    def is_cfr(self) -> bool:
        gaps = self.intervals
        if not gaps:
            return True
        lo, hi = min(gaps), max(gaps)
        return lo > 0 and (hi - lo) <= lo * Fraction(CFR_TOLERANCE)

    def duration(self) -> Fraction:
        """Last timestamp plus one typical interval (the last frame is shown that long)."""
        step = self.typical_interval() or Fraction(1, 25)
        return self.pts[-1] + step


def _av_error(path: Path, exc: Exception) -> ReviewError:
    return ReviewError(f"video file {path} cannot be read for review media: "
                       f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")


def probe(path: Path) -> _Probe:
    """Frame timestamps and size of a file's first video stream (demuxed, not decoded).

    Results are kept per (file, size, modification time): the clips of one long parent are
    probed once.

    Raises:
        ReviewError: the file is missing, unreadable, has no video stream or no timestamps.
    """
    if not path.is_file():
        raise ReviewError(f"video file {path} does not exist (or is not a regular file)")
    st = path.stat()
    return _probe(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _probe(name: str, size: int, mtime_ns: int) -> _Probe:
    import av

    path = Path(name)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ReviewError(f"video file {path} has no video stream")
            stream = container.streams.video[0]
            tb = stream.time_base
            stamps = []
            for packet in container.demux(stream):
                ts = packet.pts if packet.pts is not None else packet.dts
                if packet.size and ts is not None:
                    stamps.append(Fraction(ts) * tb)
            width, height = stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _av_error(path, exc) from None
    if not stamps:
        raise ReviewError(f"video file {path} has no video frames with timestamps")
    stamps.sort()
    first = stamps[0]
    return _Probe([t - first for t in stamps], first, int(width), int(height))


# ------------------------------------------------------------------------------------ cache


def cache_dir(store_root: Path) -> Path:
    """The folder of the review media and their mappings."""
    return Path(store_root).joinpath(*CACHE_DIR)


def _parent_path(store_root: Path, uri: str) -> Path:
    p = Path(uri)
    return (p if p.is_absolute() else Path(store_root) / p).resolve()


def _media_id(spec: ClipSpec, parent: Path, cfr: bool, fps: float | None) -> str:
    st = parent.stat()
    parts = [CODE_VERSION, spec.clip_id, spec.parent_video_id, spec.uri, st.st_size,
             st.st_mtime_ns, repr(spec.start_s), repr(spec.end_s), cfr, repr(fps), ENCODER,
             sorted(ENCODER_OPTIONS.items())]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def load_media(store_root: Path, media_id: Any) -> ClipMedia | None:
    """The mapping recorded for ``media_id``, or None (unknown id, missing or malformed file).

    The mapping is a store file and is checked like any input: a malformed one is ignored.
    """
    if not isinstance(media_id, str) or not _MEDIA_ID.match(media_id):
        return None
    path = cache_dir(store_root) / f"{media_id}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        media = _media_from_json(raw)
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None
    if media.media_id != media_id:
        return None
    if not media.path.is_absolute():
        media = replace(media, path=Path(store_root) / media.path)
    return media if media.path.is_file() else None


def _media_from_json(raw: dict[str, Any]) -> ClipMedia:
    n, fps, dur = raw["n_frames"], raw["fps"], raw["duration_s"]
    ok = (
        isinstance(n, int) and not isinstance(n, bool) and n >= 1
        and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                and x > 0 for x in (fps, dur))
        and all(isinstance(raw[k], str) and raw[k] for k in ("media_id", "clip_id",
                                                              "parent_video_id", "path"))
        and isinstance(raw["source_pts_s"], list) and len(raw["source_pts_s"]) in (0, n)
    )
    if not ok:
        raise ValueError("malformed review media mapping")
    return ClipMedia(
        media_id=raw["media_id"], clip_id=raw["clip_id"],
        parent_video_id=raw["parent_video_id"], path=Path(raw["path"]),
        in_place=bool(raw["in_place"]), cfr=bool(raw["cfr"]), fps=float(fps), n_frames=n,
        duration_s=float(dur), start_s=float(raw["start_s"]), end_s=float(raw["end_s"]),
        source_pts_s=tuple(float(x) for x in raw["source_pts_s"]),
    )


def _save_mapping(store_root: Path, media: ClipMedia) -> None:
    raw = asdict(media)
    try:  # store-relative when inside the store: a moved store keeps its cache
        raw["path"] = media.path.relative_to(Path(store_root).resolve()).as_posix()
    except ValueError:
        raw["path"] = str(media.path)
    raw["source_pts_s"] = list(media.source_pts_s)
    raw["rule"] = (
        "media frame k (1-based) covers clip time [(k-1)/fps, k/fps) and shows the parent's "
        "frame at source_pts_s[k-1] (seconds from the parent's first frame)"
    )
    atomic_write_json(cache_dir(store_root) / f"{media.media_id}.json", raw)


# ------------------------------------------------------------------------------------ make


def media_for_clip(
    store_root: Path, spec: ClipSpec, *, cfr: bool = True, fps: float | None = None
) -> ClipMedia:
    """The review media of a clip: from the cache, in place, or made now (see module docs).

    Args:
        store_root: The store (media and mappings are cached under it).
        spec: The clip.
        cfr: Constant frame rate media (default); False keeps the source's timestamps.
        fps: Target frame rate of CFR media (default: the source's typical rate).

    Raises:
        ReviewError: no file, an unreadable file, a span outside the file, a bad ``fps``.
    """
    if fps is not None and not (isinstance(fps, int | float) and math.isfinite(fps)
                                and 0 < fps <= MAX_FPS):
        raise ReviewError(f"--media-fps must be a number in (0, {MAX_FPS:g}], got {fps!r}")
    if not spec.uri:
        raise ReviewError(f"video {spec.parent_video_id} has no file (uri): nothing to show")
    if spec.uri.startswith(("http://", "https://")):
        raise ReviewError(f"video {spec.parent_video_id} is remote ({spec.uri[:100]}); review "
                          "media are made from local files")
    parent = _parent_path(store_root, spec.uri)
    if not parent.is_file():
        raise ReviewError(f"video {spec.parent_video_id} file {parent} does not exist")
    media_id = _media_id(spec, parent, cfr, fps)
    cached = load_media(store_root, media_id)
    made = cache_dir(store_root).resolve() / f"{media_id}.mp4"
    if cached is not None and cached.clip_id == spec.clip_id and cached.path.resolve() in (
        parent, made
    ):
        return cached
    info = probe(parent)
    media, shown = _plan(store_root, spec, parent, info, media_id, cfr, fps)
    if not media.in_place:
        _cut(parent, info, media, [info.pts[i] for i in shown], cfr)
    _save_mapping(store_root, media)
    return media


def _span(spec: ClipSpec, info: _Probe) -> tuple[Fraction, Fraction]:
    end_of_file = info.duration()
    if spec.whole:
        return Fraction(0), end_of_file
    start, end = spec.start_s, spec.end_s
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise ReviewError(f"clip {spec.clip_id} span [{start}, {end}] is not a span of seconds "
                          "0 <= start < end")
    s, e = Fraction(start), Fraction(end)
    # a span may end a little past the last frame (rounding of cut times), not start past it
    if s >= end_of_file:
        raise ReviewError(f"clip {spec.clip_id} starts at {start:g} s, after the end of its "
                          f"video file ({float(end_of_file):g} s)")
    return s, e


def _plan(store_root: Path, spec: ClipSpec, parent: Path, info: _Probe, media_id: str,
          cfr: bool, fps: float | None) -> tuple[ClipMedia, list[int]]:
    """What the media will be, and the index of the source frame shown per media frame."""
    start, end = _span(spec, info)
    duration = end - start
    common = dict(media_id=media_id, clip_id=spec.clip_id, parent_video_id=spec.parent_video_id,
                  start_s=float(start), end_s=float(end))
    if spec.whole and (not cfr or (info.is_cfr() and fps is None)):
        n = len(info.pts)
        rate = Fraction(n) / duration
        return ClipMedia(path=parent, in_place=True, cfr=info.is_cfr(), fps=float(rate),
                         n_frames=n, duration_s=float(duration),
                         source_pts_s=tuple(float(t) for t in info.pts), **common), list(range(n))
    out = cache_dir(store_root).resolve() / f"{media_id}.mp4"
    if cfr:
        step = info.short_interval()
        target = Fraction(fps) if fps is not None else (
            min(Fraction(1) / step, Fraction(DEFAULT_MAX_FPS)) if step else Fraction(25))
        n = max(1, round(duration * target))
        rate = Fraction(n) / duration
        shown = _slot_frames(info.pts, start, rate, n)
        return ClipMedia(path=out, in_place=False, cfr=True, fps=float(rate), n_frames=n,
                         duration_s=float(duration),
                         source_pts_s=tuple(float(info.pts[i]) for i in shown), **common), shown
    kept = _frames_in(info.pts, start, end)
    n = len(kept)
    return ClipMedia(path=out, in_place=False, cfr=False, fps=float(Fraction(n) / duration),
                     n_frames=n, duration_s=float(duration),
                     source_pts_s=tuple(float(info.pts[i]) for i in kept), **common), kept


def _slot_frames(pts: list[Fraction], start: Fraction, rate: Fraction, n: int) -> list[int]:
    """Index of the source frame shown in each of ``n`` slots of ``1 / rate`` from ``start``:
    the last frame at or before the slot's middle (the first frame when none is)."""
    out, i = [], 0
    for k in range(n):
        middle = start + (k + Fraction(1, 2)) / rate
        while i + 1 < len(pts) and pts[i + 1] <= middle:
            i += 1
        out.append(i)
    return out


def _frames_in(pts: list[Fraction], start: Fraction, end: Fraction) -> list[int]:
    """Frames of [start, end): the one visible at ``start``, then every later one before
    ``end``."""
    first = max([i for i, t in enumerate(pts) if t <= start] or [0])
    return [i for i in range(first, len(pts)) if i == first or pts[i] < end]


def _cut(parent: Path, info: _Probe, media: ClipMedia, wanted: list[Fraction], cfr: bool
         ) -> None:
    """Decode the parent over the clip and write ``media.path`` (temp file + rename)."""
    import av

    media.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = media.path.with_name(f".{media.media_id}.{uuid.uuid4().hex[:8]}.tmp.mp4")
    start = Fraction(media.start_s)
    try:
        with av.open(str(parent)) as src, av.open(
            str(tmp), "w", format="mp4", options={"movflags": "+faststart"}
        ) as dst:
            stream = src.streams.video[0]
            stream.thread_type = "AUTO"
            width = max(2, info.width - info.width % 2)  # yuv420p needs even sizes
            height = max(2, info.height - info.height % 2)
            rate = Fraction(media.n_frames) / Fraction(media.duration_s)
            out = dst.add_stream(ENCODER, rate=rate.limit_denominator(1 << 16),
                                 options=dict(ENCODER_OPTIONS))
            out.width, out.height, out.pix_fmt = width, height, "yuv420p"
            out.time_base = OUT_TIME_BASE
            out.codec_context.time_base = OUT_TIME_BASE
            out.codec_context.gop_size = max(1, round(2 * float(rate)))
            if start > 1:  # from the key frame before the clip (the frame visible at its start)
                src.seek(int((info.first + start - 1) / stream.time_base), stream=stream,
                         backward=True, any_frame=False)
            _encode(src, stream, dst, out, info.first, wanted, start, rate if cfr else None,
                    width, height)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, media.path)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _av_error(parent, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _encode(src: Any, stream: Any, dst: Any, out: Any, first: Fraction, wanted: list[Fraction],
            start: Fraction, rate: Fraction | None, width: int, height: int) -> None:
    """Encode media frame k as the decoded frame at ``wanted[k]``; timestamps k / rate (CFR)
    or the source's own, shifted to start at 0."""
    k, last = 0, None
    for frame in src.decode(stream):
        if frame.pts is None:
            raise ValueError("a decoded frame has no timestamp")
        t = Fraction(frame.pts) * stream.time_base - first
        while k < len(wanted) and wanted[k] <= t:
            # wanted[k] is this frame or one before it that was already written once
            picture = frame if wanted[k] == t or last is None else last
            _put(dst, out, picture, k, wanted[k], start, rate, width, height)
            k += 1
        last = frame
        if k >= len(wanted):
            break
    while k < len(wanted) and last is not None:  # past the last frame: repeat it
        _put(dst, out, last, k, wanted[k], start, rate, width, height)
        k += 1
    if k < len(wanted):
        raise ValueError(f"decoded {k} of the {len(wanted)} frames the clip needs")
    for packet in out.encode():
        dst.mux(packet)


def _put(dst: Any, out: Any, frame: Any, k: int, source_t: Fraction, start: Fraction,
         rate: Fraction | None, width: int, height: int) -> None:
    picture = frame.reformat(width=width, height=height, format="yuv420p")
    when = Fraction(k) / rate if rate is not None else max(source_t - start, Fraction(0))
    if rate is None and k == 0:
        when = Fraction(0)
    picture.pts = round(when / OUT_TIME_BASE)
    picture.time_base = OUT_TIME_BASE
    for packet in out.encode(picture):
        dst.mux(packet)
