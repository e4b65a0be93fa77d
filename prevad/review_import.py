"""Import of reviewed tasks (Label Studio JSON export files and server exports), task by task.

Everything in an export is untrusted. Each task is validated on its own — its type and fields,
the clip it names (known to the store; its parent as recorded), the frames of the media the
reviewer saw (from the recorded media mapping, not the file), every span (whole frame numbers,
not reversed, inside the media), the category (in the taxonomy, exactly one), string sizes,
annotation ids (unique across clips), a task id that repeats an earlier one — and a bad task
becomes a :class:`~prevad.review_format.TaskError` naming it (its id, or ``#position``) and the
rule it breaks. The good tasks are written in one atomic append; a file that cannot be read at
all (missing, empty, too large, not UTF-8, not JSON, too deeply nested, not a list) is one error.

Descriptions: the model's pre-filled text starts with
:data:`~prevad.review_format.MODEL_TEXT_MARK`; an annotation whose text is a model text of its
clip (marker removed) is stored with ``description_source`` "model-accepted", any other text
with "reviewer".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prevad import taxonomy
from prevad.errors import ReviewError, UnknownCategoryError, ValidationError
from prevad.records import SPAN_TOLERANCE, SPLITS, Annotation, make_id, utcnow
from prevad.review_format import (
    CATEGORY,
    DATASET,
    DESCRIPTION,
    MAX_EXPORT_FILE_BYTES,
    MAX_FRAMES,
    MAX_ITEMS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    MODEL_TEXT_MARK,
    SPANS,
    Clip,
    TaskError,
    finite_number,
    frames_to_relative,
    short_repr,
    store_clips,
)
from prevad.review_media import load_media
from prevad.store import Store


@dataclass(slots=True)
class ImportSummary:
    """What a pull / import did.

    Attributes:
        written: New human annotation rows (first imports and edited annotations).
        unchanged: Annotations already imported with the same content.
        pending: Tasks with no completed annotation yet.
        errors: Tasks that could not be imported, each with its reason (the rest were).
        tasks: Tasks read.
    """

    written: int = 0
    unchanged: int = 0
    pending: int = 0
    errors: list[TaskError] = field(default_factory=list)
    tasks: int = 0


def _task_name(task: Any, position: int) -> str:
    """The task's Label Studio id when it has a sane one, else its position in the file."""
    tid = task.get("id") if isinstance(task, dict) else None
    if isinstance(tid, int) and not isinstance(tid, bool):
        return str(tid)
    if isinstance(tid, str) and 0 < len(tid) <= 64 and tid.isprintable() and " " not in tid:
        return tid
    return f"#{position}"


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
        except ValueError:
            pass
    return utcnow()


def _name(value: Any, what: str) -> str:
    """A short printable string field (id, e-mail, category)."""
    if not isinstance(value, str) or not value.strip():
        raise ReviewError(f"{what} must be a non-empty string, got {short_repr(value)}")
    if len(value) > MAX_NAME_CHARS:
        raise ReviewError(f"{what} is {len(value)} characters long, at most {MAX_NAME_CHARS} "
                          f"expected: {short_repr(value)}")
    if not value.isprintable():
        raise ReviewError(f"{what} holds control characters: {short_repr(value)}")
    return value


def _annotator(ann: dict[str, Any], users: dict[int, str]) -> str:
    who = ann.get("completed_by")
    if isinstance(who, dict):
        name = who.get("email") or who.get("username") or who.get("id")
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)
        return _name(name, "completed_by.email")
    if isinstance(who, int) and not isinstance(who, bool):
        return users.get(who, f"label-studio-user-{who}")
    if who is not None:
        raise ReviewError(f"completed_by must be a user object or id, got {short_repr(who)}")
    user = ann.get("created_username")
    return _name(user, "created_username") if user is not None else "label-studio"


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReviewError(f"{what} must be an object, got {short_repr(value)}")
    return value


def _list(value: Any, what: str, limit: int = MAX_ITEMS) -> list[Any]:
    if not isinstance(value, list):
        raise ReviewError(f"{what} must be a list, got {short_repr(value)}")
    if len(value) > limit:
        raise ReviewError(f"{what} has {len(value)} items, at most {limit} expected")
    return value


