"""Shot boundaries and duplicates measured on the generated curation world (``curation.world``).

For every readable file of a world (its truth table: ``truth.parquet``), the boundaries clean
finds (:mod:`curation.shots`) are scored against the planted truth: hard cuts F1 within +-1
frame (target >= 0.95), dissolves F1 on their centres within +-0.5 s (target >= 0.8). Then every
corpus file goes into a store in the corpus order (acquisition order) and the ``dedup`` stage
runs; its ``duplicate_of`` pairs are scored against the planted duplicate groups (targets:
precision >= 0.95, recall >= 0.9, no distinct video merged). Scores come from
:mod:`curation.shot_eval`, the helpers the scale benchmark uses.

    .venv/bin/python benchmarks/world_clips_dedup.py --world runs/world        # existing world
    .venv/bin/python benchmarks/world_clips_dedup.py --videos 60 --seed 7      # generate one
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.dedup import dedup  # noqa: E402
from curation.shot_eval import EMPTY, cut_scores, duplicate_scores, transition_scores  # noqa: E402
from curation.shots import ShotConfig, find_boundaries, scan  # noqa: E402
from prevad import Store  # noqa: E402
from prevad.records import Video  # noqa: E402


def boundaries(world: Path, truth: dict[str, dict]) -> dict:
    """Hard-cut and dissolve scores over the world's readable files."""
    cfg = ShotConfig()
    cuts = dissolves = EMPTY
    frames, errors, t0 = 0, [], time.perf_counter()
    for r in truth.values():
        if r["broken"]:
            continue
        try:
            sc = scan(world / r["file"], cfg)
        except Exception as exc:  # noqa: BLE001 - reported, the others go on
            errors.append(f"{r['world_id']}: {exc}")
            continue
        b = find_boundaries(sc, cfg)
        frames += sc.n
        cuts += cut_scores(b.cuts, r["cut_frames"], 1)
        dissolves += transition_scores(
            [(float(sc.times[t.start]), sc.end_time(t.end)) for t in b.dissolves],
            [tuple(d) for d in r["dissolves_s"]], 0.5)
    return {"hard_cuts": cuts.to_dict(), "dissolves": dissolves.to_dict(), "frames": frames,
            "frames_per_s": round(frames / (time.perf_counter() - t0), 1), "errors": errors}


def duplicates(world: Path, truth: dict[str, dict], tmp: Path) -> dict:
    """dedup on the corpus files in corpus order, scored against the planted groups."""
    rows = [r for r in truth.values() if r["split"] != "test"]
    store = Store.init(tmp / "store")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    videos = {r["world_id"]: Video.create("world", r["world_id"], uri=str(world / r["file"]),
                                          created_at=t0 + timedelta(seconds=i))
              for i, r in enumerate(rows)}
    store.append("videos", list(videos.values()))
    start = time.perf_counter()
    summary = dedup(store)
    seconds = time.perf_counter() - start
    name = {v.video_id: k for k, v in videos.items()}
    predicted = {name[r.id]: name[r.output["duplicate_of"]]
                 for r in store.records("stage_results")
                 if r.stage == "dedup" and (r.output or {}).get("duplicate_of")}
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r["dup_group"] and not r["broken"]:
            groups.setdefault(r["dup_group"], []).append(r["world_id"])
    planted = [g for g in groups.values() if len(g) > 1]
    group_of = {m: k for k, ms in groups.items() for m in ms}
    merged = [f"{c} -> {k}" for c, k in predicted.items()
              if group_of.get(c) is None or group_of.get(c) != group_of.get(k)]
    return {"videos": len(rows), "planted_groups": len(planted),
            "planted_copies": sum(len(g) - 1 for g in planted),
            "scores": duplicate_scores(predicted, planted).to_dict(),
            "distinct_merged": merged, "summary": summary.to_dict(),
            "videos_per_s": round(len(rows) / seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=None, help="an existing world folder")
    ap.add_argument("--videos", type=int, default=60, help="generate a world of this size")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from curation.world import generate_world, load_truth

    with tempfile.TemporaryDirectory() as tmp:
        world = args.world
        if world is None:
            world = Path(tmp) / "world"
            generate_world(world, args.videos, seed=args.seed, workers=2)
        truth = load_truth(world)
        report = {"world": str(args.world or f"generated: {args.videos} videos, seed "
                                               f"{args.seed}"),
                  "boundaries": boundaries(world, truth),
                  "duplicates": duplicates(world, truth, Path(tmp))}
    print(json.dumps(report, indent=2))
    b, d = report["boundaries"], report["duplicates"]["scores"]
    print(f"hard cuts F1 {b['hard_cuts']['f1']:.3f}, dissolves F1 {b['dissolves']['f1']:.3f}; "
          f"duplicates precision {d['precision']:.3f} recall {d['recall']:.3f}, distinct "
          f"merged {len(report['duplicates']['distinct_merged'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
