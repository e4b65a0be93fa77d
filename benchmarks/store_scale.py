"""Store at curation scale: append cost, compaction, 1M stage_results, re-import.

Prints, in one run (synthetic data, a fresh temp folder):

1. mean ms per single-row append for the first and the last 1,000 of 10,000 appends (targets:
   last/first <= 1.5, each < 20 ms), with automatic compaction on (default threshold);
2. the part-file count after ``Store.compact``;
3. against 1,000,000 stage_results rows (10 stages x 100,000 ids, written in big batches): the
   time of one single-row append and of one work-list query (targets < 100 ms each);
4. time and peak RSS of re-importing an already imported 200,000-entry benchmark file in a fresh
   process (targets < 5 s, < 300 MB);
5. stage-runner overhead: a no-op stage (every item ``Ok()``) over 10,000 and 100,000 videos,
   ms per item of the whole ``run_stage`` (work list, claims, commits, compaction), and the
   100k/10k per-item ratio (targets <= 1 ms per item at 100k, ratio <= 1.3).

Usage: ``python benchmarks/store_scale.py [--appends 10000] [--rows 1000000] [--entries 200000]
[--stage-items 10000,100000] [--only appends,million,reimport,stage]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from prevad import Store, interop, queries
from prevad.records import STAGE_RESULT_SCHEMA, VIDEO_SCHEMA, StageResult, utcnow

#: The class list of the made-up benchmark "big" (unknown benchmarks must name theirs).
BIG_CLASSES = ["Normal", "Fighting"]


def bench_appends(root: Path, n: int) -> None:
    store = Store.init(root)
    times = []
    for i in range(n):
        row = StageResult(f"item{i:07d}", "probe", "v1", "ok", attempt=1)
        t = time.perf_counter()
        store.append("stage_results", [row])
        times.append(time.perf_counter() - t)
    k = min(1000, n // 2)
    first, last = statistics.mean(times[:k]) * 1e3, statistics.mean(times[-k:]) * 1e3
    print(f"single-row appends: first {k}: {first:.1f} ms, last {k}: {last:.1f} ms, "
          f"last/first {last / first:.2f} (max one append {max(times) * 1e3:.0f} ms, "
          f"part files before compact: {len(store.part_files('stage_results'))})")
    res = store.compact()
    print(f"after compaction: {len(store.part_files('stage_results'))} part file(s) "
          f"({res.files_before} -> {res.files_after})")


def bench_million(root: Path, rows: int) -> None:
    store = Store.init(root)
    stages, per = 10, rows // 10
    ids = [f"vid{i:07d}" for i in range(per)]
    now = utcnow()
    t0 = time.perf_counter()
    store.append("videos", _videos_table(per))
    for s in range(stages):
        status = ["ok" if i % 7 else "failed" for i in range(per)]
        store.append("stage_results", pa.table({
            "id": ids, "stage": [f"stage{s}"] * per, "stage_version": ["v1"] * per,
            "status": status, "reason": [None] * per, "error": [None] * per,
            "output_json": [None] * per, "attempt": pa.array([1] * per, pa.int32()),
            "run_id": ["bench"] * per, "time": [now] * per,
        }, schema=STAGE_RESULT_SCHEMA))
    print(f"wrote {per} videos + {rows} stage_results rows in {time.perf_counter() - t0:.1f} s")
    store = Store(root)  # a fresh handle: nothing cached from the bulk load
    row = StageResult(ids[5], "stage3", "v1", "ok", attempt=2)
    t = time.perf_counter()
    store.append("stage_results", [row])
    one = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    todo = queries.work_list(store, "stage3", "v1", "videos")
    wl = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    queries.work_list(store, "stage4", "v1", "videos")
    wl_warm = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    store.append("stage_results", [StageResult(ids[6], "stage3", "v1", "ok", attempt=2)])
    warm = (time.perf_counter() - t) * 1e3
    print(f"against {rows} stage_results rows: one append {one:.1f} ms (cold handle; next one "
          f"{warm:.1f} ms), work-list query {wl:.1f} ms first on this handle (opens the "
          f"catalog), {wl_warm:.1f} ms next (another stage); {todo.num_rows} items to do")


def _videos_table(n: int) -> pa.Table:
    ids = [f"vid{i:07d}" for i in range(n)]
    now = utcnow()
    return pa.table({
        "video_id": ids, "source": ["synthetic"] * n, "source_video_id": ids,
        "start_s": [None] * n, "end_s": [None] * n, "uri": [None] * n,
        "duration_s": [10.0] * n, "fps": [None] * n, "n_frames": [None] * n,
        "width": [None] * n, "height": [None] * n, "created_at": [now] * n,
        "feature_uri": [None] * n,
    }, schema=VIDEO_SCHEMA)


def bench_stage(root: Path, sizes: list[int]) -> None:
    """No-op stage over N videos: the runner's own cost per item (shards of 64)."""
    from prevad.stage import Ok, Stage, run_stage

    per_item = {}
    for n in sizes:
        store = Store.init(root / f"stage{n}")
        store.append("videos", _videos_table(n))
        stage = Stage("noop", "v1", "videos", lambda rows: [Ok() for _ in rows], batch_size=64)
        t = time.perf_counter()
        summary = run_stage(store, stage, shard_size=64)
        secs = time.perf_counter() - t
        per_item[n] = secs / n * 1e3
        print(f"no-op stage over {n} items: {secs:.1f} s, {per_item[n]:.3f} ms per item "
              f"({secs / max(1, -(-n // 64)) * 1e3:.1f} ms per shard of 64; "
              f"{summary.ok} ok)")
    if len(sizes) > 1:
        lo, hi = min(sizes), max(sizes)
        print(f"stage runner per-item ratio {hi}/{lo}: {per_item[hi] / per_item[lo]:.2f}")


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the parent's peak at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reimport(root: str, path: str) -> None:
    """Child process: re-import, print seconds and peak RSS."""
    t = time.perf_counter()
    res = interop.import_benchmark(Store(root), "big", path, classes=BIG_CLASSES)
    secs = time.perf_counter() - t
    peak = _peak_rss_mb()
    print(json.dumps({"seconds": secs, "peak_mb": peak, "written": res.written,
                      "skipped": res.skipped}))


