"""``labels="human"``: training data from the human-confirmed annotations of a curated store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from lagovad.data import DataError, load_split
from prevad.records import Annotation, Video, make_id
from prevad.store import Store

MODEL_ID = "test-features"
DIM = 8
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _ann(vid: str, kind: str, category: str, split: str = "train", minutes: int = 0,
         spans=None) -> Annotation:
    return Annotation(make_id("test", vid, kind, category), vid, "prevad", kind,
                      "judge@v1" if kind == "model" else "demo-auto-accept", category,
                      category != "Normal", description=f"{kind} says {category}",
                      spans=spans or [], split=split, created_at=T0 + timedelta(minutes=minutes))


@pytest.fixture
def curated(tmp_path) -> tuple[Store, dict[str, str]]:
    """train: reviewed (model Fire, human Explosion), unreviewed (model Fire only), human (human
    Normal); val: one video with a model label only."""
    store = Store.init(tmp_path / "store")
    ids = {n: Video.create("test", n).video_id for n in ("reviewed", "unreviewed", "human", "val")}
    store.append("videos", [Video.create("test", n) for n in ids])
    for vid in ids.values():
        store.write_features(vid, MODEL_ID, np.ones((4, DIM), np.float32))
    store.append("annotations", [
        _ann(ids["reviewed"], "model", "Fire", minutes=5),  # newer than the human row
        _ann(ids["reviewed"], "human", "Explosion"),
        _ann(ids["unreviewed"], "model", "Fire"),
        _ann(ids["human"], "human", "Normal"),
        _ann(ids["val"], "model", "Fire", split="val", spans=[[0.1, 0.5]]),
    ])
    return store, ids


def test_human_labels_only_train_on_reviewed_videos(curated):
    store, ids = curated
    data = load_split(store, "train", MODEL_ID, DIM, "prevad", labels="human")
    got = {v.video_id: v.category for v in data.videos}
    assert got == {ids["reviewed"]: "Explosion", ids["human"]: "Normal"}

    final = load_split(store, "train", MODEL_ID, DIM, "prevad")
    # the default keeps unreviewed pre-labels and still prefers the human row
    assert {v.video_id: v.category for v in final.videos} == {
        ids["reviewed"]: "Explosion", ids["unreviewed"]: "Fire", ids["human"]: "Normal"}


def test_split_with_only_model_labels_is_a_clear_error(curated):
    store, _ = curated
    with pytest.raises(DataError, match="no human-confirmed"):
        load_split(store, "val", MODEL_ID, DIM, "prevad", require_spans=True, labels="human")
    with pytest.raises(DataError, match="labels must be one of"):
        load_split(store, "train", MODEL_ID, DIM, labels="people")


def test_cli_trains_on_human_labels_leaving_unreviewed_pre_labels_out(tmp_path):
    """A curated store: reviewed (human) videos with features, plus one video only the judge
    labelled and whose features were never extracted. ``--labels final`` needs that video's
    features; ``--labels human`` leaves it out and trains."""
    from tests.lagovad.helpers import make_store
    from tests.lagovad.test_train import run_train

    store = make_store(tmp_path / "store", n_train=2, n_val=1)
    pending = Video.create("test", "judged-only")
    store.append("videos", [pending])
    store.append("annotations", [_ann(pending.video_id, "model", "Fire")])

    final = run_train(store.root, tmp_path / "final", "--epochs", "1")
    assert final.exit_code == 2 and "have no" in final.output and "features" in final.output

    human = run_train(store.root, tmp_path / "human", "--epochs", "1", "--labels", "human")
    assert human.exit_code == 0, human.output
    config = json.loads((tmp_path / "human" / "epoch-001" / "config.json").read_text())
    assert config["extra"]["train_config"]["labels"] == "human"
