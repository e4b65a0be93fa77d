"""Frame-feature extraction: videos -> CLIP image features [T, D], the authors' protocol by default.

Pipeline: decode threads (PyAV, FFmpeg's own frame threads inside) turn each video into chunks of
sampled, resized RGB frames and put them on a bounded queue; the main thread packs frames from
consecutive videos into full batches and runs the image encoder, so decoding overlaps encoding and
the model always sees full batches. A video's features are written (atomically) as soon as all its
frames are encoded.

Outputs:
- a prevad store: one atomic commit per video (`Store.write_features` with `extra_rows`): the
  .npy, its Feature row and its "ok" StageResult row land together or not at all; failures are
  StageResult rows (stage "extract_features", status "failed", reason). Only the rows it needs
  are read (named queries in `prevad.queries`), never whole tables.
- a plain folder: `<out>/<video stem>.npy` (the authors' layout), `<out>/failures.jsonl` (this
  run's failures) and `<out>/extract_protocol.json` (model and sampling, checked on rerun).
`export_dir` additionally writes `<export_dir>/<video stem>.npy` in store mode.

Resume: a video whose features exist for this model is skipped before any decoding.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lagovad.errors import LagovadError
from lagovad.image_encoder import ImageEncoder
from lagovad.video import (
    DecodeStats,
    VideoDecodeError,
    VideoError,
    iter_sampled_frames,
    probe,
    resolve_offset,
)

VIDEO_EXTENSIONS = (
    ".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts",
)
STAGE = "extract_features"
LOCAL_SOURCE = "local"
PROTOCOL_FILE = "extract_protocol.json"
FAILURES_FILE = "failures.jsonl"


class ExtractError(LagovadError):
    """Extraction cannot start as configured (bad inputs, conflicting outputs or protocol)."""


@dataclass(frozen=True)
class Protocol:
    """How frames are sampled and sized.

    Attributes:
        stride: One frame every `stride` decoded frames.
        offset: First sampled frame index (`stride // 2` = 4 by default, the authors' choice).
        size: Square side frames are resized to (no crop); must match the encoder's input size.
    """

    stride: int = 8
    offset: int = 4
    size: int = 224

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return {"frame_stride": self.stride, "frame_offset": self.offset, "frame_size": self.size}


def make_protocol(
    encoder: ImageEncoder, stride: int = 8, offset: int | None = None, size: int | None = None
) -> Protocol:
    """Protocol for `encoder`: `size` defaults to the encoder's input size and must equal it.

    Raises:
        ExtractError: If the size is not the encoder's square input size.
        ValueError: If stride/offset are invalid.
    """
    height, width = encoder.image_size
    if height != width:
        raise ExtractError(f"only square encoder inputs are supported, got {encoder.image_size}")
    size = height if size is None else size
    if size != height:
        raise ExtractError(
            f"frame size must equal the input size of {encoder.name} ({height}), got {size}"
        )
    return Protocol(stride=stride, offset=resolve_offset(stride, offset), size=size)


@dataclass
class VideoJob:
    """One video to extract.

    Attributes:
        key: Output key: the video id (store) or the file stem (folder).
        path: The video file.
        name: Stem used for exported .npy files.
        video: The store's Video record (store mode), else None.
    """

    key: str
    path: Path
    name: str
    video: Any = None


@dataclass
class ExtractSummary:
    """What a run did.

    Attributes:
        total: Videos considered.
        extracted: Videos extracted in this run.
        skipped: Videos already done (not decoded at all).
        failed: Videos that failed (see `failures`).
        decoded_videos: Videos whose decoding was started in this run.
        frames_decoded: Frames decoded in this run.
        features: Feature vectors computed in this run.
        seconds: Wall-clock time of the run.
        failures: One dict per failed video: key, path, error (type), reason.
        counts: Feature count per extracted video key.
        n_frames: Decoded frame count per extracted video key.
    """

    total: int = 0
    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    decoded_videos: int = 0
    frames_decoded: int = 0
    features: int = 0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    n_frames: dict[str, int] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        """Decoded frames per second of wall-clock time."""
        return self.frames_decoded / self.seconds if self.seconds > 0 else 0.0


# -- inputs ------------------------------------------------------------------------------------


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given (any extension) and video files under folders (recursive, sorted).

    Raises:
        ExtractError: If an input does not exist or nothing is found.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
            )
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            raise ExtractError(f"input does not exist: {p}")
    if not paths:
        raise ExtractError(f"no video files found in {[str(i) for i in inputs]} "
                           f"(extensions {VIDEO_EXTENSIONS})")
    return paths


def _unique_stems(paths: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen and seen[p.stem].resolve() != p.resolve():
            raise ExtractError(
                f"two inputs share the file stem {p.stem!r} ({seen[p.stem]} and {p}); outputs are "
                f"named after the stem, so stems must be unique"
            )
        seen[p.stem] = p


# -- sinks -------------------------------------------------------------------------------------


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
        _unique_stems(paths)
        return [VideoJob(key=p.stem, path=p, name=p.stem) for p in dict.fromkeys(paths)]

    def is_done(self, job: VideoJob) -> bool:
        """Whether the .npy exists."""
        return (self.out_dir / f"{job.name}.npy").exists()

    def write(self, job: VideoJob, features: np.ndarray, n_frames: int) -> None:
        """Atomic .npy write."""
        save_npy(self.out_dir / f"{job.name}.npy", features)

    def fail(self, job: VideoJob, exc: BaseException) -> None:
        """Remember the failure; written by `close`."""
        self.failures.append(_failure_dict(job, exc))

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

        _unique_stems(paths)
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
        info = _failure_dict(job, exc)
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


def _failure_dict(job: VideoJob, exc: BaseException) -> dict[str, str]:
    return {"key": job.key, "path": str(job.path), "error": type(exc).__name__,
            "reason": str(exc)}


def save_npy(path: Path, array: np.ndarray) -> None:
    """Atomic np.save (temp file in the same folder, fsync, os.replace)."""
    from prevad.io import atomic_write

    with atomic_write(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))


# -- the pipeline ------------------------------------------------------------------------------


@dataclass
class _Chunk:
    job: int
    indices: np.ndarray
    frames: np.ndarray


@dataclass
class _Done:
    job: int
    stats: DecodeStats


@dataclass
class _Failed:
    job: int
    error: BaseException


_END = object()


class _Decoder:
    """Decode threads: each takes whole videos from a job queue, output to one bounded queue."""

    def __init__(self, jobs: Sequence[VideoJob], protocol: Protocol, chunk_size: int,
                 workers: int, max_chunks: int):
        self.jobs = jobs
        self.protocol = protocol
        self.chunk_size = chunk_size
        self.todo: queue.Queue[int] = queue.Queue()
        for i in range(len(jobs)):
            self.todo.put(i)
        self.out: queue.Queue[Any] = queue.Queue(maxsize=max_chunks)
        self.stop = threading.Event()
        self.workers = [threading.Thread(target=self._work, daemon=True, name=f"decode-{i}")
                        for i in range(max(1, min(workers, len(jobs))))]
        self._live = len(self.workers)
        self._lock = threading.Lock()

    def __enter__(self) -> _Decoder:
        for w in self.workers:
            w.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        while any(w.is_alive() for w in self.workers):  # unblock producers waiting on a full queue
            with contextlib.suppress(queue.Empty):
                self.out.get(timeout=0.05)

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    i = self.todo.get_nowait()
                except queue.Empty:
                    return
                self._decode(i)
        finally:
            with self._lock:
                self._live -= 1
                last = self._live == 0
            if last:
                self._put(_END)

    def _decode(self, i: int) -> None:
        p = self.protocol
        stats = DecodeStats()
        try:
            for chunk in iter_sampled_frames(self.jobs[i].path, stride=p.stride, offset=p.offset,
                                             size=p.size, chunk_size=self.chunk_size,
                                             stats=stats):
                if not self._put(_Chunk(i, chunk.indices, chunk.frames)):
                    return
        except (VideoError, ValueError, OSError, MemoryError) as exc:
            self._put(_Failed(i, exc))
            return
        self._put(_Done(i, stats))

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self.out.get()
            if item is _END:
                return
            yield item


class _Progress:
    """Rich progress bar: videos done / total and frames decoded per second."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self.start = time.perf_counter()
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("videos"), TextColumn("{task.fields[rate]}"),
                            TextColumn("{task.fields[status]}"))
        self.task = self.bar.add_task("extract", total=total, rate="", status="")
        self.bar.start()

    def update(self, summary: ExtractSummary) -> None:
        if not self.enabled:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        done = summary.extracted + summary.skipped + summary.failed
        self.bar.update(
            self.task, completed=done,
            rate=f"{summary.frames_decoded / elapsed:,.0f} frames/s",
            status=f"(skipped {summary.skipped}, failed {summary.failed})",
        )

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


