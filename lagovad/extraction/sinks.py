"""Where extracted features go: a folder (the authors' layout) or a prevad store."""

from __future__ import annotations

import json
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
    """Features into a prevad store; failures and successes as StageResult rows."""

    def __init__(self, store: Any, model_id: str, protocol: Protocol,
                 export_dir: Path | None = None):
        self.store = store
        self.model_id = model_id
        self.protocol = protocol
        self.export_dir = Path(export_dir) if export_dir else None
        self._done = self._stored_features()
        self._attempts: dict[str, int] = {}

    def _stored_features(self) -> set[str]:
        from prevad import queries

        rows = self.store.query(queries.FEATURES_OF_MODEL, {"model_id": self.model_id}).to_pylist()
        done = set()
        for row in rows:
            stored = (row["frame_stride"], row["frame_offset"], row["frame_size"])
            wanted = (self.protocol.stride, self.protocol.offset, self.protocol.size)
            if stored != wanted:
                raise ExtractError(
                    f"the store holds features of model {self.model_id!r} with "
                    f"stride/offset/size {stored}, not {wanted}; pass another --model-id "
                    f"to keep both"
                )
            done.add(row["video_id"])
        return done

    def _stored_attempts(self, ids: Sequence[str]) -> None:
        """Attempts already made on these videos (their next status row takes the next one)."""
        from prevad import queries

        rows = self.store.query(queries.ATTEMPTS_OF_IDS, {
            "stage": STAGE, "stage_version": self.model_id, "ids": list(ids),
        }).to_pylist()
        self._attempts.update({r["id"]: r["attempts"] for r in rows})

    def jobs(self, paths: Sequence[Path] | None) -> list[VideoJob]:
        """Jobs for local files (registered as store videos) or for all stored videos."""
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
        from prevad import queries

        jobs = []
        for row in self.store.query(queries.VIDEOS_WITH_URI).to_pylist():
            path = Path(row["uri"])
            if not path.is_absolute():
                path = Path(self.store.root) / path
            jobs.append(VideoJob(key=row["video_id"], path=path, name=path.stem, video=row))
        if not jobs:
            raise ExtractError(f"the store at {self.store.root} has no video with a uri")
        return jobs

    def is_done(self, job: VideoJob) -> bool:
        """Whether the store has features of this model for the video."""
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
        self._done.add(job.key)
        if self.export_dir is not None:
            save_npy(self.export_dir / f"{job.name}.npy", features)

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


def failure_dict(job: VideoJob, exc: BaseException) -> dict[str, str]:
    """The failure record of a job (file name, error type and message)."""
    return {"key": job.key, "path": str(job.path), "error": type(exc).__name__,
            "reason": str(exc)}


def save_npy(path: Path, array: np.ndarray) -> None:
    """Atomic np.save (temp file in the same folder, fsync, os.replace)."""
    from prevad.io import atomic_write

    with atomic_write(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))


