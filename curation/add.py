"""``prevad curate add STORE SOURCE...``: register your own videos as ``candidates``.

SOURCE is a URL list, a CSV/JSONL table, a keyword file per category, a yt-dlp search query or a
URL that yt-dlp expands (a playlist, a channel, a feed, a page with videos); see
:mod:`curation.sources`. Every entry becomes one ``candidates`` row that ``acquire`` downloads:

- ``candidate_id`` = uuid5 of the normalised URL and the span, so the same URL and span is the
  same candidate whatever file, search or playlist it came from: adding it again counts it as
  *already there* and writes nothing (the row first registered is kept);
- ``source`` = ``--source`` (default ``web``), ``source_video_id`` = the normalised URL (so
  ``acquire``'s video id, uuid5 of source + id + span, is stable too); ``url`` as given;
  ``title`` = title or caption; ``query`` = the category, when known;
- ``metadata_json``: ``kind`` (``video``), ``start_s``/``end_s``, ``caption``, ``category``,
  ``origin`` (what input it came from: ``url_list``/``table`` with file and line,
  ``keywords``/``search`` with the query, ``playlist`` with the playlist URL, title and the
  entry's position, the extractor) and the ``stage_version`` of the add.

How it fits the stage contract: each SOURCE is one work item of the stage ``add``, with id
``add:<sha256>`` (of the file's bytes, or of the query / URL text). Its new candidates and its
``stage_results`` row (ok with the counts, or failed with the reason when an expansion failed)
are written in one atomic commit (:func:`prevad.stage.commit_results`); the run's summary is
saved under ``stage_runs/add/<run>.json``. Unlike a work-list stage, adding a source again
always runs (a search or a playlist changes over time); each run is a new attempt of the item,
and finds the candidates already stored.

Bad input (a missing or binary file, a table without a ``url`` column, an unknown search prefix,
a bad option) is one error before anything is written. Rows that cannot be used are rejected one
by one and counted by reason with their line numbers (``bad_url``, ``bad_span``,
``duplicate_in_source``, ``unknown_category``, ``field_too_long``, ``bad_json``, ``bad_csv``,
``bad_encoding``, ``line_too_long``, ``live``).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from curation.common import CurationError, clean_errors, print_summary
from curation.netpolicy import NetworkPolicy, UrlRefused
from curation.options import (
    command_from,
    json_option,
    opt,
    settings_from_cli,
    settings_parameters,
    store_argument,
)
from curation.sources import (
    MAX_KEPT_REJECTIONS,
    Entry,
    ExpandLimits,
    ExpansionError,
    Parsed,
    Rejection,
    Source,
    classify,
    expand,
    parse_category,
    parse_file,
    search_keys,
)
from prevad import queries as store_queries
from prevad.io import atomic_write_json
from prevad.records import SourceCandidate, make_id
from prevad.stage import Failed, Ok, Stage, commit_results, stage_version
from prevad.store import Store

STAGE = "add"
CODE_VERSION = 1
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(slots=True)
class AddSettings:
    """Options of ``prevad curate add`` (those that change the rows go into the version).

    Every field is an option of ``prevad curate add`` (:mod:`curation.options`), checked when
    the settings are built.

    Raises:
        CurationError: a value breaks its rule (the message names the option).
    """

    source: str = opt("web", "candidates.source of the rows (letters, digits, '_.-').")
    category: str | None = opt(None, "Category of entries that name none (a taxonomy name).")
    expand: bool = opt(False, "Also expand the URLs listed in files with yt-dlp (playlists in "
                       "a list); URLs given as SOURCE are always expanded.")
    search_prefix: str = opt("ytsearch", "yt-dlp search key for keyword files.")
    max_per_query: int = opt(20, "Results per search query (keyword files; also the cap of an "
                             "explicit <key>all: query).")
    max_per_playlist: int = opt(1000, "Entries per playlist, channel, feed or page.")
    allow_private_network: bool = opt(False, "Let expansions fetch from loopback, private and "
                                      "link-local addresses (refused by default, "
                                      "docs/DECISIONS.md D4).")
    allow_addresses: tuple[str, ...] = opt((), "A non-public network allowed anyway: CIDR or "
                                           "address, optional :port (repeatable).",
                                           "--allow-address", factory=tuple)
    allow_file: bool = opt(False, "Accept file: URLs (regular files only).")
    timeout_s: float = opt(120.0, "Wall-clock limit of one expansion (s).", "--timeout")
    socket_timeout_s: float = opt(20.0, "Drop a silent connection after this (s).",
                                  "--socket-timeout")
    max_page_bytes: int = opt(20 * 1024 * 1024, "Most bytes read from one page or feed.")
    max_file_bytes: int = opt(1 << 30, "Largest input file read (bytes).")

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not _SOURCE_NAME.match(self.source):
            raise CurationError(f"--source {self.source!r}: expected a short name of letters, "
                                "digits, '_', '.' or '-' (at most 64)")
        for name in ("max_per_query", "max_per_playlist", "max_page_bytes", "max_file_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CurationError(f"--{name.replace('_', '-')} {v!r}: expected an integer "
                                    ">= 1")
        for name in ("timeout_s", "socket_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v <= 0:
                raise CurationError(f"--{name.removesuffix('_s').replace('_', '-')} {v!r}: "
                                    "expected a finite number of seconds > 0")
        for name in ("expand", "allow_private_network", "allow_file"):
            if not isinstance(getattr(self, name), bool):
                raise CurationError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: "
                                    "expected true or false")
        if isinstance(self.allow_addresses, str):
            self.allow_addresses = (self.allow_addresses,)
        if not isinstance(self.allow_addresses, list | tuple) or \
                not all(isinstance(a, str) for a in self.allow_addresses):
            raise CurationError(f"--allow-address {self.allow_addresses!r}: expected networks "
                                "(CIDR or address, optional :port)")
        self.allow_addresses = tuple(self.allow_addresses)
        try:
            self.policy()
        except (UrlRefused, ValueError) as exc:
            raise CurationError(f"--allow-address: {exc}") from None
        if self.category is not None:
            try:
                self.category = parse_category(self.category)
            except CurationError as exc:
                raise CurationError(f"--category: {exc}") from None

    def policy(self) -> NetworkPolicy:
        """The network policy of the expansions (checked on every request and redirect hop:
        yt-dlp fetches through a :class:`curation.fetch.PolicyProxy`)."""
        return NetworkPolicy(allow_private_network=self.allow_private_network,
                             allow_file=self.allow_file, allow_addresses=self.allow_addresses)

    def limits(self, per_query: bool = False) -> ExpandLimits:
        """Bounds of one expansion (a search takes at most ``max_per_query`` results)."""
        return ExpandLimits(self.max_per_query if per_query else self.max_per_playlist,
                            self.timeout_s, self.socket_timeout_s, self.max_page_bytes)

    def version(self) -> str:
        """The stage version: what changes the rows written."""
        return stage_version(STAGE, {
            "source": self.source, "category": self.category, "expand": self.expand,
            "search_prefix": self.search_prefix, "max_per_query": self.max_per_query,
            "max_per_playlist": self.max_per_playlist, "file": self.allow_file,
        }, code_version=CODE_VERSION)


@dataclass(slots=True)
class SourceReport:
    """What one SOURCE gave."""

    source: str
    kind: str
    item_id: str
    entries: int = 0
    new: int = 0
    already: int = 0
    rejected: Counter = field(default_factory=Counter)
    rejections: list[Rejection] = field(default_factory=list)
    queries: int = 0
    error: str | None = None
    error_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the ``stage_results`` output of the item)."""
        return {"source": self.source, "kind": self.kind, "entries": self.entries,
                "new": self.new, "already": self.already, "rejected": dict(self.rejected),
                "rejections": [r.to_dict() for r in self.rejections[:MAX_KEPT_REJECTIONS]],
                "queries": self.queries, "error": self.error, "error_reason": self.error_reason}


