"""Model text pre-filled for a reviewer is marked, and a human row records whether its
description was written by the reviewer or is the model's text accepted."""

from __future__ import annotations

import json

import pytest

from curation.auto_review import accept_predictions
from prevad import review

from .conftest import make_review_store


@pytest.fixture
def exported(tmp_path):
    store, vids = make_review_store(tmp_path / "s", [
        {"category": "Fire", "split": "train"}, {"category": "Riot", "split": "train"},
        {"category": "Mugging", "split": "train"}, {"category": "War", "split": "train"},
        {"category": "Fire", "split": "train"},
    ])
    out, _, _, errors = review.export_tasks(store, tmp_path / "tasks.json",
                                            review.Media(store.root, store.root))
    assert errors == []
    return store, json.loads(out.read_text())


def _texts(task: dict) -> list[str]:
    return [t for r in task["predictions"][0]["result"] if r["from_name"] == "description"
            for t in r["value"]["text"]]


def _with(task: dict, category: str, text: str | None, ann_id: int) -> dict:
    result = [{"from_name": "category", "to_name": "video", "type": "choices",
               "value": {"choices": [category]}}]
    if text is not None:
        result.append({"from_name": "description", "to_name": "video", "type": "textarea",
                       "value": {"text": [text]}})
    return {**task, "id": ann_id, "annotations": [{"id": ann_id, "completed_by": 1,
                                                    "result": result}]}


def test_prefilled_text_is_marked_and_its_source_recorded(exported, tmp_path):
    store, tasks = exported
    for t in tasks:
        [text] = _texts(t)
        assert text.startswith(review.MODEL_TEXT_MARK)  # the reviewer sees it is model text
    model = [_texts(t)[0] for t in tasks]
    reason = [m.removeprefix(review.MODEL_TEXT_MARK) for m in model]
    answers = [
        _with(tasks[0], "Explosion", model[0], 1),                 # fixed the category only
        _with(tasks[1], "Riot", reason[1] + " Police arrive.", 2),  # edited the model text
        _with(tasks[2], "Mugging", "  " + reason[2] + "\n", 3),    # removed the mark only
        _with(tasks[3], "War", "Tanks cross a field.", 4),          # wrote their own
        _with(tasks[4], "Fire", None, 5),                           # no description
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(answers))
    s = review.import_export_file(store, export)
    assert (s.written, s.errors) == (5, [])
    rows = {r["video_id"]: r for r in store.read("annotations").to_pylist()
            if r["annotator_kind"] == "human"}
    got = [(rows[t["data"]["clip_id"]]["description"],
            rows[t["data"]["clip_id"]]["description_source"]) for t in tasks]
    assert got == [
        (reason[0], "model-accepted"),
        (reason[1] + " Police arrive.", "reviewer"),
        (reason[2], "model-accepted"),
        ("Tanks cross a field.", "reviewer"),
        (None, None),
    ]
    # the model rows keep the model's text, unmarked, without a source
    model_rows = [r for r in store.read("annotations").to_pylist()
                  if r["annotator_kind"] == "model"]
    assert {r["description"] for r in model_rows} == set(reason)
    assert {r["description_source"] for r in model_rows} == {None}


def test_auto_reviewer_accepts_model_text_as_model_text(exported, tmp_path):
    store, tasks = exported
    export = tmp_path / "export.json"
    export.write_text(json.dumps(accept_predictions(tasks, "robot")))
    s = review.import_export_file(store, export)
    assert (s.written, s.errors) == (5, [])
    humans = store.query("SELECT description, description_source FROM annotations "
                         "WHERE annotator = 'robot'").to_pylist()
    assert {h["description_source"] for h in humans} == {"model-accepted"}
    assert not any(h["description"].startswith(review.MODEL_TEXT_MARK.strip()) for h in humans)


def test_model_text_from_an_edited_file_is_still_model_text(exported, tmp_path):
    """The store's model rows, not the file's predictions, decide: a file whose predictions
    were stripped still marks the accepted model text as such."""
    store, tasks = exported
    task = {k: v for k, v in tasks[0].items() if k != "predictions"}
    reason = _texts(tasks[0])[0].removeprefix(review.MODEL_TEXT_MARK)
    export = tmp_path / "export.json"
    export.write_text(json.dumps([_with(task, "Fire", reason, 9)]))
    review.import_export_file(store, export)
    [row] = store.query("SELECT description_source FROM annotations "
                        "WHERE annotator_kind = 'human'").to_pylist()
    assert row["description_source"] == "model-accepted"
