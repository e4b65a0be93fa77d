"""Stage ``record``: record live streams (HLS or anything ffmpeg reads) into the store as videos.

Normal surveillance and traffic footage comes from live streams. A stream is registered as a
``candidates`` row (``metadata_json.kind == "stream"``, see :func:`add_streams`); the stage then
records ``duration_s`` seconds of it with ffmpeg (the binary of :mod:`curation.ffmpeg`) into
``videos/<source>/<video_id>.mp4`` and probes the result with PyAV like :mod:`curation.acquire`.

- Streams are copied without re-encoding (``-c copy``) unless ``reencode=True``.
- A stream that yields no frame (zero-length, ended, unreachable) fails with ffmpeg's own words.
- A recording much shorter than asked for is kept but flagged in the output (``short``): a stream
  that ends early is still footage.
- The video id is ``video_id_for(source, url[#session], 0, duration)``: recording the same stream
  again needs a new ``session`` tag (e.g. the date), which makes a new candidate.
- Candidates that are not streams are rejected (``not_a_stream``): they belong to ``acquire``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from curation.common import CurationError, ProbeError, clean_errors, print_summary, probe_video
from curation.ffmpeg import ffmpeg_path
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

STAGE = "record"
CODE_VERSION = 1
PARTIAL_DIR = "videos/.partial"
STREAM_SCHEMES = ("http", "https", "rtmp", "rtsp", "srt", "udp", "tcp")


@dataclass(slots=True)
class RecordSettings:
    """Recording settings (all but the timeouts go into the stage version)."""

    reencode: bool = False
    io_timeout_s: float = 15.0  # ffmpeg gives up on a silent connection after this
    grace_s: float = 30.0  # extra wall time allowed beyond the recording length
    short_fraction: float = 0.9  # below this fraction of the asked length: flagged "short"
    allow_file: bool = False
    max_attempts: int = 3

    def version(self) -> str:
        """Stage version."""
        return stage_version(STAGE, {"reencode": self.reencode, "file": self.allow_file},
                             code_version=CODE_VERSION)


def stream_candidate(url: str, duration_s: float, source: str = "stream",
                     session: str | None = None) -> SourceCandidate:
    """A candidates row for recording ``duration_s`` seconds of the stream at ``url``.

    Raises:
        CurationError: empty url or a duration that is not > 0.
    """
    if not url:
        raise CurationError("stream url must not be empty")
    if not duration_s or duration_s <= 0:
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


@dataclass(slots=True)
class Recorder:
    """The stage's ``process``: one stream at a time."""

    store: Store
    settings: RecordSettings

    def __call__(self, rows: list[dict[str, Any]]) -> list[ItemResult]:
        """Record each stream of the batch."""
        return [self.one(r) for r in rows]

    def one(self, row: dict[str, Any]) -> ItemResult:
        """Record one stream candidate."""
        meta = json.loads(row["metadata_json"]) if row.get("metadata_json") else {}
        if meta.get("kind") != "stream":
            return Rejected("not_a_stream", output={"url": row.get("url")})
        url, length = row.get("url"), float(meta.get("record_s") or 0)
        if not url or length <= 0:
            return Rejected("bad_stream_candidate", output={"url": url, "record_s": length})
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        allowed = (*STREAM_SCHEMES, "file") if self.settings.allow_file else STREAM_SCHEMES
        if scheme not in allowed:
            return Rejected("scheme_not_allowed", output={
                "url": url, "error": f"URL scheme {scheme!r} is not allowed ({list(allowed)})"})
        vid = video_id_for(row["source"], row["source_video_id"], 0.0, length)
        stored = store_queries.video_by_id(self.store, vid).to_pylist()
        if stored and stored[0]["uri"] and (self.store.root / stored[0]["uri"]).is_file():
            return Ok(output={"video_id": vid, "uri": stored[0]["uri"], "reused": True})
        tmp = self.store.root / PARTIAL_DIR / f"{vid}.mp4"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        try:
            err = self._ffmpeg(url, length, tmp)
            try:
                info = probe_video(tmp)
            except ProbeError as exc:
                why = "zero-length stream" if not tmp.is_file() or tmp.stat().st_size == 0 \
                    else "unreadable recording"
                return Failed(f"{why}: {exc}; ffmpeg: {err or 'no message'}",
                              output={"url": url})
            rel = f"videos/{_safe(row['source'])}/{vid}.mp4"
            (self.store.root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, self.store.root / rel)
        finally:
            tmp.unlink(missing_ok=True)
        video = Video(vid, row["source"], row["source_video_id"], 0.0, length, uri=rel,
                      duration_s=info.duration_s, fps=info.fps, n_frames=info.n_frames,
                      width=info.width, height=info.height)
        short = info.duration_s < self.settings.short_fraction * length
        return Ok({"videos": [video]}, output={"video_id": vid, "uri": rel, "url": url,
                                               "asked_s": length, "short": short,
                                               **info.to_dict()})

    def _ffmpeg(self, url: str, length: float, out: Path) -> str:
        """Run ffmpeg; return the tail of its error output ('' when it succeeded)."""
        cmd = [str(ffmpeg_path()), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        if url.startswith(("http://", "https://")):
            cmd += ["-rw_timeout", str(int(self.settings.io_timeout_s * 1e6))]
        cmd += ["-i", url, "-t", f"{length:.3f}", "-map", "0:v:0", "-map", "0:a:0?"]
        cmd += (["-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac"]
                if self.settings.reencode else ["-c", "copy"])
        cmd += ["-movflags", "+faststart", "-f", "mp4", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=length + self.settings.grace_s)
        except subprocess.TimeoutExpired:
            return f"ffmpeg did not finish within {length + self.settings.grace_s:.0f} s"
        return "" if proc.returncode == 0 else proc.stderr.strip()[-1000:]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "stream"


def make_stage(store: Store, settings: RecordSettings | None = None) -> Stage:
    """The record stage over ``candidates`` (stream candidates only)."""
    settings = settings or RecordSettings()
    return Stage(STAGE, settings.version(), "candidates", Recorder(store, settings),
                 batch_size=1, max_attempts=settings.max_attempts)


def record(store: Store, settings: RecordSettings | None = None, *, limit: int | None = None,
           progress: bool = False, run_id: str | None = None) -> StageSummary:
    """Run the record stage over the candidates work list (see :func:`run_stage`)."""
    return run_stage(store, make_stage(store, settings), shard_size=4, limit=limit,
                     progress=progress, run_id=run_id)


def register(app: typer.Typer) -> None:
    """Add ``prevad curate record``."""

    @app.command("record")
    @clean_errors
    def record_cmd(
        root: Path = typer.Argument(..., help="the store"),
        url: list[str] = typer.Option([], "--url", help="stream URL to register (repeatable)"),
        duration: float = typer.Option(60.0, help="seconds to record per stream"),
        source: str = typer.Option("stream", help="source name of the registered streams"),
        session: str | None = typer.Option(None, help="tag of this recording session (record "
                                           "the same stream again under a new tag)"),
        reencode: bool = typer.Option(False, help="re-encode to H.264 instead of copying"),
        timeout: float = typer.Option(15.0, help="give up on a silent stream after (s)"),
        limit: int | None = typer.Option(None, help="at most this many streams"),
    ) -> None:
        """Register stream URLs (optional) and record every pending stream into the store."""
        store = Store(root)
        add_streams(store, list(url), duration, source, session)
        settings = RecordSettings(reencode=reencode, io_timeout_s=timeout)
        print_summary(record(store, settings, limit=limit, progress=True))
