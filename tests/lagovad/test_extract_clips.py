"""Extraction per clip (D1): one feature array per clip cut by clean, decoded from the parent
file over the clip's span; whole videos that were never split; duplicates left out; --export
writes every requested clip (extracted now or before) under source names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from curation.clean import clean
from curation.shot_media import Shot, Transition, render
from lagovad.commands.extract import register
from lagovad.extract import ExtractError, extract
from lagovad.image_encoder import load_image_encoder
from lagovad.video import DecodeStats, VideoDecodeError, iter_sampled_frames, write_video
from prevad import Store, queries
from prevad.records import StageResult, Video

FPS = 25


@pytest.fixture(scope="module")
def tiny_encoder(tiny_open_clip_checkpoint):
    """The tiny open_clip image tower with the saved test weights, on CPU."""
    return load_image_encoder("lagovad-clip-tiny", tiny_open_clip_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A two-shot video (hard cut at frame 40 of 75), a one-shot video, a gray ramp."""
    d = tmp_path_factory.mktemp("clip_media")
    render(d / "street_cut_at_40.mp4", [Shot(40, seed=1, palette=0), Shot(35, seed=2,
                                                                           palette=1)],
           [Transition("cut")], fps=FPS, size=(64, 96))
    render(d / "park_one_shot.mp4", [Shot(50, seed=3, palette=3)], [], fps=FPS, size=(64, 96))
    # frame i is uniformly gray level 8 * i (lossless): decoded frames say which they are
    write_video(d / "gray_ramp_10fps.mp4", 30, lambda i: np.full((32, 32, 3), 8 * i, np.uint8),
                fps=10)
    return {p.stem: p for p in d.iterdir()}


def _levels(frames: np.ndarray) -> list[int]:
    return [round(float(f.mean()) / 8) for f in frames]


def test_a_span_is_sampled_as_if_it_were_a_file_of_its_own(media):
    stats = DecodeStats()
    [chunk] = list(iter_sampled_frames(media["gray_ramp_10fps"], stride=3, offset=1, size=16,
                                       start_s=1.0, end_s=2.5, stats=stats))
    # frames 10..24 are the span; indices count from its first frame: 1, 4, 7, 10, 13
    assert chunk.indices.tolist() == [1, 4, 7, 10, 13] and stats.n_frames == 15
    assert _levels(chunk.frames) == [11, 14, 17, 20, 23]
    with pytest.raises(VideoDecodeError, match="no frame between"):
        list(iter_sampled_frames(media["gray_ramp_10fps"], start_s=5.0, end_s=6.0))
    for bad in ((2.0, 1.0), (float("nan"), None), (-1.0, None)):
        with pytest.raises(ValueError):
            list(iter_sampled_frames(media["gray_ramp_10fps"], start_s=bad[0], end_s=bad[1]))


def _store_with_clips(tmp_path: Path, media: dict[str, Path]) -> tuple[Store, dict[str, Video]]:
    """street (cleaned: two clips), park (added after clean: never split), and a copy of park
    that dedup marked as a duplicate (no clips)."""
    store = Store.init(tmp_path / "store")
    street = Video.create("web", "street_2024", uri=str(media["street_cut_at_40"]))
    store.append("videos", [street])
    assert clean(store).ok == 1
    park = Video.create("web", "park", uri=str(media["park_one_shot"]))
    copy = Video.create("mirror", "park_copy", uri=str(media["park_one_shot"]))
    store.append("videos", [park, copy])
    store.append("stage_results", [StageResult(
        copy.video_id, "dedup", "v1-test", "rejected", reason="exact_duplicate",
        output_json=json.dumps({"duplicate_of": park.video_id, "distance": 0.0}))])
    return store, {"street": street, "park": park, "copy": copy}


