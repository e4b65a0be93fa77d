"""Stage ``acquire``: download candidates with yt-dlp (as a library) into the store as videos.

Per candidate (input table ``candidates``):

1. The URL must use an allowed scheme (``http``/``https``; ``file`` only with
   ``allow_file=True``), else the item is rejected (``scheme_not_allowed``). Candidates without
   a URL are rejected (``no_url``); stream candidates (``metadata_json.kind == "stream"``) belong
   to the ``record`` stage and are rejected here (``stream``).
2. The video id is :func:`prevad.records.video_id_for` of source, source video id and span, so a
   video found by two retrieval runs is downloaded once: when its ``videos`` row and file already
   exist the item is ok without a download (idempotency through the store, not yt-dlp's archive,
   which cannot tell two sections of one video apart).
3. yt-dlp downloads the span (``download_ranges``; re-encoded at the cuts unless
   ``precise_cuts=False``) in the chosen format (default: mp4, at most 480p) into a temp folder
   under ``videos/.partial/``; retries happen here, and only for transient errors (HTTP 5xx/408/429,
   timeouts, connection resets, incomplete reads) with exponential backoff. HTTP 4xx and
   unsupported URLs are rejected at once with the original error text in the output.
4. The file is decoded completely with PyAV (duration, fps, frame count, size, codec); a truncated
   or undecodable file fails the item with the reason and is deleted.
5. The file is moved to ``videos/<source>/<video_id>.<ext>`` and its ``videos`` row (store-relative
   ``uri``) is written with the item's status.

A rate limit applies to the download speed (``rate_limit`` bytes/s) and to the pace of requests
(``min_interval_s`` between two downloads).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from curation.common import CurationError, ProbeError, clean_errors, print_summary, probe_video
from curation.ffmpeg import ffmpeg_dir
from prevad import queries as store_queries
from prevad.records import SourceCandidate, Video, make_id, video_id_for
from prevad.stage import (
    Failed,
    ItemResult,
    Ok,
    Rejected,
    Stage,
    StageSummary,
    run_stage,
    stage_version,
)
from prevad.store import Store

STAGE = "acquire"
CODE_VERSION = 1
PARTIAL_DIR = "videos/.partial"
_HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")
_TRANSIENT_TEXT = re.compile(
    r"timed out|timeout|connection reset|connection aborted|remote end closed|incomplete ?read|"
    r"temporarily unavailable|broken pipe|connection refused|did not get any data",
    re.IGNORECASE,
)


@dataclass(slots=True)
class AcquireSettings:
    """Download settings; those that change the result go into the stage version.

    The allowed schemes are part of the version: enabling ``file:`` gives a new version, so
    candidates rejected for their scheme are tried again (stored videos are reused, not
    downloaded again).
    """

    max_height: int = 480
    format: str | None = None  # a yt-dlp format selector overriding max_height
    precise_cuts: bool = True
    retries: int = 3
    backoff_s: float = 1.0
    socket_timeout_s: float = 20.0
    rate_limit: int | None = None  # bytes/s
    min_interval_s: float = 0.0
    allow_file: bool = False
    schemes: tuple[str, ...] = ("http", "https")
    max_attempts: int = 3
    extra: dict[str, Any] = field(default_factory=dict)  # more yt-dlp options
    # where candidates without a URL are fetched from, e.g. "http://host/{source}/{source_video_id}.mp4"
    # (corpora such as MSR-VTT 1k-A name videos by id only)
    url_template: str | None = None

    def url_for(self, row: dict[str, Any]) -> str | None:
        """The candidate's URL, else the :attr:`url_template` filled with its source and id."""
        if row.get("url") or not self.url_template:
            return row.get("url")
        return self.url_template.format(source=row["source"],
                                        source_video_id=row["source_video_id"])

    def format_selector(self) -> str:
        """mp4 at most ``max_height`` (video+audio merged, else a single file)."""
        if self.format:
            return self.format
        h = self.max_height
        return (f"bv*[height<=?{h}][ext=mp4]+ba[ext=m4a]/b[height<=?{h}][ext=mp4]/"
                f"bv*[height<=?{h}]+ba/b[height<=?{h}]")

    def allowed(self) -> tuple[str, ...]:
        """Allowed URL schemes."""
        return (*self.schemes, "file") if self.allow_file else self.schemes

    def version(self) -> str:
        """Stage version: what changes the downloaded file."""
        params = {"format": self.format_selector(), "precise_cuts": self.precise_cuts,
                  "schemes": sorted(self.allowed()), "extra": self.extra}
        if self.url_template:  # only when set, so versions without it stay as they were
            params["url_template"] = self.url_template
        return stage_version(STAGE, params, code_version=CODE_VERSION)


