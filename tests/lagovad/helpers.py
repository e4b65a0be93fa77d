"""Test helpers shared by several test modules: synthesised media and planted-feature stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lagovad.synthetic import DEFAULT_DESCRIPTIONS, SYNTHETIC_MODEL_ID, populate_store
from lagovad.video import write_video as encode_video
from prevad import Store

GRAY_STEP = 4  # frame i of a gray video has level (GRAY_STEP * i) % 256
DIM = 32  # lagovad-tiny video_dim
MODEL_ID = SYNTHETIC_MODEL_ID
DESCRIPTIONS = DEFAULT_DESCRIPTIONS


def write_video(path: Path, n_frames: int, *, width: int = 64, height: int = 48, fps: int = 25,
                faststart: bool = False, frame_fn=None) -> Path:
    """A lossless mp4 whose frame i is `frame_fn(i)` (default: uniformly gray at level 4i)."""
    if frame_fn is None:
        def frame_fn(i: int) -> np.ndarray:
            return np.full((height, width, 3), (GRAY_STEP * i) % 256, np.uint8)
    return encode_video(path, n_frames, frame_fn, fps=fps, faststart=faststart)


def make_store(
    root: Path,
    n_train: int = 8,
    n_val: int = 3,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "val"),
    dim: int = DIM,
) -> Store:
    """A prevad store of planted-anomaly features: ``n`` abnormal videos per class and split
    (``n_train`` for train, ``n_val`` otherwise), as many normal ones; see lagovad.synthetic."""
    store = Store.init(root)
    counts = {split: n_train if split == "train" else n_val for split in splits}
    populate_store(store, dim=dim, n_per_class=counts, seed=seed)
    return store
