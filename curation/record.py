"""Stage ``record``: record live streams (HLS or DASH over HTTP(S)) into the store as videos.

Normal surveillance and traffic footage comes from live streams. A stream is registered as a
``candidates`` row (``metadata_json.kind == "stream"``, see :func:`add_streams`); the stage then
records ``duration_s`` seconds of it with ffmpeg (the binary of :mod:`curation.ffmpeg`) into
``videos/<source>/<video_id>.mp4`` and checks the result like :mod:`curation.acquire`.

- **Schemes**: ``http`` and ``https`` only (HLS, DASH, progressive live). ffmpeg's other network
  protocols are refused (``scheme_not_allowed``): RTMP/RTSP/SRT follow their own redirects and
  open data channels that the network policy cannot see, and ``tcp``/``udp``/``file`` would let a
  candidate read local files or talk to arbitrary sockets. Every request ffmpeg makes — the
  playlist, each reload, each segment, each redirect — goes through the policy proxy of
  :mod:`curation.fetch` (docs/DECISIONS.md, D4), and ffmpeg may open no protocol but HTTP(S)
  (``-protocol_whitelist``). A refused request rejects the item with the policy's reason.
- **Bounds**: the recording length itself (``-t``; candidates asking for more than
  ``max_duration_s`` are rejected ``too_long``), ``max_bytes`` (``too_large``), a wall-clock
  ``timeout_s`` (default: the length plus ``grace_s``; then ``timeout``), ``socket_timeout_s`` for a
  silent stream.
- Streams are copied without re-encoding (``-c copy``) unless ``reencode=True``; a recording
  taller than ``max_height`` is transcoded down afterwards.
- A stream that yields no frame (zero-length, ended, unreachable) fails with ffmpeg's own words.
- A recording much shorter than asked for is kept but flagged in the output (``short``): a stream
  that ends early is still footage.
- The video id is ``video_id_for(source, url[#session], 0, duration)``: recording the same stream
  again needs a new ``session`` tag (e.g. the date), which makes a new candidate.
- Candidates that are not streams are rejected (``not_a_stream``): they belong to ``acquire``.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import shutil
import weakref
from dataclasses import dataclass
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
    cookie_header,
    load_cookies,
)
from curation.ffmpeg import (
    NETWORK_PROTOCOLS,
    FfmpegFailed,
    encode_args,
    mp4_output,
    run_ffmpeg,
    scale_args,
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
    run_stage,
    stage_version,
)
from prevad.store import Store

STAGE = "record"
CODE_VERSION = 2
PARTIAL_DIR = "videos/.partial"
#: The URL schemes a stream may have (see the module docstring for why no others).
STREAM_SCHEMES = ("http", "https")


@dataclass(slots=True)
class RecordSettings(FetchSettings):
    """Recording settings; :meth:`version` holds every one that changes results.

    Raises:
        ValidationError: any value breaks its rule.
    """

    timeout_s: float | None = opt(None, "Wall-clock seconds one recording may take (default: "
                                  "its length plus --grace).", "--timeout")
    socket_timeout_s: float = opt(15.0, "Give up on a stream silent this long (s).",
                                  "--socket-timeout")
    reencode: bool = opt(False, "Re-encode to H.264 instead of copying the stream.")
    max_height: int = opt(480, "Highest video height; taller recordings are transcoded down.")
    grace_s: float = opt(30.0, "Wall time allowed beyond the recording length (s).", "--grace")
    short_fraction: float = opt(0.9, "Recordings shorter than this fraction of the asked "
                                "length are flagged short.")

    def __post_init__(self) -> None:
        FetchSettings.__post_init__(self)
        check_bool(self, "reencode")
        check_number(self, "max_height", integer=True, minimum=0)
        check_number(self, "grace_s", minimum=0, strict=False)
        check_number(self, "short_fraction", minimum=0, strict=False)
        if self.short_fraction > 1:
            raise ValidationError(f"--short-fraction (short_fraction) must be in [0, 1], got "
                                f"{self.short_fraction!r}")

    def _timeout_optional(self) -> bool:
        return True

    def version(self) -> str:
        """Stage version."""
        return stage_version(STAGE, {"reencode": self.reencode, "max_height": self.max_height,
                                     "grace_s": self.grace_s,
                                     **self.policy(STREAM_SCHEMES).version_params(),
                                     **self.version_params()},
                             code_version=CODE_VERSION)


def stream_candidate(url: str, duration_s: float, source: str = "stream",
                     session: str | None = None) -> SourceCandidate:
    """A candidates row for recording ``duration_s`` seconds of the stream at ``url``.

    Raises:
        CurationError: empty url or a duration that is not a finite number > 0.
    """
    if not url or not isinstance(url, str) or not url.strip():
        raise CurationError("stream url must not be empty")
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or \
            not math.isfinite(duration_s) or duration_s <= 0:
        raise CurationError(f"recording duration must be > 0 seconds, got {duration_s!r}")
    svid = f"{url}#{session}" if session else url
    meta = {"kind": "stream", "record_s": float(duration_s), "session": session,
            "start_s": 0.0, "end_s": float(duration_s)}
    return SourceCandidate(make_id("stream", source, svid, float(duration_s)), source, svid,
                           url=url, title=f"stream {url}", duration_s=float(duration_s),
                           metadata_json=json.dumps(meta))


def add_streams(store: Store, urls: list[str], duration_s: float, source: str = "stream",
                session: str | None = None) -> list[SourceCandidate]:
    """Register streams as candidates (identical rows are skipped by the store)."""
    cands = [stream_candidate(u, duration_s, source, session) for u in urls]
    if cands:
        store.append("candidates", cands)
    return cands


class Recorder:
    """The stage's ``process``: a batch of streams, ``concurrency`` at a time."""

    def __init__(self, store: Store, settings: RecordSettings) -> None:
        self.store = store
        self.s = settings
        self.policy = settings.policy(STREAM_SCHEMES)
        self.client = HttpClient(
            self.policy, HostLimiter(settings.rate_limit, settings.min_interval_s),
            settings.user_agent, load_cookies(settings.cookies) if settings.cookies else None,
            settings.proxy)
        self.pool = ItemPool(settings.concurrency, STAGE)
        weakref.finalize(self, self.pool.close)

    def close(self) -> None:
        """Stop the worker threads and their proxies."""
        self.pool.close()

    def __call__(self, rows: list[dict[str, Any]]) -> list[ItemResult]:
        """Record each stream of the batch."""
        return self.pool.map(self.one, rows)

    def one(self, row: dict[str, Any]) -> ItemResult:
        """Record one stream candidate."""
        try:
            meta = json.loads(row["metadata_json"]) if row.get("metadata_json") else {}
        except ValueError:
            meta = {}
        if not isinstance(meta, dict) or meta.get("kind") != "stream":
            return Rejected("not_a_stream", output={"url": row.get("url")})
        url, length = row.get("url"), meta.get("record_s")
        if not url or isinstance(length, bool) or not isinstance(length, int | float) or \
                not math.isfinite(length) or length <= 0:
            return Rejected("bad_stream_candidate", output={"url": url, "record_s": length})
        length = float(length)
        try:
            self.policy.check(url)
        except UrlRefused as exc:
            return Rejected(exc.reason, output={"url": url, "error": str(exc)})
        if length > self.s.max_duration_s:
            return Rejected("too_long", output={"url": url, "error": f"recording of {length:g} s"
                                                f" is longer than --max-duration "
                                                f"{self.s.max_duration_s:g} s"})
        vid = video_id_for(row["source"], row["source_video_id"], 0.0, length)
        stored = self.store.lookup("videos", pa.table({"video_id": [vid]}), ["uri"]).to_pylist()
        if stored and stored[0]["uri"] and (self.store.root / stored[0]["uri"]).is_file():
            return Ok(output={"video_id": vid, "uri": stored[0]["uri"], "reused": True})
        work = self.store.root / PARTIAL_DIR / f"rec-{vid}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        timeout = self.s.timeout_s if self.s.timeout_s is not None else length + self.s.grace_s
        try:
            with Budget(self.s.max_bytes, timeout, self.s.socket_timeout_s) as budget:
                return self._record(row, url, vid, length, work, budget)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _record(self, row: dict[str, Any], url: str, vid: str, length: float, work: Path,
                budget: Budget) -> ItemResult:
        tmp = work / "recording.mp4"
        err = self._ffmpeg(url, length, tmp, budget)
        problem = budget.refusals[0] if budget.refusals else budget.aborted
        if isinstance(problem, UrlRefused):
            return Rejected(problem.reason, output={"url": url, "error": str(problem)})
        if isinstance(problem, DeadlineExceeded):
            return Failed(f"timeout: {problem}", output={"url": url})
        if isinstance(problem, FetchError):
            return Rejected(problem.reason, output={"url": url, "error": str(problem)})
        try:
            info = probe_video(tmp)
        except ProbeError as exc:
            why = "zero-length stream" if not tmp.is_file() or tmp.stat().st_size == 0 \
                else "unreadable recording"
            return Failed(f"{why}: {exc}; ffmpeg: {err or 'no message'}", output={"url": url})
        details: dict[str, Any] = {}
        if info.height > self.s.max_height:
            out = work / "scaled.mp4"
            try:
                run_ffmpeg([*scale_args(tmp, self.s.max_height), *mp4_output(out)],
                           timeout_s=max(1.0, budget.remaining()) + self.s.grace_s,
                           on_start=budget.track)
            except FfmpegFailed as exc:
                return Failed(f"could not scale the recording: {exc}", output={"url": url})
            details["transcoded"] = {"from": [info.width, info.height],
                                     "why": f"taller than --max-height {self.s.max_height}"}
            tmp, info = out, probe_video(out)
            details["transcoded"]["to"] = [info.width, info.height]
        rel = f"videos/{_safe(row['source'])}/{vid}.mp4"
        (self.store.root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, self.store.root / rel)
        video = Video(vid, row["source"], row["source_video_id"], 0.0, length, uri=rel,
                      duration_s=info.duration_s, fps=info.fps, n_frames=info.n_frames,
                      width=info.width, height=info.height)
        short = info.duration_s < self.s.short_fraction * length
        return Ok({"videos": [video]}, output={"video_id": vid, "uri": rel, "url": url,
                                               "asked_s": length, "short": short, **details,
                                               **info.to_dict()})

    def _ffmpeg(self, url: str, length: float, out: Path, budget: Budget) -> str:
        """Run ffmpeg through this thread's policy proxy; the tail of its error output ('' when
        it succeeded)."""
        proxy = self.pool.local("proxy", lambda: PolicyProxy(self.client), PolicyProxy.close)
        proxy.budget = budget
        args = ["-rw_timeout", str(int(self.s.socket_timeout_s * 1e6)), *tls_args(url)]
        if self.s.user_agent:
            args += ["-user_agent", self.s.user_agent]
        cookie = cookie_header(self.client.cookies, url)
        if cookie:
            args += ["-headers", f"Cookie: {cookie}\r\n"]
        args += ["-i", url, "-t", f"{length:.3f}", "-map", "0:v:0", "-map", "0:a:0?",
                 *encode_args(reencode=self.s.reencode, max_height=self.s.max_height),
                 "-fs", str(self.s.max_bytes), *mp4_output(out)]
        try:
            run_ffmpeg(args, timeout_s=max(0.01, budget.remaining()), proxy_url=proxy.url,
                       protocols=NETWORK_PROTOCOLS, on_start=budget.track)
        except FfmpegFailed as exc:
            if budget.aborted is None and budget.remaining() <= 0:
                budget.check()  # ran into the deadline: remember it as such
            return str(exc)
        except FetchError as exc:  # the budget ran out while starting
            return str(exc)
        return ""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "stream"


