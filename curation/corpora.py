"""Readers of video-text corpora for retrieval: one :class:`Caption` per caption.

Layouts (auto-detected by :func:`detect_layout`, or named):

- ``msrvtt_csv``: the MSR-VTT 1k-A split CSV, ``key;vid_key;video_id;sentence`` (CRLF).
- ``msrvtt_json``: MSR-VTT ``videodatainfo.json``: ``videos`` (``video_id``, ``url``,
  ``start time``/``end time``) and ``sentences`` (``video_id``, ``caption``).
- ``vatex``: VATEX JSON, a list of ``{"videoID": "<youtube id>_<start>_<end>", "enCap": [...]}``.
- ``csv`` / ``jsonl``: generic rows with ``id`` or ``url``, ``caption`` (or ``sentence``/``text``)
  and optional ``start``/``end`` (or ``start_s``/``end_s``) in seconds.

Corpus files are untrusted. A file is read only when it is a regular file of at most
``max_bytes`` (default :data:`MAX_CORPUS_BYTES`) that is UTF-8 text (no NUL bytes); JSON nested
deeper than Python's parser allows, a CSV field over :data:`MAX_FIELD_CHARS`, an id that is not a
text or an integer, a URL that is not a text, a caption, id or URL over its length limit
(:data:`MAX_CAPTION_CHARS`, :data:`MAX_ID_CHARS`, :data:`MAX_URL_CHARS`), a time that is not a
finite number >= 0 and a span whose end is not after its start are each one
:class:`~prevad.errors.MalformedFileError` naming the file and the line, row or item: a corpus
is the input of a whole retrieval run, so it is fixed rather than read in part.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prevad.errors import MalformedFileError

LAYOUTS = ("msrvtt_csv", "msrvtt_json", "vatex", "csv", "jsonl")
#: Largest corpus file read by default (bytes; MSR-VTT's and VATEX's JSON files are well under
#: 100 MB). A file is held in memory while it is read, with its captions.
MAX_CORPUS_BYTES = 512 * 1024**2
#: Longest caption (characters).
MAX_CAPTION_CHARS = 10_000
#: Longest video id (characters).
MAX_ID_CHARS = 512
#: Longest URL (characters).
MAX_URL_CHARS = 4096
#: Longest CSV field (characters; Python's csv module refuses longer ones).
MAX_FIELD_CHARS = 1 << 20
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


def check_input_file(path: Path, what: str, max_bytes: int,
                     error: type[Exception] = MalformedFileError, hint: str = "") -> int:
    """The size of ``path``, a regular file of at most ``max_bytes`` bytes that users gave us.

    Args:
        path: the file.
        what: what it is, for the messages ("corpus", "input").
        max_bytes: the largest size accepted.
        error: the exception raised.
        hint: appended to the size message (the option that sets the limit).

    Raises:
        error: missing, not a regular file (folders, devices, FIFOs are never read), too big.
    """
    if not path.exists():
        raise error(f"{what} file not found: {path}")
    if not path.is_file():
        raise error(f"{what} {path} is not a regular file (folders, devices and FIFOs are "
                    "never read)")
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{what} file {path} has {size} bytes, over the limit of {max_bytes}{hint}")
    return size


def _read_text(path: Path, max_bytes: int = MAX_CORPUS_BYTES) -> str:
    """The file as text, after the checks of the module docstring."""
    check_input_file(path, "corpus", max_bytes)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)  # a file growing while read is cut, not followed
    if len(data) > max_bytes:
        raise MalformedFileError(f"corpus file {path} grew over the limit of {max_bytes} bytes")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise MalformedFileError(f"{path}: line {line} (byte {nul}): NUL byte: a binary file, "
                                 "not a text corpus")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise MalformedFileError(f"{path}: line {line} (byte {exc.start}): not UTF-8 text "
                                 f"({exc.reason}); convert the file to UTF-8") from None
    if not text.strip():
        raise MalformedFileError(f"{path}: the corpus file is empty (expected captions)")
    return text


def detect_layout(path: str | Path, text: str | None = None,
                  max_bytes: int = MAX_CORPUS_BYTES) -> str:
    """Guess a corpus layout from the file's extension and first bytes.

    Raises:
        MalformedFileError: empty file, or nothing matches (the message lists the layouts).
    """
    path = Path(path)
    text = _read_text(path, max_bytes) if text is None else text
    return _detect(path, text)[0]


def _detect(path: Path, text: str) -> tuple[str, Any]:
    """(layout, the parsed JSON document for the JSON layouts, else None)."""
    head = text.lstrip()[:1]
    if head in "[{" and path.suffix.lower() == ".json":
        obj = _load_json(path, text)
        if isinstance(obj, dict) and "videos" in obj and "sentences" in obj:
            return "msrvtt_json", obj
        if isinstance(obj, list) and obj and isinstance(obj[0], dict) and "videoID" in obj[0]:
            return "vatex", obj
        raise MalformedFileError(
            f"{path}: JSON is neither MSR-VTT videodatainfo (keys 'videos' and 'sentences') nor "
            f"VATEX (a list of objects with 'videoID' and 'enCap'); name a layout with --layout"
        )
    if path.suffix.lower() == ".jsonl" or head == "{":
        return "jsonl", None
    first = text[: text.find("\n") if "\n" in text else len(text)].strip().lower()
    if first.split(";") == ["key", "vid_key", "video_id", "sentence"]:
        return "msrvtt_csv", None
    return "csv", None


def _load_json(path: Path, text: str, where: str = "") -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise MalformedFileError(f"{path}: {where}JSON nested too deep to be a corpus") from None
    except ValueError as exc:
        raise MalformedFileError(f"{path}: {where}invalid JSON: {exc}") from None


def read_corpus(path: str | Path, layout: str | None = None,
                max_bytes: int = MAX_CORPUS_BYTES) -> tuple[str, list[Caption]]:
    """Read every caption of a corpus file.

    Args:
        path: the corpus file.
        layout: one of :data:`LAYOUTS`, or None to detect it.
        max_bytes: largest file read.

    Returns:
        (layout, captions), captions in file order.

    Raises:
        MalformedFileError: missing/empty file, unknown layout, missing column or key, bad number;
            the message names the file, the row and what was expected.
    """
    path = Path(path)
    readers = {"msrvtt_csv": _msrvtt_csv, "msrvtt_json": _msrvtt_json, "vatex": _vatex,
               "csv": _generic_csv, "jsonl": _generic_jsonl}
    if layout is not None and layout not in readers:
        raise MalformedFileError(f"unknown corpus layout {layout!r}: must be one of {LAYOUTS}")
    text = _read_text(path, max_bytes)
    doc = None
    if layout is None:
        layout, doc = _detect(path, text)
    if layout in ("msrvtt_json", "vatex"):
        doc = _load_json(path, text) if doc is None else doc
        del text  # the parsed document is what is read from here on
        caps = list(readers[layout](path, doc))
    else:
        caps = list(readers[layout](path, text))
    if not caps:
        raise MalformedFileError(f"{path}: no captions found (layout {layout})")
    return layout, caps


def _csv_rows(path: Path, text: str, delimiter: str | None = None) -> list[dict[str, str]]:
    if delimiter is None:
        first = text[: min(len(text), 65536)].split("\n", 1)[0]
        try:
            delimiter = csv.Sniffer().sniff(first, delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        if not reader.fieldnames:
            raise MalformedFileError(f"{path}: no header row")
        reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
        rows = []
        for row in reader:
            if None in row:  # more fields than the header names
                raise MalformedFileError(
                    f"{path}: line {reader.line_num} has {len(reader.fieldnames) + len(row[None])}"
                    f" fields, the header names {len(reader.fieldnames)}")
            rows.append(row)
        return rows
    except csv.Error as exc:
        raise MalformedFileError(f"{path}: line {reader.line_num}: not valid CSV: {exc}"
                                 ) from None


def _text(path: Path, value: Any, key: str, where: str, limit: int,
          numbers: bool = False) -> str:
    """A text field (or an integer id when ``numbers``), stripped, at most ``limit`` long."""
    if isinstance(value, bool) or not (isinstance(value, str) or (numbers and isinstance(
            value, int))):
        kinds = "a text or an integer" if numbers else "a text"
        raise MalformedFileError(f"{path}: {where} {key} must be {kinds}, got "
                                 f"{type(value).__name__} {_short(value)}")
    text = str(value).strip()
    if len(text) > limit:
        raise MalformedFileError(f"{path}: {where} {key} has {len(text)} characters (at most "
                                 f"{limit})")
    return text


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


_LIMITS = {"caption": MAX_CAPTION_CHARS, "sentence": MAX_CAPTION_CHARS, "text": MAX_CAPTION_CHARS,
           "url": MAX_URL_CHARS}


def _need(path: Path, row: dict[str, Any], keys: Iterable[str], where: str) -> str:
    keys = tuple(keys)
    for k in keys:
        v = row.get(k)
        if v is not None and not (isinstance(v, str) and not v.strip()):
            return _text(path, v, k, where, _LIMITS.get(k, MAX_ID_CHARS),
                         numbers=k not in _LIMITS)
    raise MalformedFileError(
        f"{path}: {where} has no value for {' / '.join(repr(k) for k in keys)} "
        f"(columns present: {sorted(map(str, row))[:20]})"
    )


def _opt_text(path: Path, row: dict[str, Any], key: str, where: str, limit: int,
              numbers: bool = False) -> str | None:
    v = row.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return _text(path, v, key, where, limit, numbers) or None


def _opt_float(path: Path, row: dict[str, Any], keys: Iterable[str], where: str) -> float | None:
    for k in keys:
        v = row.get(k)
        if v is None or str(v).strip() == "":
            continue
        try:
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise TypeError
            x = float(v)
        except (TypeError, ValueError, OverflowError):
            raise MalformedFileError(
                f"{path}: {where} {k}={_short(v)} is not a number of seconds"
            ) from None
        if not math.isfinite(x) or x < 0:
            raise MalformedFileError(f"{path}: {where} {k}={_short(v)} must be a finite number "
                                     ">= 0 seconds")
        return x
    return None


def _span(path: Path, row: dict[str, Any], where: str) -> tuple[float | None, float | None]:
    start = _opt_float(path, row, _START_KEYS, where)
    end = _opt_float(path, row, _END_KEYS, where)
    if end is not None and end <= (start or 0.0):
        raise MalformedFileError(f"{path}: {where} end {end:g} s is not after start "
                                 f"{start or 0.0:g} s")
    return start, end


def _msrvtt_csv(path: Path, text: str) -> Iterable[Caption]:
    rows = _csv_rows(path, text, ";")
    for i, row in enumerate(rows, start=2):
        where = f"line {i}"
        vid = _need(path, row, ("video_id",), where)
        yield Caption("msrvtt", vid, _need(path, row, ("sentence",), where))


def _msrvtt_json(path: Path, obj: Any) -> Iterable[Caption]:
    if not isinstance(obj, dict) or not isinstance(obj.get("videos"), list) \
            or not isinstance(obj.get("sentences"), list):
        raise MalformedFileError(f"{path}: expected an object with lists 'videos' and 'sentences'")
    videos: dict[str, dict[str, Any]] = {}
    for i, v in enumerate(obj["videos"]):
        if not isinstance(v, dict):
            raise MalformedFileError(f"{path}: videos[{i}] must be an object, got {_short(v)}")
        videos[_need(path, v, ("video_id",), f"videos[{i}]")] = v
    for i, s in enumerate(obj["sentences"]):
        where = f"sentences[{i}]"
        if not isinstance(s, dict):
            raise MalformedFileError(f"{path}: {where} must be an object, got {_short(s)}")
        vid = _need(path, s, ("video_id",), where)
        if vid not in videos:
            raise MalformedFileError(f"{path}: {where} names video_id {vid!r}, not in 'videos'")
        v = videos[vid]
        start, end = _span(path, v, f"video {vid!r}")
        yield Caption(
            "msrvtt", vid, _need(path, s, ("caption",), where),
            url=_opt_text(path, v, "url", f"video {vid!r}", MAX_URL_CHARS),
            start_s=start, end_s=end,
        )


def _vatex(path: Path, obj: Any) -> Iterable[Caption]:
    if not isinstance(obj, list):
        raise MalformedFileError(f"{path}: VATEX JSON must be a list of objects")
    for i, item in enumerate(obj):
        where = f"item {i}"
        if not isinstance(item, dict):
            raise MalformedFileError(f"{path}: {where} must be an object, got {_short(item)}")
        vid = _text(path, item.get("videoID"), "videoID", where, MAX_ID_CHARS) \
            if item.get("videoID") is not None else _need(path, item, ("videoID",), where)
        parts = vid.rsplit("_", 2)  # YouTube ids may themselves contain '_'
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise MalformedFileError(
                f"{path}: {where} videoID {vid!r} is not '<youtube id>_<start>_<end>'"
            )
        caps = item.get("enCap")
        if not isinstance(caps, list) or not caps:
            raise MalformedFileError(f"{path}: {where} has no 'enCap' list of English captions")
        yt, start, end = parts[0], float(parts[1]), float(parts[2])
        if end <= start:
            raise MalformedFileError(f"{path}: {where} videoID {vid!r}: end {end:g} s is not "
                                     f"after start {start:g} s")
        for j, c in enumerate(caps):
            text = _text(path, c, f"enCap[{j}]", where, MAX_CAPTION_CHARS)
            if text:
                yield Caption("vatex", yt, text, url=YOUTUBE.format(yt), start_s=start,
                              end_s=end)


def _generic(path: Path, row: dict[str, Any], where: str, source: str) -> Caption:
    row = {str(k).strip().lower(): v for k, v in row.items()}
    url = _opt_text(path, row, "url", where, MAX_URL_CHARS)
    vid = (_opt_text(path, row, "id", where, MAX_ID_CHARS, numbers=True)
           or _opt_text(path, row, "video_id", where, MAX_ID_CHARS, numbers=True) or url)
    if not vid:
        raise MalformedFileError(
            f"{path}: {where} needs an 'id' (or 'video_id') or a 'url' "
            f"(columns: {sorted(row)[:20]})"
        )
    start, end = _span(path, row, where)
    return Caption(
        _opt_text(path, row, "source", where, 64) or source, vid,
        _need(path, row, _CAPTION_KEYS, where), url=url, start_s=start, end_s=end,
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
        row = _load_json(path, line, f"line {i}: ")
        if not isinstance(row, dict):
            raise MalformedFileError(f"{path}: line {i}: expected a JSON object, got "
                                     f"{type(row).__name__} {_short(row)}")
        yield _generic(path, row, f"line {i}", path.stem)