class _Log:
    """yt-dlp logger that keeps the messages (the original error text) instead of printing."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        self.errors.append(str(msg))


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (yt-dlp nests causes in exc_info and .cause)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        info = getattr(e, "exc_info", None)
        todo += [info[1] if isinstance(info, tuple) and len(info) > 1 else None,
                 getattr(e, "cause", None) if isinstance(getattr(e, "cause", None),
                                                         BaseException) else None,
                 e.__cause__, e.__context__]
    return seen


def classify(exc: BaseException) -> tuple[str, str]:
    """Classify a download error.

    Returns:
        (kind, reason): kind is ``transient`` (retry) or ``permanent`` (do not); reason is a short
        token such as ``http_404``, ``timeout``, ``unsupported_url``.
    """
    from yt_dlp.networking.exceptions import HTTPError, IncompleteRead, TransportError

    chain = _chain(exc)
    for e in chain:
        status = getattr(e, "status", None) if isinstance(e, HTTPError) else None
        if status is None:
            m = _HTTP_STATUS.search(str(e))
            status = int(m.group(1)) if m else None
        if status is not None:
            transient = status >= 500 or status in (408, 429)
            return ("transient" if transient else "permanent"), f"http_{status}"
    for e in chain:
        if isinstance(e, TimeoutError | socket.timeout) or "timed out" in str(e).lower():
            return "transient", "timeout"
        if isinstance(e, ConnectionError | IncompleteRead | TransportError):
            return "transient", "connection"
    text = " ".join(str(e) for e in chain)
    if "Unsupported URL" in text:
        return "permanent", "unsupported_url"
    if _TRANSIENT_TEXT.search(text):
        return "transient", "connection"
    return "permanent", "download_error"


@dataclass(slots=True)
class Acquirer:
    """The stage's ``process``: one candidate at a time."""

    store: Store
    settings: AcquireSettings
    _last_start: float = 0.0

    def __call__(self, rows: list[dict[str, Any]]) -> list[ItemResult]:
        """Download each candidate of the batch."""
        return [self.one(r) for r in rows]

    def one(self, row: dict[str, Any]) -> ItemResult:
        """Download one candidate (see the module docstring for the rules)."""
        meta = json.loads(row["metadata_json"]) if row.get("metadata_json") else {}
        url = self.settings.url_for(row)
        if meta.get("kind") == "stream":
            return Rejected("stream", output={"url": url, "hint": "use `prevad curate record`"})
        if not url:
            return Rejected("no_url", output={"source_video_id": row["source_video_id"]})
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in self.settings.allowed():
            return Rejected("scheme_not_allowed", output={
                "url": url, "error": f"URL scheme {scheme!r} is not allowed "
                f"(allowed: {list(self.settings.allowed())})"})
        start, end = meta.get("start_s"), meta.get("end_s")
        vid = video_id_for(row["source"], row["source_video_id"], start, end)
        existing = self._existing(vid)
        if existing is not None:
            return Ok(output={"video_id": vid, "uri": existing, "reused": True})
        work = self.store.root / PARTIAL_DIR / vid
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            return self._download(row, url, vid, start, end, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _existing(self, vid: str) -> str | None:
        rows = store_queries.video_by_id(self.store, vid).to_pylist()
        if rows and rows[0]["uri"] and (self.store.root / rows[0]["uri"]).is_file():
            return rows[0]["uri"]
        return None

    def _download(self, row: dict[str, Any], url: str, vid: str, start: float | None,
                  end: float | None, work: Path) -> ItemResult:
        attempts, errors = 0, []
        while True:
            attempts += 1
            self._pace()
            try:
                path = self._ytdlp(url, start, end, work)
                break
            except Exception as exc:  # noqa: BLE001 - classified below, kept as text
                kind, reason = classify(exc)
                errors.append(str(exc))
                out = {"url": url, "reason": reason, "attempts": attempts, "errors": errors}
                if kind == "permanent":
                    return Rejected(reason, output={**out, "error": str(exc)})
                if attempts > self.settings.retries:
                    return Failed(f"{reason} after {attempts} attempts: {exc}", output=out)
                time.sleep(self.settings.backoff_s * 2 ** (attempts - 1))
        try:
            info = probe_video(path)
        except ProbeError as exc:
            return Failed(f"bad download: {exc}", output={"url": url, "attempts": attempts})
        rel = f"videos/{_safe(row['source'])}/{vid}{path.suffix.lower() or '.mp4'}"
        dest = self.store.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        video = Video(vid, row["source"], row["source_video_id"], start, end, uri=rel,
                      duration_s=info.duration_s, fps=info.fps, n_frames=info.n_frames,
                      width=info.width, height=info.height)
        return Ok({"videos": [video]}, output={"video_id": vid, "uri": rel, "url": url,
                                               "attempts": attempts, **info.to_dict()})

    def _pace(self) -> None:
        wait = self._last_start + self.settings.min_interval_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_start = time.monotonic()

    def _ytdlp(self, url: str, start: float | None, end: float | None, work: Path) -> Path:
        import yt_dlp
        from yt_dlp.utils import download_range_func

        s = self.settings
        log = _Log()
        _ffmpeg_on_path()
        opts: dict[str, Any] = {
            "format": s.format_selector(), "merge_output_format": "mp4",
            "outtmpl": {"default": str(work / "media.%(ext)s")},
            "paths": {"home": str(work), "temp": str(work)},
            "quiet": True, "no_warnings": True, "noprogress": True, "logger": log,
            "noplaylist": True, "retries": 0, "fragment_retries": 0, "extractor_retries": 0,
            "file_access_retries": 0, "socket_timeout": s.socket_timeout_s,
            "ffmpeg_location": str(ffmpeg_dir()), "enable_file_urls": s.allow_file,
            "overwrites": True, "continuedl": False, "cachedir": False,
            **s.extra,
        }
        if s.rate_limit:
            opts["ratelimit"] = s.rate_limit
        if start is not None or end is not None:
            opts["download_ranges"] = download_range_func(
                None, [(start or 0.0, end if end is not None else float("inf"))])
            opts["force_keyframes_at_cuts"] = s.precise_cuts
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.download([url])
        files = [p for p in work.iterdir() if p.is_file() and p.name.startswith("media.")
                 and not p.name.endswith((".part", ".ytdl", ".temp"))]
        if not files:
            raise ProbeError(f"yt-dlp finished without a file ({'; '.join(log.errors)})")
        return max(files, key=lambda p: p.stat().st_size)


def _ffmpeg_on_path() -> None:
    """Put an ``ffmpeg`` on PATH: yt-dlp checks PATH (not ffmpeg_location) before it downloads
    a section with ffmpeg."""
    folder = str(ffmpeg_dir())
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if folder not in parts:
        os.environ["PATH"] = os.pathsep.join([*parts, folder])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "source"


def make_stage(store: Store, settings: AcquireSettings | None = None) -> Stage:
    """The acquire stage over ``candidates``."""
    settings = settings or AcquireSettings()
    return Stage(STAGE, settings.version(), "candidates", Acquirer(store, settings),
                 batch_size=1, max_attempts=settings.max_attempts)


def url_candidate(url: str, source: str = "url", title: str | None = None) -> SourceCandidate:
    """A candidates row for downloading the whole video at ``url``.

    Raises:
        CurationError: empty url.
    """
    if not url or not url.strip():
        raise CurationError("video url must not be empty")
    return SourceCandidate(make_id("url", source, url), source, url, url=url,
                           title=title or url)


def add_urls(store: Store, urls: list[str], source: str = "url") -> list[SourceCandidate]:
    """Register video URLs as candidates (identical rows are skipped by the store)."""
    cands = [url_candidate(u, source) for u in urls]
    if cands:
        store.append("candidates", cands)
    return cands


def acquire(store: Store, settings: AcquireSettings | None = None, *, limit: int | None = None,
            progress: bool = False, run_id: str | None = None) -> StageSummary:
    """Run the acquire stage over the store's candidates work list (see :func:`run_stage`)."""
    stage = make_stage(store, settings)
    return run_stage(store, stage, shard_size=8, limit=limit, progress=progress, run_id=run_id)


def register(app: typer.Typer) -> None:
    """Add ``prevad curate acquire``."""

    @app.command("acquire")
    @clean_errors
    def acquire_cmd(
        root: Path = typer.Argument(..., help="the store"),
        max_height: int = typer.Option(480, help="highest video height (mp4 preferred)"),
        fmt: str | None = typer.Option(None, "--format", help="yt-dlp format selector"),
        precise_cuts: bool = typer.Option(True, help="re-encode at section cuts (exact spans)"),
        retries: int = typer.Option(3, help="retries of transient errors per item and run"),
        timeout: float = typer.Option(20.0, help="socket timeout (s)"),
        rate_limit: int | None = typer.Option(None, help="download rate limit (bytes/s)"),
        min_interval: float = typer.Option(0.0, help="seconds between two downloads"),
        allow_file: bool = typer.Option(False, help="also allow file: URLs"),
        limit: int | None = typer.Option(None, help="at most this many candidates"),
    ) -> None:
        """Download candidates (time sections, mp4 <= 480p) into the store as videos."""
        settings = AcquireSettings(max_height=max_height, format=fmt, precise_cuts=precise_cuts,
                                   retries=retries, socket_timeout_s=timeout,
                                   rate_limit=rate_limit, min_interval_s=min_interval,
                                   allow_file=allow_file)
        print_summary(acquire(Store(root), settings, limit=limit, progress=True))

