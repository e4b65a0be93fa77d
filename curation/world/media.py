"""Frames and files of the generated world: scenes, title cards, events, H.264 encoding.

Everything here is a pure function of a :class:`~curation.world.plan.VideoPlan` (and its seeds):
rendering a video twice gives the same frames, so a near-duplicate is rendered again from its
original's plan (resized, trimmed, or encoded differently) instead of being decoded and edited.

Pictures are small and cheap on purpose (numpy slices on a pre-drawn canvas, libx264
``ultrafast``): 10,000 videos must be written in minutes on two cores.

- **Scene**: a muted palette (saturation <= 0.45) drawn as a sky/ground gradient with blocks,
  seen through a slowly panning camera, with one to three small moving objects. Consecutive
  frames differ by a pixel of pan, so a shot never looks like a cut; two scenes of one video are
  drawn with hues at least 90 degrees apart, so a cut between them is a real content change.
- **Title card**: a static dark card with light "text" bars (intros and outros).
- **Black**: black frames (leaders, tails, gaps between shots).
- **Event** (:data:`PATTERNS`, one per top-level category): a saturated overlay that fades in
  and out over :data:`EVENT_RAMP` frames (half of them outside the event's span, where the
  overlay is under half strength), so that it is not a cut, and covers a large part of the
  picture, so that a 32x32 CLIP thumbnail sees it. The patterns differ in colour and layout; see
  ``docs/WORLD.md`` for how well the tiny random CLIP tells them apart.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

#: Frames over which an event fades in (and out): no single frame step is a cut.
EVENT_RAMP = 12
#: Frames of the fade that lie outside the event's span, on each side: the span (the truth) is
#: where the overlay has at least half its strength.
EVENT_FADE = EVENT_RAMP // 2
#: Pixels of canvas around the visible picture (room for the camera pan).
PAD = 24

#: Top-level category -> event pattern name (the visual anomaly planted in its videos).
PATTERNS: dict[str, str] = {
    "Vehicle Accident": "collision",
    "Violence": "red_streaks",
    "Robbery": "dark_figure",
    "Production Accident": "falling_block",
    "Fire-related Accident": "fire_burst",
    "Animal-related Violence": "striped_beast",
    "Daily Accident": "splash",
}


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


@dataclass(frozen=True, slots=True)
class SceneLook:
    """What a scene looks like: its seed and base hue (turns, 0..1)."""

    seed: int
    hue: float


@lru_cache(maxsize=64)
def _canvas(seed: int, hue: float, width: int, height: int) -> np.ndarray:
    """The scene's static picture, PAD pixels larger than the frame on every side (uint8)."""
    rng = np.random.default_rng(seed)
    h, w = height + 2 * PAD, width + 2 * PAD
    top = _rgb(hue + rng.uniform(-0.05, 0.05), rng.uniform(0.1, 0.4), rng.uniform(0.55, 0.85))
    low = _rgb(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.15, 0.45), rng.uniform(0.25, 0.5))
    horizon = int(h * rng.uniform(0.35, 0.65))
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    col = np.where(np.arange(h)[:, None] < horizon, top * (1 - 0.3 * t), low * (0.8 + 0.2 * t))
    img = np.broadcast_to(col[:, None, :], (h, w, 3)).copy()
    for _ in range(int(rng.integers(6, 14))):  # buildings, trees, furniture: muted blocks
        bw, bh = int(rng.integers(w // 12, w // 4)), int(rng.integers(h // 8, h // 2))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(horizon - bh // 2, h - bh // 4))
        y = min(max(y, 0), h - 1)
        img[y:y + bh, x:x + bw] = _rgb(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.1, 0.45),
                                       rng.uniform(0.2, 0.8))
    # a little fixed texture so that the encoder and the detectors see a natural picture
    img += rng.normal(0, 4, size=(h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class _Mover:
    x: float
    y: float
    vx: float
    vy: float
    size: tuple[int, int]
    color: tuple[int, int, int]


@lru_cache(maxsize=64)
def _motion(seed: int, hue: float, width: int, height: int
            ) -> tuple[tuple[float, float, float, float], tuple[_Mover, ...]]:
    rng = np.random.default_rng(seed + 7919)
    pan = (rng.uniform(0, 2 * PAD), rng.uniform(0, 2 * PAD), rng.uniform(-0.8, 0.8),
           rng.uniform(-0.4, 0.4))
    movers = []
    for _ in range(int(rng.integers(1, 4))):
        c = _rgb(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.2, 0.45), rng.uniform(0.3, 0.9))
        movers.append(_Mover(rng.uniform(0, width), rng.uniform(height * 0.4, height * 0.9),
                             rng.uniform(-2.5, 2.5), rng.uniform(-0.5, 0.5),
                             (int(rng.integers(width // 24, width // 10)),
                              int(rng.integers(height // 16, height // 6))),
                             tuple(int(v) for v in c)))
    return pan, tuple(movers)


def _bounce(x0: float, v: float, t: int, lo: float, hi: float) -> int:
    """Position at time t of a point moving at v and bouncing between lo and hi."""
    span = hi - lo
    if span <= 0:
        return int(lo)
    p = (x0 - lo + v * t) % (2 * span)
    return int(lo + (p if p <= span else 2 * span - p))


def scene_frame(look: SceneLook, t: int, width: int, height: int) -> np.ndarray:
    """Frame ``t`` of a scene: the canvas through a panning camera, plus moving objects."""
    canvas = _canvas(look.seed, look.hue, width, height)
    (px, py, vx, vy), movers = _motion(look.seed, look.hue, width, height)
    ox = _bounce(px, vx, t, 0, 2 * PAD)
    oy = _bounce(py, vy, t, 0, 2 * PAD)
    img = canvas[oy:oy + height, ox:ox + width].copy()
    for m in movers:
        x = int((m.x + m.vx * t) % (width + m.size[0])) - m.size[0]
        y = _bounce(m.y, m.vy, t, 0, height - m.size[1])
        img[max(y, 0):y + m.size[1], max(x, 0):max(x + m.size[0], 0)] = m.color
    return img


@lru_cache(maxsize=32)
def title_card(seed: int, width: int, height: int) -> np.ndarray:
    """A static title card: a dark plain background with light text bars."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = _rgb(rng.uniform(), rng.uniform(0.2, 0.6), rng.uniform(0.08, 0.3)).astype(np.uint8)
    fg = _rgb(rng.uniform(), rng.uniform(0.0, 0.2), rng.uniform(0.85, 1.0)).astype(np.uint8)
    rows = int(rng.integers(2, 4))
    for r in range(rows):
        bh = max(2, height // 16)
        y = int(height * (0.3 + 0.4 * r / max(rows - 1, 1))) - bh // 2
        bw = int(width * rng.uniform(0.35, 0.75))
        x = (width - bw) // 2
        for cx in range(x, x + bw, max(4, width // 40)):  # letters: bars with gaps
            img[y:y + bh, cx:cx + max(3, width // 55)] = fg
    img.setflags(write=False)  # shared by every frame of the card (cached)
    return img


def black_frame(width: int, height: int) -> np.ndarray:
    """A black frame."""
    return np.zeros((height, width, 3), np.uint8)


# ------------------------------------------------------------------------------------ events
def _blend(img: np.ndarray, y0: int, y1: int, x0: int, x1: int, color: np.ndarray,
           alpha: float) -> None:
    """Paint ``color`` (an RGB triple or an image of the box's shape) over a box, in place."""
    h, w = img.shape[:2]
    y0, y1, x0, x1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if y1 <= y0 or x1 <= x0:
        return
    box = img[y0:y1, x0:x1].astype(np.float32)
    c = color if np.ndim(color) == 1 else color[: y1 - y0, : x1 - x0]
    img[y0:y1, x0:x1] = (box * (1 - alpha) + np.asarray(c, np.float32) * alpha).astype(np.uint8)


def _radial(h: int, w: int, inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2).clip(0, 1)
    return inner * (1 - r[..., None]) + outer * r[..., None]


def ramp(k: int, n: int) -> float:
    """Strength of an event's frame ``k`` of ``n``: eased in and out over :data:`EVENT_RAMP`.

    A smoothstep curve: each frame step changes the overlay by at most 1.5 / EVENT_RAMP, and
    the first and last steps (where a saturated colour over a muted scene changes saturation
    fastest) by much less, so the event never reads as a hard cut.
    """
    e = min(k + 1, n - k, EVENT_RAMP) / EVENT_RAMP
    return float(e * e * (3 - 2 * e))


def event_overlay(img: np.ndarray, pattern: str, k: int, n: int, seed: int) -> None:
    """Paint frame ``k`` (of ``n``) of an event ``pattern`` over ``img``, in place.

    The overlay's strength follows :func:`ramp`; in between, the pattern moves smoothly (a few
    pixels per frame for large saturated areas) or flickers gently, so that no frame step is a
    cut for a content detector.

    Raises:
        ValueError: an unknown pattern.
    """
    h, w = img.shape[:2]
    a = ramp(k, n)
    p = k / max(n - 1, 1)  # progress 0..1
    phase = (seed % 997) / 997.0
    if pattern == "collision":  # a yellow and a blue car close in; a white flash between them
        bh, bw = int(h * 0.5), int(w * 0.45)
        gap = max(int(w * 0.12) - 2 * k, 0)
        y0 = int(h * 0.42)
        _blend(img, y0, y0 + bh, w // 2 - gap - bw, w // 2 - gap,
               np.array([255, 225, 0], np.float32), a)
        _blend(img, y0, y0 + bh, w // 2 + gap, w // 2 + gap + bw,
               np.array([0, 50, 255], np.float32), a)
        fh, fw = int(h * 0.6), int(w * 0.5)
        flash = _radial(fh, fw, np.array([255, 255, 255], np.float32),
                        np.array([255, 200, 0], np.float32))
        _blend(img, h // 2 - fh // 2, h // 2 + fh // 2, w // 2 - fw // 2, w // 2 + fw // 2,
               flash, a * (0.5 + 0.5 * p))
    elif pattern == "red_streaks":  # fast motion: blurred red streaks sweep across the picture
        sh = max(h // 10, 2)
        length = int(w * 1.2)
        streak = np.linspace(90, 255, length, dtype=np.float32)[None, :, None] * \
            np.array([1.0, 0.15, 0.15], np.float32)
        streak = np.broadcast_to(streak, (sh, length, 3))
        for i in range(6):
            y = int(h * (0.05 + 0.16 * i))
            x = int(-w * 0.4 + ((k * 6 + i * 37 + phase * w) % (w * 0.4)))
            _blend(img, y, y + sh, x, x + length, streak, a)
    elif pattern == "dark_figure":  # the scene darkens; a black figure with a magenta bag
        img[:] = (img.astype(np.float32) * (1 - 0.6 * a)).astype(np.uint8)
        x = int(w * 0.3) + 2 * k
        _blend(img, int(h * 0.25), h, x - w // 8, x + w // 8, np.zeros(3, np.float32), a)
        _blend(img, int(h * 0.08), int(h * 0.28), x - w // 16, x + w // 16,
               np.zeros(3, np.float32), a)
        _blend(img, int(h * 0.45), int(h * 0.8), x + w // 8, x + w // 3,
               np.array([230, 0, 230], np.float32), a)
    elif pattern == "falling_block":  # a large striped hazard block slides down the picture
        bh, bw = int(h * 0.7), int(w * 0.85)
        y = int(h * 0.02) + min(2 * k, h - bh)
        x = (w - bw) // 2
        yy, xx = np.mgrid[0:bh, 0:bw]
        stripes = ((xx + yy) // max(bw // 4, 2)) % 2
        block = np.where(stripes[..., None] == 0, np.array([255, 210, 0], np.float32),
                         np.array([20, 20, 20], np.float32))
        _blend(img, y, y + bh, x, x + bw, block, a)
    elif pattern == "fire_burst":  # an orange-yellow burst grows and flickers from the bottom
        fh = min(int(h * 0.3) + 3 * k, int(h * 0.85))
        flicker = 0.93 + 0.07 * np.sin(k * 0.9 + phase * 6.28)
        fire = _radial(fh, w, np.array([255, 240, 80], np.float32),
                       np.array([230, 50, 0], np.float32)) * flicker
        _blend(img, h - fh, h, 0, w, fire, a)
    elif pattern == "striped_beast":  # a large orange-and-black striped animal walks across
        bh, bw = int(h * 0.7), int(w * 0.9)
        x = int(w * 0.02) + min(2 * k, w - bw)
        yy, xx = np.mgrid[0:bh, 0:bw]
        stripes = ((xx + yy // 3) // max(bw // 6, 2)) % 2
        beast = np.where(stripes[..., None] == 0, np.array([255, 120, 0], np.float32),
                         np.array([5, 5, 5], np.float32))
        _blend(img, int(h * 0.28), int(h * 0.28) + bh, x, x + bw, beast, a)
    elif pattern == "splash":  # cyan-white water rises at the bottom, the camera shakes
        shift = int(round(3 * np.sin(k * 1.3)))
        img[:] = np.roll(img, shift, axis=0)
        sh = int(h * (0.5 + 0.25 * np.sin(np.pi * p)))
        yy, xx = np.mgrid[0:sh, 0:w].astype(np.float32)
        foam = 0.85 + 0.15 * np.sin(xx / 9.0 + yy / 7.0 + k * 0.5)
        water = foam[..., None] * np.array([110, 250, 255], np.float32)
        _blend(img, h - sh, h, 0, w, water, a)
    else:
        raise ValueError(f"unknown event pattern {pattern!r}: expected one of "
                         f"{sorted(set(PATTERNS.values()))}")


# ------------------------------------------------------------------------------------ encoding
@dataclass(frozen=True, slots=True)
class Encoding:
    """How a file is encoded: libx264 ``crf`` and ``preset``, keyframe interval, faststart."""

    crf: int = 23
    preset: str = "ultrafast"
    gop: int = 48
    faststart: bool = True


def encode(path: str | Path, frames: Iterator[np.ndarray], fps: float, width: int, height: int,
           encoding: Encoding = Encoding(), times: list[float] | None = None) -> int:
    """Write ``frames`` (RGB uint8) as H.264 in MP4 at ``path`` (atomically); returns the count.

    Args:
        path: the file (written as a temp file next to it, then renamed).
        frames: RGB frames of ``height`` x ``width`` (resized here if they are not).
        fps: frame rate (constant-rate files), or the nominal rate of ``times``.
        width, height: picture size of the file.
        encoding: libx264 settings.
        times: presentation time (s) of every frame: a variable-frame-rate file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rate = Fraction(fps).limit_denominator(1001)
    n = 0
    try:
        options = {"movflags": "+faststart"} if encoding.faststart else {}
        with av.open(str(tmp), "w", format="mp4", options=options) as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": encoding.preset, "crf": str(encoding.crf),
                              "threads": "1", "g": str(encoding.gop)}
            if times is not None:
                stream.codec_context.time_base = Fraction(1, 1000)
            for img in frames:
                if img.shape[0] != height or img.shape[1] != width:
                    import cv2

                    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                if times is not None:
                    frame.pts = round(times[n] * 1000)
                    frame.time_base = Fraction(1, 1000)
                n += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n
