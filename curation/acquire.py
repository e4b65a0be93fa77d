"""Stage ``acquire``: download candidates into the store as videos, within bounds and the
network policy.

Per candidate (input table ``candidates``):

1. The candidate needs a URL (``no_url``; ``url_template`` fills one from source and id); stream
   candidates (``metadata_json.kind == "stream"``) belong to ``record`` (``stream``). The URL must
   pass the network policy (docs/DECISIONS.md, D4; :mod:`curation.netpolicy`): ``http``/``https``
   (``file`` only with ``allow_file`` and only for regular files), and a host whose addresses are
   all public unless ``allow_private_network`` — refused items are rejected with the policy's
   reason (``private_address``, ``scheme_not_allowed``, ``file_not_regular``, ...). The same check
   runs on every redirect, every playlist and every segment fetched for the item.
2. The video id is :func:`prevad.records.video_id_for` of source, source video id and span: a video
   already stored (row and file) is reused without a download.
3. Fetching (:mod:`curation.fetch`, one :class:`~curation.fetch.Budget` per item):

   - the URL is requested once by our own client. A media body (``video/*``, ``audio/*``, binary)
     is saved directly — what yt-dlp's generic extractor would do, without its second request;
   - a section (``start_s``/``end_s``) of a server that honours byte ranges is read by ffmpeg
     over HTTP; a server that ignores them (or where ffmpeg fails) gets the whole file
     downloaded and cut here, with the reason in the output (``section.fallback``);
   - anything else (a page, an HLS/DASH manifest, a site) goes to yt-dlp (one reused
     ``YoutubeDL`` per worker thread, format ``format_selector()``), through the policy proxy:
     playlists are rejected (``playlist``), live streams too (``live_stream``: they belong to
     ``record``); HTTP formats are saved by our client, HLS and merged formats by ffmpeg, other
     protocols by yt-dlp's own downloader.
4. Bounds: ``max_bytes`` (``too_large``, rejected), ``max_duration_s`` (``too_long``, rejected,
   before the download when the length is known), ``timeout_s`` for the whole item (``timeout``,
   failed, not retried within the run), ``socket_timeout_s`` per connection. Transient errors
   (HTTP 5xx/408/429, resets, socket timeouts) are retried with exponential backoff; HTTP 4xx and
   unsupported URLs are rejected at once with the server's words.
5. The file is checked with :func:`curation.common.probe_video` (truncated or undecodable:
   failed, file deleted). A file taller than ``max_height`` is transcoded down (H.264, aspect
   kept) whatever its source; a section not yet cut is cut (re-encoded when ``precise_cuts``).
6. The file is moved to ``videos/<source>/<video_id>.<ext>`` and its ``videos`` row written.

Items run ``concurrency`` at a time; a per-host pace and bandwidth (``min_interval_s``,
``rate_limit``) is shared by all of them.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import socket
import stat
import string
import threading
import time
import urllib.parse
import urllib.request
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import typer

from curation.common import CurationError, ProbeError, probe_video
from curation.fetch import (
    Budget,
    DeadlineExceeded,
    FetchError,
    HostLimiter,
    HttpClient,
    PolicyProxy,
    Response,
    TooLarge,
    YtdlpLog,
    cookie_header,
    load_cookies,
)
from curation.ffmpeg import (
    NETWORK_PROTOCOLS,
    FfmpegFailed,
    cut_args,
    encode_args,
    ffmpeg_dir,
    mp4_output,
    run_ffmpeg,
    tls_args,
)
from curation.media_options import (
    FetchSettings,
    ItemPool,
    check_bool,
    check_number,
    opt,
    stage_command,
)
from curation.netpolicy import UrlRefused
from prevad.errors import ValidationError
from prevad.records import SourceCandidate, Video, make_id, video_id_for
from prevad.stage import (
    Failed,
    ItemResult,
    Ok,
    Rejected,
    Stage,
    StageSummary,
    pid_alive,
    run_stage,
    stage_version,
)
from prevad.store import Store

STAGE = "acquire"
CODE_VERSION = 2
PARTIAL_DIR = "videos/.partial"
_HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")
_TRANSIENT_TEXT = re.compile(
    r"timed out|timeout|connection reset|connection aborted|remote end closed|incomplete ?read|"
    r"temporarily unavailable|broken pipe|connection refused|did not get any data|"
    r"end of file|server returned 5\d\d",
    re.IGNORECASE,
)
_MEDIA_EXT = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".ts", ".flv", ".3gp", ".mpg",
              ".mpeg", ".ogv", ".wmv")
_CTYPE_EXT = {"video/webm": ".webm", "video/mp2t": ".ts", "video/x-matroska": ".mkv",
              "video/quicktime": ".mov", "video/x-flv": ".flv", "video/ogg": ".ogv"}
#: yt-dlp options the stage sets itself: ``extra`` may not change them (they keep downloads in
#: the policy proxy, the work folder and the stage's bounds).
RESERVED_YTDLP_OPTIONS = frozenset((
    "proxy", "geo_verification_proxy", "outtmpl", "paths", "enable_file_urls", "ffmpeg_location",
    "external_downloader", "external_downloader_args", "downloader", "exec", "exec_cmd",
    "postprocessors", "cookiefile", "cookiesfrombrowser", "logger", "progress_hooks",
    "postprocessor_hooks", "download_ranges", "source_address", "nocheckcertificate",
    "load_info_filename", "batchfile", "cachedir", "format", "max_filesize", "socket_timeout",
    "http_headers", "noplaylist", "extract_flat", "usenetrc", "netrc_cmd", "plugin_dirs",
))


@dataclass(slots=True)
class AcquireSettings(FetchSettings):
    """Download settings; :meth:`version` holds every one that changes results.

    Raises:
        ValidationError: any value breaks its rule (see :class:`FetchSettings` and below).
    """

    max_height: int = opt(480, "Highest video height; taller files are transcoded down.")
    format: str | None = opt(None, "yt-dlp format selector (default: mp4 at most --max-height).")
    precise_cuts: bool = opt(True, "Re-encode at section cuts (exact spans); else cut at "
                             "keyframes.")
    allow_file: bool = opt(False, "Also accept file: URLs (regular files only).")
    schemes: tuple[str, ...] = opt(None, "Network URL schemes accepted (repeatable).",
                                   "--scheme", factory=lambda: ("http", "https"))
    extra: dict[str, Any] = opt(None, "More yt-dlp options.", factory=dict)
    url_template: str | None = opt(None, "URL of candidates without one, e.g. "
                                   "http://host/{source}/{source_video_id}.mp4.")

    def __post_init__(self) -> None:
        FetchSettings.__post_init__(self)
        check_number(self, "max_height", integer=True, minimum=0)
        check_bool(self, "precise_cuts")
        check_bool(self, "allow_file")
        if isinstance(self.schemes, str):
            self.schemes = (self.schemes,)
        if not isinstance(self.schemes, list | tuple) or not self.schemes or \
                not set(self.schemes) <= {"http", "https"}:
            raise ValidationError(f"--scheme (schemes) must be http and/or https (file: URLs "
                                  f"need --allow-file), got {self.schemes!r}")
        self.schemes = tuple(self.schemes)
        self._check_format()
        self._check_extra()
        self._check_template()

    def _check_format(self) -> None:
        if self.format is None:
            return
        if not isinstance(self.format, str) or not self.format.strip():
            raise ValidationError(f"--format (format) must be a yt-dlp format selector, got "
                                  f"{self.format!r}")
        import yt_dlp

        try:
            with yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True}) as ydl:
                ydl.build_format_selector(self.format)
        except (SyntaxError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValidationError(f"--format (format) {self.format!r} is not a valid yt-dlp "
                                  f"format selector: {first}") from None

    def _check_extra(self) -> None:
        if not isinstance(self.extra, dict):
            raise ValidationError(f"--extra (extra) must be a JSON object of yt-dlp options, "
                                  f"got {self.extra!r}")
        reserved = sorted(set(self.extra) & RESERVED_YTDLP_OPTIONS)
        if reserved:
            raise ValidationError(f"--extra (extra): yt-dlp option(s) {reserved} are set by the "
                                  "stage itself (use its own options: --proxy, --cookies, "
                                  "--format, --max-bytes, --socket-timeout, --user-agent)")
        try:
            json.dumps(self.extra)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"--extra (extra) must be JSON-able: {exc}") from None
        if self.extra:  # yt-dlp checks its options when built: fail here, not per item
            import yt_dlp

            try:
                yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True, **self.extra}).close()
            except Exception as exc:  # noqa: BLE001 - any refusal is a bad option
                raise ValidationError(f"--extra (extra): yt-dlp refuses {self.extra}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else exc!r}"
                                      ) from None

    def _check_template(self) -> None:
        if self.url_template is None:
            return
        if not isinstance(self.url_template, str):
            raise ValidationError(f"url_template must be a string, got {self.url_template!r}")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.url_template) if f}
        except ValueError as exc:
            raise ValidationError(f"--url-template (url_template) {self.url_template!r}: "
                                  f"{exc}") from None
        if not fields <= {"source", "source_video_id"}:
            raise ValidationError(f"--url-template (url_template) may use only {{source}} and "
                                  f"{{source_video_id}}, got {sorted(fields)}")

    def url_for(self, row: dict[str, Any]) -> str | None:
        """The candidate's URL, else the :attr:`url_template` filled with its source and id."""
        if row.get("url") or not self.url_template:
            return row.get("url")
        return self.url_template.format(source=row["source"],
                                        source_video_id=row["source_video_id"])

    def format_selector(self) -> str:
        """mp4 at most ``max_height`` (video+audio merged, else a single file); when a site
        offers nothing that low, its smallest video (transcoded down afterwards)."""
        if self.format:
            return self.format
        h = self.max_height
        return (f"bv*[height<=?{h}][ext=mp4]+ba[ext=m4a]/b[height<=?{h}][ext=mp4]/"
                f"bv*[height<=?{h}]+ba/b[height<=?{h}]/wv*+ba/w")

    def allowed(self) -> tuple[str, ...]:
        """Allowed URL schemes."""
        return (*self.schemes, "file") if self.allow_file else self.schemes

    def version(self) -> str:
        """Stage version: everything that changes which file is stored or whether one is."""
        params = {"format": self.format_selector(), "max_height": self.max_height,
                  "precise_cuts": self.precise_cuts, "extra": self.extra,
                  **self.policy(self.schemes, self.allow_file).version_params(),
                  **self.version_params()}
        if self.url_template:
            params["url_template"] = self.url_template
        return stage_version(STAGE, params, code_version=CODE_VERSION)