def test_store_extraction_writes_one_array_per_clip(tmp_path, media, tiny_encoder):
    store, v = _store_with_clips(tmp_path, media)
    clips = store.query(queries.CLIPS_OF_VIDEOS, {"clean_version": None}).to_pylist()
    assert [(c["video_id"], c["clip_index"]) for c in clips if c["video_id"] ==
            v["street"].video_id] == [(v["street"].video_id, 0), (v["street"].video_id, 1)]
    summary = extract(None, tiny_encoder, store=store, progress=False)
    assert (summary.total, summary.extracted, summary.failed) == (3, 3, 0)
    rows = {r["video_id"]: r for r in store.read("features").to_pylist()}
    n_frames = {r.id: r.output["n_frames"] for r in store.records("stage_results")
                if r.stage == "extract_features"}
    assert set(rows) == {c["clip_id"] for c in clips}
    assert v["copy"].video_id not in rows  # the duplicate has no clip
    assert v["park"].video_id in rows  # never split: a clip of itself, the whole file
    for c in clips:
        whole = c["clip_id"] == c["video_id"]
        span = {} if whole else {"start_s": c["start_s"], "end_s": c["end_s"]}
        stats = DecodeStats()
        frames = np.concatenate([ch.frames for ch in iter_sampled_frames(
            Path(c["uri"]), size=32, stats=stats, **span)])
        stored = store.load_features(rows[c["clip_id"]])
        np.testing.assert_allclose(stored, tiny_encoder.encode(frames), rtol=1e-5, atol=1e-5)
        assert n_frames[c["clip_id"]] == stats.n_frames
    street = sorted((c for c in clips if c["clip_id"] != c["video_id"]),
                    key=lambda c: c["start_s"])
    # the cut at frame 40: 40 and 35 frames, sampled at 4, 12, ... of each clip
    assert [n_frames[c["clip_id"]] for c in street] == [40, 35]
    assert [rows[c["clip_id"]]["count"] for c in street] == [5, 4]


def test_export_writes_every_requested_clip_under_source_names(tmp_path, media, tiny_encoder):
    store, v = _store_with_clips(tmp_path, media)
    first = extract(None, tiny_encoder, store=store, progress=False)
    assert first.extracted == 3
    # issue 21: a second run with --export extracts nothing and still exports everything
    export = tmp_path / "export"
    again = extract(None, tiny_encoder, store=store, export_dir=export, progress=False)
    assert (again.extracted, again.skipped, again.exported) == (0, 3, 3)
    names = sorted(p.name for p in export.iterdir())
    assert names == ["park.npy", "street_2024__clip000_0.00-1.60.npy",
                     "street_2024__clip001_1.60-3.00.npy"]
    rows = {r["video_id"]: r for r in store.read("features").to_pylist()}
    np.testing.assert_array_equal(np.load(export / "park.npy"),
                                  store.load_features(rows[v["park"].video_id]))


def test_colliding_source_names_get_the_source_then_the_id(tmp_path, media, tiny_encoder):
    store = Store.init(tmp_path / "store")
    a = Video.create("youtube", "cam/01?", uri=str(media["park_one_shot"]))
    b = Video.create("vimeo", "cam/01?", uri=str(media["gray_ramp_10fps"]))
    c = Video.create("vimeo", "cam_01_", uri=str(media["street_cut_at_40"]))
    store.append("videos", [a, b, c])
    s = extract(None, tiny_encoder, store=store, export_dir=tmp_path / "out", progress=False)
    assert s.exported == 3
    # "cam/01?" and "cam_01_" are all "cam_01" once made safe: the source tells two apart,
    # the clip id the last two
    got = sorted(p.stem for p in (tmp_path / "out").iterdir())
    assert got == sorted(["cam_01__youtube", f"cam_01__vimeo__{b.video_id}",
                          f"cam_01__vimeo__{c.video_id}"])


def test_cli_export_reports_and_export_without_store_is_refused(tmp_path, media,
                                                               tiny_open_clip_checkpoint):
    store, _ = _store_with_clips(tmp_path, media)
    app = typer.Typer()
    register(app)
    args = ["--model", "lagovad-clip-tiny", "--pretrained", str(tiny_open_clip_checkpoint),
            "--device", "cpu"]
    runner = CliRunner()
    res = runner.invoke(app, ["extract", "--store", str(store.root), *args])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["extract", "--store", str(store.root), "--export",
                              str(tmp_path / "e"), *args])
    assert res.exit_code == 0, res.output
    assert "extracted 0, skipped 3" in res.output and "exported 3 feature arrays" in res.output
    res = runner.invoke(app, ["extract", str(media["park_one_shot"]), "--out",
                              str(tmp_path / "o"), "--export", str(tmp_path / "e2"), *args])
    assert res.exit_code == 2 and res.output.count("error:") == 1 and "--store" in res.output
    with pytest.raises(ExtractError, match="needs a store"):
        extract([media["park_one_shot"]], None, out_dir=tmp_path / "o", export_dir=tmp_path)