def _frame(value: Any, what: str) -> int:
    """A frame number: a whole number (Label Studio's ranges are integer frames), bounded."""
    if not finite_number(value):
        raise ReviewError(f"{what} must be a whole frame number, got {short_repr(value)}")
    if abs(value) > MAX_FRAMES:
        raise ReviewError(f"{what} = {short_repr(value)} is outside the video (at most "
                          f"{MAX_FRAMES} frames)")
    if float(value) != int(value):
        raise ReviewError(f"{what} must be a whole frame number, got {short_repr(value)}")
    return int(value)


def _texts(value: dict[str, Any]) -> list[str]:
    texts = _list(value.get("text", []), "a description's text")
    for t in texts:
        if not isinstance(t, str):
            raise ReviewError(f"a description's text must be strings, got {short_repr(t)}")
    total = sum(len(t) for t in texts)
    if total > MAX_TEXT_CHARS:
        raise ReviewError(f"the description is {total} characters long, at most "
                          f"{MAX_TEXT_CHARS} expected")
    return [t for t in texts if t.strip()]


@dataclass(frozen=True, slots=True)
class _Result:
    category: str
    spans: list[list[float]]
    description: str | None
    description_source: str | None


def _norm(text: str) -> str:
    return " ".join(text.split())


def _description(texts: list[str], model_texts: set[str]) -> tuple[str | None, str | None]:
    """(description without the model mark, its source) of an annotation's texts."""
    if not texts:
        return None, None
    bodies, sources = [], []
    for t in texts:
        body = t.strip()
        marked = body.startswith(MODEL_TEXT_MARK.strip())
        if marked:
            body = body[len(MODEL_TEXT_MARK.strip()):].strip()
        accepted = _norm(body) in model_texts
        if body:
            bodies.append(body)
            sources.append("model-accepted" if accepted else "reviewer")
    if not bodies:
        return None, None
    source = "reviewer" if "reviewer" in sources else "model-accepted"
    return "\n".join(bodies), source


def _read_result(result: Any, n_frames: int | None, model_texts: set[str] | None = None
                 ) -> _Result:
    """Category, relative spans and description of one annotation's result regions.

    Raises:
        ReviewError: a malformed region, no category or several, a category outside the
            taxonomy, a span that is not a frame range of the media.
    """
    categories, ranges, texts = [], [], []
    for i, region in enumerate(_list(result, "result")):
        region = _obj(region, f"result[{i}]")
        name = region.get("from_name")
        if name not in (CATEGORY, SPANS, DESCRIPTION):
            continue  # another control (a config edited in Label Studio): not ours to read
        value = _obj(region.get("value"), f"result[{i}].value")
        if name == CATEGORY and "choices" in value:
            choices = _list(value["choices"], "the category choices")
            if len(choices) != 1:
                raise ReviewError(f"exactly one category must be chosen, got {short_repr(choices)}")
            categories.append(_name(choices[0], "the category"))
        elif name == CATEGORY and "taxonomy" in value:
            paths = _list(value["taxonomy"], "the category taxonomy")
            if len(paths) != 1 or not isinstance(paths[0], list) or not paths[0]:
                raise ReviewError(f"exactly one taxonomy path must be chosen, got "
                                  f"{short_repr(paths)}")
            categories.append(_name(paths[0][-1], "the category"))  # deepest level
        elif name == SPANS:
            for j, r in enumerate(_list(value.get("ranges", []), "the span ranges")):
                r = _obj(r, f"span range {j}")
                ranges.append((_frame(r.get("start"), f"span range {j} start"),
                               _frame(r.get("end"), f"span range {j} end")))
        elif name == DESCRIPTION:
            texts.extend(_texts(value))
    if not categories:
        raise ReviewError("the annotation has no category (Choices 'category' is empty)")
    if len(set(categories)) > 1:
        raise ReviewError(f"the annotation has several categories: {short_repr(categories)}")
    try:
        category = taxonomy.canonical(categories[0])
    except UnknownCategoryError as exc:
        raise ReviewError(_short_message(str(exc))) from None
    if len(ranges) > MAX_ITEMS:
        raise ReviewError(f"the annotation has {len(ranges)} spans, at most {MAX_ITEMS}")
    spans = []
    for start, end in ranges:
        if end < start:
            raise ReviewError(f"span frames [{start}, {end}] are reversed (start <= end expected)")
        if not n_frames:
            raise ReviewError("spans were drawn but the media's frame count is unknown")
        if start < 1 or end > n_frames * (1 + SPAN_TOLERANCE):
            raise ReviewError(
                f"span frames [{start}, {end}] are outside the video (frames 1..{n_frames})"
            )
        spans.append(frames_to_relative(start, end, n_frames))
    spans.sort()
    if spans and category == taxonomy.NORMAL:
        raise ReviewError(f"category Normal comes with anomaly spans {spans}")
    description, source = _description(texts, model_texts or set())
    return _Result(category, spans, description, source)


