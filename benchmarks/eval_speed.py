"""Time `lagovad eval --all` on synthetic features of the seven benchmarks' real test splits.

Every test video of the seven benchmarks (real names and spans, 3,603 videos) gets random
features of a realistic length: official features take one frame in 8, so a video of F frames
has about F/8 steps. Per-benchmark mean lengths below are estimates of the test sets' mean
durations (not measured from the videos, which are not here); lengths are drawn log-normally
around them. The models have random weights (the real code path; timing does not depend on
weights): lagovad-tiny (dim 32) and lagovad-b16 (dim 512, with a randomly initialised
open_clip ViT-B-16 text tower in place of the HF CLIP weights that cannot be downloaded here).

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/eval_speed.py [--models tiny,b16] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Run from a checkout: the repository root first, whatever the installed package state.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Mean feature steps per video (stride 8): estimates of mean test-video durations.
MEAN_STEPS = {"ucf": 470, "xd": 340, "msad": 110, "ubnormal": 56, "dota": 12, "tad": 190,
              "lad": 110}
MODELS = {"tiny": ("lagovad-tiny", 32, None),
          "b16": ("lagovad-b16", 512, {"backend": "open_clip", "name": "ViT-B-16",
                                       "pretrained": None})}


def write_features(root: Path, dim: int, scale: float, seed: int = 0) -> tuple[int, int]:
    """Random features for every benchmark video; returns (videos, total steps)."""
    from lagovad.eval.benchmarks import BENCHMARKS, load_benchmark

    rng = np.random.default_rng(seed)
    n_videos = n_steps = 0
    for name in BENCHMARKS:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for v in load_benchmark(name).videos:
            t = max(int(rng.lognormal(np.log(MEAN_STEPS[name] * scale), 0.5)), 4)
            np.save(folder / f"{v.name}.npy", rng.standard_normal((t, dim), np.float32))
            n_videos += 1
            n_steps += t
    return n_videos, n_steps


def time_model(key: str, scale: float, batch_size: int, device: str | None) -> dict:
    """Build the model, save it, write features, and time `eval --all` through the CLI."""
    import typer
    from typer.testing import CliRunner

    import lagovad
    from lagovad.commands import evaluate

    name, dim, clip = MODELS[key]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = lagovad.create_model(name, clip=clip)
        lagovad.save_checkpoint(tmp / "ckpt", model, extra={"note": "random weights, timing"})
        del model
        t0 = time.perf_counter()
        n_videos, n_steps = write_features(tmp / "features", dim, scale)
        t_write = time.perf_counter() - t0
        app = typer.Typer()
        evaluate.register(app)
        args = ["eval", "--all", "--features", str(tmp / "features"), "--checkpoint",
                str(tmp / "ckpt"), "--out", str(tmp / "out"), "--batch-size", str(batch_size)]
        if device:
            args += ["--device", device]
        t0 = time.perf_counter()
        res = CliRunner().invoke(app, args)
        total = time.perf_counter() - t0
        if res.exit_code != 0:
            raise SystemExit(f"eval failed for {key}:\n{res.output}")
        import json

        timing = json.loads((tmp / "out" / "results.json").read_text())["timing"]
    return {"model": name, "videos": n_videos, "steps": n_steps, "write_s": t_write,
            "total_s": total, "timing": timing}


def main() -> None:
    """Run the timing and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,b16")
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply mean lengths.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}")
    rows = []
    for key in args.models.split(","):
        r = time_model(key.strip(), args.scale, args.batch_size, args.device)
        rows.append(r)
        print(f"\n{r['model']}: {r['videos']} videos, {r['steps']} feature steps "
              f"(features written in {r['write_s']:.1f} s)")
        print("| benchmark | videos | scoring s | metrics+figures s | videos/s |")
        print("|---|---|---|---|---|")
        for b, t in r["timing"].items():
            print(f"| {b} | {t['videos']} | {t['score_s']:.2f} | {t['metrics_s']:.2f} | "
                  f"{t['videos'] / max(t['score_s'] + t['metrics_s'], 1e-9):.1f} |")
        print(f"eval --all total: {r['total_s']:.1f} s, {r['videos'] / r['total_s']:.1f} videos/s, "
              f"{r['steps'] / r['total_s']:.0f} steps/s")
    if len(rows) > 1:
        print(f"\nratio total time {rows[1]['model']} / {rows[0]['model']}: "
              f"{rows[1]['total_s'] / rows[0]['total_s']:.1f}x")


if __name__ == "__main__":
    main()
