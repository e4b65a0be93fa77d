"""End-to-end `lagovad eval` / `lagovad gt` through the typer app on synthetic inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from lagovad.eval.benchmarks import BENCHMARKS, load_benchmark
from lagovad.eval.gt import spans_to_mask

runner = CliRunner()
DIM = 32  # lagovad-tiny video_dim and lagovad-clip-tiny embed_dim


def _app() -> typer.Typer:
    try:
        from lagovad.cli import app
    except ImportError:  # other command modules not ready: register ours alone
        from lagovad.commands import evaluate

        app = typer.Typer()
        evaluate.register(app)
    return app


@pytest.fixture(scope="module")
def synthetic_features(tmp_path_factory):
    """Random [T, 32] features for every test video of the seven benchmarks (short lengths),
    one sub-folder per benchmark; a few UCF videos exceed lagovad-tiny's max_len (64)."""
    root = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    for name in BENCHMARKS:
        (root / name).mkdir()
        for i, v in enumerate(load_benchmark(name).videos):
            t = 150 if (name == "ucf" and i < 5) else int(rng.integers(8, 40))
            np.save(root / name / f"{v.name}.npy", rng.standard_normal((t, DIM), np.float32))
    return root


def test_eval_all_with_tiny_checkpoint(synthetic_features, tiny_lagovad_checkpoint, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(_app(), ["eval", "--all", "--features", str(synthetic_features),
                                 "--checkpoint", str(tiny_lagovad_checkpoint), "--out", str(out),
                                 "--device", "cpu", "--batch-size", "64"])
    assert res.exit_code == 0, res.output
    assert "Ground truth: feature resolution" in res.output
    data = json.loads((out / "results.json").read_text())
    assert list(data["benchmarks"]) == list(BENCHMARKS)
    for name in BENCHMARKS:
        det = data["benchmarks"][name]["detection"]
        bench = load_benchmark(name)
        assert det["n_videos"] == det["n_expected"] == len(bench.videos)
        assert 0.0 <= det["ap"] <= 1.0
        if name != "dota":  # DoTA: every video abnormal, but frames outside spans are normal
            assert 0.0 <= det["auc"] <= 1.0
        assert (out / "figures" / f"{name}_curves.png").stat().st_size > 1000
        if name != "dota":  # best/worst timelines need videos with normal and abnormal steps
            assert (out / "figures" / f"{name}_timelines.png").stat().st_size > 1000
    for name, n_cls in (("ucf", 14), ("xd", 7)):
        cls = data["benchmarks"][name]["classification"]
        assert cls["n_classes"] == n_cls and cls["n_videos"] == len(load_benchmark(name).videos)
        assert set(data["benchmarks"][name]["localisation"]) >= {"mAP@0.1", "mAP@0.5"}
    md = (out / "results.md").read_text()
    assert "| UCF-Crime AUC | XD-Violence AP |" in md and "UCF-Crime Acc" in md
    assert (out / "results.csv").read_text().count("\n") > 20


def test_missing_features_error_and_allow_missing(synthetic_features, tiny_lagovad_checkpoint,
                                                  tmp_path):
    feats = tmp_path / "tad"
    feats.mkdir()
    videos = load_benchmark("tad").videos
    for v in videos[:30]:
        (feats / f"{v.name}.npy").write_bytes((synthetic_features / "tad" / f"{v.name}.npy")
                                              .read_bytes())
    args = ["eval", "-b", "tad", "--features", str(feats), "--checkpoint",
            str(tiny_lagovad_checkpoint), "--out", str(tmp_path / "o"), "--no-plots"]
    res = runner.invoke(_app(), args)
    assert res.exit_code == 2
    assert "missing for 70 of 100 tad videos" in res.output and videos[30].name in res.output
    res = runner.invoke(_app(), args + ["--allow-missing"])
    assert res.exit_code == 0, res.output
    det = json.loads((tmp_path / "o" / "results.json").read_text())["benchmarks"]["tad"]
    assert det["detection"]["n_videos"] == 30 and det["detection"]["coverage"] == 0.3
    # --all with features of one benchmark only: the other six are skipped and said so.
    res = runner.invoke(_app(), args[:1] + ["--all"] + args[3:] + ["--allow-missing"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list(data["benchmarks"]) == ["tad"] and len(data["skipped"]) == 6
    assert "Skipped UCF-Crime" in res.output


def _oracle_scores(name: str, stride: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for v in load_benchmark(name).videos:
        t = int(rng.integers(20, 200))
        out[v.name] = spans_to_mask(v.spans, t).astype(np.float64)
    return out


@pytest.mark.parametrize("resolution", ["feature", "frame16"])
def test_external_scores_oracle_and_constant(tmp_path, resolution):
    oracle = _oracle_scores("ucf")
    np.savez(tmp_path / "oracle.npz", **oracle)
    np.savez(tmp_path / "const.npz", **{k: np.full(len(v), 0.3) for k, v in oracle.items()})
    # The oracle marks spans at its own resolution; at frame resolution it must be per frame
    # (stride 1) to coincide exactly with the frame ground truth (rounding happens per frame).
    stride = "16" if resolution == "feature" else "1"
    for fname, auc in (("oracle.npz", 1.0), ("const.npz", 0.5)):
        out = tmp_path / f"out_{fname}"
        res = runner.invoke(_app(), ["eval", "-b", "ucf", "--scores", str(tmp_path / fname),
                                     "--score-stride", stride, "--gt-resolution", resolution,
                                     "--out", str(out)])
        assert res.exit_code == 0, res.output
        det = json.loads((out / "results.json").read_text())["benchmarks"]["ucf"]["detection"]
        assert det["auc"] == pytest.approx(auc) and det["gt_resolution"] == resolution


def test_external_scores_parquet_and_stride_required(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    oracle = _oracle_scores("xd")
    pq.write_table(pa.table({"video": list(oracle), "scores": [v.tolist() for v in
                                                               oracle.values()]}),
                   tmp_path / "s.parquet")
    res = runner.invoke(_app(), ["eval", "-b", "xd", "--scores", str(tmp_path / "s.parquet"),
                                 "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--score-stride" in res.output
    res = runner.invoke(_app(), ["eval", "-b", "xd", "--scores", str(tmp_path / "s.parquet"),
                                 "--score-stride", "8", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    det = json.loads((tmp_path / "o" / "results.json").read_text())["benchmarks"]["xd"]
    assert det["detection"]["ap"] == pytest.approx(1.0)


def test_clip_baseline_row(synthetic_features, tiny_open_clip_checkpoint, tmp_path):
    res = runner.invoke(_app(), ["eval", "-b", "tad", "--features", str(synthetic_features),
                                 "--clip-baseline", "lagovad-clip-tiny", "--clip-pretrained",
                                 str(tiny_open_clip_checkpoint), "--out", str(tmp_path),
                                 "--no-plots", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "CLIP lagovad-clip-tiny (training-free)" in res.output
    det = json.loads((tmp_path / "results.json").read_text())["benchmarks"]["tad"]["detection"]
    assert det["n_videos"] == 100 and 0.0 <= det["auc"] <= 1.0


def test_gt_command_writes_robbery102_frames(tmp_path):
    frames = tmp_path / "frames.csv"
    bench = load_benchmark("ucf")
    frames.write_text("video,n_frames\n" + "".join(
        f"{v.name},{1827 if v.name == 'Robbery102_x264' else 1000}\n" for v in bench.videos))
    for suffix in (".npz", ".json"):
        out = tmp_path / f"gt{suffix}"
        res = runner.invoke(_app(), ["gt", "-b", "ucf", "--frames", str(frames), "--out",
                                     str(out)])
        assert res.exit_code == 0, res.output
    with np.load(tmp_path / "gt.npz") as gt:
        on = np.flatnonzero(gt["Robbery102_x264"])
        assert (on[0], on[-1] + 1) == (1080, 1560)  # [start, end) frames
    data = json.loads((tmp_path / "gt.json").read_text())
    assert data["videos"]["Robbery102_x264"]["spans"] == [[1080, 1560]]
    res = runner.invoke(_app(), ["gt", "-b", "ucf", "--frames", str(frames), "--native",
                                 "--out", str(tmp_path / "n.json")])
    assert res.exit_code == 0, res.output
    native = json.loads((tmp_path / "n.json").read_text())["videos"]["Robbery102_x264"]
    assert native["spans"] == [[1080, 1560]]


def test_eval_from_prevad_store(tmp_path, tiny_lagovad_checkpoint):
    from prevad import Store
    from prevad.records import Video, video_id_for

    store = Store.init(tmp_path / "store")
    rng = np.random.default_rng(3)
    videos = load_benchmark("tad").videos
    recs = [Video(video_id_for("tad", v.name, None, None), "tad", v.name) for v in videos]
    store.append("videos", recs)
    for r in recs:
        store.write_features(r.video_id, "clip-tiny", rng.standard_normal((20, DIM), np.float32))
    out = tmp_path / "o"
    res = runner.invoke(_app(), ["eval", "-b", "tad", "--features", str(tmp_path / "store"),
                                 "--checkpoint", str(tiny_lagovad_checkpoint), "--out", str(out),
                                 "--no-plots"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["benchmarks"]["tad"]["detection"]["n_videos"] == 100
    assert data["coverage"]["tad"]["origin"].startswith("store")


def test_native_frame_ground_truth_with_frame_counts(tmp_path):
    # Per-frame oracle from UCF's native frame spans; frame counts given by --frames.
    from lagovad.eval.benchmarks import load_native
    from lagovad.eval.gt import frame_spans_to_mask

    bench = load_native("ucf")
    n = {v.name: max([e for _, e in v.frame_spans] + [500]) + 40 for v in bench.videos}
    np.savez(tmp_path / "s.npz", **{v.name: frame_spans_to_mask(v.frame_spans, n[v.name])
                                    .astype(float) for v in bench.videos})
    (tmp_path / "frames.json").write_text(json.dumps(n))
    res = runner.invoke(_app(), ["eval", "-b", "ucf", "--scores", str(tmp_path / "s.npz"),
                                 "--score-stride", "1", "--gt-resolution", "frame16", "--native",
                                 "--frames", str(tmp_path / "frames.json"), "--no-plots",
                                 "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "Ground truth: frame16 resolution (scores repeated x1)" in res.output
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    assert data["annotation_source"] == "native"
    assert data["benchmarks"]["ucf"]["detection"]["auc"] == pytest.approx(1.0)


def _one_error_line(res, *needles: str) -> None:
    """Exit 2 with a single `error:` line holding every needle, no traceback."""
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for n in needles:
        assert n in lines[0], lines[0]


def _ucf_lengths() -> dict[str, int]:
    rng = np.random.default_rng(7)
    return {v.name: int(rng.integers(300, 3000)) for v in load_benchmark("ucf").videos}


@pytest.mark.parametrize(("case", "needles"), [
    ("half", ("has {half} scores but {n} frames", "floor/ceil")),
    ("triple", ("has {triple} scores but {n} frames",)),
    ("one", ("has 1 score(s)", "per-step scores are needed")),
    ("two_columns", ("shape ({t}, 2)", "__classes__", "--score-classes")),
    ("unknown_video", ("not in ucf", "Fighting999_x264")),
    ("no_frame_count", ("has scores but no frame count", "{video}")),
    ("nan", ("scores of video {video} contain NaN",)),
    ("corrupt", ("is not a readable .npz file",)),
])
def test_bad_score_files_are_clear_errors(tmp_path, case, needles):
    frames = _ucf_lengths()
    video = load_benchmark("ucf").videos[2].name
    n = frames[video]
    scores = {k: np.full(c // 16, 0.5) for k, c in frames.items()}
    t = len(scores[video])
    fmt = {"half": t // 2, "triple": 3 * t, "n": n, "t": t, "video": video}
    if case in ("half", "triple", "one"):
        scores[video] = np.full({"half": t // 2, "triple": 3 * t, "one": 1}[case], 0.5)
    elif case == "two_columns":
        scores[video] = np.full((t, 2), 0.5)
    elif case == "unknown_video":
        scores["Fighting999_x264"] = np.full(10, 0.5)
    elif case == "nan":
        scores[video][3] = np.nan
    elif case == "no_frame_count":
        del frames[video]
    np.savez(tmp_path / "s.npz", **scores)
    if case == "corrupt":
        (tmp_path / "s.npz").write_bytes(b"not a zip archive")
    (tmp_path / "frames.json").write_text(json.dumps(frames))
    res = runner.invoke(_app(), ["eval", "-b", "ucf", "--scores", str(tmp_path / "s.npz"),
                                 "--score-stride", "16", "--gt-resolution", "frame16",
                                 "--frames", str(tmp_path / "frames.json"), "--no-plots",
                                 "--out", str(tmp_path / "o")])
    _one_error_line(res, *(s.format(**fmt) for s in needles))
    if case not in ("two_columns", "unknown_video", "corrupt"):
        assert video in res.output


def test_frame_counts_not_multiple_of_16_are_not_padded(tmp_path):
    # floor(n / 16) and ceil(n / 16) scores are both accepted; the ground truth is built over
    # the real n frames and compared only where a score exists (no padded scores).
    frames = _ucf_lengths()
    bench = load_benchmark("ucf")
    for rounding in (np.floor, np.ceil):
        scores = {k: np.full(int(rounding(c / 16)), 0.5) for k, c in frames.items()}
        np.savez(tmp_path / "s.npz", **scores)
        (tmp_path / "frames.json").write_text(json.dumps(frames))
        res = runner.invoke(_app(), ["eval", "-b", "ucf", "--scores", str(tmp_path / "s.npz"),
                                     "--score-stride", "16", "--gt-resolution", "frame16",
                                     "--frames", str(tmp_path / "frames.json"), "--no-plots",
                                     "--out", str(tmp_path / "o")])
        assert res.exit_code == 0, res.output
    from lagovad.eval.protocol import evaluate_detection

    floor = {k: np.full(c // 16, 0.5) for k, c in frames.items()}
    det = evaluate_detection(bench, floor, "frame16", 16, frames)
    assert len(det.labels) == sum(c // 16 * 16 for c in frames.values())
    ceil = {k: np.full(-(-c // 16), 0.5) for k, c in frames.items()}
    det = evaluate_detection(bench, ceil, "frame16", 16, frames)
    assert len(det.labels) == sum(frames.values())


def _xd_class_scores(tmp_path, classes, n_cols=None, scale=1.0, bad_video=None):
    bench = load_benchmark("xd")
    rng = np.random.default_rng(2)
    out = {"__classes__": np.array(classes)}
    for v in bench.videos:
        c = n_cols if v.name == bad_video else len(classes)
        p = rng.random((int(rng.integers(20, 60)), c))
        out[v.name] = scale * p / p.sum(axis=1, keepdims=True)
    np.savez(tmp_path / "c.npz", **out)
    return runner.invoke(_app(), ["eval", "-b", "xd", "--scores", str(tmp_path / "c.npz"),
                                  "--score-stride", "16", "--no-plots",
                                  "--out", str(tmp_path / "o")])


XD_NAMES = ["Normal", "Abuse", "Car accident", "Explosion", "Fighting", "Riot", "Shooting"]


def test_class_scores_reach_classification_and_localisation(tmp_path):
    res = _xd_class_scores(tmp_path, XD_NAMES[::-1])  # any column order, named in the file
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "o" / "results.json").read_text())["benchmarks"]["xd"]
    assert data["classification"]["n_videos"] == 800
    assert {"macro_f1", "macro_f1_absent_as_zero"} <= set(data["classification"])
    assert data["localisation"]["protocol"] == "vadclip"
    assert "Localisation protocol: vadclip" in res.output and "torchmetrics" in res.output


def test_class_score_errors(tmp_path):
    video = load_benchmark("xd").videos[3].name
    _one_error_line(_xd_class_scores(tmp_path, ["Normal", "Fighting", "Kung fu"]),
                    "class 'Kung fu'", "is not a xd class")
    _one_error_line(_xd_class_scores(tmp_path, XD_NAMES[:-1]), "missing ['Shooting']")
    _one_error_line(_xd_class_scores(tmp_path, XD_NAMES, n_cols=6, bad_video=video),
                    f"video {video}", "expected [T, 7]")
    _one_error_line(_xd_class_scores(tmp_path, XD_NAMES, scale=7.0), "must be probabilities")


def test_class_scores_from_parquet_with_separate_anomaly_scores(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Oracle class probabilities for UCF in VadCLIP's column order (named layout), plus an
    # anomaly column that is the oracle too: accuracy 1, detection AUC 1.
    from lagovad.eval.benchmarks import load_definition
    from lagovad.eval.sources import SCORE_LAYOUTS

    bench, defn = load_benchmark("ucf"), load_definition("ucf")
    order = SCORE_LAYOUTS["vadclip"]["ucf"]
    rows = {"video": [], "scores": [], "class_scores": []}
    for v in bench.videos:
        t = 40
        mask = spans_to_mask(v.spans, t).astype(float)
        probs = np.full((t, len(order)), 0.01)
        probs[:, 0] = 1.0
        if v.is_anomaly:  # a span shorter than a step still gets its start step
            on = mask > 0 if mask.any() else [min(int(v.spans[0][0] * t), t - 1)]
            probs[on, 0] = 0.01
            probs[on, order.index(v.class_name)] = 1.0
        probs /= probs.sum(axis=1, keepdims=True)
        rows["video"].append(v.name)
        rows["scores"].append(mask.tolist())
        rows["class_scores"].append(probs.tolist())
    pq.write_table(pa.table(rows), tmp_path / "s.parquet")
    res = runner.invoke(_app(), ["eval", "-b", "ucf", "--scores", str(tmp_path / "s.parquet"),
                                 "--score-stride", "16", "--score-classes", "vadclip",
                                 "--no-plots", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "o" / "results.json").read_text())["benchmarks"]["ucf"]
    assert data["detection"]["auc"] == pytest.approx(1.0)
    assert data["classification"]["accuracy"] == pytest.approx(1.0)
    assert data["classification"]["macro_f1"] == pytest.approx(1.0)
    assert defn.classification_classes[8] == "Road Accidents"  # RoadAccidents mapped to it
    csv_text = (tmp_path / "o" / "results.csv").read_text()
    assert "localisation,mAP@0.1," in csv_text and csv_text.count(",vadclip\n") == 7
