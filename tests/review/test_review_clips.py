"""Per-clip review (D1) and review media: clips cut from their parent, constant frame rate,
frame-exact spans on a variable-frame-rate parent, the recorded frame mapping, the cache, and
the judge version review reads (D3).

The parent videos are "bars" videos: each frame shows its own index (and a red band inside a
known interval), so decoding a media frame says exactly which source frame it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prevad import review, review_media
from prevad.records import StageResult
from prevad.store import Store
from toolkit.cli import app

from .conftest import (
    JUDGE_VERSION,
    VFR_TIMES,
    decode_bars,
    make_clip_store,
    make_review_store,
    write_bars_video,
)

#: The anomaly of the VFR parent is visible from 4.32 s to 5.12 s (frames 28..47, 25 fps part).
RED = (4.31, 5.11)
RED_TRUE = (4.32, 5.12)


def _export(store: Store, tmp_path: Path, **media_kw) -> list[dict]:
    out, _, _, errors = review.export_tasks(
        store, tmp_path / "tasks.json", review.Media(store.root, store.root, **media_kw))
    assert errors == []
    return json.loads(out.read_text())


def _answer(task: dict, ranges: list[tuple[int, int]], category: str = "Riot",
            ann_id: int = 1) -> dict:
    """What Label Studio's export holds after a reviewer marked ``ranges`` on the task."""
    result = [{"from_name": "category", "to_name": "video", "type": "choices",
               "value": {"choices": [category]}},
              {"from_name": "spans", "to_name": "video", "type": "timelinelabels",
               "value": {"ranges": [{"start": a, "end": b} for a, b in ranges],
                         "timelinelabels": ["Anomaly"]}}]
    return {**task, "id": ann_id, "annotations": [{"id": ann_id, "completed_by": 1,
                                                    "result": result}]}


def _red_frames(media: Path) -> tuple[int, int]:
    """1-based first..last media frame showing the red band (what a reviewer marks)."""
    red = [k for k, (_, _, r) in enumerate(decode_bars(media), start=1) if r]
    assert red and red == list(range(red[0], red[-1] + 1))
    return red[0], red[-1]


def _media_path(store: Store, task: dict) -> Path:
    m = review_media.load_media(store.root, task["data"]["media_id"])
    assert m is not None
    return m.path


def test_one_task_per_clip_names_clip_and_parent(tmp_path):
    store, parent, segs = make_clip_store(tmp_path / "s", VFR_TIMES, [
        {"start": 0.0, "end": 2.0, "category": "Normal", "split": "train"},
        {"start": 2.0, "end": 4.6, "category": "Fire", "split": "val"},
        {"start": 4.6, "end": 6.0, "category": "Riot", "split": "train"},
    ])
    whole_store, whole_vids = make_review_store(tmp_path / "w", [
        {"category": "Fire", "split": "train"}])
    tasks = {t["data"]["clip_id"]: t for t in _export(store, tmp_path)}
    assert sorted(tasks) == sorted(s.segment_id for s in segs)
    for seg in segs:
        data = tasks[seg.segment_id]["data"]
        assert data["parent_video_id"] == parent.video_id
        assert (data["clip_start_s"], data["clip_end_s"]) == (seg.start_s, seg.end_s)
        assert data["media_cfr"] is True and data["duration_s"] == pytest.approx(seg.end_s
                                                                              - seg.start_s)
        assert data["fps"] == pytest.approx(data["n_frames"] / data["duration_s"])
        frames = decode_bars(_media_path(store, tasks[seg.segment_id]))
        assert len(frames) == data["n_frames"]
        # the first media frame is the source frame visible at the clip's start
        visible = max(i for i, t in enumerate(VFR_TIMES) if t <= seg.start_s + 1e-9)
        assert frames[0][1] == visible
        assert data["video"].startswith("/data/local-files/?d=cache/review_media/")
    # The model pre-labels carry the clip id (D1).
    rows = store.query("SELECT video_id FROM annotations WHERE annotator_kind = 'model'")
    assert sorted(rows.column(0).to_pylist()) == sorted(s.segment_id for s in segs)
    # An unsplit video is a clip of itself; a constant-rate file is served in place.
    [task] = _export(whole_store, tmp_path / "w2")
    v = whole_vids[0]
    assert task["data"]["clip_id"] == task["data"]["parent_video_id"] == v.video_id
    assert task["data"]["clip_start_s"] is None
    assert task["data"]["video"] == "/data/local-files/?d=videos/clip0.mp4"
    assert task["data"]["n_frames"] == 50 and task["data"]["fps"] == pytest.approx(25.0)


def test_vfr_clip_spans_are_frame_exact_in_clip_time(tmp_path):
    """A reviewer marks the frames that show the anomaly; the stored clip-relative span matches
    the source interval within half a media frame, and the recorded mapping names the source
    frame of every media frame."""
    start, end = 3.0, 6.0
    store, _, [seg] = make_clip_store(tmp_path / "s", VFR_TIMES, [
        {"start": start, "end": end, "category": "Riot", "split": "val"}], red=RED)
    [task] = _export(store, tmp_path)
    data = task["data"]
    n, fps, dur = data["n_frames"], data["fps"], data["duration_s"]
    assert fps == pytest.approx(25.0) and n == 75  # the parent's fast part keeps every frame
    media = review_media.load_media(store.root, data["media_id"])
    decoded = decode_bars(media.path)
    # the mapping: media frame k shows the source frame at source_pts_s[k - 1]
    source_index = {round(t, 6): i for i, t in enumerate(VFR_TIMES)}
    assert [i for _, i, _ in decoded] == [source_index[round(t, 6)] for t in media.source_pts_s]
    # media frame k is the time slot [(k-1)/fps, k/fps) of the clip
    assert [t for t, _, _ in decoded] == pytest.approx([k / fps for k in range(n)], abs=1e-4)

    a, b = _red_frames(media.path)
    export = tmp_path / "export.json"
    export.write_text(json.dumps([_answer(task, [(a, b)])]))
    s = review.import_export_file(store, export)
    assert (s.written, s.errors) == (1, [])
    [row] = store.query("SELECT video_id, spans FROM annotations WHERE annotator_kind = 'human'"
                        ).to_pylist()
    assert row["video_id"] == seg.segment_id
    got = [x * dur for x in row["spans"][0]]
    true = [t - start for t in RED_TRUE]
    assert got == pytest.approx(true, abs=0.5 / fps + 1e-9)


