"""`make demo` end to end: the Prefect flow on the embedded server, on a temporary folder."""

import json

import numpy as np
import pytest

from flows.quickstart import quickstart


def _planted_event_found(qs, checkpoint: str) -> list[float]:
    """Per TAD abnormal video: mean score inside its planted spans minus mean score outside.

    The flow plants the anomaly direction at TAD's real spans (``planted_video`` maps a span
    to steps ``round(s * T)`` .. ``round(e * T)``); the trained checkpoint must find it there.
    """
    import lagovad
    from lagovad.eval import runner
    from lagovad.eval.benchmarks import load_benchmark, load_definition
    from lagovad.eval.sources import feature_source

    bench = load_benchmark("tad")
    model, _ = lagovad.load_checkpoint(checkpoint, device="cpu")
    scorer = runner.ModelScorer(model, runner.pick_device("cpu"), "descriptions", 16)
    features = qs / "features" / "tad"

    scores = scorer.score(bench, load_definition("tad"), feature_source(features, bench).loaders)
    margins = []
    for video in bench.videos:
        if not video.spans:
            continue
        anomaly = scores[video.name].anomaly
        length = len(np.load(features / f"{video.name}.npy"))
        assert len(anomaly) == length
        inside = np.zeros(length, bool)
        for s, e in video.spans:
            inside[round(s * length):round(e * length)] = True
        if inside.any() and not inside.all():
            margins.append(float(anomaly[inside].mean() - anomaly[~inside].mean()))
    return margins


@pytest.mark.slow
def test_quickstart_flow_runs_the_whole_chain(tmp_path, robbery102_mp4):
    summary = quickstart(out=str(tmp_path / "qs"), video=str(robbery102_mp4), epochs=12)

    assert summary["benchmarks"]["ucf"] == {"videos": 290, "abnormal": 140}
    assert summary["benchmarks"]["dota"] == {"videos": 1402, "abnormal": 1402}
    assert (tmp_path / "qs" / "data_cards" / "quickstart.md").is_file()
    assert summary["synthetic"] == {"test": 16, "train": 96, "val": 16}
    # the planted anomaly is learned and found at TAD's real spans: pooled, and video by video
    assert summary["eval_tad_synthetic"]["auc"] > 0.9
    assert summary["eval_tad_synthetic"]["n_videos"] == 100
    margins = _planted_event_found(tmp_path / "qs", summary["checkpoint"])
    assert len(margins) >= 50
    assert np.mean(np.array(margins) > 0.2) > 0.9, sorted(margins)[:10]
    # detect ran on the real video: one score per sampled frame (4, 12, ..., 1820)
    assert summary["detect"]["steps"] == 228
    det = json.loads((tmp_path / "qs" / "detect" / "Robbery102_x264.detect.json").read_text())
    assert det["definition"]
    assert len(det["steps"]["anomaly_score"]) == 228
    top = max(det["steps"]["anomaly_score"])
    assert summary["detect"]["max_score"] == pytest.approx(top, abs=1e-6)
    png = (tmp_path / "qs" / "detect" / "Robbery102_x264.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "qs" / "summary.json").read_text())["checkpoint"]