def _short_message(msg: str) -> str:
    return msg if len(msg) <= 400 else msg[:400] + "…"


@dataclass
class _ImportContext:
    """What validating a task needs from the store (read once per import)."""

    root: Path
    clips: dict[str, Clip]
    splits: dict[str, str]
    model_texts: dict[str, set[str]]
    owners: dict[str, str]  # stored annotation id -> clip id
    users: dict[int, str]

    @classmethod
    def of(cls, store: Store, users: dict[int, str] | None) -> _ImportContext:
        splits: dict[str, str] = {}
        texts: dict[str, set[str]] = {}
        owners = {}
        for a in store.read("annotations", ["annotation_id", "video_id", "dataset",
                                            "annotator_kind", "description", "split"]).to_pylist():
            owners[a["annotation_id"]] = a["video_id"]
            if a["dataset"] != DATASET:
                continue
            splits[a["video_id"]] = a["split"]
            if a["annotator_kind"] == "model" and a["description"]:
                texts.setdefault(a["video_id"], set()).add(_norm(a["description"]))
        return cls(Path(store.root), store_clips(store), splits, texts, owners, users or {})


def _clip_of(data: dict[str, Any], ctx: _ImportContext) -> Clip:
    """The task's clip (``clip_id``; ``video_id`` in files of earlier versions)."""
    key = "clip_id" if "clip_id" in data else "video_id"
    if key not in data:
        raise ReviewError("the task has no data.clip_id: it was not exported by prevad review")
    cid = _name(data[key], f"data.{key}")
    clip = ctx.clips.get(cid)
    if clip is None:
        raise ReviewError(f"clip {short_repr(cid)} is not in the store")
    parent = data.get("parent_video_id")
    if parent is not None and parent != clip.spec.parent_video_id:
        raise ReviewError(f"data.parent_video_id {short_repr(parent)} is not the clip's parent "
                          f"video {clip.spec.parent_video_id}")
    return clip


def _media_frames(data: dict[str, Any], clip: Clip, ctx: _ImportContext) -> int | None:
    """Frames of the media the reviewer saw: the recorded mapping (trusted), else the store's
    count of a whole video, else the task's own ``n_frames`` checked against the clip."""
    media = load_media(ctx.root, data.get("media_id"))
    if media is not None and media.clip_id == clip.spec.clip_id:
        return media.n_frames
    if clip.spec.whole and clip.n_frames and data.get("media_id") is None:
        return int(clip.n_frames)
    n, fps = data.get("n_frames"), data.get("fps")
    if n is None:
        return None
    if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_FRAMES):
        raise ReviewError(f"data.n_frames must be a frame count 1..{MAX_FRAMES}, got "
                          f"{short_repr(n)}")
    # media of another clip, or an edited count, would not last as long as the clip
    if finite_number(fps) and fps > 0 and clip.duration_s and (
        abs(n / fps - clip.duration_s) > max(2 / fps, 0.02 * clip.duration_s)
    ):
        raise ReviewError(f"data.n_frames={n} at fps={fps:g} lasts {n / fps:.3f} s, but the "
                              f"clip lasts {clip.duration_s:.3f} s")
    return n


def _annotation_id(ann: dict[str, Any], cid: str, annotator: str, digest: str) -> str:
    aid = ann.get("id")
    if aid is None:  # a file made without Label Studio: the clip and the person identify it
        return make_id("label-studio", None, cid, annotator, digest)
    if isinstance(aid, bool) or not isinstance(aid, int | str):
        raise ReviewError(f"annotation id must be a number or a string, got {short_repr(aid)}")
    if isinstance(aid, str):
        _name(aid, "annotation id")
    return make_id("label-studio", aid, digest)