def make_stage(store: Store, settings: RecordSettings | None = None) -> Stage:
    """The record stage over ``candidates`` (stream candidates only)."""
    settings = settings or RecordSettings()
    return Stage(STAGE, settings.version(), "candidates", Recorder(store, settings),
                 batch_size=max(4, 2 * settings.concurrency), max_attempts=settings.max_attempts)


def record(store: Store, settings: RecordSettings | None = None, *, limit: int | None = None,
           progress: bool = False, run_id: str | None = None) -> StageSummary:
    """Run the record stage over the candidates work list (see :func:`run_stage`)."""
    stage = make_stage(store, settings)
    try:
        return run_stage(store, stage, shard_size=stage.batch_size, limit=limit,
                         progress=progress, run_id=run_id)
    finally:
        stage.process.close()  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    """Add ``prevad curate record`` (one option per :class:`RecordSettings` field)."""
    kw = inspect.Parameter.KEYWORD_ONLY
    register_streams = [
        inspect.Parameter("url", kw, annotation=list[str], default=typer.Option(
            [], "--url", help="stream URL to register (repeatable)")),
        inspect.Parameter("duration", kw, annotation=float, default=typer.Option(
            60.0, help="seconds to record per registered stream")),
        inspect.Parameter("source", kw, annotation=str, default=typer.Option(
            "stream", help="source name of the registered streams")),
        inspect.Parameter("session", kw, annotation=str | None, default=typer.Option(
            None, help="tag of this recording session (record the same stream again under a "
            "new tag)")),
    ]

    def add(store: Store, url: list[str], duration: float, source: str,
            session: str | None) -> None:
        add_streams(store, list(url), duration, source, session)

    stage_command(app, "record", RecordSettings, record,
                  "Register stream URLs (optional) and record every pending stream into the "
                  "store (HTTP(S) HLS/DASH, bounded, under the network policy).",
                  limit_help="at most this many streams", extra=register_streams, before=add)
