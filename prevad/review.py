"""Hybrid human-AI review: AI pre-labels go to Label Studio, human labels come back to the store.

The flow (paper: annotation stage):

1. :func:`collect_prelabels` — every video with an ``ok`` result of the ``judge`` stage and no
   human ``prevad`` annotation yet is *awaiting review*. Its pre-label is the judge's category and
   confidence; for validation videos also proposed anomaly spans, from a :class:`SpanProposer`
   passed in by the layer above (``--checkpoint``: LaGoVAD on the stored features,
   :class:`lagovad.proposals.DetectorSpans`) or from the judge output (``spans``, relative,
   or the anomalous segments it judged).
2. :func:`push` (``prevad review push``) creates or updates a Label Studio project with
   :func:`label_config` and imports one task per video with the pre-label as a *prediction*
   (``model_version`` = the judge's stage_version). Videos are served from the store: Label
   Studio's local-file serving (a local storage rooted at the store's video folder, never
   synced, so nothing is copied) or a URL prefix. A video already in the project is not imported
   again. The model pre-label is also stored as an ``annotations`` row (annotator_kind "model").
3. :func:`pull` (``prevad review pull``) reads the project's export and writes one human
   ``annotations`` row per completed Label Studio annotation: category, spans relative in [0, 1],
   description, annotator, time. The row id hashes the Label Studio annotation id *and* its
   content, so re-pulling changes nothing and an annotation edited after a pull comes back as a
   new row (a new version; the latest human row is the final label, see
   :data:`prevad.queries.FINAL_LABELS`).
4. :func:`export_tasks` / :func:`import_export_file` (``prevad review export|import``) do the same
   through Label Studio's JSON files, for teams without API access.

Bad tasks (a label outside the taxonomy, a span outside the video, a video the store does not
know) are reported as :class:`TaskError` naming the task; the other tasks are imported.

Time base of spans: Label Studio's ``TimelineLabels`` ranges count frames from 1, both ends
inclusive; frame ``k`` covers ``[(k - 1) / fps, k / fps)``. A range ``[a, b]`` of a video of
``n`` frames is the relative span ``[(a - 1) / n, b / n]``, and back.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import quoteattr

from prevad import queries, taxonomy
from prevad.errors import PrevadError, UnknownCategoryError
from prevad.io import atomic_write_json, atomic_write_text
from prevad.records import SPAN_TOLERANCE, SPLITS, Annotation, make_id, utcnow
from prevad.store import Store

JUDGE_STAGE = "judge"
DATASET = "prevad"
#: Names of the control tags in :func:`label_config` (results are read back by these names).
CATEGORY = "category"
SPANS = "spans"
DESCRIPTION = "description"
VIDEO = "video"
SPAN_LABEL = "Anomaly"
DEFAULT_PROJECT = "PreVAD review"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
#: Label Studio serves local files under this path; ``?d=`` is relative to its document root.
LOCAL_FILES_PREFIX = "/data/local-files/?d="


class ReviewError(PrevadError):
    """The review round trip cannot run (no token, server refused, bad file, bad option)."""


@dataclass(frozen=True, slots=True)
class TaskError:
    """One task that could not be imported, and why (the rest of the tasks are imported)."""

    task: str
    video_id: str | None
    message: str

    def __str__(self) -> str:
        vid = f" (video {self.video_id})" if self.video_id else ""
        return f"task {self.task}{vid}: {self.message}"


# ----------------------------------------------------------------------------------- labels


def label_config() -> str:
    """The Label Studio labeling config of the review task.

    A video player; one required choice over Normal, the 7 top-level classes and the 28
    sub-categories (grouped under their top-level class); timeline spans (frame ranges) on the
    video; a description text area. ``$instruction`` tells the annotator whether spans are needed
    (validation videos) and shows the AI's proposal.
    """
    lines = [
        "<View>",
        '  <Header value="$instruction"/>',
        f'  <Video name="{VIDEO}" value="$video" frameRate="$fps" height="360"/>',
        f'  <TimelineLabels name="{SPANS}" toName="{VIDEO}">',
        f'    <Label value="{SPAN_LABEL}" background="#d62728"/>',
        "  </TimelineLabels>",
        '  <Header value="Category (Normal, a top-level class, or a sub-category)" size="5"/>',
        f'  <Choices name="{CATEGORY}" toName="{VIDEO}" choice="single-radio" required="true"'
        ' showInline="true">',
        f"    <Choice value={quoteattr(taxonomy.NORMAL)}/>",
    ]
    for top, subs in taxonomy.HIERARCHY.items():
        lines.append(f"    <Choice value={quoteattr(top)}/>")
        lines.extend(f"    <Choice value={quoteattr(s)}/>" for s in subs)
    lines += [
        "  </Choices>",
        f'  <TextArea name="{DESCRIPTION}" toName="{VIDEO}" rows="3" editable="true"'
        ' maxSubmissions="1" placeholder="Describe only the anomaly"/>',
        "</View>",
    ]
    return "\n".join(lines) + "\n"


def frames_to_relative(start: int, end: int, n_frames: int) -> list[float]:
    """A 1-based inclusive frame range of a video of ``n_frames`` frames -> relative span."""
    return [(start - 1) / n_frames, end / n_frames]


def relative_to_frames(span: Sequence[float], n_frames: int) -> tuple[int, int]:
    """A relative span -> the 1-based inclusive frame range it covers (inverse of the above)."""
    a = min(max(round(span[0] * n_frames) + 1, 1), n_frames)
    b = min(max(round(span[1] * n_frames), a), n_frames)
    return a, b


# ----------------------------------------------------------------------------------- pre-labels


@dataclass(slots=True)
class PreLabel:
    """The AI proposal for one video awaiting review, with what the task needs to show it."""

    video_id: str
    category: str
    confidence: float | None
    reason: str | None
    stage_version: str
    split: str
    spans: list[list[float]] = field(default_factory=list)
    span_source: str | None = None
    uri: str | None = None
    fps: float | None = None
    n_frames: int | None = None
    duration_s: float | None = None

    @property
    def is_anomaly(self) -> bool:
        """True unless the proposed category is Normal."""
        return self.category != taxonomy.NORMAL


class SpanProposer(Protocol):
    """Proposes anomaly spans for a video awaiting review (the data layer imports no model:
    the layer above passes one in, docs/DECISIONS.md D2)."""

    #: Recorded as the spans' source (``span_source = "lagovad:<label>"``).
    label: str

    def spans(self, store: Store, pre: PreLabel) -> list[list[float]] | None:
        """Relative spans ``[[start, end], ...]`` in [0, 1], or None when it has none."""
        ...


def _judge_rows(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Latest ok judge outputs grouped by video id (rows of the newest judge version only)."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for r in queries.latest_status(store, JUDGE_STAGE).to_pylist():
        if r["status"] != "ok" or not r["output_json"]:
            continue
        out = json.loads(r["output_json"])
        vid = out.get("video_id") or r["id"]
        by_video.setdefault(vid, []).append(
            {**out, "_stage_version": r["stage_version"], "_time": r["time"]}
        )
    # Results of an older judge version (say, video-level before segment-level) are not mixed
    # with the newest one's.
    for vid, outs in by_video.items():
        newest = max(outs, key=lambda o: o["_time"])["_stage_version"]
        by_video[vid] = [o for o in outs if o["_stage_version"] == newest]
    return by_video


def _pick(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The video-level judge output, else the most confident anomalous segment, else any."""
    whole = [o for o in outputs if o.get("segment_id") is None]
    if whole:
        return whole[0]
    anomalous = [o for o in outputs if o.get("anomaly")]
    pool = anomalous or outputs
    return max(pool, key=lambda o: float(o.get("confidence") or 0.0))