def _prediction_texts(task: dict[str, Any]) -> set[str]:
    """Texts the task's own predictions pre-filled (a text equal to one is model text)."""
    out = set()
    preds = task.get("predictions")
    for p in preds if isinstance(preds, list) else []:
        result = p.get("result") if isinstance(p, dict) else None
        for region in result if isinstance(result, list) else []:
            value = region.get("value") if isinstance(region, dict) else None
            texts = value.get("text") if isinstance(value, dict) else None
            for t in texts if isinstance(texts, list) else []:
                if isinstance(t, str) and len(t) <= MAX_TEXT_CHARS:
                    body = t.strip()
                    if body.startswith(MODEL_TEXT_MARK.strip()):
                        body = body[len(MODEL_TEXT_MARK.strip()):]
                    out.add(_norm(body))
    return out


def _task_rows(task: Any, ctx: _ImportContext) -> tuple[str, list[Annotation], int]:
    """(clip id, human rows, annotations skipped) of one exported task.

    Raises:
        ReviewError: anything malformed (the caller names the task).
    """
    task = _obj(task, "a task")
    data = _obj(task.get("data"), "data")
    clip = _clip_of(data, ctx)
    cid = clip.spec.clip_id
    split = ctx.splits.get(cid)
    if split is None:
        given = data.get("split", "train")
        if given not in SPLITS:
            raise ReviewError(f"data.split must be one of {SPLITS}, got {short_repr(given)}")
        split = given
    anns = _list(task.get("annotations", []), "annotations")
    n_frames: int | None = None
    if any(isinstance(a, dict) and a.get("result") for a in anns):
        n_frames = _media_frames(data, clip, ctx)
    model_texts = ctx.model_texts.get(cid, set()) | _prediction_texts(task)
    rows, skipped = [], 0
    for i, ann in enumerate(anns):
        ann = _obj(ann, f"annotations[{i}]")
        if ann.get("was_cancelled") or not ann.get("result"):
            skipped += 1
            continue
        res = _read_result(ann["result"], n_frames, model_texts)
        annotator = _annotator(ann, ctx.users)
        content = json.dumps([res.category, res.spans, res.description], sort_keys=True)
        digest = hashlib.sha256(content.encode()).hexdigest()[:16]
        aid = _annotation_id(ann, cid, annotator, digest)
        owner = ctx.owners.get(aid)
        if owner is not None and owner != cid:
            raise ReviewError(f"annotation id {short_repr(ann.get('id'))} is already used by clip "
                              f"{owner} (annotation ids must be unique)")
        try:
            rows.append(Annotation(
                annotation_id=aid, video_id=cid, dataset=DATASET, annotator_kind="human",
                annotator=annotator, category=res.category,
                is_anomaly=res.category != taxonomy.NORMAL, description=res.description,
                spans=res.spans, split=split, description_source=res.description_source,
                created_at=_parse_time(ann.get("updated_at") or ann.get("created_at")),
            ))
        except ValidationError as exc:
            raise ReviewError(_short_message(str(exc))) from None
    return cid, rows, skipped


def annotation_rows(
    task: dict[str, Any], store: Store, users: dict[int, str] | None = None
) -> tuple[list[Annotation], int]:
    """Human annotation rows of one exported task, and how many annotations were skipped.

    Cancelled (skipped) annotations and empty ones are not labels and are left out.

    Raises:
        ReviewError: the task is malformed, names no clip or one the store does not know, or one
            of its annotations is invalid (message without the task name; the caller adds it).
    """
    _, rows, skipped = _task_rows(task, _ImportContext.of(store, users))
    return rows, skipped


def _task_key(task: dict[str, Any]) -> str | None:
    tid = task.get("id")
    return None if tid is None or isinstance(tid, bool) or not isinstance(tid, int | str) \
        else f"{type(tid).__name__}:{tid}"


