"""The extraction pipeline: decode threads, cross-video batching, the encoder loop."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lagovad.extraction.jobs import ExtractError, ExtractSummary, Protocol, VideoJob
from lagovad.extraction.sinks import FolderSink, StoreSink, failure_dict
from lagovad.image_encoder import ImageEncoder
from lagovad.video import (
    DecodeStats,
    VideoDecodeError,
    VideoError,
    iter_sampled_frames,
)


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
        job = self.jobs[i]
        stats = DecodeStats()
        try:
            for chunk in iter_sampled_frames(job.path, stride=p.stride, offset=p.offset,
                                             size=p.size, chunk_size=self.chunk_size,
                                             stats=stats, start_s=job.start_s, end_s=job.end_s):
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
            if isinstance(sink, StoreSink):
                _export_done(sink, job, summary)
        else:
            todo.append(job)
    bar = _Progress(len(jobs), progress)
    bar.update(summary)
    try:
        if todo:
            with _encoder_threads(encoder):
                _Batcher(todo, sink, encoder, protocol, batch_size, summary,
                         bar).run(decode_workers)
    finally:
        # commits what is buffered, also when interrupted: finished clips are kept
        late_failures(summary, sink.close())
        bar.update(summary)
        bar.close()
    summary.seconds = time.perf_counter() - t0
    summary.exported = getattr(sink, "exported", 0)
    summary.commits = getattr(sink, "commits", 0)
    return summary


@contextlib.contextmanager
def _encoder_threads(encoder: ImageEncoder) -> Iterator[None]:
    """On CPU, the encoder and FFmpeg's decoding threads share the cores: give torch half of
    them while extracting. Its intra-op threads spin between operations, which on 2 cores took
    the decoder's time (tiny CLIP, 320x240 video: 0.37 instead of 0.19 CPU ms per frame)."""
    import os

    import torch

    if getattr(encoder.device, "type", str(encoder.device)) != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 2) // 2)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _export_done(sink: StoreSink, job: VideoJob, summary: ExtractSummary) -> None:
    """Export a clip extracted before; a stored array that cannot be read fails that clip."""
    try:
        sink.export_done(job)  # --export writes every requested clip, old or new
    except Exception as exc:  # noqa: BLE001 - one unreadable array fails that clip only
        summary.failed += 1
        summary.failures.append(failure_dict(job, exc))


def late_failures(summary: ExtractSummary,
                  failed: Sequence[tuple[VideoJob, BaseException]]) -> None:
    """Count clips whose buffered commit failed as failed, not extracted."""
    for job, exc in failed:
        if summary.counts.pop(job.key, None) is not None:
            summary.extracted -= 1
            summary.n_frames.pop(job.key, None)
        summary.failed += 1
        summary.failures.append(failure_dict(job, exc))


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
                      max_chunks=max(16, 4 * workers)) as decoder:  # decode-ahead
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
        late = self.sink.fail(self.jobs[i], exc)
        self.summary.failed += 1
        self.summary.failures.append(failure_dict(self.jobs[i], exc))
        late_failures(self.summary, late)

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
            late = self.sink.write(job, features, stats.n_frames)
        except Exception as exc:  # noqa: BLE001 - a write failure fails this video only
            self.dead.add(i)
            late = self.sink.fail(job, exc)
            self.summary.failed += 1
            self.summary.failures.append(failure_dict(job, exc))
            late_failures(self.summary, late)
            return
        self.summary.extracted += 1
        self.summary.counts[job.key] = len(features)
        self.summary.n_frames[job.key] = stats.n_frames
        late_failures(self.summary, late)  # clips of an earlier commit, or this one


