"""The model stages after clean work per clip (D1): several clips per video, each its own item
with its own span of the parent file; a duplicate's clips never reach them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curation import describe, judge
from curation.clean import clean
from curation.engines import Sampling
from curation.frames import FrameConfig, sample_frames
from curation.mllm import EngineConfig, FrameSource, items_of
from curation.shot_media import Shot, Transition, render
from prevad import Store, queries
from prevad.records import StageResult, Video
from prevad.stage import run_stage

FRAMES = FrameConfig(n=4, size=56)


def _ecfg(model: Path) -> EngineConfig:
    return EngineConfig("transformers", str(model), device="cpu", batch_size=4,
                        sampling=Sampling(max_tokens=120))


def _compilations(tmp_path: Path) -> tuple[Store, dict[str, Video]]:
    """Two compilations (3 and 2 shots, hard cuts and a dissolve), cleaned into 5 clips; a copy
    of the second that dedup marked before clean ran."""
    store = Store.init(tmp_path / "store")
    a, b = tmp_path / "three_shots.mp4", tmp_path / "two_shots_dissolve.mp4"
    render(a, [Shot(30, seed=1, palette=0), Shot(30, seed=2, palette=1),
               Shot(30, seed=3, palette=2)], [Transition("cut"), Transition("cut")],
           fps=25, size=(64, 96))
    render(b, [Shot(35, seed=4, palette=3), Shot(35, seed=5, palette=4)],
           [Transition("dissolve", 20)], fps=25, size=(64, 96))
    videos = {"three": Video.create("web", "three", uri=str(a)),
              "two": Video.create("web", "two", uri=str(b)),
              "copy": Video.create("mirror", "two", uri=str(b))}
    store.append("videos", list(videos.values()))
    store.append("stage_results", [
        StageResult(videos["two"].video_id, "dedup", "v1-t", "ok", output_json="{}"),
        StageResult(videos["copy"].video_id, "dedup", "v1-t", "rejected",
                    reason="exact_duplicate",
                    output_json=json.dumps({"duplicate_of": videos["two"].video_id}))])
    s = clean(store)
    assert (s.ok, s.rejected) == (2, {"duplicate": 1})
    return store, videos


def test_each_clip_is_an_item_with_its_own_span_and_frames(tmp_path):
    store, videos = _compilations(tmp_path)
    segs = store.records("segments")
    per_video = {v: sorted((s.start_s, s.end_s) for s in segs if s.video_id == v)
                 for v in {s.video_id for s in segs}}
    assert {k: len(v) for k, v in per_video.items()} == {videos["three"].video_id: 3,
                                                        videos["two"].video_id: 2}
    rows = [{"segment_id": s.segment_id, "video_id": s.video_id, "start_s": s.start_s,
             "end_s": s.end_s, "uri": None} for s in segs]
    items = items_of(store, "segments", rows)
    assert [i.item_id for i in items] == [s.segment_id for s in segs]
    source = FrameSource(store, FRAMES)
    frames = {}
    for item, seg in zip(items, segs, strict=True):
        assert (item.video_id, item.start_s, item.end_s) == (seg.video_id, seg.start_s,
                                                             seg.end_s)
        frames[item.item_id] = source.frames(item)
        # the clip's frames come from inside its span of the parent file
        np.testing.assert_array_equal(frames[item.item_id], sample_frames(
            item.path, seg.start_s, seg.end_s, FRAMES))
    means = [f.mean(axis=(0, 1, 2)) for f in frames.values()]
    assert min(np.abs(a - b).max() for i, a in enumerate(means) for b in means[i + 1:]) > 5


def test_describe_and_judge_give_one_result_per_clip(tmp_path, tiny_vlm, tiny_llm):
    store, videos = _compilations(tmp_path)
    s = describe.run(store, _ecfg(tiny_vlm), describe.DescribeConfig(FRAMES, min_chars=4,
                                                                     max_chars=12))
    clips = {c.segment_id: c for c in store.records("segments")}
    assert s.items == 5 and s.failed == 0
    described = queries.stage_results(store, "describe").to_pylist()
    assert {d["id"] for d in described} == set(clips)
    for d in described:
        assert d["segment_id"] == d["id"] and d["video_id"] == clips[d["id"]].video_id
    assert videos["copy"].video_id not in {d["video_id"] for d in described}
    run_stage(store, judge.make_stage(store, _ecfg(tiny_llm),
                                      judge.JudgeConfig(require_verified=False,
                                                                         max_reason_chars=10)))
    judged = queries.judge_results(store).to_pylist()
    assert {j["id"] for j in judged} == set(clips)
    assert {j["video_id"] for j in judged if j["status"] != "failed"} <= {
        videos["three"].video_id, videos["two"].video_id}


def test_items_follow_the_clips_view_after_a_second_clean_version(tmp_path, tiny_vlm):
    """D1: after a second clean configuration the model stages see only the clips of each
    video's latest clean decision (not the overlapping clips of the first run, still stored),
    a video clean never saw is a clip of itself (segment_id None), a split video is not an item
    of its own, and the duplicate has none."""
    from curation.clean import CleanPolicy

    store, videos = _compilations(tmp_path)
    first = {s.segment_id for s in store.records("segments")}
    s = clean(store, CleanPolicy(dissolves=False, min_clip_s=0.5))
    assert s.ok == 2
    segments = {s.segment_id: s for s in store.records("segments")}
    assert set(segments) > first  # the first run's clips are still stored
    late = Video.create("web", "late", uri=str(tmp_path / "three_shots.mp4"))
    store.append("videos", [late])

    d = describe.run(store, _ecfg(tiny_vlm), describe.DescribeConfig(FRAMES, min_chars=4,
                                                                     max_chars=12))
    current = {c for r in store.records("stage_results")  # the second run's decisions
               if r.stage == "clean" and r.run_id == s.run_id
               for c in (r.output or {}).get("segment_ids", [])}
    assert current and current < set(segments)
    described = {r["id"]: json.loads(r["output_json"] or "{}") for r in
                 queries.latest_status(store, "describe").to_pylist()}
    assert set(described) == current | {late.video_id} and d.items == len(described)
    assert not {videos["three"].video_id, videos["two"].video_id,
                videos["copy"].video_id} & set(described)
    for cid, out in described.items():
        if out:  # what every output says of its item: parent video, clip's segment row
            assert (out["video_id"], out["segment_id"]) == (
                (late.video_id, None) if cid == late.video_id else (segments[cid].video_id, cid))
    rows = store.query("SELECT * FROM clips").to_pylist()
    items = {i.item_id: i for i in items_of(store, "clips", rows)}
    assert (items[late.video_id].segment_id, items[late.video_id].start_s) == (None, None)
    for sid in current:
        seg = segments[sid]
        assert (items[sid].video_id, items[sid].segment_id, items[sid].start_s,
                items[sid].end_s) == (seg.video_id, sid, seg.start_s, seg.end_s)


def test_an_annotation_of_a_clip_is_read_from_the_clip_span_of_its_parent(tmp_path):
    """describe-anomaly's items: an annotation's video_id is a clip id (D1); its spans are
    relative to the clip, so its frames come from that part of the parent's file (not a
    missing file, as when the id was looked up among videos)."""
    from prevad.records import Annotation

    store, videos = _compilations(tmp_path)
    seg = max(store.records("segments"), key=lambda s: s.start_s)
    length = seg.end_s - seg.start_s
    anns = [Annotation("on-clip", seg.segment_id, "prevad", "human", "r", "Fire", True,
                       spans=[[0.5, 1.0]], split="train"),
            Annotation("on-video", videos["three"].video_id, "prevad", "human", "r", "Fire",
                       True, spans=[], split="train")]
    store.append("annotations", anns)
    rows = store.query("SELECT * FROM annotations ORDER BY annotation_id").to_pylist()
    items = {i.item_id: i for i in items_of(store, "annotations", rows)}
    clip = items["on-clip"]
    assert (clip.video_id, clip.segment_id) == (seg.video_id, seg.segment_id)
    assert clip.path == Path(videos[next(k for k, v in videos.items()
                                         if v.video_id == seg.video_id)].uri)
    assert clip.start_s == pytest.approx(seg.start_s + 0.5 * length)
    assert clip.end_s == pytest.approx(seg.end_s)
    assert FrameSource(store, FRAMES).frames(clip).shape == (FRAMES.n, FRAMES.size,
                                                             FRAMES.size, 3)
    whole = items["on-video"]
    assert (whole.segment_id, whole.start_s, whole.end_s) == (None, None, None)
