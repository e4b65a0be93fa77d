"""Duplicate detection: precision / recall on planted copies, and the cost of a decision as the
number of kept videos grows.

**Quality.** Renders ``--originals`` random compilations (:mod:`curation.shot_media`) and, for
every other one, planted copies: re-encoded (CRF 36), half size, trimmed (0.6 s off the
start, 0.4 s off the end), re-timed to 15 fps and smaller, and all at once; for the others,
look-alikes that must stay distinct (another seed with the same palette; the same place with
another camera move and other people). Everything goes into a store in a shuffled acquisition
order and ``dedup`` runs; scores come from :func:`curation.shot_eval.duplicate_scores`
(targets: precision >= 0.95, recall >= 0.9, no distinct video merged).

**Scale.** Builds the band index of ``--kept`` synthetic fingerprints (60 samples each, hashes
drifting a few bits from sample to sample like a video's) and times the decision of a new
video (candidate search + full alignment of the candidates) at several index sizes: flat, not
linear in the number of kept videos.

    .venv/bin/python benchmarks/dedup_quality.py [--originals 24] [--kept 10000] [--json f]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.dedup import DedupConfig, dedup, make_stage  # noqa: E402
from curation.fingerprints import Fingerprint  # noqa: E402
from curation.shot_eval import duplicate_scores  # noqa: E402
from curation.shot_media import Shot, copy_video, random_video, render  # noqa: E402
from prevad import Store  # noqa: E402
from prevad.records import Video  # noqa: E402

COPIES = {
    "reencoded": {"crf": 36},
    "half_size": {"scale": 0.5},
    "trimmed": {"trim": (0.6, 0.4)},
    "retimed_small": {"fps": 15, "scale": 0.6},
    "all_at_once": {"scale": 0.7, "trim": (0.5, 0.5), "crf": 34},
}


def quality(n: int, tmp: Path, seed: int) -> dict:
    """Planted copies and look-alikes in one store; dedup's precision and recall."""
    files: dict[str, Path] = {}
    groups: list[list[str]] = []
    for k in range(n):
        shots, transitions = random_video(seed + k, n_shots=(1, 3), shot_s=(2.5, 5.0))
        name = f"original_{k:03d}"
        files[name] = tmp / f"{name}.mp4"
        render(files[name], shots, transitions)
        if k % 2 == 0:
            group = [name]
            for kind, kw in COPIES.items():
                copy = f"{name}_{kind}"
                files[copy] = copy_video(files[name], tmp / f"{copy}.mp4", **kw)
                group.append(copy)
            groups.append(group)
        else:  # look-alikes of this original: must not merge with it
            base = shots[0]
            look = f"{name}_same_palette_other_scene"
            files[look] = tmp / f"{look}.mp4"
            render(files[look], [Shot(base.frames, seed=base.seed + 50_000,
                                      palette=base.palette, objects=base.objects)], [])
            other_take = f"{name}_same_place_other_take"
            files[other_take] = tmp / f"{other_take}.mp4"
            render(files[other_take], [Shot(base.frames, seed=base.seed, palette=base.palette,
                                            pan=(1.5, -0.5), objects=base.objects + 2)], [])
    store = Store.init(tmp / "store")
    names = list(files)
    random.Random(seed).shuffle(names)  # acquisition order: copies may come first
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    videos = {n: Video.create("bench", n, uri=str(files[n]),
                              created_at=t0 + timedelta(seconds=i))
              for i, n in enumerate(names)}
    store.append("videos", list(videos.values()))
    start = time.perf_counter()
    summary = dedup(store)
    seconds = time.perf_counter() - start
    name_of = {v.video_id: n for n, v in videos.items()}
    predicted = {}
    for r in store.records("stage_results"):
        out = r.output or {}
        if r.stage == "dedup" and out.get("duplicate_of"):
            predicted[name_of[r.id]] = name_of[out["duplicate_of"]]
    scores = duplicate_scores(predicted, groups, items=names)
    group_of = {m: g for g, members in enumerate(groups) for m in members}
    merged_distinct = sorted(f"{c} -> {k}" for c, k in predicted.items()
                             if group_of.get(c) is None or group_of.get(c) != group_of.get(k))
    rank = {n: i for i, n in enumerate(names)}
    missed = sorted(m for g in groups for m in sorted(g, key=rank.get)[1:]
                    if m not in predicted)  # every copy but the first acquired should be marked
    return {"videos": len(names), "planted_copies": sum(len(g) - 1 for g in groups),
            "seconds": round(seconds, 2), "videos_per_s": round(len(names) / seconds, 2),
            "summary": summary.to_dict(), "scores": scores.to_dict(),
            "merged_distinct": merged_distinct, "unmarked": missed}


