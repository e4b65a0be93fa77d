"""An automatic reviewer for runs without a person (the demo): accept every pre-label as is.

It reads a Label Studio import file written by ``prevad review export`` and writes what Label
Studio's JSON export would hold if a reviewer had submitted each task unchanged: one annotation
per task whose result is the task's prediction, completed by ``annotator``. Importing that file
(``prevad review import``) stores human-kind ``annotations`` rows whose ``annotator`` names this
reviewer (default ``demo-auto-accept``), so a data card or a query can tell them from real people.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prevad.io import atomic_write_json
from prevad.review import ReviewError, read_export_file

DEFAULT_ANNOTATOR = "demo-auto-accept"


def accept_predictions(tasks: list[dict[str, Any]], annotator: str = DEFAULT_ANNOTATOR,
                       when: datetime | None = None) -> list[dict[str, Any]]:
    """Tasks with one submitted annotation each, equal to their first prediction.

    The prediction's description is the model's marked text: imported, it is stored with
    ``description_source`` "model-accepted" (the reviewer accepted model text).

    Raises:
        ReviewError: a task has no prediction to accept (the message names its clip).
    """
    if not annotator.strip():
        raise ReviewError("annotator: expected a name for the automatic reviewer, got ''")
    stamp = (when or datetime.now(UTC)).isoformat()
    out = []
    for i, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        clip = data.get("clip_id", data.get("video_id")) if isinstance(data, dict) else None
        name = f"clip {clip!r}" if isinstance(clip, str) else f"task {i}"
        preds = task.get("predictions") if isinstance(task, dict) else None
        first = preds[0] if isinstance(preds, list) and preds else None
        if not isinstance(first, dict) or not first.get("result"):
            raise ReviewError(f"{name[:120]} has no prediction to accept")
        out.append({**task, "id": i, "annotations": [{
            "id": i, "result": first["result"], "was_cancelled": False,
            "completed_by": {"email": annotator}, "created_at": stamp, "updated_at": stamp,
        }]})
    return out


def accept_file(tasks_file: str | Path, out: str | Path,
                annotator: str = DEFAULT_ANNOTATOR) -> Path:
    """Write ``out``: the export file of ``tasks_file`` with every pre-label accepted."""
    tasks = read_export_file(tasks_file)
    out = Path(out)
    atomic_write_json(out, accept_predictions(tasks, annotator))
    return out
