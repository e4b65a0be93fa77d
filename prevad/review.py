"""Hybrid human-AI review: AI pre-labels go to Label Studio, human labels come back to the store.

The unit of review is the **clip** (docs/DECISIONS.md, D1): a ``segments`` row (a span of its
parent video) or a video that was never split (a clip of itself). The flow (paper: annotation
stage):

1. :func:`collect_prelabels` — every clip with an ``ok`` result of **one** ``judge`` version
   (``judge_version``, else the newest version with ok results, D3) and no human ``prevad``
   annotation yet is *awaiting review*. Its pre-label is the judge's category, confidence and
   reason; for validation clips also proposed anomaly spans, from a :class:`SpanProposer` passed
   in by the layer above (``--checkpoint``: LaGoVAD on the stored features,
   :class:`lagovad.proposals.DetectorSpans`) or from the judge's own ``spans``.
2. :func:`push` (``prevad review push``) creates or updates a Label Studio project with
   :func:`label_config` and imports one task per clip with the pre-label as a *prediction*
   (``model_version`` = the judge's stage_version). The task plays the clip's review media
   (:mod:`prevad.review_media`: cut from the parent, constant frame rate by default, cached under
   the store) through Label Studio's local-file serving or a URL prefix. A clip already in the
   project is not imported again. The pre-label is also stored as an ``annotations`` row
   (annotator_kind "model", ``video_id`` = the clip id).
3. :func:`pull` (``prevad review pull``) reads the project's export and writes one human
   ``annotations`` row per completed annotation: category, spans relative to the clip in [0, 1],
   description and ``description_source``, annotator, time. The row id hashes the Label Studio
   annotation id *and* its content, so re-pulling changes nothing and an annotation edited after
   a pull comes back as a new row (the latest human row is the final label).
4. :func:`export_tasks` / :func:`import_export_file` (``prevad review export|import``) do the same
   through Label Studio's JSON files, for teams without API access.

Import files and server answers are untrusted: each task is validated on its own (types, known
clip, spans, categories, sizes) and a bad one becomes a :class:`TaskError` naming it and the rule
it breaks; the good tasks are written in one atomic append.

Model text: the judge's reason pre-fills the description box, marked with
:data:`MODEL_TEXT_MARK`. A human row records ``description_source`` = "model-accepted" when its
description is that text unchanged (marker removed), "reviewer" when the reviewer wrote or edited
it.

Time base of spans: Label Studio's ``TimelineLabels`` ranges count frames from 1, both ends
inclusive; frame ``k`` covers ``[(k - 1) / fps, k / fps)``. A range ``[a, b]`` of media of ``n``
frames is the clip-relative span ``[(a - 1) / n, b / n]``, and back; with constant-frame-rate
media the ``n`` frames fill the clip exactly.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prevad import queries, taxonomy
from prevad.errors import ReviewError, UnknownCategoryError
from prevad.io import atomic_write_json, atomic_write_text
from prevad.records import SPLITS, Annotation, check_spans, make_id
from prevad.review_client import TOKEN_ENV, LabelStudio, check_token
from prevad.review_format import (
    CATEGORY,
    DATASET,
    DEFAULT_PROJECT,
    DESCRIPTION,
    JUDGE_STAGE,
    LOCAL_FILES_PREFIX,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    MODEL_TEXT_MARK,
    SPAN_LABEL,
    SPANS,
    VIDEO,
    Clip,
    TaskError,
    finite_number,
    frames_to_relative,
    label_config,
    relative_to_frames,
    store_clips,
)
from prevad.review_import import (
    ImportSummary,
    annotation_rows,
    import_export_file,
    import_tasks,
    read_export_file,
)
from prevad.review_media import ClipMedia, ClipSpec, media_for_clip
from prevad.store import Store

__all__ = [
    "CATEGORY", "DEFAULT_PROJECT", "DESCRIPTION", "MODEL_TEXT_MARK", "SPANS", "TOKEN_ENV",
    "Clip", "ClipMedia", "ClipSpec", "ImportSummary", "LabelStudio", "Media", "PreLabel",
    "PushSummary", "ReviewError", "TaskError", "annotation_rows", "build_task",
    "collect_prelabels", "export_tasks", "frames_to_relative", "import_export_file",
    "import_tasks", "label_config", "model_annotation", "prediction_result", "pull", "push",
    "read_export_file", "read_judge_version", "relative_to_frames", "store_clips",
    "store_prelabels", "token_from_env",
]


# ----------------------------------------------------------------------------------- pre-labels


@dataclass(slots=True)
class PreLabel:
    """The AI proposal for one clip awaiting review, with what the task needs to show it.

    ``video_id`` is the clip id (the id its annotations carry, D1); ``parent_video_id`` the
    video it was cut from (itself for a whole video); ``clip_start_s``/``clip_end_s`` its span in
    the parent file (None for a whole video). ``fps``/``n_frames``/``duration_s`` describe the
    clip (from the store; the task's media are probed when they are made).
    """

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
    parent_video_id: str | None = None
    clip_start_s: float | None = None
    clip_end_s: float | None = None

    @property
    def clip_id(self) -> str:
        """The clip's id (= ``video_id``)."""
        return self.video_id

    @property
    def is_anomaly(self) -> bool:
        """True unless the proposed category is Normal."""
        return self.category != taxonomy.NORMAL

    @property
    def spec(self) -> ClipSpec:
        """The clip as review media see it."""
        return ClipSpec(self.video_id, self.parent_video_id or self.video_id, self.uri,
                        self.clip_start_s, self.clip_end_s)


def read_judge_version(store: Store, version: str | None = None) -> str | None:
    """The judge version review reads (D3): ``version`` if it has ok results, else the newest
    version with ok results (None when the judge has none).

    Raises:
        ReviewError: ``version`` has no ok result.
    """
    if version is None:
        return queries.newest_ok_version(store, JUDGE_STAGE)
    versions = queries.ok_versions(store, JUDGE_STAGE)
    if version not in versions:
        raise ReviewError(
            f"--judge-version {version[:100]!r} has no ok judge result; versions with ok "
            f"results: {versions or 'none'}"
        )
    return version


class SpanProposer(Protocol):
    """Proposes anomaly spans for a clip awaiting review (the data layer imports no model: the
    layer above passes one in, docs/DECISIONS.md D2)."""

    #: Recorded as the spans' source (``span_source = "lagovad:<label>"``).
    label: str

    def spans(self, store: Store, pre: PreLabel) -> list[list[float]] | None:
        """Relative spans ``[[start, end], ...]`` in [0, 1], or None when it has none."""
        ...


def _judge_rows(store: Store, version: str) -> dict[str, dict[str, Any]]:
    """Ok judge outputs of one version by item (clip) id; unreadable outputs are left out."""
    out = {}
    rows = store.query(queries.OK_OUTPUTS_OF_VERSION,
                       {"stage": JUDGE_STAGE, "stage_version": version}).to_pylist()
    for r in rows:
        try:
            o = json.loads(r["output_json"] or "null")
        except (ValueError, RecursionError):
            o = None
        out[r["id"]] = (
            {**o, "_stage_version": r["stage_version"], "_time": r["time"]}
            if isinstance(o, dict) else {"_bad": True}
        )
    return out


def collect_prelabels(
    store: Store,
    *,
    proposer: SpanProposer | None = None,
    default_split: str = "train",
    errors: list[TaskError] | None = None,
    judge_version: str | None = None,
) -> list[PreLabel]:
    """Pre-labels of every clip awaiting review (judge ok, no human ``prevad`` annotation).

    A clip is a row of the catalog's ``clips`` view (D1), the rule the stages and feature
    extraction follow: a judged item that is no longer a clip (its video was cleaned again
    into other clips, or found a duplicate since) gets no pre-label.

    Args:
        store: The store.
        proposer: Proposes the spans of validation clips (e.g. LaGoVAD on the stored
            features, :class:`lagovad.proposals.DetectorSpans`, passed in by the layer above);
            else they come from the judge output.
        default_split: Split of a clip that has no ``prevad`` annotation and whose judge output
            names none.
        errors: Collects clips whose judge output cannot become a pre-label (bad category,
            malformed output, unknown clip).
        judge_version: The judge version to read (default: the newest with ok results, D3).

    Returns:
        One pre-label per clip, ordered by clip id.

    Raises:
        ReviewError: ``judge_version`` has no ok result.
    """
    version = read_judge_version(store, judge_version)
    if version is None:
        return []
    judged = _judge_rows(store, version)
    clips = store_clips(store)
    # only what is a clip now (the catalog's `clips` view, D1: the same rule as the stages and
    # feature extraction): a judged item whose video was cleaned again into other clips, or
    # found a duplicate since, gets no task (its features would never be extracted)
    current = set(store.query(queries.CLIP_IDS).column("clip_id").to_pylist())
    segments: dict[str, dict[str, Any]] = {}  # per clip: no segment-level merging of spans
    reviewed, splits = set(), {}
    for a in store.read("annotations", ["video_id", "dataset", "annotator_kind",
                                        "split"]).to_pylist():
        if a["dataset"] == DATASET:
            splits[a["video_id"]] = a["split"]
            if a["annotator_kind"] == "human":
                reviewed.add(a["video_id"])
    detector = proposer
    out = []

    def bad(cid: str, msg: str) -> None:
        if errors is not None:
            errors.append(TaskError(None, cid[:MAX_NAME_CHARS], f"judge {version}: {msg}"))

    for cid in sorted(judged):
        if cid in reviewed or (cid in clips and cid not in current):
            continue
        best = judged[cid]
        clip = clips.get(cid)
        if best.get("_bad"):
            bad(cid, "the output is not a JSON object")
            continue
        if clip is None:
            bad(cid, "judged item is neither a clip (segments) nor a video of the store")
            continue
        try:
            category = taxonomy.canonical(str(best.get("category"))[:MAX_NAME_CHARS])
        except UnknownCategoryError as exc:
            bad(cid, str(exc))
            continue
        split = splits.get(cid) or best.get("split") or default_split
        conf = best.get("confidence")
        reason = best.get("reason")
        spec = clip.spec
        pre = PreLabel(
            video_id=cid, category=category,
            confidence=float(conf) if finite_number(conf) and 0 <= conf <= 1 else None,
            reason=reason[:MAX_TEXT_CHARS] if isinstance(reason, str) and reason.strip()
            else None,
            stage_version=version, split=split if split in SPLITS else default_split,
            uri=spec.uri, fps=clip.fps, n_frames=clip.n_frames, duration_s=clip.duration_s,
            parent_video_id=spec.parent_video_id, clip_start_s=spec.start_s,
            clip_end_s=spec.end_s,
        )
        if pre.split == "val" and pre.is_anomaly:
            try:
                _propose_spans(store, pre, best, [best], segments, detector)
                pre.spans = check_spans(pre.spans, "proposed spans")
            except (TypeError, ValueError) as exc:
                bad(cid, f"proposed spans are malformed: {str(exc)[:200]}")
                continue
        out.append(pre)
    return out


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
    """The pre-label as an ``annotations`` row (annotator_kind "model"), kept beside human ones.

    ``video_id`` is the clip id (D1); its description is the model's text, unmarked.
    """
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
    """How Label Studio reaches the clips' review media (see :mod:`prevad.review_media`).

    Either ``url_prefix`` (files served over HTTP: prefix + path relative to the store root) or
    Label Studio's local-file serving rooted at ``document_root`` (its
    LOCAL_FILES_DOCUMENT_ROOT; the store must lie under it). ``cfr``: constant-frame-rate media
    (default; a whole constant-rate video is served in place, anything else is made under
    ``<store>/cache/review_media/``); ``fps``: their frame rate (default: the source's).
    """

    store_root: Path
    document_root: Path | None = None
    url_prefix: str | None = None
    cfr: bool = True
    fps: float | None = None

    def url(self, uri: str | None, video_id: str) -> str:
        """The URL Label Studio loads a file from.

        Raises:
            ReviewError: no file, or it lies outside the document root / the store.
        """
        if not uri:
            raise ReviewError(f"video {video_id} has no uri: nothing to show the annotator")
        if uri.startswith(("http://", "https://")):
            return uri
        path = Path(uri) if Path(uri).is_absolute() else self.store_root / uri
        path = path.resolve()
        if self.url_prefix is not None:
            try:
                rel = path.relative_to(Path(self.store_root).resolve())
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

    def clip_media(self, pre: PreLabel) -> ClipMedia | None:
        """The clip's review media (made when missing); None for a remote whole video, which
        is shown from its URL as it is.

        Raises:
            ReviewError: the media cannot be made (no file, unreadable, span outside it).
        """
        spec = pre.spec
        if spec.whole and spec.uri and spec.uri.startswith(("http://", "https://")):
            return None
        return media_for_clip(Path(self.store_root), spec, cfr=self.cfr, fps=self.fps)

    def storage_dirs(self, media: Iterable[ClipMedia]) -> list[Path]:
        """Folders Label Studio's local storage must cover to serve these media."""
        return sorted({m.path.resolve().parent for m in media})


def _n_frames(pre: PreLabel) -> int | None:
    if pre.n_frames:
        return int(pre.n_frames)
    if pre.fps and pre.duration_s:
        return round(pre.fps * pre.duration_s)
    return None


def _instruction(pre: PreLabel) -> str:
    conf = "" if pre.confidence is None else f" ({pre.confidence:.0%})"
    need = (
        "Validation clip: mark every anomalous span on the timeline."
        if pre.split == "val" else "Spans optional."
    )
    return f"AI proposal: {pre.category}{conf}. {need}"


def prediction_result(pre: PreLabel, n_frames: int | None = None) -> list[dict[str, Any]]:
    """The pre-label as Label Studio result regions (category, spans, the judge's reason).

    Spans are frame ranges of media of ``n_frames`` frames (default: the clip's from the
    store); the reason starts with :data:`MODEL_TEXT_MARK`.
    """
    result: list[dict[str, Any]] = [{
        "from_name": CATEGORY, "to_name": VIDEO, "type": "choices",
        "value": {"choices": [pre.category]},
    }]
    n = n_frames or _n_frames(pre)
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
            "value": {"text": [MODEL_TEXT_MARK + pre.reason]},
        })
    return result


