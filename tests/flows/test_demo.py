"""`make demo` (flows/demo.py) on a small world: the numbers it prints are the store's and the
truth's.

The flow runs exactly as ``make demo`` does, on a world small enough for a test. What the
simulated reviewer stored is compared with the truth table computed here, independently of the
reviewer's code: a reviewer whose corrections were dropped (labels equal to the AI pre-labels)
or whose spans are off by one frame fails this test.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from pathlib import Path

import pytest

from curation.world import load_truth, world_id_of
from flows.demo import REVIEWER, demo, failure, report
from prevad.store import Store

pytestmark = pytest.mark.slow

LABELS = """
SELECT video_id, annotator_kind, annotator, category, is_anomaly, spans, split
FROM annotations WHERE dataset = 'prevad' ORDER BY video_id, annotator_kind
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    summary = demo(out=str(out), videos=12, test_videos=4, epochs=2, stream_seconds=2.0)
    return summary, report(summary)


def _expected(store: Store, item: str, n: int, truth: dict) -> tuple[str, list[list[float]]]:
    """The category and relative spans of a review item (a video, or a clip once ``clean``
    splits videos) of ``n`` frames, from the truth table."""
    videos = {v["video_id"]: v for v in store.read("videos").to_pylist()}
    segments = {s["segment_id"]: s for s in store.read("segments").to_pylist()}
    start = 0.0
    if item not in videos:  # a clip: a segment of its parent video
        seg = segments[item]
        item, start = seg["video_id"], float(seg["start_s"])
    video = videos[item]
    t = truth[world_id_of(video["source_video_id"], video["uri"])]
    # a downloaded section (video start_s) or a clip starts at its first frame shown at or after
    # its start time (every frame's time in a variable frame rate file)
    at = float(video.get("start_s") or 0.0) + start
    if t["vfr"]:
        first = bisect.bisect_left(t["frame_times"], at - 0.25 / t["fps"])
    else:
        first = math.ceil(at * t["fps"] - 0.25)
    spans = [[(max(a - first, 0)) / n, min(b - first, n) / n]
             for a, b in t["anomaly_frames"] if b > first and a - first < n]
    return (t["category"] if spans else "Normal"), spans


def test_reviewer_corrections_are_stored_frame_exact(run):
    summary, text = run
    store = Store(summary["outputs"]["store"])
    truth = load_truth(summary["outputs"]["world"])
    review = json.loads(Path(summary["outputs"]["review_export"]).read_text())
    frames = {(t["data"].get("clip_id") or t["data"].get("segment_id") or t["data"]["video_id"]):
              int(t["data"]["n_frames"]) for t in review}
    rows = store.query(LABELS).to_pylist()
    human = {r["video_id"]: r for r in rows if r["annotator_kind"] == "human"}
    model = {r["video_id"]: r for r in rows if r["annotator_kind"] == "model"}
    assert human and set(human) == set(model)
    assert {r["annotator"] for r in human.values()} == {REVIEWER}
    for vid, row in human.items():
        category, spans = _expected(store, vid, frames[vid], truth)
        assert row["category"] == category, vid
        assert row["is_anomaly"] == bool(spans), vid
        assert row["spans"] == spans, (vid, row["spans"], spans)  # frame-exact, every item
    # both kinds reached training (the random judge gave every item one label)
    assert len({r["is_anomaly"] for r in human.values()}) == 2
    assert len({r["category"] for r in model.values()}) == 1

    # the printed count of changed pre-labels is the store's
    changed = sum(human[v]["category"] != model[v]["category"]
                  or human[v]["spans"] != model[v]["spans"] for v in human)
    m = re.search(r"simulated reviewer changed (\d+) of (\d+) pre-labels", text)
    assert m and (int(m.group(1)), int(m.group(2))) == (changed, len(human))
    assert changed > 0
    m = re.search(r"reviewed labels train (\d+) items \((\d+) abnormal\)", text)
    train = [r for r in human.values() if r["split"] == "train"]
    assert m and (int(m.group(1)), int(m.group(2))) == (
        len(train), sum(r["is_anomaly"] for r in train))


def test_reviewed_items_are_clips_of_kept_videos(run):
    """dedup ran before clean: no clip, task or label is made of a copy; the printed counts
    are the store's."""
    summary, text = run
    store = Store(summary["outputs"]["store"])
    dedup = {r["id"]: r for r in store.read("stage_results").to_pylist()
             if r["stage"] == "dedup"}
    copies = {v for v, r in dedup.items() if r["status"] == "rejected"}
    assert copies, "the world plants duplicates: dedup must drop some"
    segments = {s["segment_id"]: s["video_id"] for s in store.read("segments").to_pylist()}
    assert segments and not copies & set(segments.values())
    human = {r["video_id"] for r in store.query(LABELS).to_pylist()
             if r["annotator_kind"] == "human"}
    assert human <= set(segments)  # every reviewed item is a clip (D1)
    assert len(segments) > len(set(segments.values()))  # compilations were split
    m = re.search(r"curated\s+(\d+) videos stored, (\d+) copies dropped by dedup .*?, "
                  r"(\d+) single-shot clips from (\d+) videos", text)
    assert m, text
    assert [int(g) for g in m.groups()] == [
        store.read("videos").num_rows, len(copies), len(segments),
        len(set(segments.values()))]


def test_training_on_reviewed_labels_and_held_out_evaluation(run):
    summary, text = run
    ckpt = Path(summary["train"]["checkpoint"])
    config = json.loads((ckpt / "config.json").read_text())
    train_config = config.get("extra", config)["train_config"]
    assert train_config["labels"] == "human"
    results = json.loads((Path(summary["outputs"]["evaluation"]) / "results.json").read_text())
    det = results["benchmarks"]["world"]["detection"]
    truth = load_truth(summary["outputs"]["world"])
    assert det["n_videos"] == sum(r["split"] == "test" for r in truth.values()) == 4
    m = re.search(r"held-out AUC\s+([0-9.]+) on (\d+) world test videos", text)
    assert m and float(m.group(1)) == pytest.approx(det["auc"], abs=5e-5)
    assert summary["ok"] == (det["auc"] >= summary["min_auc"])
    # detect ran on a held-out anomalous video and wrote its outputs
    files = summary["detect"]["files"]
    assert summary["detect"]["truth_s"] and files
    assert all(Path(p).is_file() for p in files.values())
    assert summary["outputs"]["store"] in text and "prefect server start" in text


def test_failure_says_why():
    ok = {"ok": True, "train": {"checkpoint": "x"}, "eval": {"auc": 0.95}, "min_auc": 0.9}
    assert failure(ok) is None
    low = {**ok, "ok": False, "eval": {"auc": 0.85}}
    assert "held-out AUC 0.8500 < 0.9" in failure(low)
    skipped = {"ok": False, "train": {"skipped": "the 3 reviewed train items are all normal"},
               "min_auc": 0.9}
    assert "all normal" in failure(skipped)