def _segment_spans(
    outputs: list[dict[str, Any]], segments: dict[str, dict[str, Any]], duration: float | None
) -> list[list[float]]:
    """Relative spans of the segments the judge called anomalous (merged when they touch)."""
    if not duration:
        return []
    spans = []
    for o in outputs:
        seg = segments.get(o.get("segment_id") or "")
        if o.get("anomaly") and seg:
            spans.append([max(seg["start_s"] / duration, 0.0), min(seg["end_s"] / duration, 1.0)])
    spans.sort()
    merged: list[list[float]] = []
    for s in spans:
        if merged and s[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], s[1])
        else:
            merged.append(s)
    return merged


def collect_prelabels(
    store: Store,
    *,
    proposer: SpanProposer | None = None,
    default_split: str = "train",
    errors: list[TaskError] | None = None,
) -> list[PreLabel]:
    """Pre-labels of every video awaiting review (judge ok, no human ``prevad`` annotation).

    Args:
        store: The store.
        proposer: Proposes the spans of validation videos (e.g. LaGoVAD on the stored
            features, :class:`lagovad.proposals.DetectorSpans`); else they come from the judge
            output.
        default_split: Split of a video that has no ``prevad`` annotation and whose judge output
            names none.
        errors: Collects videos whose judge output cannot become a pre-label (bad category).

    Returns:
        One pre-label per video, ordered by video id.
    """
    judged = _judge_rows(store)
    videos = {r["video_id"]: r for r in store.read("videos").to_pylist()}
    segments = {r["segment_id"]: r for r in store.read("segments").to_pylist()}
    reviewed, splits = set(), {}
    for a in store.read("annotations").to_pylist():
        if a["dataset"] == DATASET:
            splits[a["video_id"]] = a["split"]
            if a["annotator_kind"] == "human":
                reviewed.add(a["video_id"])
    detector = proposer
    out = []
    for vid in sorted(judged):
        if vid in reviewed:
            continue
        outputs = judged[vid]
        best = _pick(outputs)
        v = videos.get(vid, {})
        try:
            category = taxonomy.canonical(str(best.get("category")))
        except UnknownCategoryError as exc:
            if errors is not None:
                errors.append(TaskError(f"judge:{vid}", vid, str(exc)))
            continue
        split = splits.get(vid) or best.get("split") or default_split
        pre = PreLabel(
            video_id=vid, category=category,
            confidence=None if best.get("confidence") is None else float(best["confidence"]),
            reason=best.get("reason"), stage_version=best["_stage_version"],
            split=split if split in SPLITS else default_split,
            uri=v.get("uri"), fps=v.get("fps"), n_frames=v.get("n_frames"),
            duration_s=v.get("duration_s"),
        )
        if pre.split == "val" and pre.is_anomaly:
            _propose_spans(store, pre, best, outputs, segments, detector)
        out.append(pre)
    return out


