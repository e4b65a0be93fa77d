"""End-to-end detection on one video: scores, classes, intervals, outputs, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from lagovad.commands.extract import register
from lagovad.definition import AnomalyDefinition
from lagovad.detect import (
    DetectError,
    cached_features,
    check_dims,
    detect,
    encoder_for,
    find_intervals,
    load_detector,
    score_features,
    write_outputs,
)
from lagovad.extract import make_protocol
from lagovad.image_encoder import load_image_encoder
from tests.lagovad.helpers import write_video

DEFINITION = ["Robbery", "A man points a gun at a cashier and takes the money.", "Fighting"]


@pytest.fixture(scope="module")
def gray_10s_mp4(tmp_path_factory) -> Path:
    """10 s of gray frames at 25 fps (250 frames -> 31 feature steps)."""
    return write_video(tmp_path_factory.mktemp("detect_video") / "gray10s.mp4", 250)


@pytest.fixture(scope="module")
def detector(tiny_lagovad_checkpoint, tiny_open_clip_checkpoint):
    """(tiny LaGoVAD from its checkpoint, checkpoint label, tiny image encoder)."""
    model, label = load_detector(tiny_lagovad_checkpoint, device="cpu")
    encoder = encoder_for(model, clip_pretrained=str(tiny_open_clip_checkpoint), device="cpu")
    return model, label, encoder


def test_detect_end_to_end_outputs(tmp_path, gray_10s_mp4, detector):
    model, label, encoder = detector
    definition = AnomalyDefinition.from_strings(DEFINITION)
    assert definition.kinds == ["name", "name", "description", "name"]
    det = detect(gray_10s_mp4, definition, model, encoder, checkpoint=label,
                 cache_dir=tmp_path / "cache", threshold=0.0, min_duration_s=0.0)
    t = len(det.anomaly_scores)
    assert t == len(range(4, 250, 8)) == 31
    np.testing.assert_allclose(det.times_s, np.arange(4, 250, 8) / 25.0)
    np.testing.assert_allclose(det.class_probs.sum(axis=1), 1.0, atol=1e-5)
    assert det.class_probs.shape == (t, 4)
    assert det.video_class_probs.sum() == pytest.approx(1.0, abs=1e-5)
    # Scores are the model's own sigmoid(frame logits) on the cached features.
    feats, decoded = cached_features(gray_10s_mp4, encoder, det.protocol,
                                     cache_dir=tmp_path / "cache")
    assert decoded == 0  # cached by the detect call
    with torch.inference_mode():
        out = model(torch.as_tensor(feats)[None], definition=definition)
    np.testing.assert_allclose(det.anomaly_scores, torch.sigmoid(out.frame_logits[0]).numpy(),
                               rtol=1e-5, atol=1e-6)
    # Intervals are the runs of steps scoring >= the threshold: with the threshold at the
    # median score, some steps are in and some out, so the runs are not given by construction.
    scores = det.anomaly_scores
    threshold = float(np.median(scores))
    det = detect(gray_10s_mp4, definition, model, encoder, checkpoint=label,
                 cache_dir=tmp_path / "cache", threshold=threshold, min_duration_s=0.0,
                 merge_gap_s=0.0)
    above = scores >= threshold
    assert 0 < above.sum() < t
    runs, start = [], None
    for i, a in enumerate([*above, False]):
        if a and start is None:
            start = i
        elif not a and start is not None:
            runs.append((start, i - 1))
            start = None
    step_s = 8 / 25.0
    assert [(iv.start_s, iv.end_s) for iv in det.intervals] == [
        (pytest.approx(a * step_s), pytest.approx(min((b + 1) * step_s, det.duration_s)))
        for a, b in runs]
    for iv, (a, b) in zip(det.intervals, runs, strict=True):
        assert iv.peak_score == pytest.approx(float(scores[a:b + 1].max()))
        mean_probs = det.class_probs[a:b + 1, 1:].mean(axis=0)
        assert iv.top_class == definition.labels[1 + int(np.argmax(mean_probs))]

    paths = write_outputs(det, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert len(data["steps"]["anomaly_score"]) == t
    assert list(data["video_class_probs"]) == definition.labels
    with open(paths["scores_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == t and "p_Fighting" in rows[0]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chunks_of_max_len_cover_the_full_length(detector):
    model, _, _ = detector
    definition = AnomalyDefinition.from_strings(["Fighting"])
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((150, model.config["video_dim"])).astype(np.float32)
    scores, probs, _ = score_features(model, feats, definition, max_len=64)
    assert scores.shape == (150,) and probs.shape == (150, 2)
    # Each chunk is scored on its own: the last chunk equals scoring it alone.
    tail, _, _ = score_features(model, feats[128:], definition, max_len=64)
    np.testing.assert_allclose(scores[128:], tail, rtol=1e-5, atol=1e-6)


def test_find_intervals_threshold_merge_and_min_duration():
    scores = np.array([0.1, 0.9, 0.9, 0.2, 0.8, 0.1, 0.1, 0.1, 0.95, 0.1])
    # step 0.5 s: runs [1,2], [4], [8]; gap between [1,2] and [4] is one step = 0.5 s.
    got = find_intervals(scores, 0.5, threshold=0.5, merge_gap_s=0.5, min_duration_s=0.0)
    assert [(a, b) for a, b, _, _ in got] == [(1, 4), (8, 8)]
    assert got[0][2:] == (0.5, 2.5)
    got = find_intervals(scores, 0.5, threshold=0.5, merge_gap_s=0.0, min_duration_s=1.0)
    assert [(a, b) for a, b, _, _ in got] == [(1, 2)]
    assert find_intervals(scores, 0.5, threshold=0.99) == []
    with pytest.raises(DetectError, match="threshold"):
        find_intervals(scores, 0.5, threshold=1.5)


def test_encoder_dimension_must_match_checkpoint(detector):
    model, _, _ = detector
    other = load_image_encoder("ViT-S-32", None, device="cpu")
    assert other.dim != model.config["video_dim"]
    with pytest.raises(DetectError, match=f"video_dim={model.config['video_dim']}"):
        check_dims(other, model)


def test_detect_needs_trained_weights():
    with pytest.raises(DetectError, match="--checkpoint"):
        load_detector()


def test_features_cached_in_a_store(tmp_path, gray_10s_mp4, detector):
    from prevad import Store

    _, _, encoder = detector
    store = Store.init(tmp_path / "store")
    protocol = make_protocol(encoder)
    first, n1 = cached_features(gray_10s_mp4, encoder, protocol, store=store)
    second, n2 = cached_features(gray_10s_mp4, encoder, protocol, store=store)
    assert (n1, n2) == (1, 0)
    np.testing.assert_array_equal(first, second)
    assert store.read("features").num_rows == 1


def test_cli_detect(tmp_path, gray_10s_mp4, tiny_lagovad_checkpoint, tiny_open_clip_checkpoint):
    app = typer.Typer()
    register(app)
    base = ["detect", str(gray_10s_mp4), "--checkpoint", str(tiny_lagovad_checkpoint),
            "--clip-pretrained", str(tiny_open_clip_checkpoint), "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    runner = CliRunner()
    result = runner.invoke(app, [*base, "--define", "Shooting", "--define",
                                 "Two people are fighting in the street."])
    assert result.exit_code == 0, result.output
    for suffix in (".detect.json", ".scores.csv", ".intervals.csv", ".png"):
        assert (tmp_path / "out" / f"gray10s{suffix}").is_file()
    empty = runner.invoke(app, base)
    assert empty.exit_code == 2
    assert "--define" in empty.output
