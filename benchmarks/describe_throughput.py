"""Items/s of the describe stage per engine (and per batch size).

Runs the real stage (:func:`prevad.stage.run_stage` over ``segments`` of a store of synthetic
videos) with the request cache off, so every item is generated. Frames are decoded into the
frame cache before timing: the number measures generation, the part the engines differ in.

CPU (default): a tiny random Qwen2-VL built on the fly, transformers engine, batched
(``--batch-size``) against one-at-a-time; the description length is pinned
(``--chars``: min = max) so both runs generate the same number of tokens::

    python benchmarks/describe_throughput.py --items 16 --batch-size 8

Another engine or model (e.g. on a GPU machine)::

    python benchmarks/describe_throughput.py --engine vllm --model /models/Qwen2-VL-2B-Instruct \\
        --items 256 --batch-size 256 --chars 400 --max-tokens 256
    python benchmarks/describe_throughput.py --engine openai --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen2-VL-2B-Instruct --items 256 --batch-size 64

For vLLM, compare with ``vllm bench throughput --model <same> --input-len <prompt tokens>
--output-len <max tokens> --num-prompts <items>`` (prompt tokens are printed below).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from curation import describe  # noqa: E402
from curation.engines import Sampling  # noqa: E402
from curation.frames import FrameConfig  # noqa: E402
from curation.mllm import EngineConfig, FrameSource, items_of  # noqa: E402
from lagovad.video import write_video  # noqa: E402
from prevad import Store  # noqa: E402
from prevad.records import Segment, Video, make_id  # noqa: E402
from prevad.stage import run_stage  # noqa: E402


def make_store(root: Path, n: int, frames: FrameConfig) -> Store:
    """A store with ``n`` synthetic 2 s videos, one segment each, frames pre-decoded."""
    store = Store.init(root)
    rng = np.random.default_rng(0)
    videos, segs = [], []
    for k in range(n):
        base = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        path = root / "media" / f"v{k}.mp4"
        path.parent.mkdir(exist_ok=True)
        write_video(path, 20, lambda i, b=base: np.roll(b, i, axis=1), fps=10)
        v = Video.create("bench", f"v{k}", uri=f"media/v{k}.mp4", duration_s=2.0)
        videos.append(v)
        segs.append(Segment(make_id(v.video_id, 0.0, 2.0), v.video_id, "bench", 0.0, 2.0))
    store.append("videos", videos)
    store.append("segments", segs)
    src = FrameSource(store, frames)
    for it in items_of(store, "segments", store.read("segments").to_pylist()):
        src.frames(it)
    return store


def run_once(args: argparse.Namespace, model: str, batch_size: int, root: Path) -> dict:
    frames = FrameConfig(args.frames, args.frame_size)
    store = make_store(root, args.items, frames)
    ecfg = EngineConfig(args.engine, model, device=args.device, batch_size=batch_size,
                        base_url=args.base_url, concurrency=batch_size, cache=False,
                        sampling=Sampling(max_tokens=args.max_tokens))
    cfg = describe.DescribeConfig(frames, min_chars=args.chars, max_chars=args.chars)
    stage = describe.make_stage(store, ecfg, cfg)  # model load is not timed
    # Warm-up outside the timing (first-call allocations, grammar compilation).
    stage.process(store.read("segments").slice(0, 1).to_pylist())
    t = time.perf_counter()
    summary = run_stage(store, stage, shard_size=max(batch_size, 64))
    secs = time.perf_counter() - t
    rows = [json.loads(r["output_json"]) for r in
            store.query("SELECT output_json FROM stage_results WHERE stage = 'describe' "
                        "AND status = 'ok'").to_pylist()]
    return {
        "engine": args.engine, "batch_size": batch_size, "items": summary.items,
        "ok": summary.ok, "failed": summary.failed, "seconds": round(secs, 3),
        "items_per_s": round(summary.items / secs, 3),
        "mean_prompt_tokens": float(np.mean([r["prompt_tokens"] for r in rows])) if rows else None,
        "mean_completion_tokens": float(np.mean([r["completion_tokens"] for r in rows]))
        if rows else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="transformers", choices=["transformers", "vllm", "openai"])
    ap.add_argument("--model", default=None, help="default: a tiny random Qwen2-VL built here")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-single", action="store_true", help="skip the one-at-a-time run")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--frame-size", type=int, default=56)
    ap.add_argument("--chars", type=int, default=24, help="description length (min = max)")
    ap.add_argument("--max-tokens", type=int, default=160)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from curation.engines.tiny import build_tiny_vlm

            model = str(build_tiny_vlm(Path(tmp) / "tiny-qwen2-vl"))
        results = [run_once(args, model, args.batch_size, Path(tmp) / "batched")]
        if not args.no_single and args.batch_size > 1:
            results.append(run_once(args, model, 1, Path(tmp) / "single"))
    for r in results:
        print(json.dumps(r))
    if len(results) == 2:
        print(f"batched/one-at-a-time speed-up: "
              f"{results[0]['items_per_s'] / results[1]['items_per_s']:.2f}x")


if __name__ == "__main__":
    main()