def _propose_spans(
    store: Store,
    pre: PreLabel,
    best: dict[str, Any],
    outputs: list[dict[str, Any]],
    segments: dict[str, dict[str, Any]],
    detector: SpanProposer | None,
) -> None:
    if detector is not None:
        spans = detector.spans(store, pre)
        if spans is not None:
            pre.spans, pre.span_source = spans, f"lagovad:{detector.label}"
            return
    if isinstance(best.get("spans"), list) and best["spans"]:
        pre.spans, pre.span_source = [list(map(float, s)) for s in best["spans"]], "judge"
        return
    spans = _segment_spans(outputs, segments, pre.duration_s)
    if spans:
        pre.spans, pre.span_source = spans, "judge:segments"


def model_annotation(pre: PreLabel) -> Annotation:
    """The pre-label as an ``annotations`` row (annotator_kind "model"), kept beside human ones."""
    return Annotation(
        # The spans may come from a detector run later: they are part of the row's identity.
        annotation_id=make_id(
            "review-prelabel", pre.video_id, pre.stage_version, pre.category,
            pre.span_source, json.dumps(pre.spans),
        ),
        video_id=pre.video_id, dataset=DATASET, annotator_kind="model",
        annotator=f"{JUDGE_STAGE}@{pre.stage_version}", category=pre.category,
        is_anomaly=pre.is_anomaly, description=pre.reason, spans=pre.spans, split=pre.split,
    )


# ----------------------------------------------------------------------------------- tasks


