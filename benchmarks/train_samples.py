"""The samples both trainers get in ``benchmarks/train_throughput.py`` (shared by its two sides).

Samples are drawn by our dynamic video synthesis (the authors' rules: 1-5 clips, fillers cropped,
first ``max_len`` steps kept) from synthetic videos whose lengths follow one of three
distributions, then saved once, so that both trainers run on exactly the same features, lengths,
labels and descriptions in the same order:

- ``prevad``: clip lengths like PreVAD's (the paper: mean 21.4 s, most clips 5-20 s, a few over a
  minute; at 30 fps and one feature every 8 frames that is a log-normal length with median 55
  and mean about 80 steps);
- ``uniform``: lengths uniform in 80-512 steps (the scale benchmark's store);
- ``full``: every sample exactly ``max_len`` steps (no padding anywhere: the work of a step is
  then the authors' math alone).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

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
DISTRIBUTIONS = ("prevad", "uniform", "full")
_WORDS = ("a", "man", "the", "car", "street", "falls", "fire", "crowd", "suddenly", "runs", "near",
          "camera", "road", "building", "smoke", "people", "hits", "two", "police", "shop")


def video_lengths(kind: str, n: int, max_len: int, rng: np.random.Generator) -> np.ndarray:
    """Clip lengths (feature steps) of ``n`` synthetic videos under distribution ``kind``."""
    if kind == "prevad":
        return np.clip(rng.lognormal(np.log(55.0), 0.8, n), 8, 4000).astype(int)
    if kind == "uniform":
        return rng.integers(80, 513, n)
    if kind == "full":
        return np.full(n, max_len + 64)
    raise ValueError(f"unknown length distribution {kind!r}; choose one of {DISTRIBUTIONS}")


def _description(rng: np.random.Generator) -> str:
    # PreVAD descriptions average 22.9 words
    return " ".join(rng.choice(_WORDS, int(rng.integers(15, 31)))).capitalize() + "."


def make_samples(kind: str, n_samples: int, max_len: int, dim: int, seed: int = 0) -> dict:
    """``n_samples`` synthesized samples (half abnormal, PreVAD classes, one description each)."""
    # imported here: the authors' side reads samples without importing our package
    from lagovad.recipe import PREVAD_NAMES
    from lagovad.synthesis import DynamicSynthesizer, TrainVideo

    rng = np.random.default_rng(seed)
    n_videos = max(64, n_samples)
    lengths = video_lengths(kind, n_videos, max_len, rng)
    classes = PREVAD_NAMES[1:]
    videos = []
    for i, length in enumerate(lengths):
        abnormal = i % 2 == 0
        videos.append(TrainVideo(
            video_id=f"v{i:06d}",
            features=rng.standard_normal((int(length), dim), dtype=np.float32),
            is_anomaly=abnormal,
            category=classes[i % len(classes)] if abnormal else "Normal",
            description=_description(rng) if abnormal else "",
        ))
    synth = DynamicSynthesizer(videos, {}, max_len=max_len, seed=seed, cut="first")
    # alternate abnormal and normal samples, as a shuffled epoch mixes them
    half = len(synth) // 2
    order = [j for i in range(n_samples // 2 + 1) for j in (i % half, half + i % half)]
    drawn = [synth.sample(j) for j in order[:n_samples]]
    feats = torch.zeros(n_samples, max_len, dim)
    frames = torch.zeros(n_samples, max_len)
    for row, s in enumerate(drawn):
        feats[row, : len(s.features)] = torch.from_numpy(s.features)
        frames[row, : len(s.features)] = torch.from_numpy(s.frame_labels)
    return {
        "features": feats,
        "frame_labels": frames,
        "lengths": torch.tensor([len(s.features) for s in drawn]),
        "labels": torch.tensor([s.label for s in drawn]),
        "categories": [s.category for s in drawn],
        "descriptions": [s.description for s in drawn],
        "max_len": max_len,
        "kind": kind,
    }


def write_samples(samples: dict, folder: Path) -> None:
    """Save samples (tensors as safetensors, texts as JSON)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: samples[k].contiguous() for k in ("features", "frame_labels", "lengths",
                                                    "labels")}, str(folder / "samples.safetensors"))
    meta = {k: samples[k] for k in ("categories", "descriptions", "max_len", "kind")}
    (folder / "samples.json").write_text(json.dumps(meta))


def read_samples(folder: Path) -> dict:
    """Inverse of :func:`write_samples`."""
    data = dict(load_file(str(Path(folder) / "samples.safetensors")))
    data.update(json.loads((Path(folder) / "samples.json").read_text()))
    return data