def build_task(pre: PreLabel, media: Media, clip_media: ClipMedia | None = None
               ) -> dict[str, Any]:
    """One Label Studio task (data + prediction) for a clip awaiting review.

    ``data`` names the clip (``clip_id``) and its parent video (``parent_video_id``), the
    clip's span in the parent (``clip_start_s``/``clip_end_s``, null for a whole video), and
    the media shown: ``fps``, ``n_frames``, ``duration_s``, ``media_cfr`` and ``media_id`` (the
    mapping file under ``<store>/cache/review_media/``).

    Raises:
        ReviewError: the clip's media cannot be made or served.
    """
    cm = clip_media if clip_media is not None else media.clip_media(pre)
    if cm is None:  # a remote whole video, shown as it is
        url, fps, n, dur, cfr, mid = (media.url(pre.uri, pre.video_id), pre.fps or 25,
                                      _n_frames(pre), pre.duration_s, None, None)
    else:
        url = media.url(str(cm.path), pre.video_id)
        fps, n, dur, cfr, mid = cm.fps, cm.n_frames, cm.duration_s, cm.cfr, cm.media_id
    pred: dict[str, Any] = {
        "model_version": pre.stage_version, "result": prediction_result(pre, n),
    }
    if pre.confidence is not None:
        pred["score"] = pre.confidence
    return {
        "data": {
            VIDEO: url,
            "clip_id": pre.video_id,
            "parent_video_id": pre.parent_video_id or pre.video_id,
            "clip_start_s": pre.clip_start_s,
            "clip_end_s": pre.clip_end_s,
            "split": pre.split,
            "fps": fps,
            "n_frames": n,
            "duration_s": dur,
            "media_cfr": cfr,
            "media_id": mid,
            "instruction": _instruction(pre),
            "span_source": pre.span_source,
        },
        "predictions": [pred],
    }