@dataclass(frozen=True, slots=True)
class Media:
    """How Label Studio reaches the store's videos (never a copy).

    Either ``url_prefix`` (videos served over HTTP: prefix + path relative to the store root) or
    Label Studio's local-file serving rooted at ``document_root`` (its
    LOCAL_FILES_DOCUMENT_ROOT; the video must lie under it).
    """

    store_root: Path
    document_root: Path | None = None
    url_prefix: str | None = None

    def url(self, uri: str | None, video_id: str) -> str:
        """The URL Label Studio loads the video from.

        Raises:
            ReviewError: the video has no file, or it lies outside the document root.
        """
        if not uri:
            raise ReviewError(f"video {video_id} has no uri: nothing to show the annotator")
        if uri.startswith(("http://", "https://")):
            return uri
        path = Path(uri) if Path(uri).is_absolute() else self.store_root / uri
        path = path.resolve()
        if self.url_prefix is not None:
            try:
                rel = path.relative_to(self.store_root)
            except ValueError:
                raise ReviewError(
                    f"video {video_id} file {path} is outside the store {self.store_root}; "
                    "--media-url serves the store's folder only"
                ) from None
            return self.url_prefix.rstrip("/") + "/" + urllib.parse.quote(rel.as_posix())
        root = (self.document_root or Path("/")).resolve()
        try:
            rel = path.relative_to(root)
        except ValueError:
            raise ReviewError(
                f"video {video_id} file {path} is outside Label Studio's document root {root} "
                "(LOCAL_FILES_DOCUMENT_ROOT)"
            ) from None
        return LOCAL_FILES_PREFIX + urllib.parse.quote(rel.as_posix(), safe="/")

    def storage_dirs(self, prelabels: Iterable[PreLabel]) -> list[Path]:
        """Folders Label Studio's local storage must cover to serve these videos."""
        dirs = set()
        for p in prelabels:
            if p.uri and not p.uri.startswith(("http://", "https://")):
                path = Path(p.uri) if Path(p.uri).is_absolute() else self.store_root / p.uri
                dirs.add(path.resolve().parent)
        return sorted(dirs)


def _n_frames(pre: PreLabel) -> int | None:
    if pre.n_frames:
        return int(pre.n_frames)
    if pre.fps and pre.duration_s:
        return round(pre.fps * pre.duration_s)
    return None


def _instruction(pre: PreLabel) -> str:
    conf = "" if pre.confidence is None else f" ({pre.confidence:.0%})"
    need = (
        "Validation video: mark every anomalous span on the timeline."
        if pre.split == "val" else "Spans optional."
    )
    return f"AI proposal: {pre.category}{conf}. {need}"


def prediction_result(pre: PreLabel) -> list[dict[str, Any]]:
    """The pre-label as Label Studio result regions (category, spans, the judge's reason)."""
    result: list[dict[str, Any]] = [{
        "from_name": CATEGORY, "to_name": VIDEO, "type": "choices",
        "value": {"choices": [pre.category]},
    }]
    n = _n_frames(pre)
    if pre.spans and n:
        ranges = [dict(zip(("start", "end"), relative_to_frames(s, n), strict=True))
                  for s in pre.spans]
        result.append({
            "from_name": SPANS, "to_name": VIDEO, "type": "timelinelabels",
            "value": {"ranges": ranges, "timelinelabels": [SPAN_LABEL]},
        })
    if pre.reason:
        result.append({
            "from_name": DESCRIPTION, "to_name": VIDEO, "type": "textarea",
            "value": {"text": [pre.reason]},
        })
    return result


def build_task(pre: PreLabel, media: Media) -> dict[str, Any]:
    """One Label Studio task (data + prediction) for a video awaiting review."""
    pred: dict[str, Any] = {"model_version": pre.stage_version, "result": prediction_result(pre)}
    if pre.confidence is not None:
        pred["score"] = pre.confidence
    return {
        "data": {
            VIDEO: media.url(pre.uri, pre.video_id),
            "video_id": pre.video_id,
            "split": pre.split,
            "fps": pre.fps or 25,
            "n_frames": _n_frames(pre),
            "instruction": _instruction(pre),
            "span_source": pre.span_source,
        },
        "predictions": [pred],
    }


# ----------------------------------------------------------------------------------- import