def _synthetic(rng: np.random.Generator, n: int = 60) -> Fingerprint:
    """A video-like fingerprint: each sample's hash flips 0-6 bits of the previous one."""
    h = int(rng.integers(0, 2**63))
    hashes = []
    for _ in range(n):
        for b in rng.integers(0, 64, size=int(rng.integers(0, 7))):
            h ^= 1 << int(b)
        hashes.append(h)
    return Fingerprint(4.0, np.arange(n, dtype=np.float32) / 4.0, np.asarray(hashes, np.uint64),
                       np.ones(n, bool))


def scale(kept: int, tmp: Path) -> list[dict]:
    """Per-decision time against the number of kept videos in the index."""
    rng = np.random.default_rng(0)
    deduper = make_stage(Store.init(tmp / "scale_store"), DedupConfig()).process
    checkpoints = sorted({min(kept, c) for c in (1_000, 2_500, 5_000, 10_000, kept)})
    out, added = [], 0
    for target in checkpoints:
        while added < target:
            fp = _synthetic(rng)
            deduper.kept.append(f"v{added}")
            deduper.useful.append(fp.useful)
            deduper.prints[added] = fp
            deduper.index.add(added, fp.hashes)
            added += 1
        deduper.index._merge()
        queries = [_synthetic(rng) for _ in range(100)]
        copy = deduper.prints[int(rng.integers(0, added))]
        noisy = Fingerprint(4.0, copy.times, copy.hashes ^ np.uint64(0b1011), copy.informative)
        t0 = time.perf_counter()
        for q in queries:
            deduper._best_match(q)
        per_new = (time.perf_counter() - t0) / len(queries)
        t0 = time.perf_counter()
        found = deduper._best_match(noisy)
        per_copy = time.perf_counter() - t0
        out.append({"kept": added, "ms_per_new_video": round(per_new * 1000, 3),
                    "ms_per_copy": round(per_copy * 1000, 3),
                    "copy_found": found is not None,
                    "candidates_per_new_video": round(float(np.mean(
                        [len(deduper.candidates(q)) for q in queries[:20]])), 2)})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--originals", type=int, default=24)
    ap.add_argument("--kept", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=3000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.originals < 2 or args.kept < 1:
        raise SystemExit("error: --originals must be >= 2 and --kept >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        q = quality(args.originals, Path(tmp), args.seed)
        print(json.dumps(q, indent=2), flush=True)
        s = scale(args.kept, Path(tmp))
    sc = q["scores"]
    print(f"\nquality: {q['videos']} videos, {q['planted_copies']} planted copies: precision "
          f"{sc['precision']:.3f}, recall {sc['recall']:.3f}, distinct merged "
          f"{len(q['merged_distinct'])}, {q['videos_per_s']:.1f} videos/s")
    print("| kept videos | ms per new video | ms per copy | candidates aligned |")
    print("|---|---|---|---|")
    for r in s:
        print(f"| {r['kept']} | {r['ms_per_new_video']:.2f} | {r['ms_per_copy']:.2f} | "
              f"{r['candidates_per_new_video']} |")
    if args.json:
        args.json.write_text(json.dumps({"quality": q, "scale": s}, indent=2) + "\n")


if __name__ == "__main__":
    main()
