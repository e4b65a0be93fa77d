"""A simulated reviewer: corrects the AI pre-labels of a review file from a world's truth table.

It plays the person in the Label Studio round trip on a generated world
(:mod:`curation.world`): it reads the import file written by ``prevad review export`` and writes
what Label Studio's JSON export would hold after that person submitted every task, the way a
careful reviewer would have labelled it:

- the **category**: the world's sub-category when the item shows (part of) the planted event,
  else ``Normal`` (a misleading caption or an unrelated shot of a compilation is Normal);
- **spans**: the event's frames, frame-exact and relative to the item, on validation items
  (and on every anomalous item with ``spans="all"``), as Label Studio's 1-based inclusive frame
  ranges;
- a **description**: the world's caption of the anomalous video (what a reviewer would write).

Each task names an *item*: a single-shot clip that ``clean`` cut (``docs/DECISIONS.md`` D1), that
is a ``segments`` row with its parent video and span (``data.clip_id`` / ``data.segment_id``,
or a clip id in ``data.video_id``), or a video that was never split (``data.video_id``). The item is
resolved through the store to (parent video, ``start_s``, ``end_s``) — the ``clips`` view when
the store has one, else ``segments``, else ``videos`` — and the parent video to its world file
(its source id, URL or file name carries the world id; a downloaded section adds its start).
:func:`curation.world.span_truth` then gives the truth of exactly that span.

Importing the written file (``prevad review import``) stores human ``annotations`` rows whose
annotator is ``simulated-reviewer``. :class:`ReviewStats` counts what the reviewer changed
against the pre-labels.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from curation.world import SpanTruth, load_truth, span_truth, world_id_of
from prevad import taxonomy
from prevad.errors import PrevadError, QueryError
from prevad.io import atomic_write_json
from prevad.review import CATEGORY, DESCRIPTION, SPAN_LABEL, SPANS, VIDEO, read_export_file
from prevad.store import Store

ANNOTATOR = "simulated-reviewer"
SPAN_CHOICES = ("val", "all")
#: The catalog view that resolves any clip id (docs/DECISIONS.md D1), when the store has it.
CLIPS_SQL = ("SELECT clip_id, video_id AS parent_video_id, start_s, end_s FROM clips "
             "WHERE clip_id = $id")


class SimulatedReviewError(PrevadError):
    """The simulated review cannot run (bad option, an item the store does not know)."""


@dataclass(frozen=True, slots=True)
class Item:
    """A review item resolved through the store.

    Attributes:
        item_id: the id the task names (video, segment or clip id).
        video: the parent ``videos`` row.
        start_s: where the item starts in the parent's file (seconds; 0 for a whole video).
        end_s: where it ends (None: the file's end).
    """

    item_id: str
    video: dict[str, Any]
    start_s: float
    end_s: float | None

    @property
    def whole(self) -> bool:
        """True when the item is its whole parent video."""
        return self.start_s == 0 and self.end_s is None


class ItemResolver:
    """Resolves item ids to :class:`Item` through the store (tables read once)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.videos = {r["video_id"]: r for r in store.read("videos").to_pylist()}
        self.segments = {r["segment_id"]: r for r in store.read(
            "segments", ["segment_id", "video_id", "start_s", "end_s"]).to_pylist()}
        self._clips_view: bool | None = None

    def _clip(self, item_id: str) -> dict[str, Any] | None:
        if self._clips_view is False:
            return None
        try:
            rows = self.store.query(CLIPS_SQL, {"id": item_id}).to_pylist()
        except (QueryError, PrevadError):
            self._clips_view = False  # a store without the view
            return None
        self._clips_view = True
        return rows[0] if rows else None

    def resolve(self, item_id: str) -> Item:
        """The item's parent video and span.

        Raises:
            SimulatedReviewError: no video, segment or clip has this id.
        """
        clip = self._clip(item_id)
        if clip and clip["parent_video_id"] in self.videos:
            video = self.videos[clip["parent_video_id"]]
            if clip["parent_video_id"] == item_id:  # a video that is a clip of itself
                return Item(item_id, video, 0.0, None)
            return Item(item_id, video, float(clip["start_s"] or 0.0), clip["end_s"])
        if item_id in self.segments:
            seg = self.segments[item_id]
            if seg["video_id"] in self.videos:
                return Item(item_id, self.videos[seg["video_id"]], float(seg["start_s"]),
                            float(seg["end_s"]))
        if item_id in self.videos:
            return Item(item_id, self.videos[item_id], 0.0, None)
        raise SimulatedReviewError(f"item {item_id!r} is neither a video, a segment nor a clip "
                                   "of the store")


def item_id_of(task: dict[str, Any]) -> str | None:
    """The item a task names: ``data.clip_id``, ``data.segment_id`` or ``data.video_id``."""
    data = task.get("data") or {}
    for key in ("clip_id", "segment_id", "video_id"):
        if data.get(key):
            return str(data[key])
    return None


def item_truth(item: Item, truth: dict[str, dict[str, Any]], n_frames: int | None = None
               ) -> SpanTruth | None:
    """The truth of an item (None when its video is not a world file).

    Args:
        item: the resolved item.
        truth: the world's truth rows (:func:`curation.world.load_truth`).
        n_frames: the item's frame count as the review task states it (Label Studio counts
            frames from it, from the item's first frame); derived from the span when not
            given.
    """
    v = item.video
    wid = world_id_of(v.get("source_video_id"), v.get("uri"))
    if wid is None or wid not in truth:
        return None
    offset = float(v.get("start_s") or 0.0)  # a downloaded section starts here in the file
    end = None if item.end_s is None else offset + float(item.end_s)
    if item.whole and v.get("end_s") is not None and n_frames is None:
        end = float(v["end_s"])
    return span_truth(truth[wid], offset + item.start_s, end, n_frames=n_frames)


def truth_result(t: SpanTruth, with_spans: bool, caption: str | None) -> list[dict[str, Any]]:
    """Label Studio result regions of what the reviewer submits for an item."""
    result: list[dict[str, Any]] = [{
        "from_name": CATEGORY, "to_name": VIDEO, "type": "choices",
        "value": {"choices": [t.category]},
    }]
    if with_spans and t.spans:
        ranges = [{"start": a + 1, "end": b} for a, b in t.spans]  # 1-based, inclusive
        result.append({"from_name": SPANS, "to_name": VIDEO, "type": "timelinelabels",
                       "value": {"ranges": ranges, "timelinelabels": [SPAN_LABEL]}})
    if t.is_anomaly and caption:
        result.append({"from_name": DESCRIPTION, "to_name": VIDEO, "type": "textarea",
                       "value": {"text": [caption]}})
    return result


def _prediction(task: dict[str, Any]) -> tuple[str | None, list[Any]]:
    """(category, ranges) of the task's first prediction."""
    preds = task.get("predictions") or []
    category, ranges = None, []
    for region in (preds[0].get("result") or []) if preds else []:
        value = region.get("value") or {}
        if region.get("from_name") == CATEGORY and value.get("choices"):
            category = value["choices"][0]
        elif region.get("from_name") == SPANS:
            ranges.extend(value.get("ranges") or [])
    return category, ranges


@dataclass(slots=True)
class ReviewStats:
    """What the simulated reviewer did to the pre-labels.

    Attributes:
        tasks: tasks in the file.
        reviewed: tasks it submitted.
        changed: pre-labels it changed (category, or spans it had to draw or fix).
        category_changed: pre-labels whose category it changed.
        anomaly_flipped: pre-labels whose anomaly yes/no it flipped.
        spans_drawn: items it gave spans to.
        abnormal: items it labelled abnormal.
        skipped: items it could not judge (not world videos), left pending, with the reason.
    """

    tasks: int = 0
    reviewed: int = 0
    changed: int = 0
    category_changed: int = 0
    anomaly_flipped: int = 0
    spans_drawn: int = 0
    abnormal: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def review_tasks(store: Store, tasks: list[dict[str, Any]], world: str | Path, *,
                 annotator: str = ANNOTATOR, spans: str = "val",
                 when: datetime | None = None) -> tuple[list[dict[str, Any]], ReviewStats]:
    """Submit every task the way the world's truth says (see the module docstring).

    Args:
        store: the store the tasks were exported from.
        tasks: Label Studio tasks (``prevad review export``).
        world: the world folder whose videos the store holds.
        annotator: the reviewer's name stored with the labels.
        spans: ``val`` (spans on validation items only) or ``all`` (on every anomalous item).
        when: the submission time (default now).

    Returns:
        (the tasks with their submitted annotation, what changed).

    Raises:
        SimulatedReviewError: a bad option.
    """
    if spans not in SPAN_CHOICES:
        raise SimulatedReviewError(f"spans: expected one of {SPAN_CHOICES}, got {spans!r}")
    if not annotator.strip():
        raise SimulatedReviewError("annotator: expected a name, got ''")
    truth = load_truth(world)
    resolver = ItemResolver(store)
    stamp = (when or datetime.now(UTC)).isoformat()
    stats = ReviewStats(tasks=len(tasks))
    out = []
    for i, task in enumerate(tasks, start=1):
        item_id = item_id_of(task) or f"task {i}"
        data = task.get("data") or {}
        try:
            item = resolver.resolve(item_id)
        except SimulatedReviewError as exc:
            stats.skipped[item_id] = str(exc)
            out.append(dict(task))
            continue
        # Label Studio counts the item's frames from the task's n_frames (whole video or clip)
        n = data.get("n_frames")
        t = item_truth(item, truth, int(n) if n else None)
        if t is None:
            stats.skipped[item_id] = "not a video of this world"
            out.append(dict(task))
            continue
        with_spans = data.get("split") == "val" or spans == "all"
        wid = t.world_id
        result = truth_result(t, with_spans, truth[wid]["caption"])
        pre_category, pre_ranges = _prediction(task)
        new_ranges = next((r["value"]["ranges"] for r in result if r["from_name"] == SPANS), [])
        cat_changed = pre_category is None or taxonomy.canonical(pre_category) != t.category
        stats.category_changed += cat_changed
        stats.anomaly_flipped += (pre_category is None or (
            taxonomy.canonical(pre_category) != taxonomy.NORMAL) != t.is_anomaly)
        stats.changed += cat_changed or (with_spans and pre_ranges != new_ranges)
        stats.spans_drawn += bool(new_ranges)
        stats.abnormal += t.is_anomaly
        stats.reviewed += 1
        ann_id = int(hashlib.sha256(f"{annotator}:{item_id}".encode()).hexdigest()[:12], 16)
        out.append({**task, "id": task.get("id", i), "annotations": [{
            "id": ann_id, "result": result, "was_cancelled": False,
            "completed_by": {"email": annotator}, "created_at": stamp, "updated_at": stamp,
        }]})
    return out, stats


def review_file(store: Store, tasks_file: str | Path, world: str | Path, out: str | Path, *,
                annotator: str = ANNOTATOR, spans: str = "val") -> ReviewStats:
    """Write ``out``: the Label Studio export of ``tasks_file`` as the reviewer submitted it.

    Raises:
        prevad.review.ReviewError: the tasks file is missing or not a task list.
        SimulatedReviewError: a bad option.
    """
    tasks = read_export_file(tasks_file)
    reviewed, stats = review_tasks(store, tasks, world, annotator=annotator, spans=spans)
    atomic_write_json(Path(out), reviewed)
    return stats