def run_extraction(
    jobs: Sequence[VideoJob],
    sink: FolderSink | StoreSink,
    encoder: ImageEncoder,
    protocol: Protocol,
    *,
    batch_size: int = 64,
    decode_workers: int = 2,
    progress: bool = True,
) -> ExtractSummary:
    """Extract features for `jobs` into `sink`, skipping finished videos.

    Args:
        jobs: Videos to process.
        sink: Where features and failures go.
        encoder: The image encoder.
        protocol: Frame sampling (must match the encoder's input size).
        batch_size: Frames per encoder forward (frames of consecutive videos share batches).
        decode_workers: Videos decoded concurrently.
        progress: Show a progress bar.

    Returns:
        The run summary.
    """
    if batch_size < 1:
        raise ExtractError(f"batch_size must be >= 1, got {batch_size}")
    summary = ExtractSummary(total=len(jobs))
    t0 = time.perf_counter()
    todo = []
    for job in jobs:
        if sink.is_done(job):
            summary.skipped += 1
        else:
            todo.append(job)
    bar = _Progress(len(jobs), progress)
    bar.update(summary)
    try:
        if todo:
            _Batcher(todo, sink, encoder, protocol, batch_size, summary, bar).run(decode_workers)
    finally:
        sink.close()
        bar.update(summary)
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


