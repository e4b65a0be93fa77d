"""Ground truth and benchmark adapters on the real annotation files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lagovad.eval import gt
from lagovad.eval.benchmarks import (
    BENCHMARKS,
    AnnotationFormatError,
    EvalError,
    UnknownBenchmarkError,
    load_benchmark,
    load_definition,
    load_native,
    read_ucf_native,
    read_xd_native,
)

COUNTS = {"ucf": (290, 140), "xd": (800, 500), "msad": (240, 120), "ubnormal": (211, 158),
          "dota": (1402, 1402), "tad": (100, 60), "lad": (560, 280)}
ROBBERY102_FRAMES = 1827


@pytest.mark.parametrize("name", BENCHMARKS)
def test_counts_of_real_splits(name, benchmarks_dir):
    # Both the packaged copy and the shared original give the published split sizes.
    for bench in (load_benchmark(name),
                  load_benchmark(name, benchmarks_dir / name / "test_annotations.json")):
        assert (len(bench.videos), bench.n_abnormal) == COUNTS[name]
        assert len({v.name for v in bench.videos}) == len(bench.videos)
    assert bench.metric == ("ap" if name == "xd" else "auc")
    assert bench.minmax_per_video == (name == "dota")


def test_robbery102_native_ucf_frames(benchmarks_dir):
    native = read_ucf_native(benchmarks_dir / "ucf" / "Temporal_Anomaly_Annotation.txt")
    cls, spans = native["Robbery102_x264"]
    assert cls == "Robbery" and spans == ((1080, 1560),)
    # Convention: frame spans are [start, end) (end exclusive), 0-based frame indices.
    mask = gt.frame_spans_to_mask(spans, ROBBERY102_FRAMES)
    on = np.flatnonzero(mask)
    assert (on[0], on[-1] + 1, mask.sum()) == (1080, 1560, 480)


def test_robbery102_json_span_matches_native(benchmarks_dir):
    bench = load_benchmark("ucf", benchmarks_dir / "ucf" / "test_annotations.json")
    (s, e), = bench.video("Robbery102_x264").spans
    # Relative span x n_frames lands within one frame of the native 1080..1560.
    assert abs(s * ROBBERY102_FRAMES - 1080) <= 1 and abs(e * ROBBERY102_FRAMES - 1560) <= 1
    mask = gt.spans_to_mask([(s, e)], ROBBERY102_FRAMES)
    native = gt.frame_spans_to_mask([(1080, 1560)], ROBBERY102_FRAMES)
    assert np.sum(mask != native) <= 2


def test_native_and_json_agree_for_all_ucf_videos():
    bench = load_native("ucf")
    for v in bench.videos:
        assert bool(v.frame_spans) == v.is_anomaly
        assert len(v.frame_spans) == len(v.spans)


def test_xd_native_files_parse_and_agree(benchmarks_dir):
    plain = read_xd_native(benchmarks_dir / "xd" / "annotations.txt")
    multi = read_xd_native(benchmarks_dir / "xd" / "annotations_multiclasses.txt")
    # Same 500 abnormal videos; the multiclass file lists spans per class (they may overlap
    # or differ slightly from the plain file's), so only the first start frame is compared.
    assert len(plain) == 500 and plain.keys() == multi.keys()
    assert sum(min(plain[k])[0] == min(multi[k])[0] for k in plain) >= 490
    bench = load_native("xd")
    abnormal = [v for v in bench.videos if v.is_anomaly]
    assert all(v.frame_spans for v in abnormal)
    assert not any(v.frame_spans for v in bench.videos if not v.is_anomaly)
    assert all(len(v.frame_spans) == len(v.spans) for v in abnormal)


def test_feature_gt_rounds_half_to_even_end_exclusive():
    # T = 10: span [0.25, 0.45] -> 2.5 -> 2 (half to even), 4.5 -> 4 -> gt[2:4].
    np.testing.assert_array_equal(gt.spans_to_mask([(0.25, 0.45)], 10),
                                  [0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    # 0.35 * 10 = 3.5 -> 4, 0.36 * 10 -> 4: empty span skipped.
    assert gt.spans_to_mask([(0.35, 0.36)], 10).sum() == 0


def test_frame16_gt_repeats_scores():
    from lagovad.eval.benchmarks import BenchmarkVideo

    v = BenchmarkVideo("a", "Fighting", ((0.5, 1.0),))
    s = gt.expand_scores(np.array([0.1, 0.9]), "frame16", repeat=16)
    g = gt.video_gt(v, 2, "frame16", repeat=16)
    assert len(s) == len(g) == 32
    assert g[:16].sum() == 0 and g[16:].all()


def test_frame_counts_never_pad_and_reject_wrong_lengths():
    # 40 frames at 16 per score: floor -> 2 scores cover 32 frames (the tail has no score and
    # is cut from the ground truth by the caller), ceil -> 3 scores, the last repeated 8 times.
    two = gt.expand_scores(np.array([0.1, 0.9]), "frame16", 16, n_frames=40)
    assert len(two) == 32 and two[-1] == 0.9
    three = gt.expand_scores(np.array([0.1, 0.9, 0.5]), "frame16", 16, n_frames=40)
    assert len(three) == 40 and (three[32:] == 0.5).all()
    for n_scores in (1, 5, 6):  # one video-level score, 2x, 3x the length
        with pytest.raises(EvalError, match=r"video v has .* need floor/ceil\(40/16\) = 2 or 3"):
            gt.expand_scores(np.full(n_scores, 0.5), "frame16", 16, n_frames=40, video="v")


def test_unknown_benchmark_and_bad_file(tmp_path):
    with pytest.raises(UnknownBenchmarkError, match="must be one of"):
        load_benchmark("kinetics")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"path": "x.npy"}]))
    with pytest.raises(AnnotationFormatError, match="entry 0"):
        load_benchmark("ucf", bad)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_definitions_cover_every_class(name):
    bench, defn = load_benchmark(name), load_definition(name)
    assert defn.normal.startswith("Normal behavior")
    for v in bench.videos:
        if v.is_anomaly and v.class_name != "Abnormal":
            assert defn.label_map.get(v.class_name, v.class_name) in defn.classes
    if name in ("ucf", "xd"):
        assert len(defn.classification_classes) == {"ucf": 14, "xd": 7}[name]


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("f.csv", "video,n_frames\na,100\nb,abc\n", "frame count of b must be an integer >= 1"),
    ("f.csv", "a,100\nb\n", "each row must be 'video,n_frames'"),
    ("f.json", '{"a": 0}', "frame count of a must be an integer >= 1"),
    ("f.json", '{"a": 10.5}', "frame count of a must be an integer >= 1"),
    ("f.json", '{"a": 1', "is not valid JSON"),
])
def test_bad_frame_count_files(tmp_path, name, text, needle):
    from lagovad.eval.sources import read_frames

    (tmp_path / name).write_text(text)
    with pytest.raises(EvalError, match=needle):
        read_frames(tmp_path / name)
    (tmp_path / "ok.csv").write_text("video,n_frames\na.mp4,100\n")
    assert read_frames(tmp_path / "ok.csv") == {"a": 100}

def test_latin1_annotation_file_is_an_error_naming_it(tmp_path):
    from lagovad.eval.benchmarks import AnnotationFormatError, load_benchmark, read_ucf_native

    entry = {"path": "Abuse001_x264.npy", "video_path": "Abuse001_x264.mp4",
             "class_name": "Abuse", "descriptions": ["Un café"], "anomaly_span": [[0.1, 0.2]]}
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps([entry], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(AnnotationFormatError, match=r"latin1.json is not UTF-8 text \(byte 0xe9"):
        load_benchmark("ucf", path)
    native = tmp_path / "Temporal_Anomaly_Annotation.txt"
    native.write_bytes("Abuse001_x264.mp4  Abusé  10 20 -1 -1\n".encode("latin-1"))
    with pytest.raises(AnnotationFormatError, match="Temporal_Anomaly_Annotation.txt is not UTF-8"):
        read_ucf_native(native)