def bench_reimport(root: Path, n: int) -> None:
    entries = [
        {"path": f"feat/{i}.npy", "video_path": f"videos/v{i:07d}.mp4",
         "class_name": "Normal" if i % 3 else "Fighting",
         "descriptions": None if i % 3 else [f"two people fight {i}"],
         "anomaly_span": [] if i % 3 else [[0.1, 0.4], [0.6, 0.7]]}
        for i in range(n)
    ]
    root.parent.mkdir(parents=True, exist_ok=True)
    path = root.parent / "big.json"
    path.write_text(json.dumps(entries))
    store = Store.init(root)
    t = time.perf_counter()
    first = interop.import_benchmark(store, "big", path, classes=BIG_CLASSES)
    print(f"first import of {n} entries: {time.perf_counter() - t:.1f} s, "
          f"{first.written} rows written")
    out = subprocess.run(
        [sys.executable, __file__, "--reimport-child", str(root), str(path)],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    got = json.loads(out)
    print(f"re-import of the same {n} entries: {got['seconds']:.2f} s, peak RSS "
          f"{got['peak_mb']:.0f} MB (whole process), {got['written']} written, "
          f"{got['skipped']} skipped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--appends", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--stage-items", default="10000,100000",
                    help="comma-separated work-list sizes of the no-op stage")
    ap.add_argument("--only", default="appends,million,reimport,stage",
                    help="comma-separated parts to run")
    ap.add_argument("--reimport-child", nargs=2, metavar=("ROOT", "FILE"))
    args = ap.parse_args()
    if args.reimport_child:
        _reimport(*args.reimport_child)
        return
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        if "appends" in only:
            bench_appends(Path(tmp) / "appends", args.appends)
        if "million" in only:
            bench_million(Path(tmp) / "million", args.rows)
        if "reimport" in only:
            bench_reimport(Path(tmp) / "reimport" / "s", args.entries)
        if "stage" in only:
            bench_stage(Path(tmp), [int(x) for x in args.stage_items.split(",")])


if __name__ == "__main__":
    main()