# ------------------------------------------------------------------------------- classification
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
        if isinstance(e, FetchError):
            return ("transient" if e.transient else "permanent"), e.reason
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
class Fetched:
    """A downloaded file and how it was obtained."""

    path: Path
    details: dict[str, Any] = field(default_factory=dict)
    cut_done: bool = False  # the section is already applied


def _content_kind(ctype: str, first: bytes) -> str:
    """``media``, ``manifest`` (HLS) or ``page`` (for yt-dlp) from the type and first bytes."""
    ctype = ctype.split(";", 1)[0].strip().lower()
    head = first.lstrip()[:64]
    if "mpegurl" in ctype or head.startswith(b"#EXTM3U"):
        return "manifest"
    if ctype.startswith(("text/html", "application/xhtml", "application/xml", "text/xml",
                         "application/dash+xml")) or head[:1] == b"<":
        return "page"
    if ctype.startswith(("video/", "audio/")) or ctype in (
            "", "application/octet-stream", "binary/octet-stream", "application/mp4"):
        return "media"
    return "page"


def _ext(url: str, ctype: str) -> str:
    suffix = Path(urllib.parse.urlsplit(url).path).suffix.lower()
    if suffix in _MEDIA_EXT:
        return suffix
    return _CTYPE_EXT.get(ctype.split(";", 1)[0].strip().lower(), ".mp4")


