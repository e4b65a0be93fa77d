"""Readers of video-text corpora for retrieval: one :class:`Caption` per caption.

Layouts (auto-detected by :func:`detect_layout`, or named):

- ``msrvtt_csv``: the MSR-VTT 1k-A split CSV, ``key;vid_key;video_id;sentence`` (CRLF).
- ``msrvtt_json``: MSR-VTT ``videodatainfo.json``: ``videos`` (``video_id``, ``url``,
  ``start time``/``end time``) and ``sentences`` (``video_id``, ``caption``).
- ``vatex``: VATEX JSON, a list of ``{"videoID": "<youtube id>_<start>_<end>", "enCap": [...]}``.
- ``csv`` / ``jsonl``: generic rows with ``id`` or ``url``, ``caption`` (or ``sentence``/``text``)
  and optional ``start``/``end`` (or ``start_s``/``end_s``) in seconds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prevad.errors import MalformedFileError

LAYOUTS = ("msrvtt_csv", "msrvtt_json", "vatex", "csv", "jsonl")
YOUTUBE = "https://www.youtube.com/watch?v={}"
_CAPTION_KEYS = ("caption", "sentence", "text")
_START_KEYS = ("start", "start_s", "start_time", "start time")
_END_KEYS = ("end", "end_s", "end_time", "end time")


@dataclass(frozen=True, slots=True)
class Caption:
    """One caption of one (span of a) source video."""

    source: str
    source_video_id: str
    caption: str
    url: str | None = None
    start_s: float | None = None
    end_s: float | None = None

    @property
    def video_key(self) -> tuple[str, str, float | None, float | None]:
        """Identity of the video span the caption describes."""
        return (self.source, self.source_video_id, self.start_s, self.end_s)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (the corpus cache key)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise MalformedFileError(f"corpus file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedFileError(f"{path}: not UTF-8 text ({exc})") from None
    if not text.strip():
        raise MalformedFileError(f"{path}: the corpus file is empty (expected captions)")
    return text


def detect_layout(path: str | Path) -> str:
    """Guess a corpus layout from the file's extension and first bytes.

    Raises:
        MalformedFileError: empty file, or nothing matches (the message lists the layouts).
    """
    path = Path(path)
    text = _read_text(path)
    head = text.lstrip()[:1]
    if head in "[{" and path.suffix.lower() == ".json":
        obj = _load_json(path, text)
        if isinstance(obj, dict) and "videos" in obj and "sentences" in obj:
            return "msrvtt_json"
        if isinstance(obj, list) and obj and isinstance(obj[0], dict) and "videoID" in obj[0]:
            return "vatex"
        raise MalformedFileError(
            f"{path}: JSON is neither MSR-VTT videodatainfo (keys 'videos' and 'sentences') nor "
            f"VATEX (a list of objects with 'videoID' and 'enCap'); name a layout with --layout"
        )
    if path.suffix.lower() == ".jsonl" or head == "{":
        return "jsonl"
    first = text.splitlines()[0].strip().lower()
    if first.split(";") == ["key", "vid_key", "video_id", "sentence"]:
        return "msrvtt_csv"
    return "csv"


def _load_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MalformedFileError(f"{path}: invalid JSON: {exc}") from None


def read_corpus(path: str | Path, layout: str | None = None) -> tuple[str, list[Caption]]:
    """Read every caption of a corpus file.

    Args:
        path: the corpus file.
        layout: one of :data:`LAYOUTS`, or None to detect it.

    Returns:
        (layout, captions), captions in file order.

    Raises:
        MalformedFileError: missing/empty file, unknown layout, missing column or key, bad number;
            the message names the file, the row and what was expected.
    """
    path = Path(path)
    layout = layout or detect_layout(path)
    readers = {"msrvtt_csv": _msrvtt_csv, "msrvtt_json": _msrvtt_json, "vatex": _vatex,
               "csv": _generic_csv, "jsonl": _generic_jsonl}
    if layout not in readers:
        raise MalformedFileError(f"unknown corpus layout {layout!r}: must be one of {LAYOUTS}")
    caps = list(readers[layout](path, _read_text(path)))
    if not caps:
        raise MalformedFileError(f"{path}: no captions found (layout {layout})")
    return layout, caps


def _csv_rows(path: Path, text: str, delimiter: str | None = None) -> list[dict[str, str]]:
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise MalformedFileError(f"{path}: no header row")
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
    return list(reader)


def _need(path: Path, row: dict[str, Any], keys: Iterable[str], where: str) -> str:
    keys = tuple(keys)
    for k in keys:
        v = row.get(k)
        if v is not None and str(v).strip() != "":
            return str(v).strip()
    raise MalformedFileError(
        f"{path}: {where} has no value for {' / '.join(repr(k) for k in keys)} "
        f"(columns present: {sorted(row)})"
    )


def _opt_float(path: Path, row: dict[str, Any], keys: Iterable[str], where: str) -> float | None:
    for k in keys:
        v = row.get(k)
        if v is None or str(v).strip() == "":
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise MalformedFileError(
                f"{path}: {where} {k}={v!r} is not a number of seconds"
            ) from None
        if x < 0:
            raise MalformedFileError(f"{path}: {where} {k}={v!r} must be >= 0 seconds")
        return x
    return None


def _msrvtt_csv(path: Path, text: str) -> Iterable[Caption]:
    rows = _csv_rows(path, text, ";")
    for i, row in enumerate(rows, start=2):
        where = f"line {i}"
        vid = _need(path, row, ("video_id",), where)
        yield Caption("msrvtt", vid, _need(path, row, ("sentence",), where))


def _msrvtt_json(path: Path, text: str) -> Iterable[Caption]:
    obj = _load_json(path, text)
    if not isinstance(obj, dict) or not isinstance(obj.get("videos"), list) \
            or not isinstance(obj.get("sentences"), list):
        raise MalformedFileError(f"{path}: expected an object with lists 'videos' and 'sentences'")
    videos: dict[str, dict[str, Any]] = {}
    for i, v in enumerate(obj["videos"]):
        if not isinstance(v, dict):
            raise MalformedFileError(f"{path}: videos[{i}] must be an object, got {v!r}")
        videos[_need(path, v, ("video_id",), f"videos[{i}]")] = v
    for i, s in enumerate(obj["sentences"]):
        where = f"sentences[{i}]"
        if not isinstance(s, dict):
            raise MalformedFileError(f"{path}: {where} must be an object, got {s!r}")
        vid = _need(path, s, ("video_id",), where)
        if vid not in videos:
            raise MalformedFileError(f"{path}: {where} names video_id {vid!r}, not in 'videos'")
        v = videos[vid]
        yield Caption(
            "msrvtt", vid, _need(path, s, ("caption",), where), url=v.get("url") or None,
            start_s=_opt_float(path, v, _START_KEYS, f"video {vid}"),
            end_s=_opt_float(path, v, _END_KEYS, f"video {vid}"),
        )


def _vatex(path: Path, text: str) -> Iterable[Caption]:
    obj = _load_json(path, text)
    if not isinstance(obj, list):
        raise MalformedFileError(f"{path}: VATEX JSON must be a list of objects")
    for i, item in enumerate(obj):
        where = f"item {i}"
        if not isinstance(item, dict):
            raise MalformedFileError(f"{path}: {where} must be an object, got {item!r}")
        vid = _need(path, item, ("videoID",), where)
        parts = vid.rsplit("_", 2)  # YouTube ids may themselves contain '_'
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise MalformedFileError(
                f"{path}: {where} videoID {vid!r} is not '<youtube id>_<start>_<end>'"
            )
        caps = item.get("enCap")
        if not isinstance(caps, list) or not caps:
            raise MalformedFileError(f"{path}: {where} has no 'enCap' list of English captions")
        yt, start, end = parts[0], float(parts[1]), float(parts[2])
        for c in caps:
            if isinstance(c, str) and c.strip():
                yield Caption("vatex", yt, c.strip(), url=YOUTUBE.format(yt), start_s=start,
                              end_s=end)


def _generic(path: Path, row: dict[str, Any], where: str, source: str) -> Caption:
    row = {str(k).strip().lower(): v for k, v in row.items()}
    url = str(row.get("url") or "").strip() or None
    vid = str(row.get("id") or row.get("video_id") or "").strip() or url
    if not vid:
        raise MalformedFileError(
            f"{path}: {where} needs an 'id' (or 'video_id') or a 'url' (columns: {sorted(row)})"
        )
    return Caption(
        str(row.get("source") or source).strip(), vid, _need(path, row, _CAPTION_KEYS, where),
        url=url, start_s=_opt_float(path, row, _START_KEYS, where),
        end_s=_opt_float(path, row, _END_KEYS, where),
    )


def _generic_csv(path: Path, text: str) -> Iterable[Caption]:
    rows = _csv_rows(path, text)
    if rows and not any(k in rows[0] for k in _CAPTION_KEYS):
        raise MalformedFileError(
            f"{path}: missing caption column: expected one of {list(_CAPTION_KEYS)}, "
            f"got columns {list(rows[0])}"
        )
    for i, row in enumerate(rows, start=2):
        yield _generic(path, row, f"line {i}", path.stem)


def _generic_jsonl(path: Path, text: str) -> Iterable[Caption]:
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise MalformedFileError(f"{path}: line {i}: invalid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise MalformedFileError(f"{path}: line {i}: expected a JSON object, got {row!r}")
        yield _generic(path, row, f"line {i}", path.stem)
