"""The plan of a generated world: every video's timeline, caption, event and file, from one seed.

Planning is cheap and sequential (one seeded generator per video, keyed by the world seed, the
split and the video's index), so the same seed gives the same world whatever the number of
worker processes that render it. Shares (anomalous captions, duplicates, broken files, ...) are
exact counts spread by a seeded permutation, not coin flips, so small worlds hold every case.

A timeline is a list of :class:`Piece` (black, title card or scene) in frames of the rendered
original. A piece that starts with a *dissolve* overlaps the previous piece by
``dissolve`` frames, blended linearly; every other boundary is a hard cut. A file may show the
original resized, trimmed, re-encoded, at a variable frame rate, or broken.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from curation.world import grammar
from curation.world.media import EVENT_FADE, PATTERNS
from prevad import taxonomy

SPLITS = ("corpus", "test", "stream")
DUP_KINDS = ("exact", "reencoded", "resized", "trimmed")
BROKEN_KINDS = ("truncated", "garbage", "empty")
#: Shortest planted event span (seconds): frame features sampled every 8 frames see it several
#: times, most of them at full strength (its fade, media.EVENT_RAMP frames, is half outside).
EVENT_MIN_S = 2.5


@dataclass(frozen=True, slots=True)
class Profile:
    """Sizes of a world: picture, frame rates and the length of the main content."""

    name: str
    width: int
    height: int
    fps: tuple[float, ...]
    main_s: tuple[float, float]
    shot_min_s: float


PROFILES: dict[str, Profile] = {
    # 2-30 s videos (title cards and tails included), 15-30 fps
    "default": Profile("default", 320, 240, (15.0, 20.0, 24.0, 25.0, 30.0), (4.0, 16.0), 1.5),
    # shorter videos for worlds of 10,000 and more
    "small": Profile("small", 320, 240, (15.0, 20.0, 25.0), (2.5, 6.0), 1.2),
}


@dataclass(frozen=True, slots=True)
class Shares:
    """Fractions of the corpus videos that get each planted case (exact counts, rounded)."""

    anomalous: float = 0.30
    misleading: float = 0.10
    compilation: float = 0.30
    duplicates: float = 0.08
    broken: float = 0.02
    vfr: float = 0.04
    section: float = 0.05
    no_ranges: float = 0.25
    intro: float = 0.20
    outro: float = 0.15
    black_lead: float = 0.15
    black_tail: float = 0.10
    test_anomalous: float = 0.5


@dataclass(frozen=True, slots=True)
class Piece:
    """One stretch of the original timeline, frames ``[start, end)``."""

    kind: str  # black | title | scene
    start: int
    end: int
    seed: int
    hue: float
    transition: str  # start | cut | dissolve (how the piece begins)
    dissolve: int = 0  # frames shared with the previous piece (dissolve only)


@dataclass(frozen=True, slots=True)
class Event:
    """The planted anomaly: frames ``[start, end)`` of the original, its pattern and category.

    ``[start, end)`` is the truth: where the overlay has at least half its strength. It fades
    in over the ``fade`` frames before ``start`` and out over the ``fade`` frames from ``end``.
    """

    start: int
    end: int
    pattern: str
    category: str
    top_level: str
    seed: int
    fade: int = EVENT_FADE

    @property
    def drawn(self) -> tuple[int, int]:
        """Frames ``[a, b)`` on which the overlay is drawn (the span and its fades)."""
        return self.start - self.fade, self.end + self.fade


@dataclass(frozen=True, slots=True)
class VideoPlan:
    """Everything needed to render one file and state its truth."""

    world_id: str
    split: str
    index: int
    caption: str
    caption_kind: str
    category: str
    fps: float
    width: int
    height: int
    n_frames: int  # of the original timeline
    pieces: tuple[Piece, ...]
    event: Event | None
    file: str  # relative to the world folder
    url_path: str | None = None  # relative to the server root (None: not served)
    out_width: int | None = None
    out_height: int | None = None
    trim_start: int = 0
    trim_end: int = 0
    crf: int = 23
    gop: int = 48
    vfr: bool = False
    broken: str | None = None
    dup_of: str | None = None
    dup_kind: str | None = None
    ranges: bool = True
    section: tuple[float, float] | None = None
    seed: int = 0

    @property
    def frames(self) -> range:
        """The original's frames this file shows."""
        return range(self.trim_start, self.n_frames - self.trim_end)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the file."""
        return self.out_width or self.width, self.out_height or self.height

    def frame_times(self) -> list[float]:
        """Presentation time (s) of each frame of the file (variable for a VFR file)."""
        n = len(self.frames)
        if not self.vfr:
            return [i / self.fps for i in range(n)]
        rng = np.random.default_rng([self.seed, int(self.world_id[1:]), 991])
        # stretches of about a second alternate between the nominal rate and half of it
        times, t, i = [], 0.0, 0
        while i < n:
            step = (1.0 if rng.random() < 0.5 else 2.0) / self.fps
            run = int(rng.integers(max(2, int(self.fps) // 2), int(self.fps) + 2))
            for _ in range(min(run, n - i)):
                times.append(round(t, 6))
                t += step
                i += 1
        return times


def expand_categories(names: list[str] | None) -> list[str]:
    """Sub-categories allowed for anomalous captions (top-level names expand to their subs).

    Raises:
        prevad.errors.UnknownCategoryError: a name outside the taxonomy (or Normal).
    """
    if not names:
        return list(taxonomy.SUB_CATEGORIES)
    out: list[str] = []
    for name in names:
        c = taxonomy.canonical(name)
        if c == taxonomy.NORMAL:
            raise taxonomy.UnknownCategoryError(
                "categories: Normal is not an anomaly category; name sub-categories or "
                "top-level classes (normal videos are always planted)")
        out.extend(taxonomy.children(c) or [c])
    return list(dict.fromkeys(out))


def _count(n: int, share: float, at_least: int = 0) -> int:
    k = round(n * share)
    return min(n, max(k, at_least if n >= 20 else 0))


def _flags(rng: np.random.Generator, n: int, share: float, at_least: int = 0,
           among: np.ndarray | None = None) -> set[int]:
    pool = np.arange(n) if among is None else np.asarray(among)
    k = min(len(pool), _count(n, share, at_least))
    return {int(i) for i in rng.permutation(pool)[:k]}


def _timeline(rng: np.random.Generator, profile: Profile, fps: float, compilation: bool,
              flags: set[str], need_main_s: float) -> tuple[list[Piece], int]:
    """Pieces of one video (frames) and the index of its main (longest) scene piece."""
    f = lambda s: max(1, round(s * fps))  # noqa: E731 - seconds -> frames
    pieces: list[Piece] = []
    pos = 0
    hue0 = float(rng.uniform())

    def add(kind: str, n: int, transition: str, dissolve: int = 0, hue: float = 0.0) -> None:
        nonlocal pos
        start = pos - dissolve
        pieces.append(Piece(kind, start, start + n, int(rng.integers(1 << 30)), hue,
                            transition if pieces else "start", dissolve))
        pos = start + n

    if "black_lead" in flags:
        add("black", f(rng.uniform(0.4, 0.8)), "cut")
    intro_dissolve = False
    if "intro" in flags:
        add("title", f(rng.uniform(0.8, 2.0)), "cut")
        intro_dissolve = rng.random() < 0.3
    n_shots = int(rng.integers(2, 5)) if compilation else 1
    total = float(rng.uniform(*profile.main_s))
    lengths = rng.dirichlet(np.ones(n_shots)) * total
    lengths = np.maximum(lengths, profile.shot_min_s)
    main = int(np.argmax(lengths))
    lengths[main] = max(lengths[main], need_main_s)
    hue = hue0
    for k in range(n_shots):
        if k:  # 90 to 270 degrees from the last shot's hue: an unrelated shot
            hue = (hue + 0.25 + rng.uniform(0, 0.5)) % 1.0
        n = f(lengths[k])
        if not pieces:
            add("scene", n, "start", hue=hue)
            continue
        prev = pieces[-1]
        if k > 0 and rng.random() < 0.12:  # a black gap between two shots
            add("black", f(rng.uniform(0.4, 0.8)), "cut")
            add("scene", n, "cut", hue=hue)
            continue
        dissolve_ok = (k > 0 and rng.random() < 0.5) or (k == 0 and intro_dissolve)
        d = f(rng.uniform(0.5, 1.5)) if k > 0 else f(rng.uniform(0.5, 0.8))
        # a dissolve takes at most half of either shot (the shots stay recognisable)
        if dissolve_ok and d * 2 <= min(prev.end - prev.start, n):
            add("scene", n + d, "dissolve", dissolve=d, hue=hue)
        else:
            add("scene", n, "cut", hue=hue)
    scenes = [i for i, p in enumerate(pieces) if p.kind == "scene"]
    main_piece = max(scenes, key=lambda i: pieces[i].end - pieces[i].start)
    if "outro" in flags:
        add("title", f(rng.uniform(0.8, 2.0)), "cut")
    if "black_tail" in flags:
        add("black", f(rng.uniform(0.4, 0.8)), "cut")
    return pieces, main_piece


def _event(rng: np.random.Generator, pieces: list[Piece], main: int, fps: float,
           category: str, seed: int) -> Event:
    """An event inside the main shot, clear of its transitions (fades included)."""
    p = pieces[main]
    nxt = pieces[main + 1] if main + 1 < len(pieces) else None
    lo = p.start + p.dissolve + round(0.3 * fps) + EVENT_FADE
    hi = p.end - (nxt.dissolve if nxt else 0) - round(0.3 * fps) - EVENT_FADE
    room = hi - lo
    n = max(round(EVENT_MIN_S * fps), round(room * rng.uniform(0.3, 0.55)))
    n = min(n, room)
    start = lo + int(rng.integers(0, max(room - n, 0) + 1))
    top = taxonomy.top_level(category)
    return Event(start, start + n, PATTERNS[top], category, top, seed)


def plan_world(n_videos: int, *, seed: int = 0, test_videos: int | None = None,
               categories: list[str] | None = None, profile: str = "default",
               shares: Shares | None = None, stream: bool = True) -> list[VideoPlan]:
    """Plan a world of ``n_videos`` corpus videos, a held-out test split and one stream.

    Args:
        n_videos: corpus videos (served, listed in the corpus CSV).
        seed: the world's seed.
        test_videos: held-out test videos (default: a fifth of ``n_videos``, 10 to 500).
        categories: sub-categories or top-level classes allowed for anomalies (default all).
        profile: a key of :data:`PROFILES`.
        shares: fractions of each planted case (default :class:`Shares`).
        stream: plan the video served as an HLS stream.

    Returns:
        Corpus plans, then test plans, then the stream's plan.
    """
    prof = PROFILES[profile]
    shares = shares or Shares()
    allowed = expand_categories(categories)
    by_top: dict[str, list[str]] = {}
    for s in allowed:
        by_top.setdefault(taxonomy.top_level(s), []).append(s)
    tops = [t for t in taxonomy.TOP_LEVEL if t in by_top]
    if test_videos is None:
        test_videos = min(max(10, n_videos // 5), 500)
    meta = np.random.default_rng([seed, 0])
    n = n_videos
    anomalous = _flags(meta, n, shares.anomalous, 1)
    rest = np.array(sorted(set(range(n)) - anomalous))
    misleading = _flags(meta, n, shares.misleading, 1, rest)
    broken = _flags(meta, n, shares.broken, 2)
    plain = np.array(sorted(set(range(n)) - broken))
    dups = _flags(meta, n, shares.duplicates, 4, plain)
    originals = np.array(sorted(set(plain.tolist()) - dups))
    vfr = _flags(meta, n, shares.vfr, 1, originals)
    section = _flags(meta, n, shares.section, 1, np.array(sorted(set(originals) - vfr)))
    no_ranges = _flags(meta, n, shares.no_ranges, 1)
    compilation = _flags(meta, n, shares.compilation, 1)
    structure = {k: _flags(meta, n, getattr(shares, k), 1)
                 for k in ("intro", "outro", "black_lead", "black_tail")}
    dup_source = sorted(set(originals) - vfr - section)
    plans: list[VideoPlan] = []
    n_anom = 0

    def make(split: str, i: int, kind: str, flags: set[str], comp: bool, code: int
             ) -> VideoPlan:
        nonlocal n_anom
        rng = np.random.default_rng([seed, code, i])
        fps = float(rng.choice(prof.fps))
        category = taxonomy.NORMAL
        if kind == "anomalous":
            top = tops[(n_anom + seed) % len(tops)]
            category = by_top[top][int(rng.integers(len(by_top[top])))]
            n_anom += 1
        pieces, main = _timeline(rng, prof, fps, comp, flags,
                                 EVENT_MIN_S + 0.6 + 2 * EVENT_FADE / fps
                                 if kind == "anomalous" else 0.0)
        event = (_event(rng, pieces, main, fps, category, int(rng.integers(1 << 30)))
                 if kind == "anomalous" else None)
        prefix = {"corpus": "w", "test": "t", "stream": "s"}[split]
        wid = f"{prefix}{i:06d}"
        folder = {"corpus": "media/videos", "test": "test/videos", "stream": "media/hls"}[split]
        return VideoPlan(
            world_id=wid, split=split, index=i,
            caption=grammar.caption(kind, rng, category if kind == "anomalous" else None),
            caption_kind=kind, category=category, fps=fps, width=prof.width,
            height=prof.height, n_frames=pieces[-1].end, pieces=tuple(pieces), event=event,
            file=f"{folder}/{wid}.mp4",
            url_path=f"videos/{wid}.mp4" if split == "corpus" else None, seed=seed,
        )

    for i in range(n):
        kind = ("anomalous" if i in anomalous else "misleading" if i in misleading
                else "normal")
        flags = {k for k, idx in structure.items() if i in idx}
        plans.append(make("corpus", i, kind, flags, i in compilation, 1))
    # files: duplicates, broken, variable frame rate, sections, servers without byte ranges
    rng = np.random.default_rng([seed, 2])
    for i in range(n):
        p = plans[i]
        change: dict[str, Any] = {"ranges": i not in no_ranges}
        if i in dups and dup_source:
            orig = plans[int(dup_source[int(rng.integers(len(dup_source)))])]
            kind = DUP_KINDS[int(rng.integers(len(DUP_KINDS)))]
            same_caption = rng.random() < 0.5
            change.update(
                caption=orig.caption if same_caption else grammar.caption(
                    orig.caption_kind, rng,
                    orig.category if orig.caption_kind == "anomalous" else None),
                caption_kind=orig.caption_kind, category=orig.category, fps=orig.fps,
                n_frames=orig.n_frames, pieces=orig.pieces, event=orig.event,
                dup_of=orig.world_id, dup_kind=kind, crf=orig.crf, gop=orig.gop)
            if kind == "reencoded":
                change.update(crf=33, gop=24)
            elif kind == "resized":
                change.update(out_width=orig.width * 3 // 4, out_height=orig.height * 3 // 4)
            elif kind == "trimmed":
                lo = round(orig.fps * float(rng.uniform(0.2, 0.8)))
                hi = round(orig.fps * float(rng.uniform(0.0, 0.6)))
                # keep the event whole in the copy
                if orig.event is not None:
                    lo = min(lo, orig.event.drawn[0])
                    hi = min(hi, orig.n_frames - orig.event.drawn[1])
                change.update(trim_start=lo, trim_end=hi)
        if i in broken:
            change["broken"] = BROKEN_KINDS[int(rng.integers(len(BROKEN_KINDS)))]
        if i in vfr:
            change["vfr"] = True
        if i in section:
            # the caption names a part of the video: the main content without intro and outro
            scenes = [q for q in p.pieces if q.kind == "scene"]
            a, b = scenes[0].start / p.fps, scenes[-1].end / p.fps
            change["section"] = (round(max(a - 0.2, 0.0), 3),
                                 round(min(b + 0.2, p.n_frames / p.fps), 3))
        plans[i] = replace(p, **change)
    for i in range(n):  # URLs: the server without byte ranges under its own prefix
        if not plans[i].ranges:
            plans[i] = replace(plans[i], url_path=f"norange/{plans[i].url_path}")
    # the held-out test split: clean files, half of them anomalous
    trng = np.random.default_rng([seed, 3])
    t_anom = _flags(trng, test_videos, shares.test_anomalous, 1)
    t_comp = _flags(trng, test_videos, shares.compilation, 0)
    t_struct = {k: _flags(trng, test_videos, getattr(shares, k), 0)
                for k in ("intro", "outro", "black_lead", "black_tail")}
    for i in range(test_videos):
        flags = {k for k, idx in t_struct.items() if i in idx}
        plans.append(make("test", i, "anomalous" if i in t_anom else "normal", flags,
                          i in t_comp, 4))
    if stream:
        s = make("stream", 0, "normal", set(), False, 5)
        # one long shot (24 s), so any recording of its first seconds is a single clip
        one = replace(s.pieces[0], start=0, end=round(24 * s.fps), transition="start",
                      dissolve=0)
        s = replace(s, pieces=(one,), n_frames=one.end, url_path="hls/s000000/index.m3u8",
                    file="media/hls/s000000/source.mp4")
        plans.append(s)
    return plans