class _Batcher:
    """Packs decoded frames into encoder batches and scatters features back per video."""

    def __init__(self, jobs: Sequence[VideoJob], sink: FolderSink | StoreSink,
                 encoder: ImageEncoder, protocol: Protocol, batch_size: int,
                 summary: ExtractSummary, bar: _Progress):
        self.jobs, self.sink, self.encoder = jobs, sink, encoder
        self.protocol, self.batch_size = protocol, batch_size
        self.summary, self.bar = summary, bar
        self.pending: list[_Chunk] = []  # frames waiting for a batch, in arrival order
        self.n_pending = 0
        self.feats: dict[int, list[np.ndarray]] = {}
        self.unencoded: dict[int, int] = {}  # frames of a video not yet through the encoder
        self.finished: dict[int, DecodeStats] = {}  # videos fully decoded, awaiting encoding
        self.dead: set[int] = set()

    def run(self, workers: int) -> None:
        with _Decoder(self.jobs, self.protocol, self.batch_size, workers,
                      max_chunks=max(4, 2 * workers)) as decoder:
            for item in decoder:
                self._handle(item)
                while self.n_pending >= self.batch_size:
                    self._encode(self.batch_size)
                self.bar.update(self.summary)
            while self.n_pending:
                self._encode(min(self.n_pending, self.batch_size))

    def _handle(self, item: Any) -> None:
        if isinstance(item, _Chunk):
            if item.job not in self.feats:
                self.feats[item.job] = []
                self.unencoded[item.job] = 0
                self.summary.decoded_videos += 1
            self.pending.append(item)
            self.n_pending += len(item.indices)
            self.unencoded[item.job] += len(item.indices)
        elif isinstance(item, _Done):
            self.summary.decoded_videos += item.job not in self.feats
            self.feats.setdefault(item.job, [])
            self.unencoded.setdefault(item.job, 0)
            self.summary.frames_decoded += item.stats.n_frames
            self.finished[item.job] = item.stats
            self._maybe_write(item.job)
        elif isinstance(item, _Failed):
            self.summary.decoded_videos += item.job not in self.feats
            self._fail(item.job, item.error)

    def _fail(self, i: int, exc: BaseException) -> None:
        self.dead.add(i)
        self.feats.pop(i, None)
        self.unencoded.pop(i, None)
        dropped = [c for c in self.pending if c.job == i]
        self.pending = [c for c in self.pending if c.job != i]
        self.n_pending -= sum(len(c.indices) for c in dropped)
        self.sink.fail(self.jobs[i], exc)
        self.summary.failed += 1
        self.summary.failures.append(_failure_dict(self.jobs[i], exc))

    def _encode(self, n: int) -> None:
        parts: list[tuple[int, int]] = []  # (job, frames taken) in batch order
        frames: list[np.ndarray] = []
        while n > 0:
            chunk = self.pending[0]
            take = min(n, len(chunk.indices))
            frames.append(chunk.frames[:take])
            parts.append((chunk.job, take))
            if take == len(chunk.indices):
                self.pending.pop(0)
            else:
                self.pending[0] = _Chunk(chunk.job, chunk.indices[take:], chunk.frames[take:])
            n -= take
            self.n_pending -= take
        out = self.encoder.encode(np.concatenate(frames))
        self.summary.features += len(out)
        start = 0
        for job, take in parts:
            self.feats[job].append(out[start:start + take])
            self.unencoded[job] -= take
            start += take
        for job in dict.fromkeys(j for j, _ in parts):
            self._maybe_write(job)

    def _maybe_write(self, i: int) -> None:
        if i in self.dead or i not in self.finished or self.unencoded.get(i, 0):
            return
        stats = self.finished.pop(i)
        parts = self.feats.pop(i)
        job = self.jobs[i]
        try:
            if not parts:
                p = self.protocol
                raise VideoDecodeError(
                    f"{job.path} has {stats.n_frames} frames: no frame is sampled with offset "
                    f"{p.offset} (a video needs at least offset + 1 = {p.offset + 1} frames)"
                )
            features = np.concatenate(parts)
            self.sink.write(job, features, stats.n_frames)
        except Exception as exc:  # noqa: BLE001 - a write failure fails this video only
            self.dead.add(i)
            self.sink.fail(job, exc)
            self.summary.failed += 1
            self.summary.failures.append(_failure_dict(job, exc))
            return
        self.summary.extracted += 1
        self.summary.counts[job.key] = len(features)
        self.summary.n_frames[job.key] = stats.n_frames


