"""The review task format shared by export and import: control names, the labeling config,
frame <-> span conversion, the clips of a store, and how a bad task is reported.

See :mod:`prevad.review` for the round trip.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from prevad import taxonomy
from prevad.review_media import ClipSpec
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
#: Label Studio serves local files under this path; ``?d=`` is relative to its document root.
LOCAL_FILES_PREFIX = "/data/local-files/?d="
#: Start of the model's text when it pre-fills the description box (removed on import).
MODEL_TEXT_MARK = "[model text] "

# Bounds of an import file (each broken bound is one task's error, or the file's).
#: Largest export file read (bytes).
MAX_EXPORT_FILE_BYTES = 512 << 20
#: Longest description (characters) and longest id / name / category string.
MAX_TEXT_CHARS = 10_000
MAX_NAME_CHARS = 256
#: Most annotations per task, regions per annotation, spans per annotation.
MAX_ITEMS = 1_000
#: Most frames a task's media may claim to have (24 h at 120 fps).
MAX_FRAMES = 10_368_000

_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlevel = 60, 60, 2
_repr.maxlist = _repr.maxdict = _repr.maxtuple = 4


def short_repr(value: Any) -> str:
    """A bounded, escaped repr of untrusted data for a message (never huge, never raw)."""
    return _repr.repr(value)


@dataclass(frozen=True, slots=True)
class TaskError:
    """One task (import) or clip (export) that could not be handled, and why; the rest were.

    ``task`` is the task's name in an import file (its id, or ``#position``), None for a clip
    that could not become a task.
    """

    task: str | None
    video_id: str | None
    message: str

    def __str__(self) -> str:
        if self.task is None:
            return f"clip {self.video_id}: {self.message}"
        clip = f" (clip {self.video_id})" if self.video_id else ""
        return f"task {self.task}{clip}: {self.message}"


# ----------------------------------------------------------------------------------- labels


def label_config() -> str:
    """The Label Studio labeling config of the review task.

    A video player; one required choice over Normal, the 7 top-level classes and the 28
    sub-categories (grouped under their top-level class); timeline spans (frame ranges) on the
    video; a description text area (the model's text, when shown, starts with
    :data:`MODEL_TEXT_MARK`). ``$instruction`` tells the annotator whether spans are needed
    (validation clips) and shows the AI's proposal.
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
    mark = quoteattr(f"Description. Text starting with {MODEL_TEXT_MARK.strip()} was written by "
                     "the AI: keep it only if it is right, else write your own")
    lines += [
        "  </Choices>",
        f"  <Header value={mark} size=\"6\"/>",
        f'  <TextArea name="{DESCRIPTION}" toName="{VIDEO}" rows="3" editable="true"'
        ' maxSubmissions="1" placeholder="Describe only the anomaly"/>',
        "</View>",
    ]
    return "\n".join(lines) + "\n"


def frames_to_relative(start: int, end: int, n_frames: int) -> list[float]:
    """A 1-based inclusive frame range of media of ``n_frames`` frames -> relative span."""
    return [(start - 1) / n_frames, end / n_frames]


def relative_to_frames(span: Sequence[float], n_frames: int) -> tuple[int, int]:
    """A relative span -> the 1-based inclusive frame range it covers (inverse of the above)."""
    a = min(max(round(span[0] * n_frames) + 1, 1), n_frames)
    b = min(max(round(span[1] * n_frames), a), n_frames)
    return a, b


# ----------------------------------------------------------------------------------- clips


@dataclass(frozen=True, slots=True)
class Clip:
    """A clip of the store with what review needs of it and of its parent video."""

    spec: ClipSpec
    duration_s: float | None
    fps: float | None
    n_frames: int | None


def store_clips(store: Store) -> dict[str, Clip]:
    """Every id a clip of the store ever had: ``segments`` rows, and every video as a clip of
    itself, each resolved to its file and span.

    Wider than the catalog's ``clips`` view (``queries.CLIP_IDS``, what is a clip *now*):
    a reviewer's annotation of a clip that a later clean run replaced is still imported.
    """
    videos = {r["video_id"]: r for r in store.read(
        "videos", ["video_id", "uri", "duration_s", "fps", "n_frames"]).to_pylist()}
    out = {
        vid: Clip(ClipSpec(vid, vid, v["uri"]), v["duration_s"], v["fps"], v["n_frames"])
        for vid, v in videos.items()
    }
    for s in store.read("segments").to_pylist():
        parent = videos.get(s["video_id"], {})
        fps = parent.get("fps")
        duration = s["end_s"] - s["start_s"]
        n = round(duration * fps) if fps else None
        if s["uri"]:  # a clip kept as a file of its own (older stores): the file is the clip
            spec = ClipSpec(s["segment_id"], s["video_id"], s["uri"])
        else:
            spec = ClipSpec(s["segment_id"], s["video_id"], parent.get("uri"), s["start_s"],
                            s["end_s"])
        out[s["segment_id"]] = Clip(spec, duration, fps, n)
    return out


def finite_number(x: Any) -> bool:
    """True for an int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