def _prepare(pres: Sequence[PreLabel], media: Media, errors: list[TaskError]
             ) -> list[tuple[PreLabel, dict[str, Any], ClipMedia | None]]:
    """Tasks of the pre-labels whose media can be made (a progress bar on a terminal)."""
    from tqdm import tqdm

    out = []
    for pre in tqdm(pres, desc="review media", unit="clip", disable=None, leave=False):
        try:
            cm = media.clip_media(pre)
            out.append((pre, build_task(pre, media, cm), cm))
        except ReviewError as exc:
            errors.append(TaskError(None, pre.video_id, str(exc)))
    return out


def export_tasks(
    store: Store,
    out: str | Path,
    media: Media,
    *,
    proposer: SpanProposer | None = None,
    default_split: str = "train",
    judge_version: str | None = None,
) -> tuple[Path, Path, int, list[TaskError]]:
    """``prevad review export``: a Label Studio import file of the clips awaiting review.

    Writes ``out`` (tasks with predictions, JSON) and the labeling config next to it
    (``<out stem>.label_config.xml``), makes the clips' review media and stores the model
    pre-labels.

    Returns:
        (tasks file, config file, number of tasks, clips that could not become tasks).

    Raises:
        ReviewError: ``judge_version`` has no ok result.
    """
    errors: list[TaskError] = []
    pres = collect_prelabels(store, proposer=proposer, default_split=default_split,
                             errors=errors, judge_version=judge_version)
    built = _prepare(pres, media, errors)
    store_prelabels(store, [p for p, _, _ in built])
    out = Path(out)
    config = out.with_name(out.stem + ".label_config.xml")
    atomic_write_json(out, [t for _, t, _ in built])
    atomic_write_text(config, label_config())
    return out, config, len(built), errors


