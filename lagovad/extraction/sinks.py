"""Where extracted features go: a folder (the authors' layout) or a prevad store."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
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

    def write(self, job: VideoJob, features: np.ndarray, n_frames: int) -> None:
        """Atomic .npy write."""
        save_npy(self.out_dir / f"{job.name}.npy", features)

    def fail(self, job: VideoJob, exc: BaseException) -> None:
        """Remember the failure; written by `close`."""
        self.failures.append(failure_dict(job, exc))

    def close(self) -> None:
        """Write this run's failures (an empty run removes a stale file)."""
        from prevad.io import atomic_write_text

        path = self.out_dir / FAILURES_FILE
        if self.failures:
            atomic_write_text(path, "".join(json.dumps(f) + "\n" for f in self.failures))
        elif path.exists():
            path.unlink()


class StoreSink:
    """Features into a prevad store, one array per clip (D1); failures and successes as
    StageResult rows; optionally every requested clip's array also as ``<export>/<name>.npy``."""

    def __init__(self, store: Any, model_id: str, protocol: Protocol,
                 export_dir: Path | None = None):
        self.store = store
        self.model_id = model_id
        self.protocol = protocol
        self.export_dir = Path(export_dir) if export_dir else None
        if self.export_dir is not None:
            self.export_dir.mkdir(parents=True, exist_ok=True)
        self._done = self._stored_features()
        self._attempts: dict[str, int] = {}
        self.exported = 0

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

    def write(self, job: VideoJob, features: np.ndarray, n_frames: int) -> None:
        """Feature file + Feature row + "ok" StageResult in one commit, then the .npy export."""
        p = self.protocol
        row = self._stage_row(job, "ok", output={"n_frames": n_frames, "count": len(features)})
        self.store.write_features(
            job.key, self.model_id, features, frame_stride=p.stride, frame_offset=p.offset,
            frame_size=p.size, frames=n_frames, extra_rows={"stage_results": [row]},
        )
        self._attempts[job.key] = row.attempt
        self._done[job.key] = {"video_id": job.key}
        if self.export_dir is not None:
            save_npy(self.export_dir / f"{job.name}.npy", features)
            self.exported += 1

    def fail(self, job: VideoJob, exc: BaseException) -> None:
        """A "failed" StageResult with the reason."""
        info = failure_dict(job, exc)
        row = self._stage_row(job, "failed", reason=info["reason"], error=info["error"])
        self.store.append("stage_results", [row])
        self._attempts[job.key] = row.attempt

    def _stage_row(self, job: VideoJob, status: str, reason: str | None = None,
                   error: str | None = None, output: dict | None = None) -> Any:
        from prevad.records import StageResult

        return StageResult(
            id=job.key, stage=STAGE, stage_version=self.model_id, status=status, reason=reason,
            error=error, output_json=json.dumps({"path": str(job.path), **(output or {})}),
            attempt=self._attempts.get(job.key, 0) + 1,
        )

    def close(self) -> None:
        """Nothing buffered."""


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


