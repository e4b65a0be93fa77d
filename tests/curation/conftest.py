"""Fixtures of the model-based curation tests: tiny random-weight models built locally, a store
with real (synthetic) videos and segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.engines.tiny import build_tiny_llm, build_tiny_vlm
from lagovad.video import write_video
from prevad import Store
from prevad.records import Segment, Video, make_id


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2-VL model saved with its processor."""
    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-qwen2-vl")


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random text-only Qwen2 model saved with its tokenizer."""
    return build_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-qwen2")


def gray_video(path: Path, n_frames: int = 20, fps: int = 10, size: int = 32,
               base: int = 0) -> Path:
    """An H.264 video whose frame i is uniformly gray level base + 10 * i (lossless)."""
    return write_video(
        path, n_frames,
        lambda i: np.full((size, size, 3), min(255, base + 10 * i), np.uint8), fps=fps,
    )


@pytest.fixture()
def video_store(tmp_path: Path) -> Store:
    """A store with 3 videos (2 s each, one of them a corrupt file) and one segment per video.

    Video uris are relative to the store root, as acquisition stores them.
    """
    store = Store.init(tmp_path / "store")
    (store.root / "media").mkdir()
    videos, segments = [], []
    for k in range(3):
        name = f"media/v{k}.mp4"
        if k == 2:
            (store.root / name).write_bytes(b"not a video at all" * 10)
        else:
            gray_video(store.root / name, base=3 * k)
        v = Video.create("test", f"v{k}", uri=name, duration_s=2.0)
        videos.append(v)
        segments.append(Segment(make_id(v.video_id, 0.5, 1.5), v.video_id, "test", 0.5, 1.5,
                                method="scene"))
    store.append("videos", videos)
    store.append("segments", segments)
    return store
