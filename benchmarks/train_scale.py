"""Training at curated-store scale: peak RSS and time to the first step of ``lagovad train``.

Builds a synthetic store of N clips (lengths uniform in 80-512 feature steps, half abnormal,
PreVAD classes, one description each; 98% train, 2% val with spans) through the store API in bulk
(``Store.feature_commit`` + one ``Store.append_many`` per chunk: features rows, files, videos and
annotations in one atomic commit each), then runs ``lagovad train`` on it in a subprocess twice:

- cold: the first run on the store reads every feature file once (checksum, shape, finiteness,
  mean; ``indexes/feature-index-*.parquet``) and builds the synthesis neighbour index;
- warm: a later run finds both (files known by size and mtime) and only ``stat``s the files.

Each run stops right after its first optimisation step (the step is wrapped: the benchmark, not
the trainer, ends the process). Reported per run: seconds from launching the process to the end of
the first step, peak RSS of the trainer process (``ru_maxrss``) and of each DataLoader worker
(``VmHWM``; a worker is forked from the trainer, so most of its pages are the trainer's,
shared). The model is ``lagovad-tiny`` (32-d features, so that 100k clips take 3.8 GB
of disk, not 60 GB): what grows with the number of clips is the trainer's per-clip state, which
does not depend on the feature width.

Usage::

    python benchmarks/train_scale.py --videos 10000 100000 [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL_ID = "synthetic-clip"
DIM = 32
CHUNK = 5000
CLASSES = ("Assault", "Explosion", "Fire", "Riot", "Car Accident", "Store Robbery")

#: Runs ``lagovad train`` and ends the process after the first optimisation step.
_RUNNER = r"""
import json, os, resource, sys, time
import lagovad.train as t
from lagovad.commands.train import train_command
import typer
real = t.train_step
marks = {}
def timed(name, fn):
    def wrapper(*a, **k):
        t0 = time.time()
        try:
            return fn(*a, **k)
        finally:
            marks[name] = marks.get(name, 0.0) + time.time() - t0
    return wrapper
t.load_training_data = timed("data_seconds", t.load_training_data)
t.neighbour_rows = timed("neighbour_seconds", t.neighbour_rows)
t.lagovad.create_model = timed("model_seconds", t.lagovad.create_model)
def first_step(*a, **k):
    out = real(*a, **k)
    import multiprocessing
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = []
    for child in multiprocessing.active_children():  # the DataLoader workers
        with open(f"/proc/{child.pid}/status") as fh:
            status = dict(line.split(":", 1) for line in fh if ":" in line)
        workers.append(int(status["VmHWM"].split()[0]) / 1024)
    print(json.dumps({"first_step_at": time.time(), "self_peak_rss_mib": self_kib / 1024,
                      "worker_peak_rss_mib": workers, **marks}), flush=True)
    os._exit(0)
t.train_step = first_step
app = typer.Typer()
app.command()(train_command)
app(sys.argv[1:])
"""


def build_store(root: Path, n: int, seed: int = 0) -> dict:
    """A store of ``n`` synthetic clips written in bulk; returns timings."""
    from prevad import Store
    from prevad.records import Annotation, Video, video_id_for

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    store = Store.init(root)
    lengths = rng.integers(80, 513, n)
    n_val = max(4, n // 50)
    for lo in range(0, n, CHUNK):
        feats, files, videos, anns = [], {}, [], []
        for i in range(lo, min(n, lo + CHUNK)):
            name = f"clip-{i:07d}"
            vid = video_id_for("synthetic", name)
            split = "val" if i < n_val else "train"
            abnormal = i % 2 == 0
            cat = CLASSES[(i // 2) % len(CLASSES)] if abnormal else "Normal"
            length = int(lengths[i])
            arr = rng.standard_normal((length, DIM), dtype=np.float32)
            row, blob = store.feature_commit(vid, MODEL_ID, arr)
            feats.append(row)
            files.update(blob)
            videos.append(Video(video_id=vid, source="synthetic", source_video_id=name))
            anns.append(Annotation(
                f"ann-{name}", vid, "prevad", "human", "synthetic", cat, abnormal,
                description=f"A {cat.lower()} in clip {i}." if abnormal else None,
                spans=[[0.3, 0.6]] if abnormal and split == "val" else [], split=split))
        store.append_many({"features": feats, "videos": videos, "annotations": anns}, files=files)
    return {"videos": n, "build_seconds": time.perf_counter() - t0,
            "feature_steps": int(lengths.sum()),
            "feature_gib": float(lengths.sum()) * DIM * 4 / 2**30}


def run_train(store: Path, out: Path) -> dict:
    """One ``lagovad train`` process to its first step: timings and peak RSS."""
    args = ["--store", str(store), "--out", str(out), "--model", "lagovad-tiny", "--epochs",
            "1", "--batch-size", "64", "--device", "cpu", "--no-progress", "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", _RUNNER, *args], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"lagovad train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    got = json.loads(lines[-1])
    return {
        "seconds_to_first_step": got["first_step_at"] - t0,
        "trainer_peak_rss_mib": got["self_peak_rss_mib"],
        "worker_peak_rss_mib": got["worker_peak_rss_mib"],
        # of which: model built (imports of torch/open_clip included), split resolved and
        # feature files checked, neighbour index built or loaded
        **{k: got[k] for k in ("model_seconds", "data_seconds", "neighbour_seconds")},
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dir", type=Path, help="where to build the stores (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="train-scale-", dir=args.dir))
    results = []
    try:
        for n in args.videos:
            store = base / f"store-{n}"
            result = build_store(store, n)
            print(json.dumps({"stage": "built", **result}), flush=True)
            for run in ("cold", "warm"):
                got = run_train(store, base / f"out-{n}")
                result[run] = got
                print(json.dumps({"stage": run, "videos": n, **got}), flush=True)
            result["load_average"] = os.getloadavg()
            results.append(result)
            if not args.keep:
                shutil.rmtree(store)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print("| videos | store build | cold: first step | cold: peak RSS | warm: first step | "
          "warm: peak RSS |")
    print("|---|---|---|---|---|---|")
    for r in results:
        c, w = r["cold"], r["warm"]
        print(f"| {r['videos']:,} | {r['build_seconds']:.0f} s | "
              f"{c['seconds_to_first_step']:.1f} s | {c['trainer_peak_rss_mib']:.0f} MiB | "
              f"{w['seconds_to_first_step']:.1f} s | {w['trainer_peak_rss_mib']:.0f} MiB |")
    return results


if __name__ == "__main__":
    main()
