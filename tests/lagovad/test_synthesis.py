"""Dynamic video synthesis: structure, label placement, the authors' rules by distribution,
determinism, kNN index."""

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


def _coded_videos(n_abnormal: int = 3, n_normal: int = 8) -> list[TrainVideo]:
    """Videos whose every step says where it comes from: column 0 = video code (100 + i for
    abnormal video i, -(1 + j) for normal video j), column 1 = step index in the video."""
    rng = np.random.default_rng(1)
    videos = []
    for code, is_anomaly, n in ((100, True, n_abnormal), (-1, False, n_normal)):
        for i in range(n):
            length = int(rng.integers(40, 120))
            feats = np.zeros((length, 4), dtype=np.float32)
            feats[:, 0] = code + i if is_anomaly else code - i
            feats[:, 1] = np.arange(length)
            descs = tuple(f"desc {i}.{d}" for d in range(3)) if is_anomaly else ()
            videos.append(
                TrainVideo(f"a{i}" if is_anomaly else f"n{i}", feats, is_anomaly,
                           "Fighting" if is_anomaly else "Normal",
                           descs[0] if descs else "", descs)
            )
    return videos


def _clips(sample) -> list[tuple[float, int, int]]:
    """(video code, first step, last step + 1) of each clip of a sample, in order."""
    codes, steps = sample.features[:, 0], sample.features[:, 1]
    cuts = np.flatnonzero((np.diff(codes) != 0) | (np.diff(steps) != 1)) + 1
    bounds = [0, *cuts.tolist(), len(codes)]
    return [(float(codes[a]), int(steps[a]), int(steps[b - 1]) + 1)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.fixture(scope="module")
def drawn():
    """3,000 samples of each kind under the official rules (fixed seeds)."""
    videos = _coded_videos()
    neighbours = {v.video_id: ["n0"] for v in videos}  # one neighbour, easy to recognise
    synth = DynamicSynthesizer(videos, neighbours, max_len=10_000, seed=11, cut="first")
    abnormal = [synth.sample(e % 3, e // 3) for e in range(3000)]
    normal = [synth.sample(3 + e % 3, e // 3) for e in range(3000)]
    return videos, abnormal, normal


def test_clip_count_follows_the_single_clip_rule_for_both_kinds(drawn):
    _, abnormal, normal = drawn
    # 1 clip w.p. 0.3 + 0.7 / 5 = 0.44; 2..5 clips w.p. 0.14 each (a uniform 1-5 gives 0.2)
    for samples in (abnormal, normal):
        counts = np.array([len(s.video_ids) for s in samples])
        assert counts.min() == 1 and counts.max() == 5
        assert abs((counts == 1).mean() - 0.44) < 0.03
        for n in range(2, 6):
            assert abs((counts == n).mean() - 0.14) < 0.025


def test_anchor_position_random_for_abnormal_first_for_normal(drawn):
    videos, abnormal, normal = drawn
    counts = np.array([len(s.video_ids) for s in abnormal])
    first = np.array([s.video_ids[0].startswith("a") for s in abnormal])
    for n in range(2, 6):
        assert abs(first[counts == n].mean() - 1 / n) < 0.08
    # normal samples: the anchor is the first clip and kept whole (never cropped)
    by_id = {v.video_id: v for v in videos}
    for s in normal:
        code, start, end = _clips(s)[0]
        assert (start, end) == (0, len(by_id[s.video_ids[0]].features))
        assert s.anchor_span == (0, end)


def test_fillers_of_both_kinds_are_cropped_in_both_sample_kinds(drawn):
    videos, abnormal, normal = drawn
    length = {v.features[0, 0]: len(v.features) for v in videos}
    for samples in (abnormal, normal):
        kept = {"neighbour": [], "random": []}
        for s in samples:
            clips = _clips(s)
            anchor_slot = 0 if s.label == 0 else next(
                i for i, c in enumerate(clips) if c[0] >= 100
            )
            for slot, (code, start, end) in enumerate(clips):
                if slot == anchor_slot:
                    assert (start, end) == (0, length[code])  # the anchor is never cropped
                    continue
                size = length[code]
                assert start <= size // 2 and end >= (start + size) // 2
                # n0 is the only neighbour; other normals can only be random fillers
                kind = "neighbour" if code == -1 else "random"
                kept[kind].append((end - start) / size)
        # crop: start ~ U[0, L/2], end ~ U[(start + L)/2, L] -> E[kept] = 9/16; uncropped = 1
        for kind, fractions in kept.items():
            assert len(fractions) > 300, kind
            assert abs(np.mean(fractions) - 9 / 16) < 0.03, (kind, np.mean(fractions))


def test_random_and_neighbour_fillers_are_half_and_half(drawn):
    _, abnormal, _ = drawn
    codes = [c for s in abnormal for c, _, _ in _clips(s) if c < 100]
    # half from the neighbour list (n0), half random normals (n0 among 8)
    assert abs(np.mean(np.array(codes) == -1) - (0.5 + 0.5 / 8)) < 0.04


def test_descriptions_are_picked_at_random_per_sample(drawn):
    videos, abnormal, normal = drawn
    for i in range(3):
        picked = [s.description for s in abnormal if s.video_ids and f"a{i}" in s.video_ids]
        for d in range(3):
            assert abs(np.mean([p == f"desc {i}.{d}" for p in picked]) - 1 / 3) < 0.06
    assert all(s.description == "" for s in normal)


def test_cut_first_keeps_the_first_steps_and_can_drop_the_abnormal_clip():
    videos = _coded_videos()
    synth = DynamicSynthesizer(videos, {}, max_len=100, seed=4, cut="first")
    window = DynamicSynthesizer(videos, {}, max_len=100, seed=4, cut="window")
    dropped = cut = 0
    for e in range(600):
        s, w = synth.sample(e % 3, e // 3), window.sample(e % 3, e // 3)
        assert w.video_ids == s.video_ids  # same draw, only the cut differs
        full = _clips(synth.sample(e % 3, e // 3))
        assert len(s.features) == min(100, len(s.features))
        first = full[0]
        assert s.features[0, 1] == first[1]  # starts at the first clip's first kept step
        anchor_len = len(videos[e % 3].features)
        kept = int(s.frame_labels.sum())
        dropped += kept == 0
        cut += 0 < kept < anchor_len
        # the window keeps the whole abnormal clip whenever it fits (all of ours are < 100)
        assert int(w.frame_labels.sum()) == anchor_len
    assert dropped > 0 and cut > 0  # the authors' rule really cuts and drops clips


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


def test_window_cut_keeps_the_abnormal_clip():
    videos = _videos()
    synth = DynamicSynthesizer(
        videos, build_neighbour_index(videos, k=3), max_len=20, seed=0, cut="window"
    )
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
    with pytest.raises(SynthesisError, match="cut must be one of"):
        DynamicSynthesizer(_videos(), {}, cut="middle")
