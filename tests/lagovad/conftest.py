"""Session fixtures for the lagovad tests: tiny models built and saved locally (no download).

Fixtures:
    tiny_model: ``lagovad.create_model("lagovad-tiny")`` in eval mode (shared: do not mutate).
    tiny_open_clip_checkpoint: a full open_clip "lagovad-clip-tiny" state dict (.safetensors,
        seeded random weights, seed differs from the config's default init) loadable with
        ``open_clip.create_model_and_transforms("lagovad-clip-tiny", pretrained=path)``.
    tiny_hf_clip_text_dir: a tiny transformers ``CLIPTextModel`` saved with save_pretrained
        (width 32, so it fits lagovad-tiny: ``clip={"backend": "hf", "name": str(dir)}``).
    tiny_lagovad_checkpoint: a lagovad-tiny checkpoint directory written by save_checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_CLIP_CHECKPOINT_SEED = 1234
TINY_HF_SEED = 4321


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny LaGoVAD model (random weights, tiny open_clip text tower), eval mode."""
    import lagovad

    return lagovad.create_model("lagovad-tiny").eval()


@pytest.fixture(scope="session")
def tiny_open_clip_checkpoint(tmp_path_factory) -> Path:
    """Path to a saved full open_clip "lagovad-clip-tiny" model (.safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from lagovad.text import register_open_clip_configs

    register_open_clip_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_CLIP_CHECKPOINT_SEED)
        model = open_clip.create_model("lagovad-clip-tiny", pretrained=None)
    path = tmp_path_factory.mktemp("open_clip_tiny") / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_hf_clip_text_dir(tmp_path_factory) -> Path:
    """Directory with a tiny Hugging Face CLIPTextModel (config.json + model.safetensors)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_HF_SEED)
        model = CLIPTextModel(config)
    out = tmp_path_factory.mktemp("hf_clip_tiny")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_lagovad_checkpoint(tmp_path_factory, tiny_model) -> Path:
    """A lagovad-tiny checkpoint directory (model.safetensors + config.json)."""
    import lagovad

    out = tmp_path_factory.mktemp("lagovad_tiny_ckpt") / "ckpt"
    lagovad.save_checkpoint(out, tiny_model, extra={"step": 0, "note": "test fixture"})
    return out