@dataclass(slots=True)
class ImportSummary:
    """What a pull / import did.

    Attributes:
        written: New human annotation rows (first imports and edited annotations).
        unchanged: Annotations already imported with the same content.
        pending: Tasks with no completed annotation yet.
        errors: Tasks that could not be imported (the rest were).
    """

    written: int = 0
    unchanged: int = 0
    pending: int = 0
    errors: list[TaskError] = field(default_factory=list)


def _task_name(task: dict[str, Any]) -> str:
    return str(task.get("id", "?"))


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str) and value:
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
        except ValueError:
            pass
    return utcnow()


def _annotator(ann: dict[str, Any], users: dict[int, str]) -> str:
    who = ann.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("username") or who.get("id"))
    if isinstance(who, int):
        return users.get(who, f"label-studio-user-{who}")
    return str(ann.get("created_username") or "label-studio")


def _read_result(
    result: list[dict[str, Any]], n_frames: int | None
) -> tuple[str, list[list[float]], str | None]:
    """(canonical category, relative spans, description) of one annotation's result regions.

    Raises:
        ReviewError: no category, a category outside the taxonomy, or a span outside the video.
    """
    category, ranges, texts = None, [], []
    for region in result:
        value = region.get("value") or {}
        if region.get("from_name") == CATEGORY and value.get("choices"):
            category = value["choices"][0]
        elif region.get("from_name") == CATEGORY and value.get("taxonomy"):
            category = value["taxonomy"][0][-1]  # deepest level of the picked path
        elif region.get("from_name") == SPANS:
            ranges.extend(value.get("ranges") or [])
        elif region.get("from_name") == DESCRIPTION:
            texts.extend(t for t in value.get("text") or [] if t and t.strip())
    if category is None:
        raise ReviewError("the annotation has no category (Choices 'category' is empty)")
    try:
        category = taxonomy.canonical(category)
    except UnknownCategoryError as exc:
        raise ReviewError(str(exc)) from None
    spans = []
    for r in ranges:
        start, end = r.get("start"), r.get("end")
        if not isinstance(start, int | float) or not isinstance(end, int | float) or end < start:
            raise ReviewError(f"span {r!r} must have numeric start <= end (frames)")
        if not n_frames:
            raise ReviewError("spans were drawn but the video's frame count is unknown")
        if start < 1 or end > n_frames * (1 + SPAN_TOLERANCE):
            raise ReviewError(
                f"span frames [{start}, {end}] are outside the video (frames 1..{n_frames})"
            )
        spans.append(frames_to_relative(start, end, n_frames))
    spans.sort()
    if spans and category == taxonomy.NORMAL:
        raise ReviewError(f"category Normal comes with anomaly spans {spans}")
    return category, spans, "\n".join(texts) or None


def annotation_rows(
    task: dict[str, Any], videos: dict[str, dict[str, Any]], users: dict[int, str] | None = None
) -> tuple[list[Annotation], int]:
    """Human annotation rows of one exported task, and how many annotations were skipped.

    Cancelled (skipped) annotations and empty ones are not labels and are left out.

    Raises:
        ReviewError: the task names no video, a video the store does not know, or one of its
            annotations is invalid (message without the task name; the caller adds it).
    """
    data = task.get("data") or {}
    vid = data.get("video_id")
    if not vid:
        raise ReviewError("the task has no data.video_id: it was not pushed by prevad review")
    if vid not in videos:
        raise ReviewError(f"video {vid!r} is not in the store")
    video = videos[vid]
    n_frames = video.get("n_frames") or data.get("n_frames")
    split = data.get("split") if data.get("split") in SPLITS else "train"
    rows, skipped = [], 0
    for ann in task.get("annotations") or []:
        if ann.get("was_cancelled") or not ann.get("result"):
            skipped += 1
            continue
        category, spans, description = _read_result(ann["result"], n_frames)
        content = json.dumps([category, spans, description], sort_keys=True)
        digest = hashlib.sha256(content.encode()).hexdigest()[:16]
        rows.append(Annotation(
            annotation_id=make_id("label-studio", ann.get("id"), digest),
            video_id=vid, dataset=DATASET, annotator_kind="human",
            annotator=_annotator(ann, users or {}), category=category,
            is_anomaly=category != taxonomy.NORMAL, description=description, spans=spans,
            split=split, created_at=_parse_time(ann.get("updated_at") or ann.get("created_at")),
        ))
    return rows, skipped


