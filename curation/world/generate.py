"""Writing a world: render every planned file (a process pool), the corpus, truth and test split.

Layout of a world folder::

    world.json                  what was asked (seed, sizes, categories) and what came out
    corpus.csv                  id, source, url, caption, start, end (URLs under base_url)
    truth.parquet, shots.parquet    the truth (curation.world.truth)
    media/                      the server root
      videos/w000000.mp4 ...    corpus files (exact duplicates are byte copies)
      hls/s000000/index.m3u8    the HLS stream (and its source.mp4)
    test/videos/t000000.mp4     the held-out test split (never in the corpus)
    test/annotations.json       its annotations in the benchmarks' JSON format (lagovad eval)
    test/definition.json        its anomaly definition (classes and descriptions)

Files are written atomically; ``world.json`` is written last. Generating into a folder that
already holds the same world (same parameters) only writes the files that are missing.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curation.world import grammar
from curation.world.media import (
    Encoding,
    SceneLook,
    black_frame,
    encode,
    event_overlay,
    scene_frame,
    title_card,
)
from curation.world.plan import PROFILES, Piece, VideoPlan, expand_categories, plan_world
from curation.world.truth import plan_truth, write_truth
from prevad import taxonomy
from prevad.errors import PrevadError
from prevad.io import atomic_write_bytes, atomic_write_json, atomic_write_text

WORLD_FILE = "world.json"
#: Written first: the parameters of a world being generated (a crashed run resumes from it).
PARAMS_FILE = ".world-params.json"
CORPUS_FILE = "corpus.csv"
TEST_ANNOTATIONS = "test/annotations.json"
TEST_DEFINITION = "test/definition.json"
DEFAULT_BASE_URL = "http://127.0.0.1:8765"
#: Bumped when the same parameters would give different files.
WORLD_VERSION = 1
NORMAL_PROMPT = ("Normal behavior, views or surveillance content captured by camera that not "
                 "involve any unexpected or unusual events.")


class WorldError(PrevadError):
    """A world cannot be generated as asked (bad size, folder, category)."""


@dataclass(slots=True)
class WorldSummary:
    """What :func:`generate_world` wrote."""

    folder: str
    n_videos: int
    test_videos: int
    written: int = 0
    reused: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


# ---------------------------------------------------------------------------------- frames
def _piece_frame(piece: Piece, t: int, width: int, height: int) -> np.ndarray:
    if piece.kind == "scene":
        return scene_frame(SceneLook(piece.seed, piece.hue), t, width, height)
    if piece.kind == "title":
        return title_card(piece.seed, width, height)
    return black_frame(width, height)


def render(plan: VideoPlan) -> Iterator[np.ndarray]:
    """The RGB frames of the original timeline that ``plan``'s file shows, in order."""
    w, h = plan.width, plan.height
    pieces = plan.pieces
    ev = plan.event
    for f in plan.frames:
        live = [p for p in pieces if p.start <= f < p.end]
        if len(live) == 1:
            img = _piece_frame(live[0], f - live[0].start, w, h)
        else:  # a dissolve: the later piece fades in over the earlier one
            a, b = live[0], live[-1]
            alpha = (f - b.start + 0.5) / max(b.dissolve, 1)
            img = (_piece_frame(a, f - a.start, w, h).astype(np.float32) * (1 - alpha)
                   + _piece_frame(b, f - b.start, w, h).astype(np.float32) * alpha
                   ).astype(np.uint8)
        if ev is not None and ev.drawn[0] <= f < ev.drawn[1]:
            img = img if img.flags.writeable else img.copy()  # cached cards are read-only
            a, b = ev.drawn
            event_overlay(img, ev.pattern, f - a, b - a, ev.seed)
        yield img


