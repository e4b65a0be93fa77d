"""Inputs of ``prevad curate add``: URL lists, tables, keyword files, searches and playlists.

Every input becomes :class:`Entry` rows (a URL, an optional span, caption, category, title) that
remember where they came from (``origin``: the kind of input, the file and line, the search
query, the playlist and the position in it), plus :class:`Rejection` rows for what could not be
used (``bad_url``, ``bad_span``, ``unknown_category``, ``field_too_long``, ``bad_json``, ...),
each with its line or position.

Kinds of input (:func:`classify`):

- a ``.txt`` (or ``.urls``/``.list``) file: one URL a line, ``#`` starts a comment;
- a ``.csv``/``.tsv`` or ``.jsonl``/``.ndjson`` file: rows with ``url`` and optional ``caption``,
  ``category``, ``start``, ``end`` (seconds or ``[HH:]MM:SS[.ms]``) and ``title``;
- a ``.json`` keyword file: categories with keywords, turned into search queries
  (:func:`read_keywords`);
- a yt-dlp search query, ``<key>[N|all]:<words>`` (``ytsearch10:house fire``; the keys come from
  yt-dlp's search extractors, plugins included);
- a URL: expanded by yt-dlp (``extract_flat``) into the videos of a playlist, channel, feed or
  page; a single video stays one entry.

Files are read as bytes, line by line, with bounds: a line over :data:`MAX_LINE_BYTES`, a URL
over :data:`MAX_URL_CHARS`, a text over :data:`MAX_TEXT_CHARS`, undecodable bytes and JSON nested
too deep reject that row; a file over ``max_file_bytes``, a binary file or one without the
needed columns is one error for the whole file. Expanding a URL or a search fetches pages: yt-dlp
fetches them through a :class:`curation.fetch.PolicyProxy`, so every request and every hop of a
redirect chain follows :class:`curation.netpolicy.NetworkPolicy` (checked after DNS, on the
connection that fetches it); each page read is bounded in bytes and every expansion in wall time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.common import CurationError
from curation.corpora import check_input_file
from curation.fetch import Budget, DeadlineExceeded, HttpClient, PolicyProxy, YtdlpLog
from curation.netpolicy import NetworkPolicy, UrlRefused
from prevad import taxonomy

#: Longest line of a list or table file (bytes); longer lines are rejected (``line_too_long``).
MAX_LINE_BYTES = 64 * 1024
#: Longest URL (characters).
MAX_URL_CHARS = 4096
#: Longest caption or title (characters).
MAX_TEXT_CHARS = 10_000
#: Deepest JSON nesting accepted in a table row or a keyword file.
MAX_JSON_DEPTH = 32
#: Most rejections kept with their line numbers per input (all are counted).
MAX_KEPT_REJECTIONS = 1000

LIST_SUFFIXES = (".txt", ".urls", ".list")
CSV_SUFFIXES = (".csv", ".tsv")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
KEYWORD_SUFFIXES = (".json",)
_SEARCH = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9]*?)(?P<n>[1-9][0-9]*|all)?:(?P<query>.+)$",
                     re.DOTALL)
_TIME = re.compile(r"^(?:(?P<h>\d+):)?(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d+)?)$")
_YOUTUBE_HOSTS = {"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com"}
_TRACKING = re.compile(r"^(utm_[a-z]+|fbclid|gclid|si|feature)$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One video (or a span of one) to register, with where it came from."""

    url: str
    norm_url: str
    title: str | None = None
    caption: str | None = None
    category: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    duration_s: float | None = None
    origin: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row or entry that could not be used: a countable reason, where, and why."""

    reason: str
    where: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        """JSON-able form."""
        return {"reason": self.reason, "where": self.where, "detail": self.detail}


class RowRejected(CurationError):
    """A row breaks a rule; ``reason`` is the counted token."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ExpansionError(CurationError):
    """Expanding a URL or a search failed; ``reason`` is a short token (``private_address``,
    ``page_too_large``, ``timeout``, ``http_404``, ``unsupported_url``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class Source:
    """One SOURCE argument, classified."""

    text: str
    kind: str  # url_list | table | keywords | search | url
    path: Path | None = None
    sha256: str = ""

    @property
    def item_id(self) -> str:
        """The work item id of this input in ``stage_results`` (``add:<sha256>``)."""
        return f"add:{self.sha256}"


@dataclass(slots=True)
class Parsed:
    """What one input gave: entries, rejected rows and, for keyword files, search queries."""

    entries: list[Entry] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    searches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # query, origin


# ------------------------------------------------------------------ small rules
def normalize_url(url: str) -> str:
    """The form of a URL that identifies a candidate: same video, same text.

    Lower-case scheme and host, no default port, no fragment, an empty path as ``/``, query
    parameters sorted and tracking ones (``utm_*``, ``fbclid``, ``si``, ...) dropped; YouTube
    links (``youtu.be/ID``, ``m.youtube.com``, ``/shorts/ID``) as ``www.youtube.com/watch?v=ID``.
    """
    parts = urllib.parse.urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme == "file":
        return urllib.parse.urlunsplit(("file", "", parts.path, "", ""))
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) \
        else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        netloc = f"[{host}]" + netloc[len(host):]
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
             if not _TRACKING.match(k)]
    path = parts.path or "/"
    yt_id = None
    if host == "youtu.be":
        yt_id = path.strip("/").split("/")[0]
    elif host in _YOUTUBE_HOSTS:
        if path.startswith("/shorts/"):
            yt_id = path.split("/")[2] if len(path.split("/")) > 2 else None
        elif path == "/watch":
            yt_id = dict(query).get("v")
    if yt_id:
        return f"https://www.youtube.com/watch?v={yt_id}"
    return urllib.parse.urlunsplit((scheme, netloc, path, urllib.parse.urlencode(sorted(query)),
                                    ""))


def check_url(value: Any, allow_file: bool = False) -> tuple[str, str]:
    """A URL from an untrusted input, checked: (the URL as given, stripped; its normal form).

    Only the form is checked here (no DNS): the network policy applies when it is fetched.

    Raises:
        RowRejected: ``bad_url`` (not a text, too long, control characters or spaces, a scheme
            other than http/https (``file`` with ``allow_file``), no host, a bad port).
    """
    if not isinstance(value, str):
        raise RowRejected("bad_url", f"url must be a text, got {type(value).__name__} "
                          f"{_short(value)}")
    url = value.strip()
    if not url:
        raise RowRejected("bad_url", "url is empty")
    if len(url) > MAX_URL_CHARS:
        raise RowRejected("bad_url", f"url has {len(url)} characters (at most {MAX_URL_CHARS})")
    if any(ord(c) < 33 or c == "\x7f" for c in url):
        raise RowRejected("bad_url", f"url {_short(url)} contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises for a port outside 0..65535
    except ValueError as exc:
        raise RowRejected("bad_url", f"url {_short(url)} is malformed: {exc}") from None
    allowed = ("http", "https", "file") if allow_file else ("http", "https")
    if parts.scheme.lower() not in allowed:
        hint = "" if allow_file or parts.scheme.lower() != "file" else " (use --allow-file)"
        raise RowRejected("bad_url", f"url {_short(url)}: scheme {parts.scheme!r} is not one of "
                          f"{', '.join(allowed)}{hint}")
    if parts.scheme.lower() != "file" and not parts.hostname:
        raise RowRejected("bad_url", f"url {_short(url)} has no host")
    return url, normalize_url(url)


def parse_time(value: Any, what: str) -> float | None:
    """Seconds from a number or a ``[HH:]MM:SS[.ms]`` text; None for an empty value.

    Raises:
        RowRejected: ``bad_span`` (not a time, NaN, infinite or negative).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RowRejected("bad_span", f"{what}={value!r} is not a time in seconds")
    if isinstance(value, int | float):
        x = float(value)
    elif isinstance(value, str):
        text = value.strip()
        m = _TIME.match(text)
        try:
            x = (int(m["h"] or 0) * 3600 + int(m["m"]) * 60 + float(m["s"])) if m \
                else float(text)
        except ValueError:
            raise RowRejected("bad_span", f"{what}={_short(value)} is not a time in seconds "
                              "or [HH:]MM:SS") from None
    else:
        raise RowRejected("bad_span", f"{what}={_short(value)} is not a time in seconds")
    if not math.isfinite(x) or x < 0:
        raise RowRejected("bad_span", f"{what}={_short(value)} must be a finite time >= 0")
    return x


