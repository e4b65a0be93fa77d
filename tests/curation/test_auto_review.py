"""The automatic reviewer: every pre-label accepted as is, under its own annotator name."""

from __future__ import annotations

import json

import pytest

from curation.auto_review import accept_file, accept_predictions
from prevad.review import ReviewError

RESULT = [{"from_name": "category", "to_name": "video", "type": "choices",
           "value": {"choices": ["Fire"]}}]


def _task(vid: str, result=RESULT) -> dict:
    return {"data": {"video_id": vid}, "predictions": [{"model_version": "v1", "result": result}]}


def test_each_task_gets_one_annotation_equal_to_its_prediction(tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([_task("a"), _task("b")]))
    out = json.loads(accept_file(tasks, tmp_path / "export.json", "robot").read_text())
    assert [t["data"]["video_id"] for t in out] == ["a", "b"]
    for t in out:
        [ann] = t["annotations"]
        assert ann["result"] == RESULT and ann["completed_by"] == {"email": "robot"}
        assert ann["was_cancelled"] is False


def test_a_task_without_prediction_or_a_blank_name_is_an_error():
    with pytest.raises(ReviewError, match="clip 'b' has no prediction"):
        accept_predictions([_task("a"), _task("b", result=[])])
    with pytest.raises(ReviewError, match="annotator"):
        accept_predictions([_task("a")], annotator=" ")
