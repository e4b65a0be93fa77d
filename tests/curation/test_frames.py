"""Frame sampling for the multimodal stages (PyAV, real H.264 files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.frames import FrameCache, FrameConfig, FrameError, sample_frames
from tests.curation.conftest import gray_video


def levels(frames: np.ndarray) -> list[int]:
    """The gray level of each frame, as frame index (level = 10 * index)."""
    return [round(float(f.mean()) / 10) for f in frames]


def test_frames_spread_uniformly_over_the_span(tmp_path: Path) -> None:
    video = gray_video(tmp_path / "v.mp4", n_frames=20, fps=10)
    frames = sample_frames(video, 0.5, 1.5, FrameConfig(n=4, size=16))
    assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8
    # targets 0.625, 0.875, 1.125, 1.375 s at 10 fps -> first frame at or after: 7, 9, 12, 14
    assert levels(frames) == [7, 9, 12, 14]


def test_whole_video_when_no_span(tmp_path: Path) -> None:
    video = gray_video(tmp_path / "v.mp4", n_frames=20, fps=10)
    assert levels(sample_frames(video, None, None, FrameConfig(n=2, size=16))) == [5, 15]


def test_span_past_the_end_repeats_the_last_frame(tmp_path: Path) -> None:
    video = gray_video(tmp_path / "v.mp4", n_frames=20, fps=10)
    assert levels(sample_frames(video, 1.5, 9.5, FrameConfig(n=3, size=16)))[-1] == 19


def test_no_decodable_frame_is_a_clear_error(tmp_path: Path) -> None:
    video = gray_video(tmp_path / "v.mp4", n_frames=20, fps=10)
    with pytest.raises(FrameError, match="no decodable frame"):
        sample_frames(video, 5.0, 6.0, FrameConfig(n=2, size=16))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(FrameError, match="bad.mp4"):
        sample_frames(bad, None, None, FrameConfig(n=2, size=16))
    with pytest.raises(FrameError, match="does not exist"):
        sample_frames(tmp_path / "missing.mp4", None, None, FrameConfig())


def test_frame_cache_decodes_once(tmp_path: Path) -> None:
    video = gray_video(tmp_path / "v.mp4", n_frames=20, fps=10)
    cache = FrameCache(tmp_path / "cache")
    cfg = FrameConfig(n=4, size=16)
    first = cache.get(video, 0.5, 1.5, cfg)
    files = list((tmp_path / "cache").glob("*.npy"))
    assert len(files) == 1
    # Overwrite the cached array: a second get must read it, not decode the video again.
    np.save(files[0], np.zeros_like(first))
    assert not FrameCache(tmp_path / "cache").get(video, 0.5, 1.5, cfg).any()
    # Another span is another entry.
    cache.get(video, 0.0, 1.0, cfg)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
