"""The scale benchmark's correctness arithmetic, ratios, estimate and report
(benchmarks/curation_scale.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "curation_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("curation_scale", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _truth(**kw):
    row = {"split": "corpus", "n_frames": 100, "intro_frames": 0, "outro_frames": 0,
           "cut_frames": [], "dissolves": [], "dissolves_s": [], "dup_group": None,
           "broken": None}
    return {**row, **kw}


def test_clean_outputs_are_read_by_their_field_names(bench):
    out = {"cut_frames": [40, 12],
           "dissolves": [{"kind": "dissolve", "start_frame": 50, "end_frame": 75,
                          "start_s": 2.0, "end_s": 3.0, "center_s": 2.5}],
           "fades": [{"kind": "fade", "start_s": 5.0, "end_s": 5.5}],
           "clips": [{"start_frame": 8, "end_frame": 50}, {"start_frame": 75,
                                                           "end_frame": 90}]}
    cuts, dissolves, fades = bench.transitions(out)
    assert cuts == [12, 40] and dissolves == [(2.0, 3.0)] and fades == [(5.0, 5.5)]
    assert bench.kept_frames(out) == (8, 90)
    assert bench.kept_frames({"clips": []}) is None


def test_expected_kept_leaves_out_a_dissolve_into_the_first_scene(bench):
    # title card dissolving into the scene over [20, 30): the truth's intro is its middle
    assert bench.expected_kept(_truth(intro_frames=25, dissolves=[[20, 30]],
                                      outro_frames=10)) == (30, 90)
    assert bench.expected_kept(_truth(intro_frames=12, outro_frames=0)) == (12, 100)


def test_clean_scores_against_planted_truth(bench):
    truth = {"w1": _truth(cut_frames=[30, 60], dissolves=[[70, 80]], dissolves_s=[[2.8, 3.2]],
                          intro_frames=5, outro_frames=10),
             "w2": _truth(split="test", cut_frames=[10])}
    videos = [{"video_id": "v1", "start_s": None}, {"video_id": "v2", "start_s": None},
              {"video_id": "v3", "start_s": 1.0}]
    wid = {"v1": "w1", "v2": "w2", "v3": "w1"}
    clean = {"v1": {"_status": "ok", "cut_frames": [31, 45],  # one within 1 frame, one false
                    "dissolves": [{"start_s": 2.9, "end_s": 3.3}], "fades": [],
                    "clips": [{"start_frame": 6, "end_frame": 30},
                              {"start_frame": 80, "end_frame": 88}]},
             "v2": {"_status": "ok", "cut_frames": []},   # the test split: not scored
             "v3": {"_status": "ok", "cut_frames": [99]}}  # a section: frames shifted
    s = bench.clean_scores(videos, wid, truth, clean)
    assert s["files"] == 1
    assert (s["hard_cuts_f1_1frame"]["tp"], s["hard_cuts_f1_1frame"]["fp"],
            s["hard_cuts_f1_1frame"]["fn"]) == (1, 1, 1)
    assert s["dissolves_f1_0.5s"]["f1"] == 1.0
    assert s["intro_outro_trim_error_frames"]["edges"] == 2
    assert s["intro_outro_trim_error_frames"]["mean"] == pytest.approx((1 + 2) / 2)
    away = s["dissolves_f1_0.5s_away_from_event_edges_1s"]
    assert (away["tp"], away["fp"], away["fn"]) == (1, 0, 0)


def test_dissolves_at_an_event_edge_are_scored_apart(bench):
    # an event that fades in at 1.0 s reads as a dissolve there; a real dissolve at 5 s is missed
    truth = {"w1": _truth(dissolves_s=[[4.8, 5.2]], anomaly_s=[[1.0, 3.0]])}
    clean = {"v1": {"_status": "ok", "cut_frames": [],
                    "dissolves": [{"start_s": 0.8, "end_s": 1.2}], "fades": []}}
    s = bench.clean_scores([{"video_id": "v1", "start_s": None}], {"v1": "w1"}, truth, clean)
    every, away = s["dissolves_f1_0.5s"], s["dissolves_f1_0.5s_away_from_event_edges_1s"]
    assert (every["tp"], every["fp"], every["fn"]) == (0, 1, 1)
    assert (away["tp"], away["fp"], away["fn"]) == (0, 0, 1)


def test_dedup_scores_count_planted_copies_among_acquired_videos(bench):
    truth = {"w1": _truth(dup_group="w1"), "w2": _truth(dup_group="w1"),
             "w3": _truth(dup_group="w1"), "w4": _truth(), "w5": _truth(dup_group="w5")}
    wid = {"a": "w1", "b": "w2", "c": "w3", "d": "w4", "e": "w5"}
    dedup = {"a": {"_status": "ok", "_reason": None},
             "b": {"_status": "rejected", "_reason": "exact_duplicate", "duplicate_of": "a"},
             "c": {"_status": "ok", "_reason": None},             # a copy missed
             "d": {"_status": "rejected", "_reason": "near_duplicate", "duplicate_of": "a"},
             "e": {"_status": "ok", "_reason": None}}              # its group has one member
    s = bench.dedup_scores(wid, truth, dedup)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)
    assert s["planted_copies"] == 2 and s["distinct_merged"] == 1
    assert s["by_reason"] == {"exact_duplicate": 1, "near_duplicate": 1}


def test_ratios_come_from_the_ab_medians(bench):
    ab = {"measures": {"http_loop": {"median_per_s": 10.0}, "acquire": {"median_per_s": 12.0},
                       "decode": {"median_per_s": 2000.0},
                       "scenedetect": {"median_per_s": 1000.0},
                       "clean": {"median_per_s": 800.0},
                       "extract_store": {"median_per_s": 1900.0}}}
    stages = {"acquire": {"peak_rss_mb": 900.0}, "clean": {"peak_rss_mb": 3000.0}}
    base = {"ab": ab, "noop_10000": {"ms_per_item": 1.0}, "noop_100000": {"ms_per_item": 1.2}}
    r = bench.ratios(stages, base, [10_000, 100_000])
    assert r["acquire_vs_http_loop"]["value"] == pytest.approx(1.2)
    assert r["acquire_vs_http_loop"]["met"] is True
    assert r["acquire_videos_per_s"]["met"] is True
    assert r["clean_vs_scenedetect"]["met"] is True and r["clean_vs_raw_decode"]["value"] == 0.4
    assert r["clean_vs_raw_decode"]["met"] is False
    assert r["extract_vs_raw_decode"]["value"] == pytest.approx(0.95)
    assert r["noop_100k_over_10k"]["value"] == pytest.approx(1.2)
    assert r["peak_rss_gb"]["met"] is False  # 3000 MB > 2 GB
    assert r["dense_vs_sentence_transformers"]["value"] is None
    assert r["dense_vs_sentence_transformers"]["met"] is None


def test_estimate_scales_full_stages_and_keeps_the_sample_fixed(bench):
    res = {"videos": 1000, "sample": 1000, "test_videos": 50,
           "world": {"videos_per_s": 5.0},
           "stages": {"clean": {"process_s": 100.0, "limit": None},
                      "describe": {"process_s": 500.0, "limit": 1000},
                      "review": {"process_s": 50.0, "limit": None},
                      "judge": {"error": "boom"}},
           "baselines": {"ab": {"process_s": 300.0}}}
    e = bench.estimate(res, 10_000)
    assert e["steps"] == {"world": 2010.0, "clean": 1000.0, "describe": 500.0, "review": 50.0,
                          "baseline ab": 300.0}
    assert e["total_s"] == pytest.approx(3860.0)


def test_report_names_a_failed_step_and_an_unfinished_run(bench, tmp_path):
    res = {"videos": 10, "sample": 5, "started": "now", "command": "x", "status": "running",
           "stages": {"clean": {"error": "exit status 1: ValueError: bad"},
                      "dedup": {"items": 3, "ok": 3, "failed": 0, "wall_s": 1.0}},
           "baselines": {"ab": {"error": "timeout: killed after 20 s"}},
           "ratios": bench.ratios({}, {}), "correctness": {"clean": {"error": "KeyError: x"}}}
    md, js = bench.write_report(res, tmp_path)
    text = md.read_text()
    assert "Unfinished run" in text
    assert "- **clean**: exit status 1: ValueError: bad" in text
    assert "- **ab**: timeout: killed after 20 s" in text
    assert "clean**: not computed: KeyError: x" in text
    assert json.loads(js.read_text())["stages"]["dedup"]["items"] == 3


def test_error_line_picks_the_exception(bench):
    tail = "Traceback (most recent call last):\n  File x\nValueError: no clips\n\n"
    assert bench._error_line(tail) == "ValueError: no clips"
    assert bench._error_line("") == "no output"


@pytest.mark.parametrize("argv, message", [
    (["--videos", "0"], "--videos must be >= 1"),
    (["--ab-rounds", "0"], "--ab-rounds must be >= 1"),
    (["--steps", "clean,polish"], "unknown step(s) ['polish']"),
])
def test_bad_options_are_one_error(bench, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