def import_tasks(
    store: Store, tasks: Sequence[dict[str, Any]], users: dict[int, str] | None = None
) -> ImportSummary:
    """Write the human annotations of exported Label Studio tasks to the store.

    Each bad task becomes a :class:`TaskError`; the good ones are written in one append.
    Annotations already imported with the same content are skipped (re-import changes nothing).
    """
    videos = {
        r["video_id"]: r for r in store.read("videos", ["video_id", "n_frames"]).to_pylist()
    }
    known = set(store.read("annotations", ["annotation_id"]).column(0).to_pylist())
    summary = ImportSummary()
    rows: list[Annotation] = []
    for task in tasks:
        if not isinstance(task, dict):
            summary.errors.append(TaskError("?", None, f"a task must be an object, got {task!r}"))
            continue
        vid = (task.get("data") or {}).get("video_id")
        try:
            new, _ = annotation_rows(task, videos, users)
        except (ReviewError, ValueError) as exc:
            summary.errors.append(TaskError(_task_name(task), vid, str(exc)))
            continue
        if not new:
            summary.pending += 1
        for r in new:
            if r.annotation_id in known:
                summary.unchanged += 1
            else:
                known.add(r.annotation_id)
                rows.append(r)
    if rows:
        summary.written = store.append("annotations", rows).written
    return summary


