"""The scale benchmark's correctness arithmetic (benchmarks/curation_scale.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "curation_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("curation_scale", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matching_is_one_to_one_within_tolerance(bench):
    # 10 and 11 both near 10: only one may match it; 31 is two frames off 29
    assert bench._match([10, 20, 29], [10, 11, 20, 31], 1) == (2, 2, 1)
    f = bench._f1(2, 2, 1)
    assert f["precision"] == 0.5 and f["recall"] == pytest.approx(2 / 3)
    assert f["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert bench._f1(0, 0, 0)["f1"] is None


def test_transitions_read_todays_and_clip_outputs(bench):
    assert bench.transitions({"cut_frames": [30, 12]}, 25.0) == ([12, 30], [])
    out = {"cuts": [{"frame": 40, "kind": "cut"},
                    {"kind": "dissolve", "start_s": 2.0, "end_s": 3.0}],
           "dissolves": [[100, 150]]}
    cuts, dissolves = bench.transitions(out, 50.0)
    assert cuts == [40] and dissolves == [2.5, 2.5]


def test_ratios_state_targets(bench):
    stages = {"acquire": {"items_per_s": 12.0, "peak_rss_mb": 900.0},
              "clean": {"frames_per_s": 800.0, "peak_rss_mb": 3000.0}}
    base = {"http": {"files_per_s": 10.0}, "scenedetect": {"frames_per_s": 1000.0},
            "decode": {"frames_per_s": 2000.0}, "noop_10000": {"ms_per_item": 1.0},
            "noop_100000": {"ms_per_item": 1.2}}
    r = bench.ratios(stages, base, [10_000, 100_000])
    assert r["acquire_vs_http_loop"]["value"] == pytest.approx(1.2)
    assert r["acquire_vs_http_loop"]["met"] is True
    assert r["clean_vs_scenedetect"]["met"] is True and r["clean_vs_raw_decode"]["value"] == 0.4
    assert r["clean_vs_raw_decode"]["met"] is False
    assert r["noop_100k_over_10k"]["value"] == pytest.approx(1.2)
    assert r["peak_rss_gb"]["met"] is False  # 3000 MB > 2 GB
    assert r["dense_vs_sentence_transformers"]["value"] is None
