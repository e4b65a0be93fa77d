"""Where extracted features go: a folder (the authors' layout) or a prevad store."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lagovad.extraction.jobs import (
    FAILURES_FILE,
    LOCAL_SOURCE,
    PROTOCOL_FILE,
    STAGE,
    ExtractError,
    Protocol,
    VideoJob,
    unique_stems,
)
from lagovad.video import (
    VideoError,
    probe,
)


class FolderSink:
    """`<out>/<stem>.npy` per video, failures.jsonl, extract_protocol.json."""

    def __init__(self, out_dir: Path, model_id: str, protocol: Protocol):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.failures: list[dict[str, str]] = []
        self._check_protocol(model_id, protocol)

    def _check_protocol(self, model_id: str, protocol: Protocol) -> None:
        from prevad.io import atomic_write_json

        wanted = {"model_id": model_id, **protocol.to_dict()}
        path = self.out_dir / PROTOCOL_FILE
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != wanted:
                raise ExtractError(
                    f"{self.out_dir} holds features made with {stored}, not {wanted}; "
                    f"use another output folder"
                )
        else:
            atomic_write_json(path, wanted)

    def jobs(self, paths: Sequence[Path]) -> list[VideoJob]:
        """One job per path, keyed by stem."""
        unique_stems(paths)
        return [VideoJob(key=p.stem, path=p, name=p.stem) for p in dict.fromkeys(paths)]

    def is_done(self, job: VideoJob) -> bool:
        """Whether the .npy exists."""
        return (self.out_dir / f"{job.name}.npy").exists()

    def write(self, job: VideoJob, features: np.ndarray, n_frames: int
              ) -> list[tuple[VideoJob, BaseException]]:
        """Atomic .npy write (nothing is deferred: no late failures)."""
        save_npy(self.out_dir / f"{job.name}.npy", features)
        return []

    def fail(self, job: VideoJob, exc: BaseException) -> list[tuple[VideoJob, BaseException]]:
        """Remember the failure; written by `close`."""
        self.failures.append(failure_dict(job, exc))
        return []

    def close(self) -> list[tuple[VideoJob, BaseException]]:
        """Write this run's failures (an empty run removes a stale file)."""
        from prevad.io import atomic_write_text

        path = self.out_dir / FAILURES_FILE
        if self.failures:
            atomic_write_text(path, "".join(json.dumps(f) + "\n" for f in self.failures))
        elif path.exists():
            path.unlink()
        return []


#: Clips whose features one store commit holds at most (``--commit-every``): one commit per
#: clip cost ~12 ms on this machine (part files, key index, fsyncs; 0.1-0.17 s under load),
#: as much as decoding a short clip; 32 per commit cost ~1.4 ms a clip.
COMMIT_ITEMS = 32
#: Seconds the oldest buffered clip may wait for its commit (a slow model still commits often).
COMMIT_S = 5.0
#: Feature bytes buffered at most before a commit.
COMMIT_BYTES = 64 * 2**20