def test_without_cfr_a_frame_indexed_reviewer_drifts(tmp_path):
    """The reason CFR is the default: on media that keep the VFR timestamps, frame numbers are
    not time, and the same review lands far from the anomaly."""
    start, end = 3.0, 6.0
    store, _, _ = make_clip_store(tmp_path / "s", VFR_TIMES, [
        {"start": start, "end": end, "category": "Riot", "split": "val"}], red=RED)
    [task] = _export(store, tmp_path, cfr=False)
    assert task["data"]["media_cfr"] is False
    a, b = _red_frames(_media_path(store, task))
    export = tmp_path / "export.json"
    export.write_text(json.dumps([_answer(task, [(a, b)])]))
    review.import_export_file(store, export)
    [spans] = store.query("SELECT spans FROM annotations WHERE annotator_kind = 'human'"
                          ).column(0).to_pylist()
    got = [x * (end - start) for x in spans[0]]
    assert abs(got[0] - (RED_TRUE[0] - start)) > 0.3


def test_review_media_are_cached_atomic_and_remade(tmp_path):
    store, _, segs = make_clip_store(tmp_path / "s", VFR_TIMES, [
        {"start": 1.0, "end": 3.0, "category": "Fire", "split": "train"}])
    [task] = _export(store, tmp_path)
    path = _media_path(store, task)
    before = path.stat()
    cache = review_media.cache_dir(store.root)
    # the second export of a clip not reviewed yet reuses the media file as is
    assert [t["data"]["media_id"] for t in _export(store, tmp_path / "again")] == [
        task["data"]["media_id"]]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [f"{task['data']['media_id']}.mp4", f"{task['data']['media_id']}.json"])  # no temp files
    # a deleted cache is made again, identical
    for p in cache.iterdir():
        p.unlink()
    [again] = _export(store, tmp_path / "third")
    assert again["data"] == task["data"]
    # a replaced parent file gets new media (its size and time are part of the media id)
    write_bars_video(store.root / "videos" / "parent.mp4", VFR_TIMES[:60])
    [new] = _export(store, tmp_path / "fourth")
    assert new["data"]["media_id"] != task["data"]["media_id"]


def test_a_clip_whose_media_cannot_be_made_is_an_error_the_others_export(tmp_path):
    store, _, segs = make_clip_store(tmp_path / "s", VFR_TIMES, [
        {"start": 0.0, "end": 1.0, "category": "Fire", "split": "train"},
        {"start": 9.0, "end": 10.0, "category": "Riot", "split": "train"},  # past the file
    ])
    res = CliRunner().invoke(app, ["review", "export", str(store.root),
                                   str(tmp_path / "t.json"), "--document-root", str(store.root)])
    assert res.exit_code == 2
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and segs[1].segment_id in errors[0]
    assert "after the end of its video file" in errors[0]
    assert "1 tasks" in res.output
    assert [t["data"]["clip_id"] for t in json.loads((tmp_path / "t.json").read_text())] == [
        segs[0].segment_id]
    for bad in ("nan", "-1", "0", "inf"):
        res = CliRunner().invoke(app, ["review", "export", str(store.root),
                                       str(tmp_path / "x.json"), "--media-fps", bad])
        assert res.exit_code == 2 and res.output.startswith("error: --media-fps"), bad


def test_export_reads_one_judge_version_after_a_failed_run(tmp_path):
    """D3: a failed `judge --engine openai` run (a new version, every item failed) hides
    nothing; a named version is read as asked; a version without ok results is an error."""
    store, _, segs = make_clip_store(tmp_path / "s", VFR_TIMES, [
        {"start": 0.0, "end": 2.0, "category": "Fire", "split": "train"},
        {"start": 2.0, "end": 4.0, "category": "Riot", "split": "train"},
    ])
    store.append("stage_results", [
        StageResult(s.segment_id, "judge", "v2-openai", "failed", error="connection refused")
        for s in segs])
    runner = CliRunner()
    out = tmp_path / "t.json"
    res = runner.invoke(app, ["review", "export", str(store.root), str(out)])
    assert res.exit_code == 0, res.output
    tasks = json.loads(out.read_text())
    assert len(tasks) == 2
    assert {t["predictions"][0]["model_version"] for t in tasks} == {JUDGE_VERSION}
    res = runner.invoke(app, ["review", "export", str(store.root), str(out),
                              "--judge-version", "v2-openai"])
    assert res.exit_code == 2
    assert res.output.startswith("error: --judge-version 'v2-openai' has no ok judge result")
    assert JUDGE_VERSION in res.output
    # a newer version with ok results for one clip: read alone by default, the old on request
    store.append("stage_results", [StageResult(segs[0].segment_id, "judge", "v3", "ok",
                                               output_json=json.dumps({"category": "Explosion"}))])
    assert [p.category for p in review.collect_prelabels(store)] == ["Explosion"]
    old = review.collect_prelabels(store, judge_version=JUDGE_VERSION)
    assert sorted(p.category for p in old) == ["Fire", "Riot"]