def _span(meta: dict[str, Any]) -> tuple[float | None, float | None]:
    """(start, end) of the candidate; raises ValueError naming the bad span."""
    start, end = meta.get("start_s"), meta.get("end_s")
    for name, v in (("start_s", start), ("end_s", end)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v) or v < 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end_s {end!r} must be after start_s {start!r}")
    return (float(start) if start is not None else None,
            float(end) if end is not None else None)


@dataclass(slots=True)
class _Work:
    """One item's files in a worker's folder: ``work / "a.mp4"`` is ``<folder>/<key>.a.mp4``."""

    folder: Path
    key: str

    def __truediv__(self, name: str) -> Path:
        return self.folder / f"{self.key}.{name}"

    def files(self) -> list[Path]:
        """The item's files."""
        return [p for p in self.folder.glob(f"{glob.escape(self.key)}.*") if p.is_file()]

    def clear(self) -> None:
        """Delete the item's files."""
        for p in self.files():
            p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ the stage
class Acquirer:
    """The stage's ``process``: a batch of candidates, ``concurrency`` at a time."""

    def __init__(self, store: Store, settings: AcquireSettings) -> None:
        self.store = store
        self.s = settings
        self.policy = settings.policy(settings.schemes, settings.allow_file)
        self.client = HttpClient(
            self.policy, HostLimiter(settings.rate_limit, settings.min_interval_s),
            settings.user_agent, load_cookies(settings.cookies) if settings.cookies else None,
            settings.proxy)
        self.pool = ItemPool(settings.concurrency, STAGE)
        weakref.finalize(self, self.pool.close)
        _remove_stale_folders(store.root / PARTIAL_DIR)

    def close(self) -> None:
        """Stop the worker threads and their proxies / yt-dlp instances."""
        self.pool.close()

    def _folder(self) -> Path:
        """This thread's work folder under ``videos/.partial`` (files are named by video id,
        so a folder is not made and removed per item: directory operations are slow)."""

        def make() -> Path:
            folder = self.store.root / PARTIAL_DIR / f"{STAGE}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            folder.mkdir(parents=True)
            return folder

        return self.pool.local("folder", make, lambda f: shutil.rmtree(f, ignore_errors=True))

    def __call__(self, rows: list[dict[str, Any]]) -> list[ItemResult]:
        """Download each candidate of the batch."""
        existing = self._existing(rows)
        return self.pool.map(lambda r: self.one(r, existing), rows)

    def _existing(self, rows: list[dict[str, Any]]) -> dict[str, str]:
        """video id -> stored uri of the batch's videos that are already stored (one lookup)."""
        ids = []
        for r in rows:
            try:
                meta = _meta(r)
                start, end = _span(meta)
                ids.append(video_id_for(r["source"], r["source_video_id"], start, end))
            except ValueError:
                continue
        if not ids:
            return {}
        found = self.store.lookup("videos", pa.table({"video_id": ids}), ["video_id", "uri"])
        return {v: u for v, u in zip(found.column("video_id").to_pylist(),
                                     found.column("uri").to_pylist(), strict=True)
                if u and (self.store.root / u).is_file()}

    def one(self, row: dict[str, Any], existing: dict[str, str] | None = None) -> ItemResult:
        """Download one candidate (see the module docstring for the rules)."""
        try:
            meta = _meta(row)
        except ValueError as exc:
            return Rejected("bad_candidate", output={"error": str(exc)})
        url = self.s.url_for(row)
        if meta.get("kind") == "stream":
            return Rejected("stream", output={"url": url, "hint": "use `prevad curate record`"})
        if not url:
            return Rejected("no_url", output={"source_video_id": row["source_video_id"]})
        try:
            self.policy.check(url)
        except UrlRefused as exc:
            return Rejected(exc.reason, output={"url": url, "error": str(exc)})
        try:
            start, end = _span(meta)
        except ValueError as exc:
            return Rejected("bad_span", output={"url": url, "error": str(exc)})
        if start is not None and end is not None and end - start > self.s.max_duration_s:
            return Rejected("too_long", output={"url": url, "error": f"section of {end - start:g}"
                                                f" s is longer than --max-duration "
                                                f"{self.s.max_duration_s:g} s"})
        vid = video_id_for(row["source"], row["source_video_id"], start, end)
        if existing is None:
            existing = self._existing([row])
        if vid in existing:
            return Ok(output={"video_id": vid, "uri": existing[vid], "reused": True})
        work = _Work(self._folder(), vid)
        work.clear()
        try:
            with Budget(self.s.max_bytes, self.s.timeout_s or math.inf,
                        self.s.socket_timeout_s) as budget:
                return self._acquire(row, url, vid, start, end, work, budget)
        finally:
            work.clear()

    # ------------------------------------------------------------------ attempts and outcomes
    def _acquire(self, row: dict[str, Any], url: str, vid: str, start: float | None,
                 end: float | None, work: _Work, budget: Budget) -> ItemResult:
        attempts, errors = 0, []
        while True:
            attempts += 1
            budget.used = 0  # every attempt may read the whole allowance
            try:
                fetched = self._fetch(url, start, end, work, budget)
                return self._finish(row, url, vid, start, end, fetched, work, budget, attempts)
            except ProbeError as exc:
                return Failed(f"bad download: {exc}", output={"url": url, "attempts": attempts})
            except Exception as exc:  # noqa: BLE001 - classified below, kept as text
                error = budget.refusals[0] if budget.refusals else (budget.aborted or exc)
                kind, reason = classify(error)
                if isinstance(error, UrlRefused):
                    kind, reason = "permanent", error.reason
                errors.append(str(error))
                out = {"url": url, "reason": reason, "attempts": attempts, "errors": errors}
                if isinstance(error, DeadlineExceeded):
                    return Failed(f"timeout: {error}", output=out)
                if kind == "permanent":
                    return Rejected(reason, output={**out, "error": str(error)})
                wait = self.s.backoff_s * 2 ** (attempts - 1)
                if attempts > self.s.retries or wait >= budget.remaining():
                    return Failed(f"{reason} after {attempts} attempts: {error}", output=out)
                work.clear()  # a retry starts from nothing
                time.sleep(wait)

    def _finish(self, row: dict[str, Any], url: str, vid: str, start: float | None,
                end: float | None, fetched: Fetched, work: _Work, budget: Budget,
                attempts: int) -> ItemResult:
        """Probe, cut and scale as needed, bound the duration, move the file into the store."""
        path = fetched.path
        info = probe_video(path)
        details = dict(fetched.details)
        section = start is not None or end is not None
        needs_cut = section and not fetched.cut_done
        too_tall = info.height > self.s.max_height
        if needs_cut or too_tall:
            reencode = too_tall or self.s.precise_cuts
            out = work / "final.mp4"
            args = (cut_args(str(path), start, end) if needs_cut else ["-i", str(path)])
            args += ["-map", "0:v:0", "-map", "0:a:0?",
                     *encode_args(reencode=reencode, max_height=self.s.max_height),
                     "-fs", str(self.s.max_bytes), *mp4_output(out)]
            try:
                run_ffmpeg(args, timeout_s=budget.remaining(), on_start=budget.track)
            except FfmpegFailed as exc:
                budget.check()
                return Failed(f"could not {'cut' if needs_cut else 'scale'} the download: {exc}",
                              output={"url": url, **details})
            if needs_cut:
                details["cut_here"] = [start, end]
            if too_tall:
                details["transcoded"] = {"from": [info.width, info.height],
                                         "why": f"taller than --max-height {self.s.max_height}"}
            path, info = out, probe_video(out)
            if too_tall:
                details["transcoded"]["to"] = [info.width, info.height]
        if info.duration_s > self.s.max_duration_s:
            return Rejected("too_long", output={
                "url": url, "duration_s": info.duration_s,
                "error": f"video of {info.duration_s:g} s is longer than --max-duration "
                         f"{self.s.max_duration_s:g} s"})
        rel = f"videos/{_safe(row['source'])}/{vid}{path.suffix.lower() or '.mp4'}"
        dest = self.store.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        video = Video(vid, row["source"], row["source_video_id"], start, end, uri=rel,
                      duration_s=info.duration_s, fps=info.fps, n_frames=info.n_frames,
                      width=info.width, height=info.height)
        return Ok({"videos": [video]}, output={"video_id": vid, "uri": rel, "url": url,
                                               "attempts": attempts, **details,
                                               **info.to_dict()})

    # ------------------------------------------------------------------------------- fetching
    def _fetch(self, url: str, start: float | None, end: float | None, work: _Work,
               budget: Budget) -> Fetched:
        if urllib.parse.urlsplit(url).scheme.lower() == "file":
            return Fetched(self._copy_file(url, work, budget), {"method": "file"})
        return self._direct(url, start, end, work, budget, headers={}, ytdlp_fallback=True)

    def _direct(self, url: str, start: float | None, end: float | None, work: _Work,
                budget: Budget, headers: dict[str, str], ytdlp_fallback: bool) -> Fetched:
        """One GET: save a media body; hand pages and manifests to yt-dlp."""
        section = start is not None or end is not None
        resp = self.client.request(url, budget,
                                   headers={**headers, "Range": "bytes=0-"} if section else headers)
        with resp:
            first = resp.read()
            kind = _content_kind(resp.headers.get("Content-Type", ""), first)
            if kind != "media":
                resp.close()
                if not ytdlp_fallback:
                    raise FetchError(f"{url} is not a media file (Content-Type "
                                     f"{resp.headers.get('Content-Type')!r})", "unsupported_url")
                return self._via_ytdlp(url, start, end, work, budget)
            ext = _ext(resp.url, resp.headers.get("Content-Type", ""))
            if section and resp.status == 206:
                resp.close()
                return self._http_section(resp.url, start, end, work, budget, headers, ext)
            details: dict[str, Any] = {"method": "http"}
            if section:
                details["section"] = {
                    "method": "download_then_cut",
                    "fallback": "the server ignores byte ranges (it answered "
                                f"{resp.status} to Range: bytes=0-), so ffmpeg could not seek in "
                                "it: the whole file was downloaded and cut here"}
            return Fetched(self._save(resp, first, work / f"media{ext}", budget), details)

    def _save(self, resp: Response, first: bytes, path: Path, budget: Budget) -> Path:
        """Write a response body to ``path`` (bounded by the budget)."""
        if resp.length is not None and resp.length > self.s.max_bytes:
            raise TooLarge(f"{resp.url} is {resp.length} bytes, more than --max-bytes "
                           f"{self.s.max_bytes}")
        written = len(first)
        with open(path, "wb") as f:
            f.write(first)
            for chunk in resp.iter_body():
                f.write(chunk)
                written += len(chunk)
        expected = resp.length
        if resp.status == 206:
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            expected = int(total) if total.isdigit() else expected
        if expected is not None and written < expected:
            raise FetchError(f"{resp.url} ended after {written} of {expected} bytes",
                             "connection", transient=True)
        return path

    def _http_section(self, url: str, start: float | None, end: float | None, work: _Work,
                      budget: Budget, headers: dict[str, str], ext: str) -> Fetched:
        """ffmpeg reads only the section over HTTP (byte ranges); on failure, the whole file."""
        out = work / "section.mp4"
        proxy = self._proxy(budget)
        args = [*self._ffmpeg_input_options(url, headers), *cut_args(url, start, end),
                "-map", "0:v:0", "-map", "0:a:0?",
                *encode_args(reencode=self.s.precise_cuts, max_height=self.s.max_height),
                "-fs", str(self.s.max_bytes), *mp4_output(out)]
        try:
            run_ffmpeg(args, timeout_s=budget.remaining(), proxy_url=proxy.url,
                       protocols=NETWORK_PROTOCOLS, on_start=budget.track)
            return Fetched(out, {"method": "http_section",
                                 "section": {"method": "ffmpeg_byte_ranges"}}, cut_done=True)
        except FfmpegFailed as exc:
            budget.check()
            if budget.refusals:
                raise budget.refusals[0] from None
            why = str(exc).splitlines()[-1][:300] if str(exc) else "no message"
        out.unlink(missing_ok=True)
        resp = self.client.request(url, budget, headers=headers)
        with resp:
            path = self._save(resp, resp.read(), work / f"media{ext}", budget)
        return Fetched(path, {"method": "http", "section": {
            "method": "download_then_cut",
            "fallback": f"ffmpeg could not read the section over HTTP ({why}): the whole file "
                        "was downloaded and cut here"}})

    def _ffmpeg_input_options(self, url: str, headers: dict[str, str]) -> list[str]:
        """Per-input ffmpeg options: timeouts, user agent, cookies, other headers."""
        out = ["-rw_timeout", str(int(self.s.socket_timeout_s * 1e6)), *tls_args(url)]
        hdrs = {k: v for k, v in headers.items() if k.lower() not in ("range", "cookie")}
        agent = next((v for k, v in hdrs.items() if k.lower() == "user-agent"), None)
        agent = agent or self.s.user_agent
        if agent:
            out += ["-user_agent", agent]
        rest = {k: v for k, v in hdrs.items() if k.lower() != "user-agent"}
        cookie = next((v for k, v in headers.items() if k.lower() == "cookie"), None) or \
            cookie_header(self.client.cookies, url)
        if cookie:
            rest["Cookie"] = cookie
        if rest:
            out += ["-headers", "".join(f"{k}: {v}\r\n" for k, v in rest.items())]
        return out

    def _copy_file(self, url: str, work: _Work, budget: Budget) -> Path:
        """Copy a local regular file (checked on the opened descriptor, not the name)."""
        path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UrlRefused("file_not_regular", f"file URL {url!r} is not a regular file "
                                 "(devices, FIFOs and folders are never read)")
            if st.st_size > self.s.max_bytes:
                raise TooLarge(f"{path} is {st.st_size} bytes, more than --max-bytes "
                               f"{self.s.max_bytes}")
            dest = work / f"media{_ext(url, '')}"
            with os.fdopen(os.dup(fd), "rb") as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    budget.count(len(chunk))
                    out.write(chunk)
            return dest
        finally:
            os.close(fd)

    # ---------------------------------------------------------------------------- yt-dlp path
    def _proxy(self, budget: Budget) -> PolicyProxy:
        """This thread's policy proxy, bound to the item's budget."""
        proxy = self.pool.local("proxy", lambda: PolicyProxy(self.client), PolicyProxy.close)
        proxy.budget = budget
        return proxy

    def _ytdlp(self, proxy: PolicyProxy) -> tuple[Any, YtdlpLog]:
        def make() -> tuple[Any, YtdlpLog]:
            import yt_dlp

            log = YtdlpLog()
            _ffmpeg_on_path()
            headers = {"User-Agent": self.s.user_agent} if self.s.user_agent else {}
            opts: dict[str, Any] = {
                "format": self.s.format_selector(), "merge_output_format": "mp4",
                "quiet": True, "no_warnings": True, "noprogress": True, "logger": log,
                "noplaylist": True, "extract_flat": "in_playlist", "retries": 0,
                "fragment_retries": 0, "extractor_retries": 0, "file_access_retries": 0,
                "socket_timeout": self.s.socket_timeout_s, "proxy": proxy.url,
                "ffmpeg_location": str(ffmpeg_dir()), "enable_file_urls": False,
                "overwrites": True, "continuedl": False, "cachedir": False,
                "max_filesize": self.s.max_bytes, "http_headers": headers,
                **self.s.extra,
            }
            ydl = yt_dlp.YoutubeDL(opts)
            if self.client.cookies is not None:
                for c in self.client.cookies:
                    ydl.cookiejar.set_cookie(c)
            return ydl, log

        return self.pool.local("ytdlp", make, lambda pair: pair[0].close())

    def _via_ytdlp(self, url: str, start: float | None, end: float | None, work: _Work,
                   budget: Budget) -> Fetched:
        proxy = self._proxy(budget)
        ydl, log = self._ytdlp(proxy)
        log.errors.clear()
        info = ydl.extract_info(url, download=False)
        if not info:
            raise FetchError(f"yt-dlp found no video at {url}: {'; '.join(log.errors)}")
        if info.get("_type") in ("playlist", "multi_video"):
            n = len(list(info.get("entries") or []))
            raise FetchError(f"{url} is a playlist of {n} videos; register its entries (e.g. "
                             "`prevad curate add`)", "playlist")
        if info.get("live_status") in ("is_live", "is_upcoming"):
            raise FetchError(f"{url} is a live stream; record it with `prevad curate record`",
                             "live_stream")
        duration = info.get("duration")
        length = ((end if end is not None else duration) - (start or 0.0)) \
            if (end is not None or duration) else None
        if length is not None and length > self.s.max_duration_s:
            raise FetchError(f"video of {length:g} s is longer than --max-duration "
                             f"{self.s.max_duration_s:g} s", "too_long")
        formats = info.get("requested_formats") or [info]
        size = sum(f.get("filesize") or f.get("filesize_approx") or 0 for f in formats)
        if size > self.s.max_bytes:
            raise TooLarge(f"the chosen format is about {size} bytes, more than --max-bytes "
                           f"{self.s.max_bytes}")
        protocols = {str(f.get("protocol") or "") for f in formats}
        details = {"extractor": info.get("extractor_key"),
                   "format_id": info.get("format_id"), "protocols": sorted(protocols)}
        if len(formats) == 1 and protocols <= {"http", "https"}:
            fmt = formats[0]
            headers = dict(fmt.get("http_headers") or info.get("http_headers") or {})
            cookie = ydl.cookiejar.get_cookie_header(fmt["url"])
            if cookie:
                headers["Cookie"] = cookie
            got = self._direct(fmt["url"], start, end, work, budget, headers,
                               ytdlp_fallback=False)
            got.details = {**details, **got.details, "method": "yt-dlp+http"}
            return got
        if protocols <= {"http", "https", "m3u8", "m3u8_native"}:
            return self._ffmpeg_formats(formats, ydl, start, end, work, budget, proxy, details)
        return self._ytdlp_download(ydl, log, info, start, end, work, details)

    def _ffmpeg_formats(self, formats: list[dict[str, Any]], ydl: Any, start: float | None,
                        end: float | None, work: _Work, budget: Budget, proxy: PolicyProxy,
                        details: dict[str, Any]) -> Fetched:
        """HLS playlists and separate video/audio formats: ffmpeg through the policy proxy."""
        out = work / "stream.mp4"
        args: list[str] = []
        for f in formats:
            headers = dict(f.get("http_headers") or {})
            cookie = ydl.cookiejar.get_cookie_header(f["url"])
            if cookie:
                headers["Cookie"] = cookie
            args += [*self._ffmpeg_input_options(f["url"], headers),
                     *cut_args(f["url"], start, end)]
        video = next((i for i, f in enumerate(formats) if f.get("vcodec") != "none"), 0)
        audio = next((i for i, f in enumerate(formats)
                      if f.get("acodec") not in (None, "none") and i != video), video)
        args += ["-map", f"{video}:v:0", "-map", f"{audio}:a:0?"]
        if end is None:  # an unannounced live playlist ends here, and is then too long
            args += ["-t", f"{self.s.max_duration_s + 1:.3f}"]
        section = start is not None or end is not None
        args += [*encode_args(reencode=section and self.s.precise_cuts,
                              max_height=self.s.max_height),
                 "-fs", str(self.s.max_bytes), *mp4_output(out)]
        try:
            run_ffmpeg(args, timeout_s=budget.remaining(), proxy_url=proxy.url,
                       protocols=NETWORK_PROTOCOLS, on_start=budget.track)
        except FfmpegFailed as exc:
            budget.check()
            if budget.refusals:
                raise budget.refusals[0] from None
            kind, reason = classify(exc)
            raise FetchError(f"ffmpeg: {exc}", reason, kind == "transient") from None
        return Fetched(out, {**details, "method": "yt-dlp+ffmpeg"}, cut_done=True)

    def _ytdlp_download(self, ydl: Any, log: YtdlpLog, info: dict[str, Any], start: float | None,
                        end: float | None, work: _Work, details: dict[str, Any]) -> Fetched:
        """Other protocols (DASH segments, ...): yt-dlp's own downloader, through the proxy."""
        ydl.params["outtmpl"] = {"default": str(work / "media.%(ext)s")}
        ydl.params["paths"] = {"home": str(work.folder), "temp": str(work.folder)}
        info = dict(info)
        if start is not None or end is not None:
            info["section_start"], info["section_end"] = start or 0.0, end
            ydl.params["force_keyframes_at_cuts"] = self.s.precise_cuts
        ydl.process_info(info)
        files = [p for p in work.files() if p.name.startswith(f"{work.key}.media.")
                 and not p.name.endswith((".part", ".ytdl", ".temp"))]
        if not files:
            raise ProbeError(f"yt-dlp finished without a file ({'; '.join(log.errors)})")
        return Fetched(max(files, key=lambda p: p.stat().st_size),
                       {**details, "method": "yt-dlp"}, cut_done=True)