class StoreSink:
    """Features into a prevad store, one array per clip (D1); failures and successes as
    StageResult rows; optionally every requested clip's array also as ``<export>/<name>.npy``.

    Finished clips are committed together: up to ``commit_items`` clips (or ``commit_s``
    seconds, or :data:`COMMIT_BYTES`) in ONE atomic commit (their .npy files, Feature rows and
    StageResult rows), so a crash loses at most the buffered clips, which the next run
    extracts again, and never leaves a file without its rows. With ``background`` (default)
    a commit is made by a thread of its own while the next clips are decoded and encoded (the
    commit's fsyncs would stall the encoder loop); one commit is in flight at most. A commit
    that is refused (a clip's array clashes with a stored one) is retried clip by clip, so
    only that clip fails. ``write``, ``fail`` and ``close`` return the clips whose commit
    failed (clips written earlier).
    """

    def __init__(self, store: Any, model_id: str, protocol: Protocol,
                 export_dir: Path | None = None, *, commit_items: int = COMMIT_ITEMS,
                 commit_s: float = COMMIT_S, background: bool = True):
        if commit_items < 1:
            raise ExtractError(f"commit_items (--commit-every) must be >= 1, got {commit_items}")
        if not commit_s >= 0:  # also NaN
            raise ExtractError(f"commit_s must be a number >= 0, got {commit_s}")
        self.store = store
        self.model_id = model_id
        self.protocol = protocol
        self.export_dir = Path(export_dir) if export_dir else None
        if self.export_dir is not None:
            self.export_dir.mkdir(parents=True, exist_ok=True)
        self.commit_items, self.commit_s = commit_items, commit_s
        self._done = self._stored_features()
        self._attempts: dict[str, int] = {}
        self._buffer: list[_Pending] = []
        self._buffer_bytes = 0
        self._buffer_since = 0.0
        self.exported = 0
        self.commits = 0
        self.background = background
        self._writer: Any = None  # the commit thread, started on the first commit
        self._inflight: Any = None  # the commit it is making (a Future)

    def _stored_features(self) -> dict[str, dict[str, Any]]:
        from prevad import queries

        rows = self.store.query(queries.FEATURES_OF_MODEL, {"model_id": self.model_id}).to_pylist()
        done = {}
        for row in rows:
            stored = (row["frame_stride"], row["frame_offset"], row["frame_size"])
            wanted = (self.protocol.stride, self.protocol.offset, self.protocol.size)
            if stored != wanted:
                raise ExtractError(
                    f"the store holds features of model {self.model_id!r} with "
                    f"stride/offset/size {stored}, not {wanted}; pass another --model-id "
                    f"to keep both"
                )
            done[row["video_id"]] = row
        return done

    def _stored_attempts(self, ids: Sequence[str]) -> None:
        """Attempts already made on these videos (their next status row takes the next one)."""
        from prevad import queries

        rows = self.store.query(queries.ATTEMPTS_OF_IDS, {
            "stage": STAGE, "stage_version": self.model_id, "ids": list(ids),
        }).to_pylist()
        self._attempts.update({r["id"]: r["attempts"] for r in rows})

    def jobs(self, paths: Sequence[Path] | None) -> list[VideoJob]:
        """Jobs for local files (registered as store videos) or for every clip of the store."""
        if paths is None:
            jobs = self._store_jobs()
            self._stored_attempts([j.key for j in jobs])
            return jobs
        from prevad import queries
        from prevad.records import Video

        unique_stems(paths)
        unique = list(dict.fromkeys(paths))
        videos = [_local_video(Video, p) for p in unique]
        existing = set(self.store.query(
            queries.VIDEO_IDS_IN, {"ids": [v.video_id for v in videos]}
        ).column("video_id").to_pylist())
        jobs, new_videos = [], []
        for p, video in zip(unique, videos, strict=True):
            if video.video_id not in existing:
                new_videos.append(video)
                existing.add(video.video_id)
            jobs.append(VideoJob(key=video.video_id, path=p, name=p.stem, video=video))
        if new_videos:
            self.store.append("videos", new_videos)
        self._stored_attempts([j.key for j in jobs])
        return jobs

    def _store_jobs(self) -> list[VideoJob]:
        """One job per clip (``queries.CLIPS_OF_VIDEOS``): a split video's clips decode their
        parent file over their span; a video never split is one clip of itself."""
        from prevad import queries

        rows = [r for r in self.store.query(queries.CLIPS_OF_VIDEOS,
                                            {"clean_version": None}).to_pylist() if r["uri"]]
        if not rows:
            raise ExtractError(f"the store at {self.store.root} has no video with a uri")
        names = export_names(rows)
        jobs = []
        for row in rows:
            path = Path(row["uri"])
            if not path.is_absolute():
                path = Path(self.store.root) / path
            whole = row["clip_id"] == row["video_id"]
            jobs.append(VideoJob(key=row["clip_id"], path=path, name=names[row["clip_id"]],
                                 video=row, start_s=None if whole else row["start_s"],
                                 end_s=None if whole else row["end_s"]))
        return jobs

    def export_done(self, job: VideoJob) -> None:
        """Export the stored array of a clip extracted before (``--export`` writes every
        requested clip, not only those extracted in this run)."""
        if self.export_dir is None:
            return
        row = self._done[job.key]
        save_npy(self.export_dir / f"{job.name}.npy", self.store.load_features(row))
        self.exported += 1

    def is_done(self, job: VideoJob) -> bool:
        """Whether the store has features of this model for the clip."""
        return job.key in self._done

    def write(self, job: VideoJob, features: np.ndarray, n_frames: int
              ) -> list[tuple[VideoJob, BaseException]]:
        """Buffer the clip's feature file, Feature row and "ok" StageResult for the next commit
        (made now when the buffer is full or old); returns the clips whose commit failed.

        Raises:
            Exception: the array itself is refused (not finite, wrong length): this clip only.
        """
        import time

        p = self.protocol
        feat, files = self.store.feature_commit(
            job.key, self.model_id, features, frame_stride=p.stride, frame_offset=p.offset,
            frame_size=p.size, frames=n_frames)
        row = self._stage_row(job, "ok", output={"n_frames": n_frames, "count": len(features)})
        self._attempts[job.key] = row.attempt
        self._done[job.key] = {"video_id": job.key}
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.append(_Pending(job, feat, files, row, features))
        self._buffer_bytes += sum(len(b) for b in files.values())
        if (len(self._buffer) >= self.commit_items or self._buffer_bytes >= COMMIT_BYTES
                or time.monotonic() - self._buffer_since >= self.commit_s):
            return self.flush()
        return []

    def fail(self, job: VideoJob, exc: BaseException) -> list[tuple[VideoJob, BaseException]]:
        """A "failed" StageResult with the reason, committed with the buffered clips."""
        info = failure_dict(job, exc)
        row = self._stage_row(job, "failed", reason=info["reason"], error=info["error"])
        self._attempts[job.key] = row.attempt
        self._done.pop(job.key, None)
        self._buffer.append(_Pending(job, None, {}, row, None))
        if len(self._buffer) >= self.commit_items:
            return self.flush()
        return []

    def flush(self, wait: bool = False) -> list[tuple[VideoJob, BaseException]]:
        """Hand every buffered clip to the commit thread (one atomic commit, then their
        exports), after the commit in flight has landed; ``wait`` also waits for this one.

        Returns:
            The clips whose commit failed (each then stored as a failure), from the commits
            that landed during this call.
        """
        pending, self._buffer, self._buffer_bytes = self._buffer, [], 0
        failed = self._collect()  # one commit in flight at most: bounded memory, order kept
        if pending:
            if self.background:
                if self._writer is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._writer = ThreadPoolExecutor(1, thread_name_prefix="extract-commit")
                self._inflight = self._writer.submit(self._commit_or_split, pending)
            else:
                failed += self._failed(self._commit_or_split(pending))
        if wait:
            failed += self._collect()
        return failed

    def _collect(self) -> list[tuple[VideoJob, BaseException]]:
        """Wait for the commit in flight; store its failed clips as failures."""
        future, self._inflight = self._inflight, None
        return [] if future is None else self._failed(future.result())

    def _commit_or_split(self, pending: list[_Pending]) -> list[tuple[VideoJob, BaseException]]:
        """One commit of ``pending``; refused, each clip alone (only the one at fault fails).
        Runs in the commit thread (encoding and decoding go on meanwhile)."""
        try:
            self._commit(pending)
            return []
        except Exception:  # noqa: BLE001 - find the clip at fault: retried one by one
            failed = []
            for item in pending:
                try:
                    self._commit([item])
                except Exception as exc:  # noqa: BLE001 - this clip fails, the others land
                    failed.append((item.job, exc))
            return failed

    def _failed(self, failed: list[tuple[VideoJob, BaseException]]
                ) -> list[tuple[VideoJob, BaseException]]:
        """Store a "failed" StageResult for each clip whose commit failed."""
        if not failed:
            return failed
        for job, _ in failed:  # that attempt never landed; another writer's may have
            self._attempts[job.key] = 0
        self._stored_attempts([job.key for job, _ in failed])
        for job, exc in failed:
            self._done.pop(job.key, None)
            info = failure_dict(job, exc)
            row = self._stage_row(job, "failed", reason=info["reason"], error=info["error"])
            self._attempts[job.key] = row.attempt
            self.store.append("stage_results", [row])
        return failed

    def _commit(self, pending: list[_Pending]) -> None:
        files: dict[str, bytes] = {}
        for item in pending:
            files.update(item.files)
        rows: dict[str, list[Any]] = {"stage_results": [i.row for i in pending]}
        feats = [i.feature for i in pending if i.feature is not None]
        if feats:
            rows["features"] = feats
        self.store.append_many(rows, files=files)
        self.commits += 1
        if self.export_dir is not None:  # after the commit: an export never precedes its rows
            for item in pending:
                if item.array is not None:
                    save_npy(self.export_dir / f"{item.job.name}.npy", item.array)
                    self.exported += 1

    def _stage_row(self, job: VideoJob, status: str, reason: str | None = None,
                   error: str | None = None, output: dict | None = None) -> Any:
        from prevad.records import StageResult

        return StageResult(
            id=job.key, stage=STAGE, stage_version=self.model_id, status=status, reason=reason,
            error=error, output_json=json.dumps({"path": str(job.path), **(output or {})}),
            attempt=self._attempts.get(job.key, 0) + 1,
        )

    def close(self) -> list[tuple[VideoJob, BaseException]]:
        """Commit what is buffered and wait for every commit; returns the clips whose commit
        failed."""
        try:
            return self.flush(wait=True)
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None


