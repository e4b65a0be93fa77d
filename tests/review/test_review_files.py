"""Review import of Label Studio JSON export files: bad tasks, bad files, CLI errors.

No server here: the export files are written in Label Studio's JSON export layout (the layout
the server-side tests read back from a real server).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prevad import queries, review
from prevad.store import Store
from toolkit.cli import app

from .conftest import JUDGE_VERSION, N_FRAMES, make_review_store


def _task(task_id: int, video_id: str, category: str, ranges=(), ann_id: int | None = None,
          split: str = "val") -> dict:
    result = [{"from_name": "category", "to_name": "video", "type": "choices",
               "value": {"choices": [category]}}]
    if ranges:
        result.append({"from_name": "spans", "to_name": "video", "type": "timelinelabels",
                       "value": {"ranges": [{"start": a, "end": b} for a, b in ranges],
                                 "timelinelabels": ["Anomaly"]}})
    return {
        "id": task_id,
        "data": {"video": "/data/local-files/?d=x.mp4", "clip_id": video_id, "split": split,
                 "n_frames": N_FRAMES},
        "annotations": [{"id": ann_id or 100 + task_id, "completed_by": 3, "result": result,
                         "was_cancelled": False, "created_at": "2026-01-02T03:04:05.000001Z",
                         "updated_at": "2026-01-02T03:04:06.000001Z"}],
    }


@pytest.fixture
def store_and_videos(tmp_path: Path):
    return make_review_store(tmp_path / "store", [
        {"category": "Riot", "split": "val", "spans": [[0.1, 0.3]]},
        {"category": "Normal", "split": "train"},
    ])


def test_bad_tasks_are_named_and_the_rest_imported(store_and_videos, tmp_path):
    store, vids = store_and_videos
    good, other = vids[0].video_id, vids[1].video_id
    export = tmp_path / "export.json"
    export.write_text(json.dumps([
        _task(7, good, "Riot", [(6, 15)]),
        _task(8, other, "Spaceship Landing"),
        _task(9, good, "Riot", [(40, 61)], ann_id=900),
        _task(10, "no-such-video", "Fire"),
        {"id": 11, "data": {"clip_id": other}, "annotations": []},
    ]))
    res = CliRunner().invoke(app, ["review", "import", str(store.root), str(export)])
    assert res.exit_code == 2
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3
    assert errors[0].startswith("error: task 8 ") and "'Spaceship Landing'" in errors[0]
    assert errors[1].startswith("error: task 9 ") and "[40, 61]" in errors[1]
    assert "1..50" in errors[1]
    assert errors[2].startswith("error: task 10 ") and "'no-such-video'" in errors[2]
    lines = res.output.strip().splitlines()
    assert lines[-1] == ("1 human annotations written, 0 unchanged, 1 tasks not annotated yet, "
                         "3 of 5 tasks with errors (not imported)")  # the summary comes last
    rows = Store(store.root).query(
        "SELECT video_id, category, spans, annotator, created_at FROM annotations "
        "WHERE annotator_kind = 'human'").to_pylist()
    assert len(rows) == 1
    assert rows[0]["video_id"] == good and rows[0]["category"] == "Riot"
    assert rows[0]["spans"] == [[5 / N_FRAMES, 15 / N_FRAMES]]
    assert rows[0]["annotator"] == "label-studio-user-3"
    assert rows[0]["created_at"].isoformat() == "2026-01-02T03:04:06.000001+00:00"


def test_normal_with_spans_and_empty_category_are_rejected(store_and_videos):
    store, vids = store_and_videos
    no_cat = _task(2, vids[0].video_id, "Riot")
    no_cat["annotations"][0]["result"] = [{"from_name": "description", "to_name": "video",
                                           "type": "textarea", "value": {"text": ["x"]}}]
    s = review.import_tasks(store, [_task(1, vids[1].video_id, "Normal", [(1, 5)]), no_cat])
    assert s.written == 0
    assert [e.task for e in s.errors] == ["1", "2"]
    assert "Normal comes with anomaly spans" in s.errors[0].message
    assert "no category" in s.errors[1].message


def test_bad_files_and_missing_token_give_one_error_line(store_and_videos, tmp_path):
    store, _ = store_and_videos
    runner = CliRunner()
    cases = {
        "missing": tmp_path / "nope.json",
        "not json": tmp_path / "bad.json",
        "not a list": tmp_path / "obj.json",
    }
    cases["not json"].write_text("{oops")
    cases["not a list"].write_text('{"tasks": []}')
    for what, path in cases.items():
        res = runner.invoke(app, ["review", "import", str(store.root), str(path)])
        assert res.exit_code == 2, what
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: export file"), (what, lines)
        assert str(path) in lines[0]
    res = runner.invoke(app, ["review", "push", str(store.root), "--url", "http://127.0.0.1:9"],
                        env={review.TOKEN_ENV: ""})
    assert res.exit_code == 2
    assert res.output.startswith("error: set LABEL_STUDIO_API_KEY")
    res = runner.invoke(app, ["review", "pull", str(store.root), "--url", "ftp://x"],
                        env={review.TOKEN_ENV: "secret-token-value"})
    assert res.exit_code == 2 and "--url must be an http(s) URL" in res.output
    assert "secret-token-value" not in res.output


def test_prelabels_are_one_per_judged_clip(tmp_path):
    from prevad.records import Segment, StageResult

    store, vids = make_review_store(tmp_path / "s", [{"category": "Fire", "split": "val"}])
    v = vids[0]
    segs = [Segment(f"seg{i}", v.video_id, "generated", a, b)
            for i, (a, b) in enumerate([(0.0, 0.5), (0.5, 1.2), (1.6, 2.0)])]
    store.append("segments", segs)
    # A newer judge version judged the clips: one pre-label per clip, relative to the clip.
    outs = [(segs[0], False, "Normal", 0.7, None), (segs[1], True, "Explosion", 0.95, None),
            (segs[2], True, "Fire", 0.6, [[0.25, 0.5]])]
    store.append("stage_results", [
        StageResult(s.segment_id, "judge", "v2-seg", "ok", output_json=json.dumps({
            "video_id": v.video_id, "segment_id": s.segment_id, "anomaly": an, "category": c,
            "top_level": c, "confidence": conf, "reason": "r", "split": "val",
            **({"spans": sp} if sp else {})}))
        for s, an, c, conf, sp in outs
    ])
    pres = {p.clip_id: p for p in review.collect_prelabels(store)}
    assert sorted(pres) == ["seg0", "seg1", "seg2"]  # the newest version only (D3)
    assert {p.stage_version for p in pres.values()} == {"v2-seg"}
    assert all(p.parent_video_id == v.video_id for p in pres.values())
    assert (pres["seg1"].clip_start_s, pres["seg1"].clip_end_s) == (0.5, 1.2)
    assert pres["seg1"].category == "Explosion" and pres["seg1"].confidence == 0.95
    assert pres["seg1"].duration_s == pytest.approx(0.7)
    assert pres["seg1"].spans == []  # no span of the parent's other clips leaks in
    assert (pres["seg2"].spans, pres["seg2"].span_source) == ([[0.25, 0.5]], "judge")
    # The older version judged the whole video, which has been split into clips since: it is
    # no clip any more (D1), so it gets no task, as feature extraction makes it no features.
    assert review.collect_prelabels(store, judge_version=JUDGE_VERSION) == []
    clips = store.query(queries.CLIPS_OF_VIDEOS, {"clean_version": None}).to_pylist()
    assert sorted(c["clip_id"] for c in clips) == ["seg0", "seg1", "seg2"]
    for a, b in [(1, 1), (1, 50), (7, 19), (33, 50)]:
        assert review.relative_to_frames(review.frames_to_relative(a, b, 50), 50) == (a, b)


@pytest.mark.slow  # builds a tiny LaGoVAD (torch import + model) ~10-20 s on 2 cores
def test_detector_proposes_spans_of_validation_videos(tmp_path):
    import numpy as np
    import torch

    import lagovad
    from lagovad.definition import AnomalyDefinition
    from lagovad.detect import score_features
    from lagovad.proposals import DetectorSpans
    from prevad import taxonomy

    store, vids = make_review_store(tmp_path / "s", [
        {"category": "Fire", "split": "val", "spans": [[0.0, 0.1]]},
        {"category": "Fire", "split": "train"},
    ])
    torch.manual_seed(3)
    model = lagovad.create_model("lagovad-tiny")
    ckpt = lagovad.save_checkpoint(tmp_path / "ckpt", model)
    rng = np.random.default_rng(0)
    feats = {}
    for v in vids:  # 50 frames, stride 8, offset 4 -> 6 steps
        feats[v.video_id] = rng.normal(size=(6, 32)).astype(np.float32)
        store.write_features(v.video_id, "lagovad-clip-tiny", feats[v.video_id], frames=N_FRAMES)
    pres = {p.video_id: p for p in review.collect_prelabels(store, proposer=DetectorSpans(ckpt))}

    val, train = pres[vids[0].video_id], pres[vids[1].video_id]
    assert val.span_source.startswith("lagovad:") and train.spans == []
    definition = AnomalyDefinition.from_strings(list(taxonomy.TOP_LEVEL), kind="names")
    scores, _, _ = score_features(model.eval(), feats[vids[0].video_id], definition)
    above = [i for i, s in enumerate(scores) if s >= 0.5]
    assert 0 < len(above) < 6, scores  # seed chosen so the proposal is a real part of the video
    covered = sorted({f for i in above for f in range(i * 8, min((i + 1) * 8, N_FRAMES))})
    got = sorted({f for a, b in val.spans for f in range(round(a * N_FRAMES), round(b * N_FRAMES))})
    assert got == covered


def test_media_urls_point_into_the_store(tmp_path):
    store_root = (tmp_path / "root" / "store").resolve()
    local = review.Media(store_root, document_root=tmp_path / "root")
    assert local.url("videos/a b.mp4", "v") == "/data/local-files/?d=store/videos/a%20b.mp4"
    assert local.url(str(store_root / "x.mp4"), "v") == "/data/local-files/?d=store/x.mp4"
    web = review.Media(store_root, url_prefix="http://media.local/prevad/")
    assert web.url("videos/a.mp4", "v") == "http://media.local/prevad/videos/a.mp4"
    assert web.url("https://cdn/x.mp4", "v") == "https://cdn/x.mp4"
    with pytest.raises(review.ReviewError, match="outside Label Studio's document root"):
        review.Media(store_root, document_root=tmp_path / "elsewhere").url("videos/a.mp4", "v7")
    with pytest.raises(review.ReviewError, match="video v8 has no uri"):
        local.url(None, "v8")