# -- entry point -------------------------------------------------------------------------------


def extract(
    inputs: Sequence[str | Path] | None,
    encoder: ImageEncoder,
    *,
    out_dir: str | Path | None = None,
    store: Any = None,
    export_dir: str | Path | None = None,
    stride: int = 8,
    offset: int | None = None,
    size: int | None = None,
    batch_size: int = 64,
    decode_workers: int = 2,
    model_id: str | None = None,
    progress: bool = True,
) -> ExtractSummary:
    """Extract CLIP frame features for files/folders, or for every video of a store.

    Args:
        inputs: Video files and/or folders; None means the store's videos (needs `store`).
        encoder: Image encoder (see `lagovad.image_encoder.load_image_encoder`).
        out_dir: Plain-folder output (`<out>/<stem>.npy`); exclusive with `store`.
        store: A `prevad.Store` to write features into.
        export_dir: In store mode, also write `<export_dir>/<stem>.npy`.
        stride: Sample one frame every `stride` frames.
        offset: First sampled index (`stride // 2` when None).
        size: Frame side (no crop); defaults to the encoder's input size.
        batch_size: Frames per encoder forward.
        decode_workers: Videos decoded concurrently.
        model_id: Name stored with the features (default `encoder.model_id`).
        progress: Show a progress bar.

    Returns:
        The run summary; failures are in `summary.failures` and in the outputs.

    Raises:
        ExtractError: On invalid inputs or an output that holds another protocol.
    """
    if (out_dir is None) == (store is None):
        raise ExtractError("give exactly one output: out_dir (a folder) or store (a prevad store)")
    protocol = make_protocol(encoder, stride, offset, size)
    model_id = model_id or encoder.model_id
    if store is not None:
        sink: FolderSink | StoreSink = StoreSink(store, model_id, protocol, export_dir)
        paths = None if inputs is None else expand_inputs(inputs)
    else:
        if inputs is None:
            raise ExtractError("inputs are required when writing to a folder (out_dir)")
        sink = FolderSink(Path(out_dir), model_id, protocol)
        paths = expand_inputs(inputs)
    jobs = sink.jobs(paths)
    return run_extraction(jobs, sink, encoder, protocol, batch_size=batch_size,
                          decode_workers=decode_workers, progress=progress)
