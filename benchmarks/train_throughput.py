"""Training throughput of LaGoVAD: samples/s and peak memory of full training steps.

One step = the training step of a recipe (``lagovad.train.train_step_terms``: the official
recipe's two branches with the 36-class names definition, or the paper recipe's one definition
per batch), backward and an AdamW update, exactly as ``lagovad.train`` runs it (bf16 autocast on
CUDA; gradient clipping only with ``--grad-clip``). Inputs are random features of the requested
shape (every step valid, half the videos abnormal). Both recipes are measured by default, one
JSON line each.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process's peak resident set
size (``resource.getrusage``), reported in total and as the increase during the timed steps.

Usage::

    python benchmarks/train_throughput.py --model lagovad-b16 --batch-size 64 --length 512 \
        --steps 3 --random-clip [--recipe official|paper|both]

``--random-clip`` builds the frozen text encoder as a randomly initialised Hugging Face
CLIPTextModel with the clip-vit-base-patch16 text architecture (no download; the cost of a step
does not depend on the weights). Without it the config's CLIP is loaded as named.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lagovad  # noqa: E402
from lagovad.synthesis import SynthSample, collate  # noqa: E402
from lagovad.train import TrainConfig, resolve_device, train_step_terms  # noqa: E402

#: Text architecture of openai/clip-vit-base-patch16 (transformers CLIPTextConfig fields).
CLIP_B16_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
CLASSES = ["Explosion", "Fire", "Assault", "Riot", "Car Accident", "Store Robbery"]


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def make_batch(batch_size: int, length: int, dim: int, rng: np.random.Generator):
    """Random features [B, T, D]; odd rows abnormal with a span in the middle third."""
    samples = []
    for i in range(batch_size):
        abnormal = i % 2 == 1
        labels = np.zeros(length, np.float32)
        if abnormal:
            labels[length // 3 : 2 * length // 3] = 1.0
        cat = CLASSES[i % len(CLASSES)] if abnormal else "Normal"
        samples.append(
            SynthSample(
                rng.normal(size=(length, dim)).astype(np.float32),
                labels,
                int(abnormal),
                cat,
                f"A video in which {cat.lower()} happens." if abnormal else "",
            )
        )
    return collate(samples)


def measure(model, batch, recipe: str, steps: int, grad_clip: float, device) -> dict:
    """Time ``steps`` training steps of ``recipe`` after one warm-up step."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.0)
    cfg = TrainConfig(store="", out="", recipe=recipe, grad_clip=grad_clip)

    def step(k: int) -> None:
        terms = train_step_terms(model, batch, cfg, CLASSES, np.random.default_rng(k), device)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step(0)  # warm-up: allocations, text cache, kernels
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _peak_rss_mib()
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        step(k)
    sync()
    elapsed = time.perf_counter() - t0
    result = {
        "recipe": recipe,
        "seconds_per_step": elapsed / steps,
        "samples_per_s": len(batch.labels) * steps / elapsed,
    }
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        result["peak_memory_mib"] = _peak_rss_mib()
        result["peak_memory_growth_mib"] = result["peak_memory_mib"] - rss_before
        result["peak_memory_kind"] = "process peak RSS (getrusage)"
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark and print one JSON line of results per recipe."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lagovad-b16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after 1 warm-up)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--recipe", choices=("official", "paper", "both"), default="both")
    parser.add_argument("--grad-clip", type=float, default=0.0, help="0 = off (the authors')")
    parser.add_argument("--random-clip", action="store_true", help="random CLIP text encoder")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    clip = {"backend": "hf", "random_init": True, "text_config": CLIP_B16_TEXT}
    rng = np.random.default_rng(0)
    results = []
    for recipe in ("official", "paper") if args.recipe == "both" else (args.recipe,):
        torch.manual_seed(0)  # the same initial weights for every recipe
        model = lagovad.create_model(args.model, clip=clip if args.random_clip else None)
        model.to(device).train()
        batch = make_batch(args.batch_size, args.length, int(model.config["video_dim"]), rng)
        result = {
            "model": args.model,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "batch_size": args.batch_size,
            "length": args.length,
            "steps": args.steps,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            **measure(model, batch, recipe, args.steps, args.grad_clip, device),
        }
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