def parse_span(start: Any, end: Any) -> tuple[float | None, float | None]:
    """(start_s, end_s) of a row; both optional, ``end > start`` when both are given.

    Raises:
        RowRejected: ``bad_span``.
    """
    s, e = parse_time(start, "start"), parse_time(end, "end")
    if e is not None and e <= (s or 0.0):
        raise RowRejected("bad_span", f"end {e:g} s is not after start {s or 0.0:g} s")
    return s, e


def parse_text(value: Any, what: str) -> str | None:
    """An optional caption/title: a text of at most :data:`MAX_TEXT_CHARS` characters.

    Raises:
        RowRejected: ``bad_field`` (not a text) or ``field_too_long``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowRejected("bad_field", f"{what} must be a text, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > MAX_TEXT_CHARS:
        raise RowRejected("field_too_long", f"{what} has {len(text)} characters "
                          f"(at most {MAX_TEXT_CHARS})")
    return text or None


def parse_category(value: Any) -> str | None:
    """A taxonomy name (Normal, a top-level class or a sub-category), canonical spelling.

    Raises:
        RowRejected: ``unknown_category``.
    """
    text = parse_text(value, "category")
    if text is None:
        return None
    try:
        return taxonomy.canonical(text)
    except taxonomy.UnknownCategoryError as exc:
        raise RowRejected("unknown_category", str(exc)) from None


def _short(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests at most ``limit`` deep (checked before parsing it, so a
    hostile file cannot exhaust the parser's recursion)."""
    depth, in_str, esc = 0, False, False
    for c in text:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return False
        elif c in "]}":
            depth -= 1
    return True