def read_export_file(path: str | Path) -> list[dict[str, Any]]:
    """Tasks of a Label Studio JSON export file (a list of task objects).

    Raises:
        ReviewError: the file is missing, not JSON, or not a list.
    """
    path = Path(path)
    try:
        tasks = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReviewError(f"export file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReviewError(f"export file {path} is not JSON: {exc}") from None
    if not isinstance(tasks, list):
        raise ReviewError(
            f"export file {path} must hold a JSON list of tasks (Label Studio 'JSON' export), "
            f"got {type(tasks).__name__}"
        )
    return tasks


def import_export_file(store: Store, path: str | Path) -> ImportSummary:
    """``prevad review import``: human labels from a Label Studio JSON export file."""
    return import_tasks(store, read_export_file(path))


def export_tasks(
    store: Store,
    out: str | Path,
    media: Media,
    *,
    proposer: SpanProposer | None = None,
    default_split: str = "train",
) -> tuple[Path, Path, int, list[TaskError]]:
    """``prevad review export``: a Label Studio import file of the videos awaiting review.

    Writes ``out`` (tasks with predictions, JSON) and the labeling config next to it
    (``<out stem>.label_config.xml``), and stores the model pre-labels.

    Returns:
        (tasks file, config file, number of tasks, pre-labels that could not be built).
    """
    errors: list[TaskError] = []
    pres = collect_prelabels(
        store, proposer=proposer, default_split=default_split, errors=errors
    )
    tasks = []
    for pre in pres:
        try:
            tasks.append(build_task(pre, media))
        except ReviewError as exc:
            errors.append(TaskError(f"video:{pre.video_id}", pre.video_id, str(exc)))
    ok = {t["data"]["video_id"] for t in tasks}
    store_prelabels(store, [p for p in pres if p.video_id in ok])
    out = Path(out)
    config = out.with_name(out.stem + ".label_config.xml")
    atomic_write_json(out, tasks)
    atomic_write_text(config, label_config())
    return out, config, len(tasks), errors


def store_prelabels(store: Store, pres: Sequence[PreLabel]) -> int:
    """Store the model pre-labels as ``annotations`` rows (idempotent); returns rows written."""
    if not pres:
        return 0
    return store.append("annotations", [model_annotation(p) for p in pres]).written


def token_from_env(var: str = TOKEN_ENV) -> str:
    """The Label Studio token from the environment (never printed).

    Raises:
        ReviewError: the variable is unset or empty.
    """
    token = os.environ.get(var, "").strip()
    if not token:
        raise ReviewError(
            f"set {var} to a Label Studio personal access token (Account & Settings -> "
            "Personal Access Token)"
        )
    return token


# ----------------------------------------------------------------------------------- REST API


class LabelStudio:
    """A small Label Studio REST client (requests) for the review round trip.

    Authentication: a personal access token (a JWT refresh token, Label Studio >= 1.18) is
    exchanged for a short-lived access token at ``/api/token/refresh/`` and sent as
    ``Authorization: Bearer``; the access token is refreshed when the server answers 401. A legacy
    token (enabled per organisation) is sent as ``Authorization: Token``. The token never appears
    in a message.
    """

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        """Connect to the server at ``url`` (e.g. http://127.0.0.1:8080).

        Raises:
            ReviewError: the server cannot be reached or refuses the token.
        """
        import requests

        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ReviewError(f"--url must be an http(s) URL of a Label Studio server, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._http = requests.Session()
        self._auth = self._authenticate()

    # -- plumbing ------------------------------------------------------------------------------
    def _authenticate(self) -> str:
        import requests

        try:
            r = self._http.post(
                f"{self.url}/api/token/refresh/", json={"refresh": self._token},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ReviewError(f"cannot reach Label Studio at {self.url}: {exc}") from None
        body = r.json() if "json" in r.headers.get("content-type", "") else {}
        if r.ok and isinstance(body, dict) and "access" in body:
            return f"Bearer {body['access']}"
        # Not a personal access token: try it as a legacy token.
        legacy = f"Token {self._token}"
        try:
            probe = self._http.get(
                f"{self.url}/api/current-user/whoami", headers={"Authorization": legacy},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ReviewError(f"cannot reach Label Studio at {self.url}: {exc}") from None
        if probe.ok:
            return legacy
        raise ReviewError(
            f"Label Studio at {self.url} refused the token in {TOKEN_ENV} (HTTP {r.status_code} "
            "as a personal access token, HTTP "
            f"{probe.status_code} as a legacy token); create a personal access token under "
            "Account & Settings"
        )

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """Send a request (JSON in and out); refresh the access token once on 401.

        Raises:
            ReviewError: the server cannot be reached or answers with an error status.
        """
        import requests

        for attempt in (0, 1):
            try:
                r = self._http.request(
                    method, f"{self.url}{path}", headers={"Authorization": self._auth},
                    timeout=self.timeout, **kw,
                )
            except requests.RequestException as exc:
                raise ReviewError(f"{method} {path} failed: {exc}") from None
            if r.status_code == 401 and attempt == 0 and self._auth.startswith("Bearer"):
                self._auth = self._authenticate()
                continue
            break
        if not r.ok:
            raise ReviewError(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
        try:
            return r.json() if r.content else None
        except ValueError:
            raise ReviewError(f"{method} {path}: answer is not JSON: {r.text[:200]!r}") from None

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """All items of a paginated list endpoint."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.request("GET", path, params={**params, "page": page, "page_size": 100})
            batch = body if isinstance(body, list) else body.get(key) or []
            items.extend(batch)
            total = None if isinstance(body, list) else body.get("total", body.get("count"))
            if isinstance(body, list) or not batch or (total is not None and len(items) >= total):
                return items
            page += 1

    # -- resources -------------------------------------------------------------------------------
    def find_project(self, title: str) -> dict[str, Any] | None:
        """The project titled ``title`` (None if there is none)."""
        for p in self._pages("/api/projects/", "results", {"title": title}):
            if p.get("title") == title:
                return p
        return None

    def ensure_project(self, title: str, config: str) -> tuple[dict[str, Any], bool]:
        """Create the project, or update its labeling config; returns (project, created)."""
        project = self.find_project(title)
        if project is None:
            body = {
                "title": title, "label_config": config,
                "description": "PreVAD review: AI pre-labels checked by people (prevad review)",
                "show_collab_predictions": True,
            }
            return self.request("POST", "/api/projects/", json=body), True
        if project.get("label_config") != config:
            project = self.request(
                "PATCH", f"/api/projects/{project['id']}/", json={"label_config": config}
            )
        return project, False

    def ensure_local_storage(self, project_id: int, folder: Path) -> None:
        """A local-files storage covering ``folder``, so Label Studio may serve the videos.

        It is never synced: tasks are imported by :func:`push`, and the files stay in place.
        """
        existing = self.request("GET", "/api/storages/localfiles", params={"project": project_id})
        for s in existing or []:
            if s.get("path") and folder.is_relative_to(Path(s["path"])):
                return
        self.request("POST", "/api/storages/localfiles", json={
            "project": project_id, "path": str(folder), "title": f"prevad store {folder}",
            "use_blob_urls": True, "regex_filter": r".*\.(mp4|webm|mkv|avi|mov)$",
        })

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """All tasks of a project (with their predictions' model versions)."""
        return self._pages(
            "/api/tasks/", "tasks", {"project": project_id, "fields": "all"}
        )

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> None:
        """Import tasks (with predictions) into the project."""
        self.request("POST", f"/api/projects/{project_id}/import", json=tasks)

    def add_prediction(self, task_id: int, prediction: dict[str, Any]) -> None:
        """Attach a prediction to an existing task."""
        self.request("POST", "/api/predictions/", json={"task": task_id, **prediction})

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """The project's JSON export (every task, with its annotations)."""
        return self.request(
            "GET", f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "true"},
        )

    def users(self) -> dict[int, str]:
        """User id -> e-mail (to name the annotator)."""
        body = self.request("GET", "/api/users/")
        items = body if isinstance(body, list) else body.get("results", [])
        return {u["id"]: u.get("email") or u.get("username") or str(u["id"]) for u in items}


# ----------------------------------------------------------------------------------- push / pull


@dataclass(slots=True)
class PushSummary:
    """What a push did: project id, tasks created, predictions added, tasks already there."""

    project_id: int
    project_created: bool
    created: int = 0
    predictions_added: int = 0
    unchanged: int = 0
    errors: list[TaskError] = field(default_factory=list)


def _model_versions(task: dict[str, Any]) -> set[str]:
    return {p.get("model_version") for p in task.get("predictions") or [] if isinstance(p, dict)}


def push(
    store: Store,
    client: LabelStudio,
    media: Media,
    *,
    project: str = DEFAULT_PROJECT,
    proposer: SpanProposer | None = None,
    default_split: str = "train",
) -> PushSummary:
    """``prevad review push``: the videos awaiting review as Label Studio tasks with pre-labels.

    A video already in the project gets no second task; when the judge ran again (a new
    stage_version) its task gets the new prediction beside the old one.
    """
    errors: list[TaskError] = []
    pres = collect_prelabels(
        store, proposer=proposer, default_split=default_split, errors=errors
    )
    proj, created = client.ensure_project(project, label_config())
    pid = int(proj["id"])
    summary = PushSummary(pid, created, errors=errors)
    if media.url_prefix is None:
        for folder in media.storage_dirs(pres):
            client.ensure_local_storage(pid, folder)
    existing = {
        (t.get("data") or {}).get("video_id"): t for t in client.tasks(pid)
    }
    new_tasks, pushed = [], []
    for pre in pres:
        try:
            task = build_task(pre, media)
        except ReviewError as exc:
            summary.errors.append(TaskError(f"video:{pre.video_id}", pre.video_id, str(exc)))
            continue
        old = existing.get(pre.video_id)
        if old is None:
            new_tasks.append(task)
        elif pre.stage_version not in _model_versions(old):
            client.add_prediction(int(old["id"]), task["predictions"][0])
            summary.predictions_added += 1
        else:
            summary.unchanged += 1
        pushed.append(pre)
    if new_tasks:
        client.import_tasks(pid, new_tasks)
        summary.created = len(new_tasks)
    store_prelabels(store, pushed)
    return summary


def pull(store: Store, client: LabelStudio, *, project: str = DEFAULT_PROJECT) -> ImportSummary:
    """``prevad review pull``: completed annotations of the project -> human ``annotations`` rows.

    Raises:
        ReviewError: the project does not exist.
    """
    proj = client.find_project(project)
    if proj is None:
        raise ReviewError(
            f"Label Studio at {client.url} has no project {project!r}; run `prevad review push` "
            "first"
        )
    return import_tasks(store, client.export(int(proj["id"])), client.users())