@dataclass(slots=True)
class AddSummary:
    """What one ``add`` run did."""

    stage_version: str
    run_id: str
    sources: list[SourceReport] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> dict[str, Any]:
        """Counts over all sources."""
        rejected: Counter = Counter()
        for s in self.sources:
            rejected.update(s.rejected)
        return {"sources": len(self.sources), "entries": sum(s.entries for s in self.sources),
                "new": sum(s.new for s in self.sources),
                "already": sum(s.already for s in self.sources), "rejected": dict(rejected),
                "failed": sum(1 for s in self.sources if s.error)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (saved under ``stage_runs/add/``)."""
        return {"stage": STAGE, "stage_version": self.stage_version, "run_id": self.run_id,
                **self.totals(), "seconds": self.seconds,
                "per_source": [s.to_dict() for s in self.sources]}


def candidate_for(entry: Entry, settings: AddSettings, version: str) -> SourceCandidate:
    """The ``candidates`` row of an entry (see the module docstring)."""
    meta = {"kind": "video", "start_s": entry.start_s, "end_s": entry.end_s,
            "caption": entry.caption, "category": entry.category, "origin": entry.origin,
            "stage_version": version, "added_by": STAGE}
    if entry.end_s is not None:
        duration = entry.end_s - (entry.start_s or 0.0)
    else:  # open span: the whole video's length when known, else unknown
        duration = entry.duration_s if entry.start_s is None else None
    return SourceCandidate(
        candidate_id=candidate_id(entry.norm_url, entry.start_s, entry.end_s),
        source=settings.source, source_video_id=entry.norm_url, url=entry.url,
        title=entry.title or entry.caption, query=entry.category, duration_s=duration,
        metadata_json=json.dumps(meta))


def candidate_id(norm_url: str, start_s: float | None, end_s: float | None) -> str:
    """uuid5 of the normalised URL and the span: the identity of a candidate."""
    return make_id("add", norm_url, start_s, end_s)


def _stored_ids(store: Store, ids: list[str]) -> set[str]:
    import pyarrow as pa

    if not ids:
        return set()
    keys = pa.table({"candidate_id": pa.array(ids, pa.string())})
    return set(store.lookup("candidates", keys, ["candidate_id"])
               .column("candidate_id").to_pylist())


def _next_attempt(store: Store, item_id: str, version: str) -> int:
    rows = store_queries.item_attempts(store, item_id, STAGE, version).to_pylist()
    return 1 + max((r["attempt"] for r in rows), default=0)


def _gather(src: Source, parsed: Parsed, settings: AddSettings,
            report: SourceReport, progress: Any) -> list[Entry]:
    """All entries of a source: its own rows, expanded when asked, plus its searches."""
    entries: list[Entry] = []
    report.queries = len(parsed.searches)
    policy = settings.policy()
    for entry in parsed.entries:
        if settings.expand and src.kind in ("url_list", "table") and "://" in entry.url \
                and not entry.url.startswith("file:"):
            got = expand(entry.url, {**entry.origin, "expanded": True}, policy,
                         settings.limits(), settings.allow_file, entry.category)
            entries += [_with_row(e, entry) for e in got.entries]
            report.rejections += got.rejected
        else:
            entries.append(entry)
    for query, origin in parsed.searches:
        if progress is not None:
            progress(f"search {query}")
        got = expand(query, origin, policy, settings.limits(per_query=True), settings.allow_file,
                     origin.get("category"))
        entries += got.entries
        report.rejections += got.rejected
    return entries


def _with_row(expanded: Entry, row: Entry) -> Entry:
    """An entry expanded from a list row keeps the row's caption, category and span."""
    from dataclasses import replace

    return replace(expanded, caption=row.caption, category=row.category or expanded.category,
                   start_s=row.start_s, end_s=row.end_s, title=expanded.title or row.title)


def add(store: Store, sources: list[str], settings: AddSettings | None = None, *,
        progress: bool = False, run_id: str | None = None) -> AddSummary:
    """Register the entries of ``sources`` as candidates (see the module docstring).

    Args:
        store: the store.
        sources: SOURCE texts (files, URLs, search queries).
        settings: options.
        progress: print what is being expanded (command line).
        run_id: run id (generated if None).

    Returns:
        The run's :class:`AddSummary` (also saved under ``stage_runs/add/``).

    Raises:
        CurationError: a bad option or SOURCE (nothing is written).
    """
    settings = settings or AddSettings()
    if not sources:
        raise CurationError("give at least one SOURCE (a file, a URL or a search query)")
    t0 = time.perf_counter()
    version = settings.version()
    summary = AddSummary(version, run_id or uuid.uuid4().hex[:12])
    keys = search_keys()
    if settings.search_prefix not in keys:
        raise CurationError(f"--search-prefix {settings.search_prefix!r} is not a search prefix "
                            f"yt-dlp knows (known: {', '.join(sorted(keys))})")
    # every SOURCE is classified and every file parsed before anything is fetched or written
    classified = [classify(s, settings.max_file_bytes, settings.allow_file) for s in sources]
    parsed = [parse_file(src, settings.max_file_bytes, settings.allow_file, settings.category,
                         settings.search_prefix, settings.max_per_query)
              if src.path is not None else None for src in classified]
    say = typer.echo if progress else None
    stage = Stage(STAGE, version, "candidates", lambda rows: [], batch_size=1)
    seen: set[str] = set()  # ids registered by earlier sources of this run
    for src, got in zip(classified, parsed, strict=True):
        report = SourceReport(src.text, src.kind, src.item_id)
        summary.sources.append(report)
        if say is not None:
            say(f"add: {src.kind} {src.text}")
        try:
            if got is None:  # a URL or a search given on the command line
                per_query = src.kind == "search"
                got = expand(src.text, {"kind": src.kind, "source": src.text, **(
                    {"query": src.text} if per_query else {})}, settings.policy(),
                    settings.limits(per_query), settings.allow_file, settings.category)
            report.rejections += got.rejected
            entries = _gather(src, got, settings, report, say)
        except ExpansionError as exc:
            report.error, report.error_reason = str(exc), exc.reason
            _commit(store, stage, src, report, [], summary.run_id)
            continue
        rows = _dedup(entries, report, seen, settings, version)
        stored = _stored_ids(store, [r.candidate_id for r in rows])
        new = [r for r in rows if r.candidate_id not in stored]
        report.already += len(rows) - len(new)
        report.new = len(new)
        seen.update(r.candidate_id for r in rows)
        _commit(store, stage, src, report, new, summary.run_id)
    summary.seconds = time.perf_counter() - t0
    atomic_write_json(store.root / "stage_runs" / STAGE / f"{summary.run_id}.json",
                      summary.to_dict())
    return summary


def _dedup(entries: list[Entry], report: SourceReport, seen: set[str], settings: AddSettings,
           version: str) -> list[SourceCandidate]:
    """Candidates of the entries; repeats inside the source are rejected, ids registered by an
    earlier source of the run count as already there."""
    rows: list[SourceCandidate] = []
    first: dict[str, str] = {}
    for e in entries:
        cid = candidate_id(e.norm_url, e.start_s, e.end_s)
        where = str(e.origin.get("where") or (f"line {e.origin['line']}" if "line" in e.origin
                                               else f"entry {e.origin.get('position', '?')}"))
        if cid in first:
            report.rejections.append(Rejection("duplicate_in_source", where,
                                               f"same URL and span as {first[cid]}"))
            continue
        first[cid] = where
        report.entries += 1
        if cid in seen:
            report.already += 1
            continue
        rows.append(candidate_for(e, settings, version))
    report.rejected = Counter(r.reason for r in report.rejections)
    return rows


def _commit(store: Store, stage: Stage, src: Source, report: SourceReport,
            rows: list[SourceCandidate], run_id: str) -> None:
    report.rejected = Counter(r.reason for r in report.rejections)
    item = {"candidate_id": src.item_id,
            "next_attempt": _next_attempt(store, src.item_id, stage.version)}
    result = Failed(f"{report.error_reason}: {report.error}", output=report.to_dict()) \
        if report.error else Ok({"candidates": rows} if rows else {}, output=report.to_dict())
    commit_results(store, stage, [item], [result], run_id)


def format_summary(summary: AddSummary, show: int = 5) -> list[str]:
    """Lines printed by the command: totals, then per source its counts and the first
    rejected lines by reason."""
    t = summary.totals()
    rej = ", ".join(f"{k}={v}" for k, v in sorted(t["rejected"].items())) or "none"
    lines = [f"add {summary.stage_version} run {summary.run_id}: {t['sources']} source(s), "
             f"{t['entries']} entries: {t['new']} new, {t['already']} already there; "
             f"rejected {sum(t['rejected'].values())} ({rej}); failed {t['failed']}"]
    for s in summary.sources:
        if s.error:
            lines.append(f"  {s.kind} {s.source}: failed ({s.error_reason}): {s.error}")
            continue
        extra = f", {s.queries} queries" if s.queries else ""
        lines.append(f"  {s.kind} {s.source}: {s.entries} entries{extra}: {s.new} new, "
                     f"{s.already} already there")
        by_reason: dict[str, list[Rejection]] = {}
        for r in s.rejections:
            by_reason.setdefault(r.reason, []).append(r)
        for reason, items in sorted(by_reason.items()):
            where = ", ".join(r.where for r in items[:show]) + (
                f", ... ({len(items) - show} more)" if len(items) > show else "")
            lines.append(f"    rejected {reason} x{len(items)}: {where} ({items[0].detail})")
    return lines


def register(app: typer.Typer) -> None:
    """Add ``prevad curate add`` (one option per :class:`AddSettings` field)."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        store_argument(),
        inspect.Parameter("sources", kw, annotation=list[str], default=typer.Argument(
            ..., help="URL list (.txt), table (.csv/.tsv/.jsonl: url, caption, category, start, "
            "end, title), keyword file (.json: category -> keywords), search query "
            "(ytsearch10:words) or a URL to expand (playlist, channel, feed, page)")),
        *settings_parameters(AddSettings),
        inspect.Parameter("show", kw, annotation=int, default=typer.Option(
            5, help="rejected lines listed per reason")),
        json_option(),
    ]

    @clean_errors
    def body(root: Path, sources: list[str], show: int, as_json: bool, **values: Any) -> None:
        settings = settings_from_cli(AddSettings, values)  # checked before anything is read
        summary = add(Store(root), list(sources), settings, progress=not as_json)
        print_summary(summary, as_json=as_json, lines=format_summary(summary, max(0, show)))

    app.command("add")(command_from(
        body, params, "Register videos from URL lists, tables, keyword files, searches and "
        "playlists as candidates (idempotent: the same URL and span is the same candidate).",
        "add_cmd"))
