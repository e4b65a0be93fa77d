"""Shot boundaries of a video: hard cuts (PySceneDetect), dissolves and fades, in one decode.

:func:`scan` decodes a file once with PyAV. Each frame is scaled once to ``detect_width`` pixels
wide (one reused ``VideoReformatter``: a scaling context per frame used to cost a third of the
decoding thread) and handed to PySceneDetect's ``ContentDetector`` (or ``AdaptiveDetector``);
a 16 x 16 thumbnail of it is kept for everything else. :func:`find_boundaries` then works on the
thumbnails only:

- **Hard cuts** are the detector's cuts, each checked twice. A cut between two black frames is
  dropped (hue is noise in the dark: a fade through black makes ContentDetector fire). A cut
  after which the picture comes back is a *flash* (a colour burst, a fast object crossing the
  frame, a camera flash): if some frame within ``flash_s`` before the cut matches some frame
  within ``flash_s`` after it far better than the cut's own jump (less than ``flash_ratio``
  times), the cut is dropped.
- **Dissolves** (and fades, a dissolve to or from black) are found where the picture changes
  *linearly*: on thumbnails with each frame's mean colour removed (so brightness ramps do not
  count), for lags k of 0.2, 0.4 and 0.7 s the frame ``x[i]`` is compared with the mean of
  ``x[i-k]`` and ``x[i+k]``. In a dissolve the middle frame *is* that mean; a hard cut sits half
  way, and motion (pans, zooms, moving objects) is far off. A candidate's extent is where the
  projection of the frames on the line from the frame before to the frame after goes from 0 to 1,
  and it is kept as a dissolve when its score (span difference minus twice the residual) is at
  least ``dissolve_min_score``, the residual of that linear model at most
  ``dissolve_max_residual`` of the jump, no single step exceeds half the jump (that would be a
  cut), it lasts 3 frames to ``dissolve_max_s``, and either it is almost exactly linear
  (residual at most ``dissolve_linear_residual``, score at least twice the minimum) or its
  colour-histogram change is at least ``dissolve_min_contrast`` times the change within the
  shots on either side over as many frames (motion keeps a scene's colours; a new scene changes
  them). A transition that touches black frames is a **fade**. A blend is *not* a transition
  when the picture around it comes back within ``return_s`` (before it, after it: in both the
  thumbnails and the colours), or when a second blend within ``return_s`` undoes it (their
  changes correlate once one is reversed): an overlay fading in and out inside a shot, such as
  an event, a caption or a tint.

Frame positions are indices into the decoded frames; :attr:`Scan.times` gives each frame's
presentation time (seconds, from its pts), so variable frame rate files keep exact spans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from curation.common import CurationError

#: Side of the square thumbnails kept per frame (16 x 16 x 3 bytes; 1 h at 30 fps = 83 MB).
THUMB = 16
#: Lags (seconds) at which the linear-blend test looks for dissolves.
DISSOLVE_LAGS_S = (0.2, 0.4, 0.7)
#: Shortest dissolve, frames (shorter blends are treated as cuts).
MIN_DISSOLVE_FRAMES = 3
#: Largest single step of the blend (fraction of the jump) for a dissolve.
MAX_DISSOLVE_STEP = 0.5
#: Projection below / above which a frame counts as the shot before / after a transition.
EDGE_ALPHA = 0.08
#: Candidate filters before the full check (cheap): span score and residual share.
CANDIDATE_MIN_SCORE = 4.0
CANDIDATE_MAX_SHARE = 0.35
#: BGR luma weights (the detector's frames are BGR, as PySceneDetect expects).
LUMA_BGR = np.array([0.114, 0.587, 0.299], np.float32)
DETECTORS = ("content", "adaptive")


@dataclass(frozen=True, slots=True)
class ShotConfig:
    """How boundaries are found (every field is part of the clean stage's version).

    Attributes:
        detector: PySceneDetect detector for hard cuts: "content" (``ContentDetector``) or
            "adaptive" (``AdaptiveDetector``).
        threshold: ``ContentDetector`` threshold.
        adaptive_threshold: ``AdaptiveDetector`` threshold.
        min_shot_s: shortest shot the detector reports (its ``min_scene_len``).
        detect_width: frames are scaled to this width for detection (PySceneDetect itself
            works at about 256 px).
        black_luma: a frame is black when its mean luma is below this (and its 95th
            percentile below twice this), 0-255.
        flash_s: how far around a cut to look for the picture coming back.
        flash_ratio: a cut is a flash when frames around it match better than this share of
            its jump.
        dissolves: detect dissolves and fades at all.
        dissolve_min_score: least span-difference score of a dissolve (0-255 scale).
        dissolve_max_residual: largest residual of the linear blend, share of the jump.
        dissolve_min_contrast: least ratio of the colour change across the transition to the
            change within the neighbouring shots.
        dissolve_linear_residual: a blend whose residual is at most this (and whose score is
            at least twice ``dissolve_min_score``) needs no colour contrast: motion is never
            that linear, while a dissolve between two scenes of similar colours is.
        dissolve_max_s: longest dissolve or fade half.
        return_s: a blend after which the picture before it comes back within this many seconds
            (or before which the picture after it was already there) is an overlay fading in
            or out inside a shot (an event, a caption, a tint), not a transition.
        return_ratio: "comes back" means closer than this share of the blend's jump, in both
            the thumbnails and the colour histograms.
        return_pair_corr: two blends within ``return_s`` whose changes correlate above this
            once one is reversed undo each other (a pattern laid over a moving scene and
            taken off): neither is a transition.
    """

    detector: str = "adaptive"
    threshold: float = 27.0
    adaptive_threshold: float = 3.0
    min_shot_s: float = 0.3
    detect_width: int = 128
    black_luma: float = 20.0
    flash_s: float = 0.6
    flash_ratio: float = 0.35
    dissolves: bool = True
    dissolve_min_score: float = 12.0
    dissolve_max_residual: float = 0.25
    dissolve_min_contrast: float = 1.8
    dissolve_linear_residual: float = 0.1
    dissolve_max_s: float = 3.0
    return_s: float = 10.0
    return_ratio: float = 0.5
    return_pair_corr: float = 0.7


@dataclass(slots=True)
class Scan:
    """What one decoding pass keeps.

    Attributes:
        times: presentation time of each frame, seconds (float64 [N]).
        thumbs: BGR thumbnails, uint8 [N, THUMB, THUMB, 3].
        fps: the stream's average frame rate.
        frame_s: duration of one frame (median spacing of ``times``, else 1 / fps).
        detector_cuts: the detector's cuts (first frame of each new shot), unchecked.
    """

    times: np.ndarray
    thumbs: np.ndarray
    fps: float
    frame_s: float
    detector_cuts: list[int]

    @property
    def n(self) -> int:
        """Number of decoded frames."""
        return len(self.times)

    def end_time(self, frame: int) -> float:
        """Time at which frame ``frame`` starts (the end of a span ending before it)."""
        if frame < self.n:
            return float(self.times[frame])
        return float(self.times[-1] + self.frame_s)


@dataclass(frozen=True, slots=True)
class Transition:
    """A gradual transition: frames ``[start, end)`` are blends of the shots around them.

    Attributes:
        kind: "dissolve" or "fade" (to or from black).
        start: first blended frame (the shot before ends at ``start``).
        end: first frame of the shot after.
        score: span-difference score (0-255 scale).
        residual: residual of the linear blend, share of the jump.
        contrast: colour change across it over the change within the shots around it.
    """

    kind: str
    start: int
    end: int
    score: float
    residual: float
    contrast: float

    def to_dict(self, sc: Scan) -> dict:
        """JSON-able form with seconds."""
        start_s, end_s = float(sc.times[self.start]), sc.end_time(self.end)
        return {"kind": self.kind, "start_frame": self.start, "end_frame": self.end,
                "start_s": round(start_s, 6), "end_s": round(end_s, 6),
                "center_s": round((start_s + end_s) / 2, 6), "score": round(self.score, 2),
                "residual": round(self.residual, 3), "contrast": round(self.contrast, 2)}


@dataclass(slots=True)
class Boundaries:
    """Checked boundaries of a video.

    Attributes:
        cuts: hard cuts (first frame of the new shot), ascending.
        transitions: dissolves and fades, ascending, never overlapping.
        dropped_cuts: detector cuts that were dropped, with the reason ("black", "flash",
            "in_transition").
        black: per-frame black flags.
    """

    cuts: list[int] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    dropped_cuts: list[tuple[int, str]] = field(default_factory=list)
    black: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def dissolves(self) -> list[Transition]:
        """The transitions of kind "dissolve"."""
        return [t for t in self.transitions if t.kind == "dissolve"]

    @property
    def fades(self) -> list[Transition]:
        """The transitions of kind "fade"."""
        return [t for t in self.transitions if t.kind == "fade"]


def _detector(cfg: ShotConfig, fps: float):
    from scenedetect import AdaptiveDetector, ContentDetector

    min_len = max(1, round(cfg.min_shot_s * fps))
    if cfg.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=cfg.adaptive_threshold, min_scene_len=min_len)
    return ContentDetector(threshold=cfg.threshold, min_scene_len=min_len)


def scan(path: str | Path, cfg: ShotConfig) -> Scan:
    """Decode ``path`` once: the detector's cuts, per-frame times and thumbnails.

    Raises:
        CurationError: the file cannot be opened or decoded, or has no frames.
    """
    import cv2
    from av.video.reformatter import VideoReformatter
    from scenedetect import FrameTimecode

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise CurationError(f"cannot open {path} as a video: {exc}") from exc
    thumbs: list[np.ndarray] = []
    times: list[float] = []
    cuts: list[int] = []
    try:
        if not container.streams.video:
            raise CurationError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        w0, h0 = stream.codec_context.width, stream.codec_context.height
        if not w0 or not h0:
            raise CurationError(f"{path}: the video stream has no frame size")
        width = min(w0, cfg.detect_width) // 2 * 2 or 2
        height = max(2, round(h0 * width / w0 / 2) * 2)
        detector = _detector(cfg, fps)
        # One scaler for the whole file: VideoFrame.to_ndarray(width=...) builds a new scaling
        # context for every frame.
        scaler = VideoReformatter()
        try:
            for i, frame in enumerate(container.decode(stream)):
                img = scaler.reformat(frame, width, height, "bgr24", interpolation="AREA",
                                      threads=1).to_ndarray()
                cuts += [int(c.frame_num) for c in detector.process_frame(FrameTimecode(i, fps),
                                                                          img)]
                thumbs.append(cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA))
                times.append(frame.time if frame.time is not None else i / fps)
        except (av.error.FFmpegError, OSError) as exc:
            raise CurationError(f"{path}: decoding failed after {len(thumbs)} frames: {exc}") \
                from exc
        if thumbs:
            cuts += [int(c.frame_num) for c in detector.post_process(
                FrameTimecode(len(thumbs) - 1, fps))]
    finally:
        container.close()
    if not thumbs:
        raise CurationError(f"{path}: no frame could be decoded")
    t = np.asarray(times, np.float64)
    spacing = np.diff(t)
    spacing = spacing[spacing > 0]
    frame_s = float(np.median(spacing)) if len(spacing) else 1.0 / fps
    n = len(thumbs)
    return Scan(t, np.stack(thumbs), fps, frame_s, sorted({c for c in cuts if 0 < c < n}))


# ----------------------------------------------------------------------------- frame measures
def structure(thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails with each frame's mean colour removed, float32 [N, THUMB * THUMB * 3]."""
    n = len(thumbs)
    x = thumbs.reshape(n, -1, 3).astype(np.float32)
    x -= x.mean(1, keepdims=True)
    return x.reshape(n, -1)


def luma(thumbs: np.ndarray) -> np.ndarray:
    """Per-pixel luma of BGR thumbnails, float32 [N, THUMB * THUMB]."""
    return thumbs.reshape(len(thumbs), -1, 3).astype(np.float32) @ LUMA_BGR


def black_frames(lum: np.ndarray, black_luma: float) -> np.ndarray:
    """Black flags: mean luma < ``black_luma`` and 95th percentile < twice that."""
    return (lum.mean(1) < black_luma) & (np.percentile(lum, 95, axis=1) < 2 * black_luma)


def colour_hist(thumbs: np.ndarray) -> np.ndarray:
    """Per-frame colour histograms, 4 levels per channel (64 bins), rows summing to 1."""
    n = len(thumbs)
    q = (thumbs.reshape(n, -1, 3) // 64).astype(np.int64)
    code = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2] + 64 * np.arange(n)[:, None]
    h = np.bincount(code.ravel(), minlength=64 * n).reshape(n, 64).astype(np.float32)
    return h / np.maximum(h.sum(1, keepdims=True), 1.0)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


# ----------------------------------------------------------------------------- hard cuts
def _comes_back(x: np.ndarray, c: int, span: int, ratio: float) -> bool:
    """Whether some frame shortly before ``c`` matches some frame shortly after it far better
    than the frames at the cut match each other (the picture came back: a flash)."""
    jump = _mad(x[c - 1], x[c])
    before, after = x[max(0, c - span):c], x[c:min(len(x), c + span)]
    closest = min(float(np.abs(after - b).mean(1).min()) for b in before)
    return closest < ratio * jump


def _return_share(x: np.ndarray, s: int, e: int, span: int) -> float:
    """How close, around the blend ``[s, e)``, the picture before it comes back after it
    within ``span`` frames (or the picture after it was there before it), as a share of the
    blend's own jump (1.0: nothing comes back)."""
    jump = _mad(x[s - 1], x[e])
    later = x[e + 1:min(len(x), e + 1 + span)]
    earlier = x[max(0, s - 1 - span):s - 1]
    near = [float(np.abs(later - x[s - 1]).mean(1).min())] if len(later) else []
    near += [float(np.abs(earlier - x[e]).mean(1).min())] if len(earlier) else []
    return min(near) / jump if near and jump > 0 else 1.0


def _check_cuts(cuts: list[int], y: np.ndarray, hist: np.ndarray, black: np.ndarray,
                fps: float, cfg: ShotConfig) -> tuple[list[int], list[tuple[int, str]]]:
    span = max(2, round(cfg.flash_s * fps))
    kept, dropped = [], []
    for c in cuts:
        if black[c - 1] and black[c]:
            dropped.append((c, "black"))
        # the picture (or, under a moving camera, its colours) comes back: a flash
        elif _comes_back(y, c, span, cfg.flash_ratio) or _comes_back(hist, c, span,
                                                                     cfg.flash_ratio):
            dropped.append((c, "flash"))
        else:
            kept.append(c)
    return kept, dropped


# ----------------------------------------------------------------------------- dissolves
def _candidates(y: np.ndarray, fps: float) -> list[tuple[int, int, float]]:
    """(center frame, lag, score) of each run of frames that look like the middle of a blend.

    The score of frame i at lag k is ``|x[i+k] - x[i-k]| - 2 |x[i] - (x[i-k] + x[i+k]) / 2|``
    (mean absolute differences): the span's change minus twice the distance from a linear
    blend; the best lag counts.
    """
    n = len(y)
    best = np.zeros(n, np.float32)
    best_lag = np.zeros(n, np.int64)
    best_share = np.ones(n, np.float32)
    for sec in DISSOLVE_LAGS_S:
        k = max(2, round(sec * fps))
        if n <= 2 * k:
            continue
        for lo in range(k, n - k, 4096):  # blocks keep the float temporaries small
            hi = min(n - k, lo + 4096)
            a, m, b = y[lo - k:hi - k], y[lo:hi], y[lo + k:hi + k]
            d = np.abs(b - a).mean(1)
            r = np.abs(m - (a + b) * 0.5).mean(1)
            s = d - 2 * r
            better = s > best[lo:hi]
            best[lo:hi][better] = s[better]
            best_lag[lo:hi][better] = k
            best_share[lo:hi][better] = (r / np.maximum(d, 1e-6))[better]
    hit = (best > CANDIDATE_MIN_SCORE) & (best_share < CANDIDATE_MAX_SHARE)
    out = []
    idx = np.flatnonzero(hit)
    if not len(idx):
        return out
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    for run in runs:
        c = int(run[np.argmax(best[run])])
        out.append((c, int(best_lag[c]), float(best[c])))
    return out


def _extent(y: np.ndarray, c: int, k: int, fps: float, cfg: ShotConfig) -> tuple[int, int] | None:
    """[start, end) of the blend around ``c``: where the projection goes from 0 to 1."""
    n = len(y)
    reach = max(2 * k, round(cfg.dissolve_max_s * fps / 2))
    lo, hi = max(0, c - reach), min(n - 1, c + reach)
    a, b = y[max(0, c - 2 * k)], y[min(n - 1, c + 2 * k)]
    v = b - a
    den = float(v @ v)
    if den <= 0:
        return None
    alpha = ((y[lo:hi + 1] - a) @ v) / den
    at = c - lo
    before = np.flatnonzero(alpha[:at + 1] <= EDGE_ALPHA)
    after = np.flatnonzero(alpha[at:] >= 1 - EDGE_ALPHA)
    if not len(before) or not len(after):
        return None
    return lo + int(before[-1]) + 1, c + int(after[0])


def _transitions(y: np.ndarray, hist: np.ndarray, black: np.ndarray, fps: float,
                 cfg: ShotConfig) -> list[Transition]:
    n = len(y)
    found: list[Transition] = []
    for c, k, score in _candidates(y, fps):
        ext = _extent(y, c, k, fps, cfg)
        if ext is None:
            continue
        s, e = ext
        length = e - s
        if s < 1 or e >= n or length < MIN_DISSOLVE_FRAMES or length > cfg.dissolve_max_s * fps:
            continue
        a, b = y[s - 1], y[e]
        v = b - a
        jump = float(np.abs(v).mean())
        den = float(v @ v)
        if den <= 0 or jump <= 0:
            continue
        alpha = ((y[s:e] - a) @ v) / den
        residual = float(np.abs(y[s:e] - (a + alpha[:, None] * v)).mean()) / jump
        step = float(np.abs(np.diff(np.concatenate([[0.0], alpha, [1.0]]))).max())
        within = max(float(np.abs(hist[s - 1] - hist[max(0, s - 1 - length)]).sum()),
                     float(np.abs(hist[min(n - 1, e + length)] - hist[e]).sum()), 1e-3)
        contrast = float(np.abs(hist[e] - hist[s - 1]).sum()) / within
        if (score < cfg.dissolve_min_score or residual > cfg.dissolve_max_residual
                or step > MAX_DISSOLVE_STEP):
            continue
        fade = bool(black[s - 1:e + 1].any())
        linear = (residual <= cfg.dissolve_linear_residual
                  and score >= 2 * cfg.dissolve_min_score)
        if not fade and not linear and contrast < cfg.dissolve_min_contrast:
            continue
        # an overlay fading in or out comes back to the same picture: in its layout and in its
        # colours (a new scene of the same palette only matches the colours)
        back = max(2, round(cfg.return_s * fps))
        if (not fade and _return_share(y, s, e, back) < cfg.return_ratio
                and _return_share(hist, s, e, back) < cfg.return_ratio):
            continue
        found.append(Transition("fade" if fade else "dissolve", s, e, score, residual, contrast))
    kept: list[Transition] = []
    for t in sorted(found, key=lambda t: -t.score):  # strongest first; no overlaps
        if all(t.end <= o.start or t.start >= o.end for o in kept):
            kept.append(t)
    return _drop_inverse_pairs(sorted(kept, key=lambda t: t.start), y, fps, cfg)


def _drop_inverse_pairs(ts: list[Transition], y: np.ndarray, fps: float,
                        cfg: ShotConfig) -> list[Transition]:
    """Drop two blends within ``return_s`` of each other that undo each other (the change of
    the second is the first's, reversed: correlation above ``return_pair_corr``): a pattern
    laid over a moving scene and taken off again."""
    def change(t: Transition) -> np.ndarray:
        return y[t.end] - y[t.start - 1]

    dropped: set[int] = set()
    for i, a in enumerate(ts):
        for j in range(i + 1, len(ts)):
            b = ts[j]
            if a.kind == "fade" or b.kind == "fade":
                continue
            if (b.start - a.end) > cfg.return_s * fps:
                break
            va, vb = change(a), change(b)
            if va.std() > 0 and vb.std() > 0 and \
                    float(np.corrcoef(va, -vb)[0, 1]) > cfg.return_pair_corr:
                dropped |= {i, j}
    return [t for k, t in enumerate(ts) if k not in dropped]


def find_boundaries(sc: Scan, cfg: ShotConfig) -> Boundaries:
    """Checked hard cuts and gradual transitions of a scanned video (see the module docstring)."""
    y = structure(sc.thumbs)
    hist = colour_hist(sc.thumbs)
    black = black_frames(luma(sc.thumbs), cfg.black_luma)
    transitions = _transitions(y, hist, black, sc.fps, cfg) if cfg.dissolves else []
    cuts, dropped = _check_cuts(sc.detector_cuts, y, hist, black, sc.fps, cfg)
    kept = []
    for c in cuts:
        if any(t.start - 1 <= c <= t.end + 1 for t in transitions):
            dropped.append((c, "in_transition"))
        else:
            kept.append(c)
    return Boundaries(kept, transitions, sorted(dropped), black)


def shot_spans(n: int, b: Boundaries) -> list[tuple[int, int]]:
    """Frame spans ``[start, end)`` of the shots: split at cuts, transition frames left out."""
    edges: list[tuple[int, int]] = [(c, c) for c in b.cuts]
    edges += [(t.start, t.end) for t in b.transitions]
    spans, start = [], 0
    for end_here, next_start in sorted(edges):
        if end_here > start:
            spans.append((start, end_here))
        start = max(start, next_start)
    if start < n:
        spans.append((start, n))
    return spans


def config_dict(cfg: ShotConfig) -> dict:
    """JSON-able form (for stage versions and reports)."""
    return asdict(cfg)
