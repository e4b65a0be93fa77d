"""Training throughput: our trainer against the authors' Lightning trainer at equal work.

Both trainers get the same samples (``benchmarks/train_samples.py``: drawn once by dynamic video
synthesis, saved, read by both sides in the same order), the same batch size, ``max_len``, model
size (lagovad-b16 / their default.yaml), recipe (the authors' step: both branches, all 36 PreVAD
names, every loss term) and optimizer (AdamW, cosine schedule), on CPU in fp32. Each side runs in
its own process; runs alternate (ours, theirs, ours, theirs, ...) so that the load of a shared
machine falls on both alike, and each run times ``--steps`` optimisation steps after
``--warmup`` untimed ones. The load average is printed before and after; ratios matter, not
absolute numbers.

- ours: ``lagovad.train.train_step`` (what ``lagovad train`` runs per batch) on ``collate`` of
  the samples; the frozen CLIP text encoder is a randomly initialised Hugging Face
  CLIPTextModel with the clip-vit-base-patch16 text architecture.
- theirs: ``benchmarks/authors_trainer.py``: their ``LaGoVADLightModel.training_step`` under
  ``lightning.Trainer.fit`` (CLIP built the same way), every sample padded to ``max_len`` as
  their dataset pads it.

Their code and dependencies (transformers 4.x, lightning, einops) are not ours and are not
installed by ``make``::

    pip install --target DEPS transformers==4.46.3 huggingface_hub==0.26.5 tokenizers==0.20.3 \
        lightning==2.5.6 einops --no-deps
    git clone https://github.com/Kamino666/LaGoVAD-PreVAD THEIRS

Usage::

    python benchmarks/train_throughput.py --authors THEIRS --authors-deps DEPS \
        --data prevad --batch-size 64 --length 512 --steps 2 --repeats 3

``--data`` picks the samples' length distribution (``prevad``: clip lengths like PreVAD's, the
realistic case; ``uniform``: 80-512; ``full``: every sample ``--length`` steps). Without
``--authors`` only our side runs (``--recipe paper`` and ``--device cuda`` are for that case).
Peak memory of our side: ``torch.cuda.max_memory_allocated`` on CUDA, peak RSS on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the sibling module `benchmarks.train_samples`
    sys.path.insert(0, str(ROOT))


def _peak_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# ----------------------------------------------------------------------------- our side
def run_ours(args: argparse.Namespace) -> dict:
    """Time our trainer's step on the shared samples (one process, one JSON line)."""
    import numpy as np
    import torch

    import lagovad
    from benchmarks.train_samples import CLIP_B16_TEXT, read_samples
    from lagovad.recipe import PREVAD_NAMES
    from lagovad.synthesis import SynthSample, collate
    from lagovad.train import TrainConfig, lr_at, resolve_device, train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    s = read_samples(args.samples)
    clip = {"backend": "hf", "random_init": True, "text_config": CLIP_B16_TEXT}
    torch.manual_seed(0)
    model = lagovad.create_model(args.model, clip=clip).to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.0)
    total = len(s["lengths"]) // args.batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_at(k, total, 20, 1.0))
    cfg = TrainConfig(store="", out="", recipe=args.recipe, grad_clip=args.grad_clip)
    categories = list(PREVAD_NAMES[1:])
    samples = [
        SynthSample(s["features"][i, :n].numpy(), s["frame_labels"][i, :n].numpy(),
                    int(s["labels"][i]), s["categories"][i], s["descriptions"][i])
        for i, n in enumerate(s["lengths"].tolist())
    ]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times, cpu = [], []
    for k in range(total):
        if k == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        batch = collate(samples[k * args.batch_size : (k + 1) * args.batch_size])
        train_step(model, batch, cfg, categories, np.random.default_rng(k), device, optimizer,
                   scheduler)
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = {"side": "ours", "step_seconds": times[args.warmup :],
           "step_cpu_seconds": cpu[args.warmup :],
           "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
        out["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_memory_mib"] = _peak_rss_mib()
    return out


# ----------------------------------------------------------------------------- driver
def _run_side(cmd: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _summary(runs: list[dict], batch_size: int) -> dict:
    """Samples/s per run and their median, by wall time and by CPU time (samples per CPU
    second of the process's threads: on a shared machine the wall clock also measures the
    neighbours' load, CPU time much less so)."""
    out: dict[str, dict] = {}
    for run in runs:
        side = out.setdefault(run["side"], {"samples_per_s": [], "samples_per_cpu_s": []})
        n = batch_size * len(run["step_seconds"])
        side["samples_per_s"].append(n / sum(run["step_seconds"]))
        side["samples_per_cpu_s"].append(n / sum(run["step_cpu_seconds"]))
    for side in out.values():
        side["median"] = statistics.median(side["samples_per_s"])
        side["median_cpu"] = statistics.median(side["samples_per_cpu_s"])
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison and print one JSON line per run, then a summary line and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("driver", "ours"), default="driver",
                        help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="lagovad-b16")
    parser.add_argument("--data", default="prevad", choices=("prevad", "uniform", "full"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=512, help="max_len (T)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating")
    parser.add_argument("--authors", type=Path, help="checkout of the authors' repository")
    parser.add_argument("--authors-deps", type=Path, help="their dependencies (pip --target)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recipe", choices=("official", "paper"), default="official")
    parser.add_argument("--grad-clip", type=float, default=0.0, help="0 = off (the authors')")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.side == "ours":
        result = run_ours(args)
        print(json.dumps(result), flush=True)
        return result

    from benchmarks.train_samples import make_samples, write_samples

    n = args.batch_size * (args.warmup + args.steps)
    samples = make_samples(args.data, n, args.length, 512, seed=args.seed)
    lengths = samples["lengths"].float()
    info = {
        "model": args.model, "data": args.data, "batch_size": args.batch_size,
        "length": args.length, "steps": args.steps, "warmup": args.warmup,
        "repeats": args.repeats, "recipe": args.recipe, "device": args.device,
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "mean_sample_length": float(lengths.mean()),
        "fill_vs_max_len": float(lengths.mean() / args.length),
        "load_average_before": os.getloadavg(),
    }
    print(json.dumps(info), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        write_samples(samples, Path(tmp))
        del samples
        common = ["--samples", tmp, "--batch-size", str(args.batch_size)]
        if args.threads:
            common += ["--threads", str(args.threads)]
        ours = [sys.executable, "-m", "benchmarks.train_throughput", "--side", "ours",
                "--model", args.model, "--device", args.device, "--recipe", args.recipe,
                "--grad-clip", str(args.grad_clip), "--warmup", str(args.warmup), *common]
        theirs = None
        if args.authors:
            theirs = [sys.executable, "-m", "benchmarks.authors_trainer", "--src",
                      str(args.authors), "--warmup", str(args.warmup), *common]
            deps = str(args.authors_deps) + os.pathsep if args.authors_deps else ""
            their_env = {**env, "PYTHONPATH": deps + str(ROOT)}
        for _ in range(args.repeats):
            runs.append(_run_side(ours, env))
            print(json.dumps(runs[-1]), flush=True)
            if theirs:
                runs.append(_run_side(theirs, their_env))
                print(json.dumps(runs[-1]), flush=True)
    summary = _summary(runs, args.batch_size)
    if "authors" in summary:
        summary["ratio_of_medians"] = summary["ours"]["median"] / summary["authors"]["median"]
        summary["ratio_of_medians_cpu"] = (summary["ours"]["median_cpu"]
                                           / summary["authors"]["median_cpu"])
    summary["load_average_after"] = os.getloadavg()
    print(json.dumps(summary), flush=True)
    print(_table(info, summary))
    return summary


def _table(info: dict, summary: dict) -> str:
    rows = ["| side | samples/s per run (wall) | median | samples per CPU-s per run | median |",
            "|---|---|---|---|---|"]
    for side in ("ours", "authors"):
        if side in summary:
            s = summary[side]
            wall = ", ".join(f"{x:.3f}" for x in s["samples_per_s"])
            cpu = ", ".join(f"{x:.3f}" for x in s["samples_per_cpu_s"])
            rows.append(f"| {side} | {wall} | {s['median']:.3f} | {cpu} | {s['median_cpu']:.3f} |")
    if "ratio_of_medians" in summary:
        rows.append(f"| ours / authors | | **{summary['ratio_of_medians']:.2f}x** | | "
                    f"**{summary['ratio_of_medians_cpu']:.2f}x** |")
    head = (f"data={info['data']} (mean length {info['mean_sample_length']:.0f} of "
            f"{info['length']}), batch {info['batch_size']}, {info['steps']} timed steps x "
            f"{info['repeats']} alternating runs, load average "
            f"{info['load_average_before'][0]:.2f} -> {summary['load_average_after'][0]:.2f}")
    return head + "\n" + "\n".join(rows)


if __name__ == "__main__":
    main()
