"""The simulated reviewer (curation.simulated_review) corrects pre-labels from the world's truth.

A store holds world videos (whole files, a downloaded section, clips of a compilation as
``segments``); tasks name those items as ``prevad review export`` writes them; the reviewer's
file is imported with ``prevad.review.import_tasks`` and the stored spans must be the world's
event frames exactly, relative to each item.
"""

from __future__ import annotations

import json
import math

import pytest

from curation.simulated_review import (
    ANNOTATOR,
    ItemResolver,
    SimulatedReviewError,
    review_file,
    review_tasks,
)
from curation.world import generate_world, load_truth
from prevad import Store
from prevad.records import Segment, Video, make_id
from prevad.review import frames_to_relative, import_tasks


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "w"
    generate_world(out, 8, seed=5, test_videos=1, scale_profile="small", workers=2)
    return out


def _task(item_id: str, n_frames: int, category: str = "Explosion", split: str = "train",
          key: str = "video_id") -> dict:
    return {"data": {"video": f"/data/{item_id}.mp4", key: item_id, "video_id": item_id,
                     "split": split, "fps": 20, "n_frames": n_frames},
            "predictions": [{"model_version": "v1", "result": [
                {"from_name": "category", "to_name": "video", "type": "choices",
                 "value": {"choices": [category]}}]}]}


def _store(tmp_path, truth, world):
    store = Store.init(tmp_path / "store")
    rows, segs, tasks = [], [], []
    anomalous = [r for r in truth.values() if r["split"] == "corpus" and r["is_anomaly"]
                 and not r["broken"]]
    normal = [r for r in truth.values() if r["split"] == "corpus" and not r["is_anomaly"]
              and not r["broken"]]
    for r in anomalous[:2] + normal[:1]:  # whole videos, as acquired
        vid = make_id("video", r["world_id"])
        rows.append(Video(vid, "world", r["world_id"], uri=str(world / r["file"]),
                          fps=r["fps"], n_frames=r["n_frames"], duration_s=r["duration_s"]))
        tasks.append(_task(vid, r["n_frames"], split="val"))
    # a downloaded section of an anomalous video: 0.5 s after its start, to its end
    r = anomalous[0]
    sec = make_id("video", r["world_id"], "section")
    n_sec = r["n_frames"] - math.ceil(0.5 * r["fps"])
    rows.append(Video(sec, "world", r["world_id"], start_s=0.5, end_s=r["duration_s"],
                      uri=str(world / r["file"]), fps=r["fps"], n_frames=n_sec))
    tasks.append(_task(sec, n_sec, split="val"))
    # two clips of the first video: one holding the event's start, one after the event
    a, b = r["anomaly_frames"][0]
    fps = r["fps"]
    parent = rows[0].video_id
    for k, (f0, f1) in enumerate(((a - 5, a + 10), (b, r["n_frames"]))):
        s = Segment(make_id("segment", parent, k), parent, "world", round(f0 / fps, 6),
                    round(f1 / fps, 6), method="test-clip")
        segs.append(s)
        tasks.append(_task(s.segment_id, f1 - f0, split="val", key="segment_id"))
    store.append("videos", rows)
    store.append("segments", segs)
    return store, tasks, rows, segs


