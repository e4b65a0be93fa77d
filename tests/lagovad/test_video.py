"""PyAV decoding: sampled indices, true frame count, no-crop resize, domain errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lagovad.video import (
    DecodeStats,
    VideoDecodeError,
    VideoOpenFailure,
    count_frames,
    iter_sampled_frames,
    probe,
    sample_indices,
)
from tests.lagovad.helpers import GRAY_STEP, write_video


@pytest.fixture(scope="module")
def gray_50_frames_mp4(tmp_path_factory) -> Path:
    """50 frames, 64x48, 25 fps; frame i is uniformly gray at level 4i."""
    return write_video(tmp_path_factory.mktemp("video") / "gray50.mp4", 50)


def test_sample_indices_follow_the_authors_formula():
    idx = sample_indices(1827)
    assert idx[:3].tolist() == [4, 12, 20]
    assert idx[-1] == 1820 and len(idx) == 228
    assert sample_indices(100, stride=16).tolist() == list(range(8, 100, 16))
    assert sample_indices(3).tolist() == []


@pytest.mark.parametrize("stride,offset", [(0, None), (8, 8), (8, -1)])
def test_invalid_stride_or_offset_is_rejected(stride, offset):
    with pytest.raises(ValueError, match="stride|offset"):
        sample_indices(10, stride, offset)


def test_robbery102_has_1827_decoded_frames(robbery102_mp4):
    assert count_frames(robbery102_mp4) == 1827
    info = probe(robbery102_mp4)
    assert (info.width, info.height) == (1200, 800)
    assert info.fps == pytest.approx(30.0)


def test_sampled_frames_are_the_frames_at_the_sampled_indices(gray_50_frames_mp4):
    stats = DecodeStats()
    chunks = list(iter_sampled_frames(gray_50_frames_mp4, size=16, chunk_size=3, stats=stats))
    indices = np.concatenate([c.indices for c in chunks])
    frames = np.concatenate([c.frames for c in chunks])
    assert indices.tolist() == [4, 12, 20, 28, 36, 44]
    assert frames.shape == (6, 16, 16, 3) and frames.dtype == np.uint8
    levels = frames.reshape(len(frames), -1).mean(axis=1)
    np.testing.assert_allclose(levels, GRAY_STEP * indices, atol=2)
    assert stats.n_frames == 50 and stats.n_sampled == 6 and stats.finished


def test_resize_squashes_without_cropping(tmp_path):
    # Left quarter white, rest black, on a 2:1 frame: a centre crop would cut the white band off.
    def frame_fn(i: int) -> np.ndarray:
        a = np.zeros((32, 128, 3), np.uint8)
        a[:, :32] = 255
        return a

    path = write_video(tmp_path / "band.mp4", 10, width=128, height=32, frame_fn=frame_fn)
    (chunk,) = list(iter_sampled_frames(path, size=16))
    frame = chunk.frames[0].mean(axis=2)
    assert frame.shape == (16, 16)
    assert frame[:, :3].min() > 200  # white band kept, squashed to the left quarter
    assert frame[:, 6:].max() < 50


def test_broken_files_raise_domain_errors(tmp_path, robbery102_mp4):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    head_cut = tmp_path / "head_cut.mp4"  # moov atom at the end: cut off with the tail
    head_cut.write_bytes(robbery102_mp4.read_bytes()[:500_000])
    for path in (empty, text, head_cut, tmp_path / "missing.mp4"):
        with pytest.raises(VideoOpenFailure, match=str(path.name)):
            count_frames(path)


def test_truncated_faststart_file_is_a_decode_error(tmp_path):
    good = write_video(tmp_path / "fs.mp4", 60, faststart=True)
    cut = tmp_path / "cut.mp4"
    data = good.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert count_frames(good) == 60
    with pytest.raises(VideoDecodeError, match="truncated"):
        count_frames(cut)
