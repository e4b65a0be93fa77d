"""Dynamic video synthesis: structure, label placement, probabilities, determinism, kNN index."""

from __future__ import annotations

import numpy as np
import pytest

from lagovad.synthesis import (
    DynamicSynthesizer,
    SynthesisError,
    TrainVideo,
    build_neighbour_index,
    collate,
    load_or_build_neighbours,
    random_crop,
)


def _videos(n_abnormal: int = 6, n_normal: int = 8, dim: int = 8) -> list[TrainVideo]:
    rng = np.random.default_rng(0)
    videos = []
    for i in range(n_abnormal):
        # abnormal features are +1 in column 0 so the label region can be read back
        feats = rng.normal(size=(int(rng.integers(5, 30)), dim)).astype(np.float32)
        feats[:, 0] = 100.0 + i
        videos.append(TrainVideo(f"a{i}", feats, True, "Fighting", f"people fight {i}"))
    for i in range(n_normal):
        feats = rng.normal(size=(int(rng.integers(5, 30)), dim)).astype(np.float32)
        feats[:, 0] = -1.0
        videos.append(TrainVideo(f"n{i}", feats, False, "Normal"))
    return videos


def test_epoch_length_and_sample_kinds():
    videos = _videos()
    synth = DynamicSynthesizer(videos, build_neighbour_index(videos, k=3), max_len=512, seed=1)
    assert len(synth) == 12
    for i in range(len(synth)):
        s = synth.sample(i)
        assert s.label == int(i < 6)
        assert s.category == ("Fighting" if i < 6 else "Normal")
        if i < 6:
            # the label covers exactly the anchor clip, found whole and contiguous
            anchor = videos[i].features
            region = s.features[s.frame_labels == 1]
            np.testing.assert_array_equal(region, anchor)
            idx = np.flatnonzero(s.frame_labels)
            assert idx[-1] - idx[0] + 1 == len(anchor)
            assert s.description == f"people fight {i}"
        else:
            assert s.frame_labels.sum() == 0
            assert (s.features[:, 0] == -1.0).all()  # only normal clips


def test_clip_count_distribution_and_abnormal_position():
    videos = _videos(n_abnormal=2)
    synth = DynamicSynthesizer(videos, build_neighbour_index(videos, k=3), seed=7)
    counts, first = [], []
    for epoch in range(1500):
        s = synth.sample(0, epoch)
        counts.append(len(s.video_ids))
        first.append(s.video_ids[0] == "a0")
    counts = np.array(counts)
    # 1 clip w.p. 0.3 + 0.7 / 5; 2..5 clips w.p. 0.14 each
    assert counts.min() == 1 and counts.max() == 5
    assert abs((counts == 1).mean() - 0.44) < 0.04
    for n in range(2, 6):
        assert abs((counts == n).mean() - 0.14) < 0.03
        # abnormal clip at a uniformly random position: first with prob 1/n
        at_front = np.array(first)[counts == n].mean()
        assert abs(at_front - 1 / n) < 0.1


def test_fillers_are_crops_of_normals_or_neighbours():
    videos = _videos()
    neighbours = {v.video_id: ["n0"] for v in videos}  # a single neighbour, easy to recognise
    synth = DynamicSynthesizer(videos, neighbours, seed=3)
    by_id = {v.video_id: v for v in videos}
    n_neighbour = n_fillers = 0
    for epoch in range(200):
        s = synth.sample(2, epoch)
        n_fillers += len(s.video_ids) - 1
        n_neighbour += sum(vid == "n0" for vid in s.video_ids[:])
        for vid in s.video_ids:
            assert vid == "a2" or not by_id[vid].is_anomaly
    # half the fillers come from the neighbour list, half are random normals (n0 among 8)
    assert abs(n_neighbour / n_fillers - (0.5 + 0.5 / 8)) < 0.08


def test_random_crop_bounds():
    rng = np.random.default_rng(0)
    for length in (1, 2, 3, 10, 101):
        for _ in range(300):
            start, end = random_crop(length, rng)
            assert 0 <= start <= length / 2
            assert max((start + length) / 2, start + 1) <= end + 0.5 and end <= length
            assert end > start


def test_truncation_keeps_the_abnormal_clip():
    videos = _videos()
    synth = DynamicSynthesizer(videos, build_neighbour_index(videos, k=3), max_len=20, seed=0)
    for epoch in range(50):
        for i in range(6):
            s = synth.sample(i, epoch)
            assert len(s.features) <= 20
            kept = int(s.frame_labels.sum())
            assert kept == min(len(videos[i].features), 20)


def test_same_seed_same_samples_other_epoch_other_samples():
    videos = _videos()
    nb = build_neighbour_index(videos, k=3)
    a = DynamicSynthesizer(videos, nb, seed=5)
    b = DynamicSynthesizer(videos, nb, seed=5)
    for i in (0, 3, 8, 11):
        np.testing.assert_array_equal(a.sample(i, 2).features, b.sample(i, 2).features)
    assert any(len(a.sample(i, 0).features) != len(a.sample(i, 1).features) for i in range(len(a)))


def test_collate_pads_with_mask():
    videos = _videos()
    synth = DynamicSynthesizer(videos, build_neighbour_index(videos, k=3), seed=0)
    samples = [synth.sample(i) for i in (0, 7)]
    batch = collate(samples, pad_to=300)
    assert batch.features.shape == (2, 300, 8)
    for row, s in enumerate(samples):
        assert int(batch.mask[row].sum()) == len(s.features)
        assert batch.features[row, len(s.features) :].abs().sum() == 0
    assert batch.labels.tolist() == [1, 0]


def test_neighbour_index_is_nearest_by_cosine_and_stored_once(tmp_path):
    base = np.eye(4, dtype=np.float32)
    videos = [
        TrainVideo("q", np.tile(base[0] + 0.1 * base[1], (3, 1)), True, "Fighting"),
        TrainVideo("near", np.tile(base[0], (4, 1)), False, "Normal"),
        TrainVideo("mid", np.tile(base[0] + base[1], (2, 1)), False, "Normal"),
        TrainVideo("far", np.tile(base[2], (5, 1)), False, "Normal"),
    ]
    path = tmp_path / "indexes" / "neighbours-m.parquet"
    index = load_or_build_neighbours(path, videos, k=2)
    assert index["q"] == ["near", "mid"]
    assert index["near"] == ["mid", "far"]  # never itself
    stamp = path.stat().st_mtime_ns
    assert load_or_build_neighbours(path, videos, k=2) == index
    assert path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    extra = [*videos, TrainVideo("new", np.tile(base[2], (2, 1)), False, "Normal")]
    rebuilt = load_or_build_neighbours(path, extra, k=2)
    assert rebuilt["far"] == ["new", "mid"] or rebuilt["far"][0] == "new"


def test_synthesis_needs_both_labels():
    videos = [v for v in _videos() if v.is_anomaly]
    with pytest.raises(SynthesisError, match="0 normal"):
        DynamicSynthesizer(videos, {})