def test_reviewer_labels_items_frame_exact(tmp_path, world):
    truth = load_truth(world)
    store, tasks, rows, segs = _store(tmp_path, truth, world)
    reviewed, stats = review_tasks(store, tasks, world, spans="val")
    assert stats.tasks == stats.reviewed == len(tasks) and not stats.skipped
    # today's import knows video items; clip items (segments) are read from the file below
    videos = [t for t in reviewed if "segment_id" not in t["data"]]
    summary = import_tasks(store, videos)
    assert summary.written == len(videos) and not summary.errors
    human = {a["video_id"]: a for a in store.read("annotations").to_pylist()}
    assert {a["annotator"] for a in human.values()} == {ANNOTATOR}
    for t in reviewed:
        if "segment_id" in t["data"]:
            result = t["annotations"][0]["result"]
            cat = next(r["value"]["choices"][0] for r in result if r["from_name"] == "category")
            spans = [frames_to_relative(x["start"], x["end"], t["data"]["n_frames"])
                     for r in result if r["from_name"] == "spans" for x in r["value"]["ranges"]]
            human[t["data"]["segment_id"]] = {"category": cat, "spans": spans,
                                              "is_anomaly": cat != "Normal"}

    def expect(wid, first, n):
        """The event frames of world video ``wid`` seen from frame ``first``, ``n`` frames."""
        a, b = truth[wid]["anomaly_frames"][0] if truth[wid]["anomaly_frames"] else (0, 0)
        a, b = max(a - first, 0), min(b - first, n)
        return [frames_to_relative(a + 1, b, n)] if b > a else []

    whole = rows[:3]
    for v in whole:
        wid = v.source_video_id
        got = human[v.video_id]
        assert got["category"] == truth[wid]["category"]
        assert got["is_anomaly"] == truth[wid]["is_anomaly"]
        assert got["spans"] == expect(wid, 0, v.n_frames)
    sec = rows[3]
    first = math.ceil(0.5 * truth[sec.source_video_id]["fps"])  # first frame shown at >= 0.5 s
    assert human[sec.video_id]["spans"] == expect(sec.source_video_id, first, sec.n_frames)
    wid = rows[0].source_video_id
    a, _ = truth[wid]["anomaly_frames"][0]
    fps = truth[wid]["fps"]
    clip_in, clip_after = segs
    assert human[clip_in.segment_id]["category"] == truth[wid]["category"]
    assert human[clip_in.segment_id]["spans"] == [frames_to_relative(6, 15, 15)]
    assert human[clip_after.segment_id]["category"] == "Normal"
    assert human[clip_after.segment_id]["spans"] == []
    # what changed against the pre-labels ("Explosion", an anomaly, everywhere)
    assert stats.anomaly_flipped == sum(not h["is_anomaly"] for h in human.values()) == 2
    assert stats.category_changed == sum(
        human[t["data"]["video_id"]]["category"] != "Explosion" for t in tasks)
    assert stats.spans_drawn == sum(bool(h["spans"]) for h in human.values())
    assert abs(float(clip_in.start_s) * fps - (a - 5)) < 1e-3


def test_spans_only_on_validation_items_unless_all(tmp_path, world):
    truth = load_truth(world)
    store, tasks, rows, _ = _store(tmp_path, truth, world)
    for t in tasks:
        t["data"]["split"] = "train"
    reviewed, stats = review_tasks(store, tasks, world, spans="val")
    assert stats.spans_drawn == 0
    reviewed, stats = review_tasks(store, tasks, world, spans="all")
    assert stats.spans_drawn == sum(1 for r in reviewed if any(
        x["from_name"] == "spans" for x in r["annotations"][0]["result"]))
    assert stats.spans_drawn >= 3


def test_unknown_items_stay_pending_and_bad_options_fail(tmp_path, world):
    truth = load_truth(world)
    store, tasks, _, _ = _store(tmp_path, truth, world)
    stranger = _task("no-such-item", 10)
    reviewed, stats = review_tasks(store, [*tasks, stranger], world)
    assert "no-such-item" in stats.skipped and not reviewed[-1].get("annotations")
    assert stats.reviewed == len(tasks)
    with pytest.raises(SimulatedReviewError, match="spans"):
        review_tasks(store, tasks, world, spans="some")
    with pytest.raises(SimulatedReviewError, match="neither a video"):
        ItemResolver(store).resolve("nothing")
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    stats = review_file(store, path, world, tmp_path / "export.json")
    assert stats.reviewed == len(tasks)
    assert len(json.loads((tmp_path / "export.json").read_text())) == len(tasks)