@dataclass(slots=True)
class _Pending:
    """A finished clip awaiting its commit (``feature`` None: a failure row only)."""

    job: VideoJob
    feature: Any
    files: dict[str, bytes]
    row: Any
    array: np.ndarray | None


def _local_video(video_cls: Any, path: Path) -> Any:
    """A Video record for a local file (source "local", id from the file stem)."""
    meta: dict[str, Any] = {}
    try:
        info = probe(path)
        meta = {"fps": info.fps or None, "width": info.width, "height": info.height,
                "duration_s": info.duration_s or None, "n_frames": info.n_frames_meta or None}
    except VideoError:
        pass  # recorded as a failure when extraction tries to decode it
    return video_cls.create(LOCAL_SOURCE, path.stem, uri=str(path.resolve()), **meta)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest exported file stem (file systems allow 255 bytes; room for suffixes).
MAX_NAME = 150


def source_name(source_video_id: str | None, fallback: str) -> str:
    """A file-system-safe stem from a source id (characters outside ``[A-Za-z0-9._-]`` become
    ``_``; never empty, never hidden, at most :data:`MAX_NAME` characters)."""
    name = _UNSAFE.sub("_", source_video_id or "").strip("._")[:MAX_NAME]
    return name or fallback


def export_names(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Exported file stem per clip id: the video's ``source_video_id``, plus
    ``__clip<index>_<start>-<end>`` for a clip of a split video; names that collide (two
    sources with one id, or ids equal once made safe) get ``__<source>``, then the clip id."""
    names: dict[str, str] = {}
    for r in rows:
        base = source_name(r.get("source_video_id"), r["clip_id"])
        if r["clip_id"] != r["video_id"]:
            base += (f"__clip{int(r.get('clip_index') or 0):03d}_{float(r['start_s']):.2f}-"
                     f"{float(r['end_s']):.2f}")
        names[r["clip_id"]] = base
    for step in ("source", "id"):
        seen: dict[str, list[str]] = {}
        for cid, n in names.items():
            seen.setdefault(n, []).append(cid)
        clashes = {cid for ids in seen.values() if len(ids) > 1 for cid in ids}
        if not clashes:
            break
        by_id = {r["clip_id"]: r for r in rows}
        for cid in clashes:
            extra = (source_name(by_id[cid].get("source"), "src") if step == "source"
                     else cid)
            names[cid] = f"{names[cid]}__{extra}"
    return names


def failure_dict(job: VideoJob, exc: BaseException) -> dict[str, str]:
    """The failure record of a job (file name, error type and message)."""
    return {"key": job.key, "path": str(job.path), "error": type(exc).__name__,
            "reason": str(exc)}


def save_npy(path: Path, array: np.ndarray) -> None:
    """Atomic np.save (temp file in the same folder, fsync, os.replace)."""
    from prevad.io import atomic_write

    with atomic_write(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))