def _write_file(root: Path, plan: VideoPlan) -> dict[str, Any]:
    """Render and write one planned file (worker process); returns its size and frame count."""
    path = root / plan.file
    if path.is_file():
        return {"world_id": plan.world_id, "bytes": path.stat().st_size, "reused": True}
    if plan.broken == "empty":
        atomic_write_bytes(path, b"")
        return {"world_id": plan.world_id, "bytes": 0, "reused": False}
    if plan.broken == "garbage":
        rng = np.random.default_rng([plan.seed, plan.index, 77])
        data = rng.integers(0, 256, size=40_000, dtype=np.uint8).tobytes()
        atomic_write_bytes(path, data)
        return {"world_id": plan.world_id, "bytes": len(data), "reused": False}
    width, height = plan.size
    target = path if plan.broken is None else path.with_name(f".{path.name}.whole.mp4")
    encode(target, render(plan), plan.fps, width, height, Encoding(crf=plan.crf, gop=plan.gop),
           times=plan.frame_times() if plan.vfr else None)
    if plan.broken == "truncated":  # the download that stopped half-way
        data = target.read_bytes()
        atomic_write_bytes(path, data[: len(data) * 45 // 100])
        target.unlink()
    return {"world_id": plan.world_id, "bytes": path.stat().st_size, "reused": False}


def _write_job(args: tuple[str, VideoPlan]) -> dict[str, Any]:
    return _write_file(Path(args[0]), args[1])


def _hls(root: Path, plan: VideoPlan) -> None:
    """Cut the stream's source file into a 1-second-segment HLS playlist (VOD)."""
    from curation.ffmpeg import ffmpeg_path

    folder = (root / plan.file).parent
    if (folder / "index.m3u8").is_file():
        return
    tmp = folder / ".index.m3u8.tmp"
    subprocess.run([str(ffmpeg_path()), "-hide_banner", "-loglevel", "error", "-y", "-i",
                    str(root / plan.file), "-c", "copy", "-f", "hls", "-hls_time", "1",
                    "-hls_list_size", "0", "-hls_playlist_type", "vod",
                    "-hls_segment_filename", str(folder / "seg%03d.ts"), str(tmp)],
                   check=True, timeout=120)
    os.replace(tmp, folder / "index.m3u8")


# ---------------------------------------------------------------------------------- files
def corpus_rows(plans: Sequence[VideoPlan], base_url: str) -> list[dict[str, Any]]:
    """The corpus CSV rows of the served corpus videos (URLs under ``base_url``)."""
    rows = []
    for p in plans:
        if p.split != "corpus":
            continue
        start, end = p.section if p.section else ("", "")
        rows.append({"id": p.world_id, "source": "world",
                     "url": f"{base_url.rstrip('/')}/{p.url_path}", "caption": p.caption,
                     "start": start, "end": end})
    return rows


def write_corpus(world: str | Path, base_url: str, out: str | Path | None = None) -> Path:
    """Write the world's corpus CSV with its URLs under ``base_url`` (a running server's).

    Args:
        world: the world folder.
        base_url: e.g. ``http://127.0.0.1:43127`` (see :class:`curation.world.serve`).
        out: the CSV to write (default: ``<world>/corpus.csv``).
    """
    world = Path(world)
    manifest = read_manifest(world)
    plans = plan_world(**manifest["plan"])
    out = Path(out) if out else world / CORPUS_FILE
    _write_csv(out, corpus_rows(plans, base_url))
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["id", "source", "url", "caption", "start", "end"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _test_split(root: Path, plans: Sequence[VideoPlan]) -> None:
    """The held-out split in the benchmarks' JSON format, and its definition."""
    entries, classes = [], []
    for p in plans:
        if p.split != "test":
            continue
        row, _ = plan_truth(p)
        n = row["n_frames"]
        entries.append({
            "path": p.file, "video_path": p.file, "class_name": p.category,
            "descriptions": [p.caption] if p.event else None,
            "anomaly_span": [[a / n, b / n] for a, b in row["anomaly_frames"]],
        })
        if p.event and p.category not in classes:
            classes.append(p.category)
    classes.sort(key=taxonomy.SUB_CATEGORIES.index)
    definition = {
        "benchmark": "world", "normal": NORMAL_PROMPT, "classes": classes,
        "descriptions": {c: grammar.descriptions(c) for c in classes},
        "label_map": {}, "classification_classes": [],
    }
    atomic_write_json(root / TEST_ANNOTATIONS, entries)
    atomic_write_json(root / TEST_DEFINITION, definition)


def read_manifest(world: str | Path) -> dict[str, Any]:
    """The ``world.json`` of a world folder.

    Raises:
        WorldError: the folder holds no (complete) world.
    """
    path = Path(world) / WORLD_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WorldError(f"{world} holds no generated world (no {WORLD_FILE}); run "
                         "`prevad curate world` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorldError(f"{path} is not a world manifest: {exc}") from None


def _check_folder(out: Path, params: dict[str, Any]) -> None:
    """The folder must be new, empty, or hold this same world (then only gaps are filled)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WorldError(f"cannot write the world into {out}: {exc.strerror or exc}") from None
    marker = out / WORLD_FILE if (out / WORLD_FILE).is_file() else out / PARAMS_FILE
    if marker.is_file():  # a finished world, or one whose generation stopped half-way
        try:
            old = json.loads(marker.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorldError(f"{marker} is not a world manifest: {exc}") from None
        if old.get("plan") != params or old.get("version") != WORLD_VERSION:
            raise WorldError(f"{out} already holds another world ({old.get('plan')}); give an "
                             "empty folder or the same parameters")
    elif any(out.iterdir()):
        raise WorldError(f"{out} is not empty and holds no world; give a new or empty folder")
    atomic_write_json(out / PARAMS_FILE, {"version": WORLD_VERSION, "plan": params})


def _validate(n_videos: Any, test_videos: Any, seed: Any, profile: str, workers: Any) -> None:
    for name, value, lo in (("videos", n_videos, 1), ("test videos", test_videos, 0),
                            ("workers", workers, 1)):
        if value is None and name == "test videos":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise WorldError(f"{name}: expected an integer >= {lo}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise WorldError(f"seed: expected an integer >= 0, got {seed!r}")
    if profile not in PROFILES:
        raise WorldError(f"scale profile: expected one of {sorted(PROFILES)}, got {profile!r}")


def generate_world(out: str | Path, n_videos: int, *, seed: int = 0,
                   test_videos: int | None = None, categories: list[str] | None = None,
                   scale_profile: str = "default", base_url: str = DEFAULT_BASE_URL,
                   workers: int = 2, progress: bool = False) -> WorldSummary:
    """Generate a world of ``n_videos`` corpus videos with known truth into ``out``.

    Args:
        out: the world folder (new, empty, or holding this same world).
        n_videos: corpus videos (>= 1).
        seed: the world's seed; the same seed and sizes give the same files and truth.
        test_videos: held-out test videos (default: a fifth of ``n_videos``, 10 to 500).
        categories: anomaly sub-categories or top-level classes to draw from (default all 28).
        scale_profile: ``default`` (4-16 s of content, 15-30 fps) or ``small`` (2.5-6 s).
        base_url: where the corpus CSV says the files are (rewrite it for a running server
            with :func:`write_corpus`).
        workers: processes that render and encode (2 on this machine's two cores).
        progress: show a progress bar.

    Returns:
        What was written.

    Raises:
        WorldError: a bad size, seed, profile or folder (nothing written).
        prevad.errors.UnknownCategoryError: a category outside the taxonomy.
    """
    _validate(n_videos, test_videos, seed, scale_profile, workers)
    cats = expand_categories(categories) if categories else None
    params = {"n_videos": n_videos, "seed": seed, "test_videos": test_videos,
              "categories": categories or None, "profile": scale_profile}
    out = Path(out).resolve()
    _check_folder(out, params)
    start = time.perf_counter()
    plans = plan_world(**params)
    summary = WorldSummary(str(out), n_videos, sum(p.split == "test" for p in plans))
    exact = [p for p in plans if p.dup_kind == "exact"]
    todo = [p for p in plans if p.dup_kind != "exact"]
    results = _run_jobs(out, todo, workers, progress)
    for p in exact:  # a re-upload of the same bytes
        dest = out / p.file
        if not dest.is_file():
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(out / next(q.file for q in plans if q.world_id == p.dup_of), tmp)
            os.replace(tmp, dest)
            results.append({"world_id": p.world_id, "reused": False})
        else:
            results.append({"world_id": p.world_id, "reused": True})
    for p in plans:
        if p.split == "stream":
            _hls(out, p)
    summary.reused = sum(1 for r in results if r.get("reused"))
    summary.written = len(results) - summary.reused
    write_truth(out, plans)
    _test_split(out, plans)
    _write_csv(out / CORPUS_FILE, corpus_rows(plans, base_url))
    summary.counts = _counts(plans)
    summary.seconds = round(time.perf_counter() - start, 3)
    atomic_write_json(out / WORLD_FILE, {
        "version": WORLD_VERSION, "plan": params, "base_url": base_url,
        "categories": cats or list(taxonomy.SUB_CATEGORIES), "counts": summary.counts,
        "stream": next((p.url_path for p in plans if p.split == "stream"), None),
        "files": {"corpus": CORPUS_FILE, "truth": "truth.parquet", "shots": "shots.parquet",
                  "media_root": "media", "test_annotations": TEST_ANNOTATIONS,
                  "test_definition": TEST_DEFINITION, "test_videos": "test/videos"},
        "seconds": summary.seconds,
    })
    return summary


def _run_jobs(out: Path, plans: Sequence[VideoPlan], workers: int, progress: bool
              ) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(plans), desc="world", unit="video", disable=not progress)
    results = []
    try:
        if workers == 1:
            for p in plans:
                results.append(_write_file(out, p))
                bar.update()
        else:
            # spawn: the caller may hold threads (Prefect, torch) that fork would copy badly
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for r in pool.map(_write_job, [(str(out), p) for p in plans], chunksize=4):
                    results.append(r)
                    bar.update()
    finally:
        bar.close()
    return results


def _counts(plans: Sequence[VideoPlan]) -> dict[str, int]:
    corpus = [p for p in plans if p.split == "corpus"]
    test = [p for p in plans if p.split == "test"]
    return {
        "corpus": len(corpus), "test": len(test),
        "stream": sum(p.split == "stream" for p in plans),
        "anomalous": sum(p.caption_kind == "anomalous" for p in corpus),
        "misleading": sum(p.caption_kind == "misleading" for p in corpus),
        "normal": sum(p.caption_kind == "normal" for p in corpus),
        "compilations": sum(sum(q.kind == "scene" for q in p.pieces) > 1 for p in corpus),
        "duplicates": sum(p.dup_of is not None for p in corpus),
        "broken": sum(p.broken is not None for p in corpus),
        "vfr": sum(p.vfr for p in corpus),
        "sections": sum(p.section is not None for p in corpus),
        "no_ranges": sum(not p.ranges for p in corpus),
        "test_anomalous": sum(p.event is not None for p in test),
    }
