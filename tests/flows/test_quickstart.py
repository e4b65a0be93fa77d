"""`make demo` end to end: the Prefect flow on the embedded server, on a temporary folder."""

import json

import pytest

from flows.quickstart import quickstart


@pytest.mark.slow
def test_quickstart_flow_runs_the_whole_chain(tmp_path, robbery102_mp4):
    summary = quickstart(out=str(tmp_path / "qs"), video=str(robbery102_mp4), epochs=12)

    assert summary["benchmarks"]["ucf"] == {"videos": 290, "abnormal": 140}
    assert summary["benchmarks"]["dota"] == {"videos": 1402, "abnormal": 1402}
    assert (tmp_path / "qs" / "data_cards" / "quickstart.md").is_file()
    assert summary["synthetic"] == {"test": 16, "train": 96, "val": 16}
    # the planted anomaly is learned and found at TAD's real spans
    assert summary["eval_tad_synthetic"]["auc"] > 0.9
    assert summary["eval_tad_synthetic"]["n_videos"] == 100
    # detect ran on the real video: one score per sampled frame (4, 12, ..., 1820)
    assert summary["detect"]["steps"] == 228
    det = json.loads((tmp_path / "qs" / "detect" / "Robbery102_x264.detect.json").read_text())
    assert det["definition"]
    assert (tmp_path / "qs" / "detect" / "Robbery102_x264.png").stat().st_size > 5000
    assert json.loads((tmp_path / "qs" / "summary.json").read_text())["checkpoint"]
