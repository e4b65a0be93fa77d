"""Training throughput of LaGoVAD: samples/s and peak memory of full training steps.

One step = forward under a per-batch definition, all LaGoVAD losses, backward, gradient clipping
and an AdamW update, exactly as ``lagovad.train`` runs it (bf16 autocast on CUDA). Inputs are
random features of the requested shape (every step valid, half the videos abnormal).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process's peak resident set
size (``resource.getrusage``), reported in total and as the increase during the timed steps.

Usage::

    python benchmarks/train_throughput.py --model lagovad-b16 --batch-size 64 --length 512 \
        --steps 3 --random-clip

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
from lagovad.loss import LaGoVADLoss  # noqa: E402
from lagovad.synthesis import SynthSample, collate  # noqa: E402
from lagovad.train import TrainConfig, _autocast, batch_definition, resolve_device  # noqa: E402

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


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and print one JSON line of results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lagovad-b16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after 1 warm-up)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--random-clip", action="store_true", help="random CLIP text encoder")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    clip = {"backend": "hf", "random_init": True, "text_config": CLIP_B16_TEXT}
    model = lagovad.create_model(args.model, clip=clip if args.random_clip else None)
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.0)
    criterion = LaGoVADLoss()
    rng = np.random.default_rng(0)
    batch = make_batch(args.batch_size, args.length, int(model.config["video_dim"]), rng)
    features, mask = batch.features.to(device), batch.mask.to(device)

    recipe = TrainConfig(store="", out="")  # the trainer's default definition sampling

    def step(k: int) -> None:
        definition, labels, targets, frame_labels = batch_definition(
            batch, np.random.default_rng(k), CLASSES, recipe.description_prob, recipe.exclude_prob
        )
        with _autocast(device):
            out = model(features, mask, definition)
        terms = criterion(out, mask, labels.to(device), targets.to(device), frame_labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
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
    for k in range(1, args.steps + 1):
        step(k)
    sync()
    elapsed = time.perf_counter() - t0
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
        "seconds_per_step": elapsed / args.steps,
        "samples_per_s": args.batch_size * args.steps / elapsed,
        "trainable_params": sum(p.numel() for p in trainable),
    }
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        result["peak_memory_mib"] = _peak_rss_mib()
        result["peak_memory_growth_mib"] = result["peak_memory_mib"] - rss_before
        result["peak_memory_kind"] = "process peak RSS (getrusage)"
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