def import_tasks(
    store: Store, tasks: Sequence[Any], users: dict[int, str] | None = None,
    scrub: Any = None,
) -> ImportSummary:
    """Write the human annotations of exported Label Studio tasks to the store.

    Every task is validated on its own; each bad one becomes a :class:`TaskError` (its id, or
    ``#position`` when it has none, and the rule it breaks) and the good ones are written in one
    atomic append. A task whose id repeats an earlier task's is an error (only the first is
    read). Annotations already imported with the same content are skipped (re-import changes
    nothing).

    Args:
        store: The store.
        tasks: The export's tasks (anything: each is checked).
        users: Label Studio user id -> name (for ``completed_by`` ids).
        scrub: Applied to every error message (the REST client removes credentials).
    """
    ctx = _ImportContext.of(store, users)
    summary = ImportSummary(tasks=len(tasks))
    rows: list[Annotation] = []
    new_ids: dict[str, str] = {}
    seen: dict[str, int] = {}
    for position, task in enumerate(tasks, start=1):
        name = _task_name(task, position)
        cid = None
        try:
            if isinstance(task, dict):
                key = _task_key(task)
                if key is not None and key in seen:
                    name = f"{name} at #{position}"
                    raise ReviewError(f"duplicate task: same id as the task at #{seen[key]}; "
                                      "only the first is imported")
                if key is not None:
                    seen[key] = position
                data = task.get("data")
                cid = data.get("clip_id", data.get("video_id")) if isinstance(data, dict) else None
                cid = cid if isinstance(cid, str) and len(cid) <= 80 and cid.isprintable() else None
            _, new, _ = _task_rows(task, ctx)
            for r in new:
                other = new_ids.get(r.annotation_id)
                if other is not None and other != r.video_id:
                    raise ReviewError(f"annotation id is also used by clip {other} in this file "
                                      "(annotation ids must be unique)")
        except ReviewError as exc:
            msg = scrub(str(exc)) if scrub else str(exc)
            summary.errors.append(TaskError(name, scrub(cid) if scrub and cid else cid, msg))
            continue
        if not new:
            summary.pending += 1
        for r in new:
            if r.annotation_id in ctx.owners or r.annotation_id in new_ids:
                summary.unchanged += 1
            else:
                new_ids[r.annotation_id] = r.video_id
                rows.append(r)
    if rows:
        summary.written = store.append("annotations", rows).written
    return summary


def read_export_file(path: str | Path, max_bytes: int = MAX_EXPORT_FILE_BYTES) -> list[Any]:
    """Tasks of a Label Studio JSON export file (a list of task objects; each is checked later).

    Raises:
        ReviewError: the file is missing, not a regular file, larger than ``max_bytes``, empty,
            not UTF-8, not JSON (or nested too deeply to read), or not a list.
    """
    path = Path(path)
    try:
        if not path.is_file():
            what = "does not exist" if not path.exists() else "is not a regular file"
            raise ReviewError(f"export file {path} {what}")
        size = path.stat().st_size
        if size > max_bytes:
            raise ReviewError(f"export file {path} is {size} bytes, over the limit of "
                              f"{max_bytes}; split the export")
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ReviewError(f"export file {path} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ReviewError(f"export file {path} is over the limit of {max_bytes} bytes")
    if not raw.strip():
        raise ReviewError(f"export file {path} is empty; expected a JSON list of tasks")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReviewError(f"export file {path} is not UTF-8 text (byte {exc.start}); "
                          "expected Label Studio's JSON export") from None
    try:
        tasks = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ReviewError(f"export file {path} is nested too deeply to be a Label Studio "
                          "export") from None
    except ValueError as exc:
        raise ReviewError(f"export file {path} is not JSON: {_short_message(str(exc))}") from None
    if not isinstance(tasks, list):
        raise ReviewError(
            f"export file {path} must hold a JSON list of tasks (Label Studio 'JSON' export), "
            f"got {type(tasks).__name__}"
        )
    return tasks


def _reject_constant(name: str) -> Any:
    # NaN / Infinity are not JSON; Python's parser would accept them silently
    raise ValueError(f"{name} is not a JSON value (NaN and Infinity are not allowed)")


def import_export_file(store: Store, path: str | Path,
                       max_bytes: int = MAX_EXPORT_FILE_BYTES) -> ImportSummary:
    """``prevad review import``: human labels from a Label Studio JSON export file."""
    return import_tasks(store, read_export_file(path, max_bytes))


