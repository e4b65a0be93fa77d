"""Synthesised videos with known shot transitions (hard cuts, dissolves, fades) for tests and
benchmarks of shot detection and duplicate detection.

A video is a list of :class:`Shot` specs joined by :class:`Transition` specs. Every shot is a
seeded, procedurally drawn scene (a smooth colour field with blocks, a few moving objects, an
optional camera pan, zoom, brightness drift, sensor noise, and "hard negative" events inside the
shot: a short colour flash or a fast-moving object) so that detectors meet motion that is *not* a
transition. :func:`render` encodes it with H.264 (lossy, as real uploads are) and returns the
ground truth: the frame of every hard cut (the first frame of the new shot) and the frame span
``[start, end)`` of every dissolve and fade (the blended frames).

The content is deterministic given the seeds, so tests and benchmarks name exactly what they
expect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lagovad.video import write_video

Frame = np.ndarray


@dataclass(frozen=True, slots=True)
class Shot:
    """One shot.

    Attributes:
        frames: length in frames.
        seed: scene seed (two shots with one seed show the same scene).
        kind: "scene" (textured scene), "card" (static title card), "black".
        pan: camera pan in pixels per frame (x, y), 0 for a fixed camera.
        zoom: relative zoom per frame (e.g. 0.004), 0 for none.
        objects: moving objects in the scene.
        noise: sensor noise standard deviation (0-255).
        drift: brightness change per frame (0-255 units), e.g. an auto-exposure ramp.
        flash: (start frame, length) of a colour burst inside the shot, or None.
        fast: (start frame, length) of a large object crossing the frame fast, or None.
        palette: colour scheme index (shots of one palette look alike).
        overlay: (start frame, length, ramp frames) of a large pattern that fades in over
            ``ramp`` frames, stays, and fades out (an event or caption inside the shot: a
            linear blend that is not a transition), or None.
    """

    frames: int
    seed: int = 0
    kind: str = "scene"
    pan: tuple[float, float] = (0.0, 0.0)
    zoom: float = 0.0
    objects: int = 2
    noise: float = 2.0
    drift: float = 0.0
    flash: tuple[int, int] | None = None
    fast: tuple[int, int] | None = None
    palette: int | None = None
    overlay: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """How one shot ends and the next starts: "cut", "dissolve" or "fade" (through black).

    ``frames`` is the number of blended frames (dissolve) or of frames per half (fade: out,
    then in); ignored for a cut.
    """

    kind: str = "cut"
    frames: int = 0


@dataclass(slots=True)
class Truth:
    """Ground truth of a rendered video (frame indices).

    Attributes:
        n_frames: frames in the file.
        fps: frame rate.
        cuts: first frame of the new shot at each hard cut.
        dissolves: ``[start, end)`` of each dissolve (blended frames).
        fades: ``[start, end)`` of each fade through black (out and in together).
        shots: ``[start, end)`` of each shot's own frames (transition frames excluded).
    """

    n_frames: int
    fps: float
    cuts: list[int] = field(default_factory=list)
    dissolves: list[tuple[int, int]] = field(default_factory=list)
    fades: list[tuple[int, int]] = field(default_factory=list)
    shots: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"n_frames": self.n_frames, "fps": self.fps, "cuts": self.cuts,
                "dissolves": [list(d) for d in self.dissolves],
                "fades": [list(f) for f in self.fades], "shots": [list(s) for s in self.shots]}


PALETTES = [
    [(170, 60, 40), (245, 210, 160), (70, 25, 15), (220, 120, 60)],  # warm street
    [(20, 160, 60), (40, 200, 220), (10, 90, 200), (240, 240, 40)],  # bright promo
    [(90, 90, 100), (150, 150, 160), (40, 40, 50), (200, 200, 190)],  # grey CCTV
    [(30, 80, 30), (90, 150, 60), (140, 110, 70), (200, 190, 120)],  # park
    [(20, 30, 80), (60, 90, 160), (200, 200, 230), (100, 40, 120)],  # night
    [(120, 70, 50), (200, 160, 120), (60, 60, 60), (230, 220, 200)],  # indoor
]


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] (bilinear upsampling of a coarse grid)."""
    import cv2

    coarse = rng.random((cells, max(2, cells * w // h))).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


class _Scene:
    """A drawn scene on a canvas larger than the frame (room for pans and zooms)."""

    def __init__(self, shot: Shot, h: int, w: int):
        rng = np.random.default_rng(shot.seed)
        self.shot, self.h, self.w = shot, h, w
        margin = int(abs(shot.pan[0]) * shot.frames + abs(shot.pan[1]) * shot.frames) + 8
        self.ch, self.cw = h + 2 * margin, w + 2 * margin
        palette = np.array(PALETTES[(shot.palette if shot.palette is not None
                                     else shot.seed) % len(PALETTES)], np.float32)
        f1 = _smooth_field(rng, self.ch, self.cw, int(rng.integers(3, 7)))
        f2 = _smooth_field(rng, self.ch, self.cw, int(rng.integers(8, 16)))
        idx = np.clip((0.65 * f1 + 0.35 * f2) * len(palette), 0, len(palette) - 1e-3)
        lo = np.floor(idx).astype(int)
        hi = np.minimum(lo + 1, len(palette) - 1)
        t = (idx - lo)[..., None]
        canvas = palette[lo] * (1 - t) + palette[hi] * t
        for _ in range(int(rng.integers(4, 10))):  # buildings, signs, furniture
            y0, x0 = int(rng.integers(0, self.ch - 8)), int(rng.integers(0, self.cw - 8))
            bh, bw = int(rng.integers(6, h // 3)), int(rng.integers(6, w // 3))
            canvas[y0:y0 + bh, x0:x0 + bw] = palette[int(rng.integers(len(palette)))] * \
                float(rng.uniform(0.6, 1.2))
        self.canvas = canvas.clip(0, 255)
        self.margin = margin
        self.objects = [
            (rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-3, 3), rng.uniform(-2, 2),
             int(rng.integers(6, max(8, h // 6))), rng.uniform(0, 255, 3))
            for _ in range(shot.objects)
        ]
        self.noise_rng = np.random.default_rng(shot.seed + 10_000)
        self.flash_colour = rng.uniform(80, 255, 3)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` of the shot (float32 RGB, 0-255)."""
        import cv2

        s, h, w = self.shot, self.h, self.w
        ox = self.margin + s.pan[0] * i
        oy = self.margin + s.pan[1] * i
        if s.pan[0] < 0:
            ox = self.cw - self.margin - w + s.pan[0] * i
        if s.pan[1] < 0:
            oy = self.ch - self.margin - h + s.pan[1] * i
        scale = 1.0 + s.zoom * i
        cw, ch = w / scale, h / scale
        cx, cy = ox + w / 2, oy + h / 2
        m = np.float32([[1 / scale, 0, cx - cw / 2], [0, 1 / scale, cy - ch / 2]])
        img = cv2.warpAffine(self.canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        for x0, y0, vx, vy, size, colour in self.objects:
            x = int((x0 + vx * i) % (w - size))
            y = int((y0 + vy * i) % (h - size))
            img[y:y + size, x:x + size] = colour
        if s.fast and s.fast[0] <= i < s.fast[0] + s.fast[1]:
            k = (i - s.fast[0]) / max(1, s.fast[1] - 1)
            size = h // 2
            x = int(-size + k * (w + size))
            img[h // 4:h // 4 + size, max(0, x):max(0, x + size)] = (240, 240, 240)
        if s.flash and s.flash[0] <= i < s.flash[0] + s.flash[1]:
            img = 0.35 * img + 0.65 * self.flash_colour
        if s.overlay and s.overlay[0] <= i < s.overlay[0] + s.overlay[1]:
            start, length, ramp = s.overlay
            k = i - start
            a = min(1.0, (k + 1) / (ramp + 1), (length - k) / (ramp + 1))
            pattern = np.zeros_like(img)  # broad bars and a block, fixed in the frame
            for x0 in range(0, w, w // 4):
                pattern[:, x0:x0 + w // 10] = self.flash_colour
            pattern[h // 3:2 * h // 3, w // 3:2 * w // 3] = 255 - self.flash_colour
            img = (1 - 0.8 * a) * img + 0.8 * a * pattern
        if s.drift:
            img = img + s.drift * i
        if s.noise:
            img = img + self.noise_rng.normal(0, s.noise, img.shape).astype(np.float32)
        return img


def _card(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    img[:] = rng.uniform(10, 90, 3)
    for row in range(2 + seed % 2):  # "text" lines
        y = h // 4 + row * h // 5
        img[y:y + max(2, h // 24), w // 6:w - w // 6 - int(rng.integers(0, w // 4))] = 250
    return img


def _shot_fn(shot: Shot, h: int, w: int) -> Callable[[int], np.ndarray]:
    if shot.kind == "black":
        black = np.full((h, w, 3), 3.0, np.float32)
        return lambda i: black
    if shot.kind == "card":
        card = _card(h, w, shot.seed)
        return lambda i: card
    scene = _Scene(shot, h, w)
    return scene.frame


def compose(shots: Sequence[Shot], transitions: Sequence[Transition], fps: float = 25.0,
            size: tuple[int, int] = (144, 256)) -> tuple[Callable[[int], np.ndarray], Truth]:
    """A frame function and the ground truth of ``shots`` joined by ``transitions``.

    A dissolve of L frames overlaps the end of one shot and the start of the next: its frame j
    (0..L-1) is ``(1 - a) * A + a * B`` with ``a = (j + 1) / (L + 1)``; a fade is L frames to
    black then L frames from black. Each shot's own ``frames`` exclude transition frames.

    Raises:
        ValueError: the number of transitions is not ``len(shots) - 1``, or a kind is unknown.
    """
    if len(transitions) != len(shots) - 1:
        raise ValueError(f"{len(shots)} shots need {len(shots) - 1} transitions, "
                         f"got {len(transitions)}")
    h, w = size
    fns = [_shot_fn(s, h, w) for s in shots]
    # timeline: list of (kind, args) per output frame
    plan: list[tuple] = []
    truth = Truth(0, fps)
    for k, shot in enumerate(shots):
        start = len(plan)
        plan += [("shot", k, i) for i in range(shot.frames)]
        truth.shots.append((start, len(plan)))
        if k == len(shots) - 1:
            break
        tr = transitions[k]
        if tr.kind == "cut":
            truth.cuts.append(len(plan))
        elif tr.kind == "dissolve":
            n = max(1, tr.frames)
            s0 = len(plan)
            plan += [("mix", k, shot.frames + j, k + 1, -n + j, (j + 1) / (n + 1))
                     for j in range(n)]
            truth.dissolves.append((s0, len(plan)))
        elif tr.kind == "fade":
            n = max(1, tr.frames)
            s0 = len(plan)
            plan += [("fade", k, shot.frames + j, 1 - (j + 1) / (n + 1)) for j in range(n)]
            plan += [("fade", k + 1, -n + j, (j + 1) / (n + 1)) for j in range(n)]
            truth.fades.append((s0, len(plan)))  # out and in: one transition
        else:
            raise ValueError(f"unknown transition kind {tr.kind!r}: cut, dissolve or fade")
    truth.n_frames = len(plan)

    def frame(i: int) -> np.ndarray:
        p = plan[i]
        if p[0] == "shot":
            img = fns[p[1]](p[2])
        elif p[0] == "mix":
            _, a, ia, b, ib, t = p
            img = (1 - t) * fns[a](ia) + t * fns[b](ib)
        else:
            _, a, ia, t = p
            img = fns[a](ia) * t
        return np.clip(img, 0, 255).astype(np.uint8)

    return frame, truth


def render(path: str | Path, shots: Sequence[Shot], transitions: Sequence[Transition],
           fps: int = 25, size: tuple[int, int] = (144, 256), lossless: bool = False) -> Truth:
    """Encode the video (H.264 mp4) and return its ground truth (see :func:`compose`)."""
    frame, truth = compose(shots, transitions, fps, size)
    write_video(path, truth.n_frames, frame, fps=fps, lossless=lossless)
    return truth


def random_video(seed: int, *, fps: int = 25, n_shots: tuple[int, int] = (2, 5),
                 shot_s: tuple[float, float] = (1.5, 6.0),
                 p_dissolve: float = 0.35, p_fade: float = 0.1,
                 dissolve_s: tuple[float, float] = (0.5, 1.5),
                 hard_negatives: bool = True) -> tuple[list[Shot], list[Transition]]:
    """A random compilation: 2-5 shots of varied motion joined by cuts, dissolves and fades.

    Shots use distinct seeds (distinct scenes) but may share a palette, so some cuts are between
    similar-looking scenes (the hard case for a detector). With ``hard_negatives`` some shots
    carry a colour flash, a fast object, a pan, a zoom or a brightness drift.
    """
    rng = np.random.default_rng(seed)
    shots, transitions = [], []
    for k in range(int(rng.integers(n_shots[0], n_shots[1] + 1))):
        frames = int(rng.uniform(*shot_s) * fps)
        kw: dict = {"seed": seed * 100 + k, "palette": int(rng.integers(0, len(PALETTES))),
                    "objects": int(rng.integers(0, 4)), "noise": float(rng.uniform(0, 4))}
        if hard_negatives:
            r = rng.random()
            if r < 0.2:
                kw["pan"] = (float(rng.uniform(-4, 4)), float(rng.uniform(-1.5, 1.5)))
            elif r < 0.3:
                kw["zoom"] = float(rng.uniform(0.002, 0.008))
            elif r < 0.4:
                kw["drift"] = float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.0))
            if rng.random() < 0.15 and frames > fps:
                kw["flash"] = (int(rng.integers(2, frames - fps // 2)),
                               int(rng.integers(2, max(3, fps // 3))))
            if rng.random() < 0.15 and frames > fps:
                kw["fast"] = (int(rng.integers(2, frames - fps // 2)),
                              int(rng.integers(fps // 5, fps // 2)))
        shots.append(Shot(frames, **kw))
        if k:
            r = rng.random()
            if r < p_dissolve:
                transitions.append(Transition("dissolve", int(rng.uniform(*dissolve_s) * fps)))
            elif r < p_dissolve + p_fade:
                transitions.append(Transition("fade", int(rng.uniform(0.3, 0.8) * fps)))
            else:
                transitions.append(Transition("cut"))
    return shots, transitions


def copy_video(src: str | Path, dst: str | Path, *, scale: float = 1.0,
               trim: tuple[float, float] = (0.0, 0.0), crf: int = 30,
               fps: float | None = None) -> Path:
    """A near-duplicate of ``src``: re-encoded (H.264 at ``crf``), resized by ``scale``, with
    ``trim`` seconds cut from the start and the end, optionally at another frame rate (frames
    are repeated or dropped to keep the timing).

    Returns:
        ``dst``.
    """
    import av

    dst = Path(dst)
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        rate = float(stream.average_rate or 25)
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(stream)]
    n = len(frames)
    first, last = round(trim[0] * rate), n - round(trim[1] * rate)
    frames = frames[first:last]
    if not frames:
        raise ValueError(f"trimming {trim} s off a {n / rate:.2f} s video leaves no frame")
    out_rate = fps or rate
    if fps:  # resample in time: frame at or before each output time
        count = int(len(frames) / rate * fps)
        frames = [frames[min(len(frames) - 1, int(i * rate / fps))] for i in range(count)]
    h, w = frames[0].shape[:2]
    nh, nw = max(2, round(h * scale / 2) * 2), max(2, round(w * scale / 2) * 2)
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=round(out_rate),
                           options={"crf": str(crf), "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = nw, nh, "yuv420p"
        for img in frames:
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if (nh, nw) != (h, w):
                f = f.reformat(nw, nh, interpolation="AREA")
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return dst
