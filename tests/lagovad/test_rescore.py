"""Rescoring stored videos under a new definition, and the "which videos contain X" query."""

from __future__ import annotations

import numpy as np
import pytest

from lagovad.definition import AnomalyDefinition
from lagovad.detect import encoder_for, load_detector, score_features
from lagovad.extract import extract
from lagovad.rescore import (
    RescoreError,
    rescore,
    videos_with_class,
)
from prevad import Store
from tests.lagovad.helpers import write_video


@pytest.fixture(scope="module")
def scored_store(tmp_path_factory, tiny_lagovad_checkpoint, tiny_open_clip_checkpoint):
    """A store with two extracted gray videos whose files are then deleted, plus the model."""
    root = tmp_path_factory.mktemp("rescore")
    videos = [write_video(root / "gray120.mp4", 120),
              write_video(root / "noise90.mp4", 90, frame_fn=lambda i: np.random.default_rng(i)
                          .integers(0, 255, (48, 64, 3), dtype=np.uint8))]
    model, label = load_detector(tiny_lagovad_checkpoint, device="cpu")
    encoder = encoder_for(model, clip_pretrained=str(tiny_open_clip_checkpoint), device="cpu")
    store = Store.init(root / "store")
    summary = extract(videos, encoder, store=store, progress=False)
    assert summary.extracted == 2
    for v in videos:
        v.unlink()  # rescoring must work from the cached features alone
    return store, model, label


def _expected_runs(store, model, definition, class_name, min_prob, min_score):
    """Runs of consecutive steps meeting both thresholds, computed from the features."""
    c = definition.labels.index(class_name)
    out = []
    for row in store.read("features").to_pylist():
        scores, probs, _ = score_features(model, store.load_features(row), definition)
        hit = (probs[:, c] >= min_prob) & (scores >= min_score)
        idx = np.flatnonzero(hit)
        for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if len(idx) else []:
            out.append((row["video_id"], int(run[0]), int(run[-1])))
    return sorted(out)


def test_rescore_writes_one_row_per_step_and_class(scored_store):
    store, model, label = scored_store
    definition = AnomalyDefinition.from_strings(["Robbery", "Fighting"])
    summary = rescore(store, model, definition, label, progress=False)
    steps = sum(r["count"] for r in store.read("features").to_pylist())
    assert steps == len(range(4, 120, 8)) + len(range(4, 90, 8))
    assert (summary.scored, summary.rows) == (2, steps * 3)
    rows = store.query(
        "SELECT class_name, COUNT(*) AS n, MIN(time_s) AS t0 FROM scores "
        "WHERE definition_id = $d GROUP BY class_name ORDER BY class_name",
        {"d": definition.id},
    ).to_pylist()
    assert [r["class_name"] for r in rows] == ["Fighting", "Normal", "Robbery"]
    assert all(r["n"] == steps for r in rows)
    assert rows[0]["t0"] == pytest.approx(4 / 25)
    again = rescore(store, model, definition, label, progress=False)
    assert (again.scored, again.skipped, again.rows) == (0, 2, 0)


def test_class_interval_query_matches_the_scores(scored_store):
    store, model, label = scored_store
    definition = AnomalyDefinition.from_strings(["Robbery", "A person steals from a shop."])
    rescore(store, model, definition, label, progress=False)
    name = "Robbery"
    table = store.query(
        "SELECT class_prob, anomaly_score FROM scores WHERE definition_id = $d AND class_name = $c",
        {"d": definition.id, "c": name},
    )
    prob_mid = float(np.median(table.column("class_prob").to_numpy()))
    score_mid = float(np.median(table.column("anomaly_score").to_numpy()))
    all_steps = _expected_runs(store, model, definition, name, 0.0, 0.0)
    # Each case filters on a median, so it keeps some steps and drops others: the class
    # threshold alone, the score threshold alone, then both.
    for min_prob, min_score in ((prob_mid, 0.0), (0.0, score_mid), (prob_mid, score_mid)):
        got = videos_with_class(store, definition, label, name, min_prob, min_score)
        expected = _expected_runs(store, model, definition, name, min_prob, min_score)
        assert expected and expected != all_steps, (min_prob, min_score)
        assert sorted((r["video_id"], r["first_index"], r["last_index"]) for r in got) == expected
        for r in got:
            assert r["peak_prob"] >= min_prob and r["peak_score"] >= min_score
            assert r["start_s"] <= r["end_s"]
            assert r["steps"] == r["last_index"] - r["first_index"] + 1
            assert r["uri"].endswith(".mp4")


def test_rescore_errors(scored_store):
    store, model, label = scored_store
    definition = AnomalyDefinition.from_strings(["Fighting"])
    with pytest.raises(RescoreError, match="Shooting"):
        videos_with_class(store, definition, label, "Shooting")
    with pytest.raises(RescoreError, match="no-such-model"):
        rescore(store, model, definition, label, model_id="no-such-model", progress=False)


def test_nan_in_one_feature_file_skips_only_that_video(tmp_path, tiny_lagovad_checkpoint):
    from typer.testing import CliRunner

    from lagovad.cli import app
    from tests.lagovad.helpers import make_store

    store = make_store(tmp_path / "store", n_train=1, n_val=0, splits=("train",))
    rows = store.read("features").to_pylist()
    bad = rows[1]
    arr = np.load(store.root / bad["location"])
    arr[3] = np.nan
    np.save(store.root / bad["location"], arr)
    model, label = load_detector(tiny_lagovad_checkpoint, device="cpu")
    definition = AnomalyDefinition.from_strings(["Fighting"])
    summary = rescore(store, model, definition, label, progress=False)
    assert summary.scored == len(rows) - 1
    assert [f["video_id"] for f in summary.failures] == [bad["video_id"]]
    assert "NaN/Inf" in summary.failures[0]["reason"]
    scored = set(store.query("SELECT DISTINCT video_id FROM scores").column("video_id")
                 .to_pylist())
    assert scored == {r["video_id"] for r in rows} - {bad["video_id"]}
    # the CLI names the video too
    result = CliRunner().invoke(app, ["rescore", "--store", str(store.root), "--define",
                                      "Shooting", "--checkpoint", str(tiny_lagovad_checkpoint),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"failed: {bad['video_id']}" in result.output and "NaN/Inf" in result.output
