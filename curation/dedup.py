"""Stage ``dedup``: find videos that are copies of an earlier-acquired video.

Each stored video (input table ``videos``) is compared with every video acquired before it
(``videos.created_at``, then ``video_id``) that is itself kept:

- **exact duplicate** (rejected ``exact_duplicate``): the same bytes (SHA-256 of the file);
- **near duplicate** (rejected ``near_duplicate``): the same content re-encoded, resized or
  trimmed. Perceptual hashes of frames sampled every ``1 / rate`` seconds
  (:mod:`curation.fingerprints`) are aligned in time; the video is a copy when, at the best time
  offset, at least ``min_match`` of the overlapping samples are within ``frame_bits`` bits of
  the other video's, the mean distance of all the aligned samples is at most ``max_distance``,
  and the overlap covers at least ``min_cover`` of the shorter video and ``min_overlap_s``
  seconds.

The first-acquired video of a group is kept (``ok``); a copy's output names it
(``duplicate_of``) with the ``distance`` (mean Hamming distance of the aligned frame hashes as a
share of 64 bits: 0.0 for exact copies) and the ``offset_s`` of the copy in the kept video.
Decisions do not depend on the order of the work list: before deciding a video, the stage
decides every earlier-acquired video it has not decided yet (remembered until its own turn).

Thresholds (:class:`DedupConfig`, all in the stage version), measured on
``benchmarks/dedup_quality.py``: re-encoding (CRF 35) and halving the size move a frame's
pHash by 0-6 bits, a trim shifts samples by up to half a sampling step (frames 1/8 s apart at
4 per second: 0-8 bits in moving scenes); distinct scenes are 20-40 bits apart. ``frame_bits``
10 sits between; ``min_match`` 0.6 tolerates a few moving frames of a copy; a distinct video
of the same palette matches a few frames at scattered offsets and stays far below.
``max_distance`` 0.1 (6.4 bits on average over the whole overlap) is for distinct videos that
share one large picture for most of their length (a full-screen logo, slate or overlay: the
generated world's anomaly events cover 60-70% of the picture for most of a video): their
aligned samples match on that part, so ``min_match`` passes, but the rest is 20-40 bits away.
On the 1,000-video world (``benchmarks/curation_scale.py``), the 52 planted near copies had a
mean distance of 0.000-0.045, the 36 distinct pairs that passed ``min_match`` 0.164-0.252.

**Scale.** Kept videos' sample hashes sit in a band index (:class:`BandIndex`: each 64-bit
hash split into four 16-bit bands, sorted arrays searched with ``numpy.searchsorted``); a new
video only meets the videos sharing at least ``min_votes`` band values with it, and only those
are aligned in full. Nothing compares all pairs: at 10,000 videos a decision costs a few
searches plus a handful of alignments.

**Downstream.** ``clean`` skips the duplicates of the dedup version it reads (rejected
``duplicate`` before decoding), so no clip, description, judgement, review task or feature is
made of them; ``queries.CLIPS_OF_VIDEOS`` (``lagovad extract --store``) leaves them out too.
Run ``dedup`` before ``clean``. The stage is sequential by nature (each decision depends on all
earlier ones): run it with the local engine, not on Ray actors.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import typer

from curation.common import CurationError, resolve_uri
from curation.fingerprints import Fingerprint, Match, file_sha256, frame_hashes, match
from curation.options import check_bool, check_number, opt, stage_command
from prevad import queries
from prevad.stage import (
    Failed,
    ItemResult,
    Ok,
    Rejected,
    Stage,
    StageSummary,
    run_stage,
    stage_version,
)
from prevad.store import Store

STAGE = "dedup"
CODE_VERSION = 1
#: Bands per 64-bit hash in the index (16 bits each).
BANDS = 4
#: Band values shared by more stored samples than this are skipped at lookup (uninformative,
#: like stop words: they would make every video a candidate).
MAX_BUCKET = 4096
REASONS = ("exact_duplicate", "near_duplicate")
#: A kept video is aligned in full only when this share of the shorter fingerprint's samples
#: collide with it in the band index (random 16-bit collisions stay far below; copies far above).
VOTE_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class DedupConfig:
    """Duplicate thresholds (see the module docstring); every field is in the stage version.

    Attributes:
        near: look for near duplicates at all (False: exact copies only).
        rate: frames hashed per second of video.
        frame_bits: largest Hamming distance (of 64 bits) of two matching frames.
        min_match: least share of the overlapping samples that match at the best offset.
        min_cover: least overlap, as a share of the shorter video's informative samples.
        min_overlap_s: least overlap in seconds.
        min_votes: least band collisions for a kept video to be aligned with a new one (and
            at least ``VOTE_SHARE`` of the shorter video's samples).
        max_distance: largest mean Hamming distance of all aligned samples (share of 64 bits):
            a copy is close everywhere, not only on its matching share.
    """

    near: bool = opt(True, "Also find re-encoded/resized/trimmed copies (perceptual "
                     "hashes); --no-near: identical files only.")
    rate: float = opt(4.0, "Frames hashed per second of video (0-30].")
    frame_bits: int = opt(10, "Largest Hamming distance (of 64 bits) of two matching frames "
                          "[0, 32).")
    min_match: float = opt(0.6, "Least share of the overlap that matches (0-1].")
    min_cover: float = opt(0.5, "Least overlap, share of the shorter video (0-1].")
    min_overlap_s: float = opt(1.0, "Least overlap (s).", "--min-overlap")
    min_votes: int = opt(2, "Least band collisions to align two videos.")
    max_distance: float = opt(0.1, "Largest mean distance of all aligned frames, share of 64 "
                              "bits (0-1].")

    def __post_init__(self) -> None:
        check_bool(self, "near")
        check_number(self, "rate", maximum=30)
        check_number(self, "frame_bits", integer=True, strict=False, maximum=31)
        check_number(self, "min_match", maximum=1)
        check_number(self, "min_cover", maximum=1)
        check_number(self, "min_overlap_s", strict=False)
        check_number(self, "min_votes", integer=True, minimum=1, strict=False)
        check_number(self, "max_distance", maximum=1)

    def version(self) -> str:
        """Stage version."""
        return stage_version(STAGE, asdict(self), code_version=CODE_VERSION)


class BandIndex:
    """Sample hashes of kept videos, searchable by 16-bit bands.

    Additions go to a small unsorted tail that is merged into the sorted arrays once it grows
    past ``tail_limit`` entries, so adding a video is cheap and a lookup is
    ``BANDS`` ``searchsorted`` calls plus a scan of the tail.
    """

    def __init__(self, tail_limit: int = 4096) -> None:
        """An empty index."""
        self.tail_limit = tail_limit
        self.keys = [np.zeros(0, np.uint16) for _ in range(BANDS)]
        self.owners = [np.zeros(0, np.int64) for _ in range(BANDS)]
        self._tail_h: list[np.ndarray] = []
        self._tail_o: list[np.ndarray] = []
        self._tail_n = 0

    @staticmethod
    def _bands(hashes: np.ndarray) -> np.ndarray:
        """uint16 [BANDS, len(hashes)]."""
        return np.stack([((hashes >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.uint16)
                         for b in range(BANDS)])

    def add(self, owner: int, hashes: np.ndarray) -> None:
        """Index ``hashes`` (uint64) under ``owner``."""
        if not len(hashes):
            return
        self._tail_h.append(hashes)
        self._tail_o.append(np.full(len(hashes), owner, np.int64))
        self._tail_n += len(hashes)
        if self._tail_n >= self.tail_limit:
            self._merge()

    def _merge(self) -> None:
        if not self._tail_n:
            return
        bands = self._bands(np.concatenate(self._tail_h))
        owners = np.concatenate(self._tail_o)
        for b in range(BANDS):
            keys = np.concatenate([self.keys[b], bands[b]])
            own = np.concatenate([self.owners[b], owners])
            order = np.argsort(keys, kind="stable")
            self.keys[b], self.owners[b] = keys[order], own[order]
        self._tail_h, self._tail_o, self._tail_n = [], [], 0

    def votes(self, hashes: np.ndarray) -> dict[int, int]:
        """For each owner: how many of ``hashes`` share a band value with one of its hashes."""
        owners, counts = self.collisions(hashes)
        return {int(o): int(c) for o, c in zip(owners, counts, strict=True)}

    def collisions(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`votes` as arrays: (owners, colliding samples of ``hashes`` per owner)."""
        nq = len(hashes)
        if not nq:
            return self.vote_arrays([], 1)
        q = self._bands(hashes)
        codes: list[np.ndarray] = []  # owner * nq + query sample, one per collision
        for b in range(BANDS):
            keys, owners = self.keys[b], self.owners[b]
            if not len(keys):
                continue
            lo = np.searchsorted(keys, q[b], "left")
            hi = np.searchsorted(keys, q[b], "right")
            n = np.where(hi - lo <= MAX_BUCKET, hi - lo, 0)
            total = int(n.sum())
            if not total:
                continue
            # every entry of every range [lo, hi) at once, without a Python loop
            starts = np.repeat(lo - (np.cumsum(n) - n), n)
            entries = np.arange(total) + starts
            codes.append(owners[entries] * nq + np.repeat(np.arange(nq), n))
        if self._tail_n:
            tb = self._bands(np.concatenate(self._tail_h))
            to = np.concatenate(self._tail_o)
            for b in range(BANDS):
                hit_q, hit_t = np.nonzero(q[b][:, None] == tb[b][None, :])
                codes.append(to[hit_t] * nq + hit_q)
        return self.vote_arrays(codes, nq)

    @staticmethod
    def vote_arrays(codes: list[np.ndarray], nq: int) -> tuple[np.ndarray, np.ndarray]:
        """(owners, distinct query samples colliding with each) from collision codes."""
        if not codes:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        unique = np.unique(np.concatenate(codes))
        return np.unique(unique // nq, return_counts=True)


@dataclass(slots=True)
class Decision:
    """What dedup decided for one video."""

    result: ItemResult
    root: str | None = None  # the kept video this one is a copy of (None: kept itself)


@dataclass(slots=True)
class Deduper:
    """The stage's ``process`` and its index of kept videos (one per run)."""

    store: Store
    config: DedupConfig
    version: str
    order: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    decided: dict[str, Decision] = field(default_factory=dict)
    index: BandIndex = field(default_factory=BandIndex)
    kept: list[str] = field(default_factory=list)
    prints: dict[int, Fingerprint] = field(default_factory=dict)
    by_sha: dict[str, str] = field(default_factory=dict)
    rank: dict[str, int] = field(default_factory=dict)
    useful: list[int] = field(default_factory=list)  # informative samples per owner
    _pos: int = 0
    _loaded: bool = False

    def _load(self) -> None:
        """Acquisition order and the decisions already committed at this version."""
        self._loaded = True
        for r in self.store.query(queries.VIDEOS_BY_ACQUISITION).to_pylist():
            self.rank[r["video_id"]] = len(self.order)
            self.order.append(r["video_id"])
            self.rows[r["video_id"]] = r
        for r in self.store.query(queries.DEDUP_DECISIONS, {
                "stage": STAGE, "stage_version": self.version}).to_pylist():
            out = json.loads(r["output_json"] or "{}")
            if r["status"] == "ok":
                self._keep(r["id"], out.get("sha256"), _fingerprint(out))
                self.decided[r["id"]] = Decision(Ok(output=out))
            else:
                root = out.get("duplicate_of")
                if out.get("sha256") and root:
                    self.by_sha.setdefault(out["sha256"], root)
                self.decided[r["id"]] = Decision(Rejected(r.get("reason") or "duplicate",
                                                          output=out), root)

    def _keep(self, video_id: str, sha: str | None, fp: Fingerprint | None) -> None:
        owner = len(self.kept)
        self.kept.append(video_id)
        self.useful.append(fp.useful if fp is not None else 0)
        if sha:
            self.by_sha.setdefault(sha, video_id)
        if fp is not None:
            self.prints[owner] = fp
            self.index.add(owner, fp.hashes[fp.informative])

    def __call__(self, rows: list[dict[str, Any]]) -> list[ItemResult]:
        """Decide each video of the batch (and, first, every earlier-acquired one)."""
        if not self._loaded:
            self._load()
        return [self.one(r) for r in rows]

    def one(self, row: dict[str, Any]) -> ItemResult:
        """The decision for one video."""
        vid = row["video_id"]
        if vid not in self.rows:  # no file: nothing to compare
            return Rejected("no_file", output={"error": "video has no uri"})
        target = self.rank[vid]
        while self._pos < target:  # decide the earlier-acquired videos first
            self._decide(self.order[self._pos])
            self._pos += 1
        return self._decide(vid).result

    def _decide(self, vid: str) -> Decision:
        if vid in self.decided:
            return self.decided[vid]
        d = self._compare(vid)
        if isinstance(d.result, Ok):
            out = d.result.output
            self._keep(vid, out["sha256"], _fingerprint(out))
        elif isinstance(d.result, Rejected) and d.result.reason in REASONS:
            self.by_sha.setdefault(d.result.output["sha256"], d.root)
        self.decided[vid] = d
        return d

    def _compare(self, vid: str) -> Decision:
        try:
            path = resolve_uri(self.store, self.rows[vid]["uri"])
        except CurationError as exc:
            return Decision(Rejected("no_file", output={"error": str(exc)}))
        if not path.is_file():
            return Decision(Failed(f"video file missing: {path}"))
        sha = file_sha256(path)
        if sha in self.by_sha:
            root = self.by_sha[sha]
            return Decision(Rejected("exact_duplicate", output={
                "sha256": sha, "kind": "exact", "duplicate_of": root, "distance": 0.0,
                "offset_s": 0.0}), root)
        out: dict[str, Any] = {"sha256": sha, "kind": None, "duplicate_of": None,
                               "distance": None}
        if not self.config.near:
            return Decision(Ok(output=out))
        try:
            fp = frame_hashes(path, self.config.rate)
        except CurationError as exc:
            return Decision(Failed(str(exc)))
        out["samples"], out["informative"] = len(fp.hashes), fp.useful
        best = self._best_match(fp)
        if best is not None:
            owner, m = best
            root = self.kept[owner]
            out.update(kind="near", duplicate_of=root, distance=round(m.distance, 4),
                       match=round(m.share, 3), cover=round(m.cover, 3),
                       offset_s=round(m.offset_s, 3))
            return Decision(Rejected("near_duplicate", output=out), root)
        out["fingerprint"] = fp.to_dict()
        return Decision(Ok(output=out))

    def candidates(self, fp: Fingerprint) -> list[int]:
        """Kept videos (index owners) worth aligning with ``fp``: enough band collisions."""
        owners, counts = self.index.collisions(fp.hashes[fp.informative])
        if not len(owners):
            return []
        useful = np.asarray(self.useful)[owners]
        need = np.maximum(self.config.min_votes, VOTE_SHARE * np.minimum(fp.useful, useful))
        return sorted(int(o) for o in owners[counts >= need])

    def _best_match(self, fp: Fingerprint) -> tuple[int, Match] | None:
        """The earliest-kept video this fingerprint copies, with the match (None: none)."""
        cfg = self.config
        hits: list[tuple[int, Match]] = []
        for owner in self.candidates(fp):
            m = match(fp, self.prints[owner], cfg.frame_bits)
            if (m is not None and m.share >= cfg.min_match and m.cover >= cfg.min_cover
                    and m.overlap / fp.rate >= cfg.min_overlap_s
                    and m.distance <= cfg.max_distance):
                hits.append((owner, m))
        # the first-acquired kept video wins
        return min(hits, key=lambda h: self.rank.get(self.kept[h[0]], -1)) if hits else None


def _fingerprint(out: dict[str, Any]) -> Fingerprint | None:
    fp = out.get("fingerprint")
    if not fp:
        return None
    try:
        return Fingerprint.from_dict(fp)
    except (KeyError, ValueError, TypeError):
        return None  # a damaged stored fingerprint: that video only takes part in exact checks


def make_stage(store: Store, config: DedupConfig | None = None) -> Stage:
    """The dedup stage over ``videos``."""
    config = config or DedupConfig()
    version = config.version()
    return Stage(STAGE, version, "videos", Deduper(store, config, version), batch_size=16)


def dedup(store: Store, config: DedupConfig | None = None, *, limit: int | None = None,
          progress: bool = False, run_id: str | None = None) -> StageSummary:
    """Run the dedup stage over the videos work list (see :func:`run_stage`)."""
    return run_stage(store, make_stage(store, config), shard_size=64, limit=limit,
                     progress=progress, run_id=run_id)


def duplicate_groups(store: Store, version: str) -> dict[str, list[str]]:
    """Kept video id -> its copies, at one dedup version."""
    groups: dict[str, list[str]] = {}
    for r in store.query(queries.DEDUP_DECISIONS, {"stage": STAGE,
                                                   "stage_version": version}).to_pylist():
        out = json.loads(r["output_json"] or "{}")
        if r["status"] == "rejected" and out.get("duplicate_of"):
            groups.setdefault(out["duplicate_of"], []).append(r["id"])
    return groups


def _show(store: Store, config: DedupConfig, summary: StageSummary, show: bool) -> None:
    """``--show``: each kept video with its duplicates, one JSON line each."""
    if show:
        for kept, copies in sorted(duplicate_groups(store, config.version()).items()):
            typer.echo(json.dumps({"kept": kept, "duplicates": sorted(copies)}))


def register(app: typer.Typer) -> None:
    """Add ``prevad curate dedup`` (one option per :class:`DedupConfig` field)."""
    show = inspect.Parameter("show", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                             default=typer.Option(False, help="print each duplicate with its "
                                                  "kept video"))
    stage_command(app, STAGE, DedupConfig, dedup, "Mark exact and near-duplicate videos; the "
                  "first-acquired copy is kept.", limit_help="at most this many videos",
                  extra=[show], after=_show)