def store_prelabels(store: Store, pres: Sequence[PreLabel]) -> int:
    """Store the model pre-labels as ``annotations`` rows (idempotent); returns rows written."""
    if not pres:
        return 0
    return store.append("annotations", [model_annotation(p) for p in pres]).written


def token_from_env(var: str = TOKEN_ENV) -> str:
    """The Label Studio token from the environment (never printed).

    Raises:
        ReviewError: the variable is unset, empty or not a token.
    """
    return check_token(os.environ.get(var, ""), var)


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
    preds = task.get("predictions")
    return {p.get("model_version") for p in preds if isinstance(p, dict)} \
        if isinstance(preds, list) else set()


def _clip_key(task: dict[str, Any]) -> str | None:
    data = task.get("data")
    if not isinstance(data, dict):
        return None
    cid = data.get("clip_id", data.get("video_id"))  # video_id: tasks pushed by earlier versions
    return cid if isinstance(cid, str) else None


def push(
    store: Store,
    client: LabelStudio,
    media: Media,
    *,
    project: str = DEFAULT_PROJECT,
    proposer: SpanProposer | None = None,
    default_split: str = "train",
    judge_version: str | None = None,
) -> PushSummary:
    """``prevad review push``: the clips awaiting review as Label Studio tasks with pre-labels.

    A clip already in the project gets no second task; when the judge ran again (a new
    stage_version) its task gets the new prediction beside the old one.
    """
    errors: list[TaskError] = []
    pres = collect_prelabels(store, proposer=proposer, default_split=default_split,
                             errors=errors, judge_version=judge_version)
    built = _prepare(pres, media, errors)
    proj, created = client.ensure_project(project, label_config())
    pid = int(proj["id"])
    summary = PushSummary(pid, created, errors=errors)
    if media.url_prefix is None:
        for folder in media.storage_dirs(cm for _, _, cm in built if cm is not None):
            client.ensure_local_storage(pid, folder)
    existing = {_clip_key(t): t for t in client.tasks(pid)}
    new_tasks, pushed = [], []
    for pre, task, _ in built:
        old = existing.get(pre.video_id)
        if old is None:
            new_tasks.append(task)
        elif pre.stage_version not in _model_versions(old):
            client.add_prediction(LabelStudio._id(old.get("id"), "task id"),
                                  task["predictions"][0])
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

    Every task of the server's export is validated like a file's; error messages are scrubbed of
    credentials (a server may echo them).

    Raises:
        ReviewError: the project does not exist, or the server's answer is unusable.
    """
    proj = client.find_project(project)
    if proj is None:
        raise ReviewError(
            f"Label Studio at {client.url} has no project {project[:100]!r}; run `prevad review "
            "push` first"
        )
    pid = LabelStudio._id(proj.get("id"), "project id")
    return import_tasks(store, client.export(pid), client.users(), scrub=client.scrub)