# ------------------------------------------------------------------ files
def file_digest(path: Path, max_bytes: int) -> str:
    """sha256 of a regular file of at most ``max_bytes`` bytes.

    Raises:
        CurationError: missing, not a regular file, too big, or binary (NUL bytes at its start).
    """
    check_input_file(path, "input", max_bytes, CurationError, " (--max-file-bytes)")
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        head = fh.read(8192)
        if b"\x00" in head:
            raise CurationError(f"input file {path} is binary (NUL bytes in its first 8 KiB); "
                                "expected text")
        h.update(head)
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lines(path: Path, max_bytes: int) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text or None, why not) for each line, read as bytes with bounds.

    A line over :data:`MAX_LINE_BYTES` or not UTF-8 gives ``None`` and the reason; reading
    stops at ``max_bytes`` (the file was checked against it; a file growing meanwhile is cut).
    """
    read = 0
    with open(path, "rb") as fh:
        for n, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            read += len(raw)
            if read > max_bytes:
                return
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                # skip the rest of the over-long line without holding it
                while (more := fh.readline(MAX_LINE_BYTES)) and not more.endswith(b"\n"):
                    read += len(more)
                read += len(more)
                yield n, None, f"line_too_long:line is over {MAX_LINE_BYTES} bytes"
                continue
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield n, None, f"bad_encoding:not UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            yield n, text.rstrip("\r\n"), ""


def _row_error(n: int, why: str) -> Rejection:
    reason, _, detail = why.partition(":")
    return Rejection(reason, f"line {n}", detail)


def read_url_list(path: Path, max_bytes: int, allow_file: bool = False,
                  category: str | None = None) -> Parsed:
    """A text file of URLs: one a line; blank lines and ``#`` comments skipped.

    A line may carry a span after the URL: ``URL START END`` (seconds or ``MM:SS``).
    """
    out = Parsed()
    for n, text, why in _lines(path, max_bytes):
        if text is None:
            out.rejected.append(_row_error(n, why))
            continue
        line = text.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            if len(fields) not in (1, 3):
                raise RowRejected("bad_url", "expected 'URL' or 'URL START END' on a line, got "
                                  f"{len(fields)} fields")
            url, norm = check_url(fields[0], allow_file)
            start, end = parse_span(*fields[1:]) if len(fields) == 3 else (None, None)
        except RowRejected as exc:
            out.rejected.append(Rejection(exc.reason, f"line {n}", str(exc)))
            continue
        out.entries.append(Entry(url, norm, category=category, start_s=start, end_s=end,
                                 origin={"kind": "url_list", "file": str(path), "line": n}))
    return out


_COLUMNS = {"url": ("url",), "caption": ("caption", "sentence", "text", "description"),
            "category": ("category", "label", "class"), "start": ("start", "start_s"),
            "end": ("end", "end_s"), "title": ("title",)}


def _pick(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    for k in names:
        if k in row and row[k] is not None and row[k] != "":
            return row[k]
    return None


def _entry_from_row(row: dict[str, Any], where: str, origin: dict[str, Any],
                    allow_file: bool, category: str | None) -> Entry:
    url, norm = check_url(_pick(row, _COLUMNS["url"]), allow_file)
    start, end = parse_span(_pick(row, _COLUMNS["start"]), _pick(row, _COLUMNS["end"]))
    return Entry(url, norm, title=parse_text(_pick(row, _COLUMNS["title"]), "title"),
                 caption=parse_text(_pick(row, _COLUMNS["caption"]), "caption"),
                 category=parse_category(_pick(row, _COLUMNS["category"])) or category,
                 start_s=start, end_s=end, origin={**origin, "where": where})


def read_table(path: Path, max_bytes: int, allow_file: bool = False,
               category: str | None = None) -> Parsed:
    """A CSV/TSV (header row) or JSONL file with a ``url`` column/key (see module docstring).

    Raises:
        CurationError: no ``url`` column in a CSV header; the file cannot be read.
    """
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    return _read_jsonl(path, max_bytes, allow_file, category) if jsonl else \
        _read_csv(path, max_bytes, allow_file, category)


def _read_jsonl(path: Path, max_bytes: int, allow_file: bool, category: str | None) -> Parsed:
    out = Parsed()
    for n, text, why in _lines(path, max_bytes):
        if text is None:
            out.rejected.append(_row_error(n, why))
            continue
        if not text.strip():
            continue
        try:
            if not json_depth_ok(text):
                raise RowRejected("bad_json", f"JSON nested deeper than {MAX_JSON_DEPTH}")
            try:
                row = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise RowRejected("bad_json", f"invalid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise RowRejected("bad_json", f"expected a JSON object, got "
                                  f"{type(row).__name__}")
            row = {str(k).strip().lower(): v for k, v in row.items()}
            out.entries.append(_entry_from_row(row, f"line {n}", {
                "kind": "table", "file": str(path), "line": n}, allow_file, category))
        except RowRejected as exc:
            out.rejected.append(Rejection(exc.reason, f"line {n}", str(exc)))
    return out


def _read_csv(path: Path, max_bytes: int, allow_file: bool, category: str | None) -> Parsed:
    out = Parsed()
    lines = _lines(path, max_bytes)
    header: list[str] | None = None
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    for n, text, why in lines:
        if text is None:
            if header is None:
                raise CurationError(f"{path}: line {n}: cannot read the header row "
                                    f"({why.partition(':')[2]})")
            out.rejected.append(_row_error(n, why))
            continue
        if not text.strip():
            continue
        try:
            fields = next(csv.reader(io.StringIO(text), delimiter=delimiter))
        except (csv.Error, StopIteration) as exc:
            if header is None:
                raise CurationError(f"{path}: line {n}: cannot parse the header row: "
                                    f"{exc}") from None
            out.rejected.append(Rejection("bad_csv", f"line {n}", str(exc)))
            continue
        if header is None:
            header = [f.strip().lower() for f in fields]
            if "url" not in header:
                raise CurationError(f"{path}: line {n}: missing column 'url' (columns: "
                                    f"{', '.join(repr(h) for h in header[:20])}); expected url "
                                    "and optional caption, category, start, end, title")
            continue
        if len(fields) != len(header):
            out.rejected.append(Rejection("bad_csv", f"line {n}", f"{len(fields)} fields, the "
                                          f"header has {len(header)} (fields with line breaks "
                                          "are not supported)"))
            continue
        try:
            out.entries.append(_entry_from_row(dict(zip(header, fields, strict=True)),
                                               f"line {n}", {"kind": "table", "file": str(path),
                                                             "line": n},
                                               allow_file, category))
        except RowRejected as exc:
            out.rejected.append(Rejection(exc.reason, f"line {n}", str(exc)))
    if header is None:
        raise CurationError(f"{path}: no header row (expected url and optional caption, "
                            "category, start, end, title)")
    return out


def read_keywords(path: Path, max_bytes: int, prefix: str, max_per_query: int) -> Parsed:
    """A keyword file: per category, keywords searched with ``prefix`` (``ytsearch``).

    Formats: ``{"queries": [{"category": "Fire", "keywords": ["house fire", ...]}, ...]}`` (as
    in ``curation/queries/``; ``texts`` is accepted for ``keywords``) or a plain object
    ``{"Fire": ["house fire", ...], ...}``. Each keyword becomes the query
    ``<prefix><max_per_query>:<keyword>``.

    Raises:
        CurationError: not JSON, nested too deep, or not one of the two shapes; an unknown
            category or a keyword that is not a non-empty text (the message names its place).
    """
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    if len(text) > max_bytes:
        raise CurationError(f"{path}: keyword file over {max_bytes} bytes")
    if not json_depth_ok(text):
        raise CurationError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CurationError(f"{path}: invalid JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("queries"), list):
        groups = []
        for i, q in enumerate(doc["queries"]):
            if not isinstance(q, dict):
                raise CurationError(f"{path}: queries[{i}] must be an object with 'category' "
                                    "and 'keywords'")
            groups.append((f"queries[{i}]", q.get("category"),
                           q.get("keywords", q.get("texts"))))
    elif isinstance(doc, dict) and doc and "queries" not in doc:
        groups = [(repr(k), k, v) for k, v in doc.items()]
    else:
        raise CurationError(f"{path}: expected {{'queries': [{{'category': ..., 'keywords': "
                            "[...]}}]}} or {'<category>': ['<keyword>', ...]}")
    out = Parsed()
    seen: set[str] = set()
    for where, cat, words in groups:
        try:
            category = parse_category(cat)
        except RowRejected as exc:
            raise CurationError(f"{path}: {where}: {exc}") from None
        if category is None or not isinstance(words, list) or not words:
            raise CurationError(f"{path}: {where}: needs a category and a non-empty list of "
                                "keywords")
        for j, w in enumerate(words):
            if not isinstance(w, str) or not w.strip() or len(w) > 500 or \
                    any(ord(c) < 32 for c in w):
                raise CurationError(f"{path}: {where} keyword {j}: expected a one-line text of "
                                    f"1..500 characters, got {_short(w)}")
            query = f"{prefix}{max_per_query}:{w.strip()}"
            if query in seen:
                continue
            seen.add(query)
            out.searches.append((query, {"kind": "keywords", "file": str(path),
                                         "category": category, "keyword": w.strip(),
                                         "query": query}))
    return out


# ------------------------------------------------------------------ classification
def search_keys() -> set[str]:
    """The search prefixes yt-dlp knows (``ytsearch``, ``scsearch``, ..., plugins included)."""
    from yt_dlp.extractor import gen_extractor_classes
    from yt_dlp.globals import all_plugins_loaded
    from yt_dlp.plugins import load_all_plugins

    if not all_plugins_loaded.value:
        load_all_plugins()
    return {ie.SEARCH_KEY for ie in gen_extractor_classes() if getattr(ie, "SEARCH_KEY", None)}


def classify(text: str, max_file_bytes: int, allow_file: bool = False) -> Source:
    """What a SOURCE argument is (see the module docstring).

    Raises:
        CurationError: a missing or unreadable file, an unknown file type or search prefix, or
            neither a file, a URL nor a search query.
    """
    if not isinstance(text, str) or not text.strip():
        raise CurationError("SOURCE must be a file, a URL or a search query, got an empty text")
    text = text.strip()
    path = Path(text)
    suffix = path.suffix.lower()
    scheme = urllib.parse.urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("http", "https") or (scheme == "file" and allow_file):
        check_url(text, allow_file)
        return Source(text, "url", sha256=hashlib.sha256(text.encode()).hexdigest())
    m = _SEARCH.match(text)
    if m and not scheme and not path.exists():
        keys = search_keys()
        if m["key"] in keys:
            return Source(text, "search", sha256=hashlib.sha256(text.encode()).hexdigest())
        raise CurationError(f"SOURCE {text!r}: {m['key']!r} is not a search prefix yt-dlp knows "
                            f"(known: {', '.join(sorted(keys))})")
    if scheme:
        raise CurationError(f"SOURCE {text!r}: scheme {scheme!r} is not allowed (http, https; "
                            "file with --allow-file)")
    kind = ("url_list" if suffix in LIST_SUFFIXES else "table" if suffix in CSV_SUFFIXES
            + JSONL_SUFFIXES else "keywords" if suffix in KEYWORD_SUFFIXES else None)
    if not path.exists():
        raise CurationError(f"SOURCE {text!r} is not a file, a URL (http/https) nor a search "
                            "query (<prefix>[N]:<words>, e.g. ytsearch10:house fire)")
    if kind is None and path.is_file():
        raise CurationError(f"input file {path}: cannot tell its format from the suffix "
                            f"{suffix or '(none)'!r}; use .txt (one URL a line), .csv/.tsv, "
                            ".jsonl or .json (keywords per category)")
    return Source(text, kind, path, file_digest(path, max_file_bytes))


def parse_file(src: Source, max_file_bytes: int, allow_file: bool, category: str | None,
               prefix: str, max_per_query: int) -> Parsed:
    """Read a file source (list, table or keyword file)."""
    assert src.path is not None
    if src.kind == "url_list":
        return read_url_list(src.path, max_file_bytes, allow_file, category)
    if src.kind == "table":
        return read_table(src.path, max_file_bytes, allow_file, category)
    return read_keywords(src.path, max_file_bytes, prefix, max_per_query)


# ------------------------------------------------------------------ expansion with yt-dlp
@dataclass(frozen=True, slots=True)
class ExpandLimits:
    """Bounds of one expansion.

    Attributes:
        max_entries: most entries taken from a playlist, channel, feed or search.
        timeout_s: wall-clock limit of the whole expansion.
        socket_timeout_s: a silent connection is dropped after this.
        max_page_bytes: most bytes read from one page or feed.
    """

    max_entries: int = 1000
    timeout_s: float = 120.0
    socket_timeout_s: float = 20.0
    max_page_bytes: int = 20 * 1024 * 1024


def _policy_ydl(params: dict[str, Any], policy: NetworkPolicy, limits: ExpandLimits) -> Any:
    """A ``YoutubeDL`` whose every request follows ``policy`` and the read bounds."""
    import yt_dlp

    deadline = time.monotonic() + limits.timeout_s

    class PolicyYDL(yt_dlp.YoutubeDL):
        refused: ExpansionError | None = None

        def _refuse(self, exc: ExpansionError) -> ExpansionError:
            self.refused = self.refused or exc
            return exc

        def _check(self, url: str) -> None:
            if time.monotonic() > deadline:
                raise self._refuse(ExpansionError(
                    "timeout", f"expansion ran over its {limits.timeout_s:g} s limit"))
            try:
                policy.check(url)
            except UrlRefused as exc:
                raise self._refuse(ExpansionError(exc.reason, str(exc))) from None

        def urlopen(self, req: Any) -> Any:
            url = req if isinstance(req, str) else req.url
            self._check(url)
            res = super().urlopen(req)
            if res.url != url:  # a redirect: the address it ended at follows the policy too
                try:
                    self._check(res.url)
                except ExpansionError:
                    res.close()
                    raise
            _bound_reads(res, limits.max_page_bytes, deadline, self._refuse)
            return res

    return PolicyYDL(params)


def _bound_reads(res: Any, max_bytes: int, deadline: float, refuse: Any) -> None:
    """Make ``res.read`` stop at ``max_bytes`` and at the deadline (an endless or dripping
    body ends the expansion instead of filling memory or hanging).

    Reads go through the underlying response's ``read1`` where it has one (urllib3,
    http.client): it returns what has arrived instead of waiting for ``amt`` bytes, so a body
    that drips a byte at a time cannot hold a read past the deadline.
    """
    raw_read = res.read
    read1 = getattr(getattr(res, "fp", None), "read1", None)
    count = [0]

    def read(amt: int | None = None) -> bytes:
        if amt is None or amt < 0:
            parts = []
            while chunk := read(1 << 16):
                parts.append(chunk)
            return b"".join(parts)
        if time.monotonic() > deadline:
            raise refuse(ExpansionError("timeout", "expansion ran over its time limit while "
                                        f"reading {res.url}"))
        data = read1(amt) if read1 is not None else raw_read(amt)
        count[0] += len(data)
        if count[0] > max_bytes:
            raise refuse(ExpansionError("page_too_large", f"{res.url} sent over {max_bytes} "
                                        "bytes (--max-page-bytes)"))
        return data

    res.read = read


def _entry_url(entry: dict[str, Any]) -> str | None:
    """The URL to download an entry from: its own page, else its best video format."""
    from yt_dlp.utils import unsmuggle_url

    url = entry.get("url")
    if entry.get("_type") in ("url", "url_transparent") or (url and not entry.get("formats")):
        return unsmuggle_url(url)[0] if isinstance(url, str) else None
    formats = [f for f in entry.get("formats") or [] if isinstance(f, dict)
               and isinstance(f.get("url"), str) and f.get("vcodec") != "none"]
    if not formats:
        return entry.get("webpage_url") if isinstance(entry.get("webpage_url"), str) else None
    best = max(enumerate(formats), key=lambda kv: (kv[1].get("height") or 0,
                                                   kv[1].get("tbr") or 0, kv[0]))[1]
    return unsmuggle_url(best["url"])[0]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and value >= 0 else None


def expand(target: str, origin: dict[str, Any], policy: NetworkPolicy, limits: ExpandLimits,
           allow_file: bool = False, category: str | None = None) -> Parsed:
    """Expand a URL or a search query with yt-dlp (``extract_flat``) into entries.

    A playlist, channel, feed, search or page with several videos gives one entry per video
    (``origin`` gains ``playlist``, ``playlist_title``, ``position``, ``extractor``); a single
    video gives one entry with the URL as given. Live streams are rejected (``live``: they
    belong to ``prevad curate record``).

    Raises:
        ExpansionError: the policy refused a request, a page was too large, the time ran out,
            or yt-dlp could not extract (HTTP errors, unsupported URL); ``reason`` says which.
    """
    from yt_dlp.utils import DownloadError, ExtractorError

    params = {
        "extract_flat": "in_playlist", "skip_download": True, "quiet": True,
        "no_warnings": True, "noprogress": True, "logger": YtdlpLog(), "cachedir": False,
        "socket_timeout": limits.socket_timeout_s, "retries": 0, "extractor_retries": 0,
        "enable_file_urls": allow_file, "playlistend": limits.max_entries,
        "noplaylist": False, "ignoreerrors": False,
    }
    # Every request yt-dlp makes goes through a policy proxy on 127.0.0.1: each one, every hop
    # of a redirect chain included (the proxy hands redirects back, so the next hop is a new
    # request), is checked against the policy on the connection that really fetches it
    # (resolved and pinned), as acquire's and record's downloads are.
    budget = Budget(sys.maxsize, limits.timeout_s, limits.socket_timeout_s)
    proxy = PolicyProxy(HttpClient(policy))
    proxy.budget = budget
    params["proxy"] = proxy.url
    ydl = _policy_ydl(params, policy, limits)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            with ydl:
                info = _extract(ydl, target)
                # a search or a feed may fetch its pages while its entries are taken
                outcome["parsed"] = _entries(info, target, origin, allow_file, category, limits)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = exc

    # the reads are bounded by the deadline; the thread bounds what they cannot reach (a
    # server that drips its headers): past the deadline the caller gets a timeout at once
    with budget, proxy:
        worker = threading.Thread(target=work, name="prevad-add-expand", daemon=True)
        worker.start()
        worker.join(limits.timeout_s + 1.0)
    if budget.refusals:  # a hop the proxy refused (yt-dlp only saw a 403)
        refused = budget.refusals[0]
        raise ExpansionError(refused.reason, str(refused))
    if worker.is_alive() or isinstance(budget.aborted, DeadlineExceeded):
        # (the proxy's connections were closed at the deadline: what yt-dlp read was cut)
        raise ExpansionError("timeout", f"expanding {target} ran over its "
                             f"{limits.timeout_s:g} s limit")
    if ydl.refused is not None:
        raise ydl.refused
    exc = outcome.get("error")
    if exc is None:
        return outcome["parsed"]
    if isinstance(exc, ExpansionError):
        raise exc
    if isinstance(exc, DownloadError | ExtractorError | OSError | ValueError | KeyError
                  | TypeError | AttributeError | LookupError) or type(exc).__module__.split(
                      ".")[0] in ("urllib3", "requests", "http", "yt_dlp"):
        raise _classify(exc) from None
    raise exc


def _extract(ydl: Any, target: str) -> dict[str, Any]:
    """``extract_info`` without processing, following top-level redirects (``url`` results)."""
    info = ydl.extract_info(target, download=False, process=False)
    for _ in range(5):
        if not isinstance(info, dict) or info.get("_type") not in ("url", "url_transparent"):
            break
        info = ydl.extract_info(info["url"], download=False, process=False,
                                ie_key=info.get("ie_key"))
    if not isinstance(info, dict):
        raise ExpansionError("no_result", f"yt-dlp found nothing at {target}")
    return info


def _entries(info: dict[str, Any], target: str, origin: dict[str, Any], allow_file: bool,
             category: str | None, limits: ExpandLimits) -> Parsed:
    out = Parsed()
    if info.get("_type") not in ("playlist", "multi_video") and "entries" not in info:
        try:
            url, norm = check_url(target if "://" in target else _entry_url(info), allow_file)
        except RowRejected as exc:
            out.rejected.append(Rejection(exc.reason, "result", str(exc)))
            return out
        if info.get("live_status") == "is_live" or info.get("is_live"):
            out.rejected.append(Rejection("live", "result", f"{url} is a live stream: use "
                                          "`prevad curate record`"))
            return out
        out.entries.append(Entry(url, norm, title=_title(info), category=category,
                                 duration_s=_number(info.get("duration")),
                                 origin={**origin, "extractor": info.get("extractor_key")
                                         or info.get("ie_key"), "entry_id": info.get("id")}))
        return out
    playlist = {"playlist": info.get("webpage_url") or info.get("original_url") or target,
                "playlist_id": info.get("id"), "playlist_title": _title(info),
                "extractor": info.get("extractor_key") or info.get("ie_key")}
    for pos, entry in enumerate(itertools.islice(info.get("entries") or [], limits.max_entries),
                                start=1):
        where = f"entry {pos}"
        if not isinstance(entry, dict):
            out.rejected.append(Rejection("bad_entry", where, "not an entry"))
            continue
        try:
            url, norm = check_url(_entry_url(entry), allow_file)
        except RowRejected as exc:
            out.rejected.append(Rejection(exc.reason, where, str(exc)))
            continue
        if entry.get("live_status") == "is_live" or entry.get("is_live"):
            out.rejected.append(Rejection("live", where, f"{url} is a live stream: use "
                                          "`prevad curate record`"))
            continue
        try:
            title = parse_text(_title(entry), "title")
        except RowRejected:
            title = _title(entry)[:MAX_TEXT_CHARS]
        out.entries.append(Entry(url, norm, title=title, category=category,
                                 duration_s=_number(entry.get("duration")),
                                 origin={**origin, **playlist, "position": pos,
                                         "entry_id": entry.get("id")}))
    return out


def _title(info: dict[str, Any]) -> str | None:
    t = info.get("title")
    return t if isinstance(t, str) and t.strip() else None


def _classify(exc: BaseException) -> ExpansionError:
    text = str(exc)
    m = re.search(r"HTTP Error (\d{3})", text)
    if m:
        return ExpansionError(f"http_{m.group(1)}", text)
    if "Unsupported URL" in text:
        return ExpansionError("unsupported_url", text)
    if "timed out" in text.lower():
        return ExpansionError("timeout", text)
    return ExpansionError("extract_error", text)