def _remove_stale_folders(partial: Path) -> None:
    """Work folders left by acquire runs of processes that no longer live (a crash)."""
    if not partial.is_dir():
        return
    for folder in partial.glob(f"{STAGE}-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    """The candidate's metadata_json as a dict (ValueError when it is not a JSON object)."""
    raw = row.get("metadata_json")
    if not raw:
        return {}
    meta = json.loads(raw)
    if not isinstance(meta, dict):
        raise ValueError(f"metadata_json must be a JSON object, got {raw[:80]!r}")
    return meta


_PATH_LOCK = threading.Lock()


def _ffmpeg_on_path() -> None:
    """Put an ``ffmpeg`` on PATH: yt-dlp checks PATH (not ffmpeg_location) before it downloads
    a section with ffmpeg."""
    folder = str(ffmpeg_dir())
    with _PATH_LOCK:
        parts = os.environ.get("PATH", "").split(os.pathsep)
        if folder not in parts:
            os.environ["PATH"] = os.pathsep.join([*parts, folder])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "source"


def make_stage(store: Store, settings: AcquireSettings | None = None) -> Stage:
    """The acquire stage over ``candidates`` (settings were validated when built)."""
    settings = settings or AcquireSettings()
    return Stage(STAGE, settings.version(), "candidates", Acquirer(store, settings),
                 batch_size=min(256, max(16, 8 * settings.concurrency)),
                 max_attempts=settings.max_attempts)


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
    try:
        return run_stage(store, stage, shard_size=stage.batch_size, limit=limit,
                         progress=progress, run_id=run_id)
    finally:
        stage.process.close()  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    """Add ``prevad curate acquire`` (one option per :class:`AcquireSettings` field)."""
    stage_command(app, "acquire", AcquireSettings, acquire,
                  "Download candidates (bounded, under the network policy) into the store as "
                  "videos (mp4 at most --max-height).", limit_help="at most this many candidates")
