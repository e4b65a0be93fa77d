"""A generated curation world: videos with known truth to run and measure the curation chain on.

Given N, :func:`generate_world` writes (seeded, deterministic; see ``docs/WORLD.md``):

- a video-text corpus (``corpus.csv``: ``id``, ``source``, ``url``, ``caption``, optional
  ``start``/``end``) whose captions come from a grammar over the 28 sub-categories and everyday
  scenes (about 30% anomalous, some misleading);
- small H.264 videos with planted truth: hard cuts and dissolves, compilations of 2-4 shots,
  title cards, black frames, exact and near duplicates, variable frame rate files, broken files,
  and one visual anomaly event per anomalous video, a distinct pattern per top-level class;
- the truth table (``truth.parquet`` + ``shots.parquet``, :mod:`curation.world.truth`);
- a held-out test split in the benchmarks' annotation format (``lagovad eval --benchmark world
  --annotations <world>/test/annotations.json --definition <world>/test/definition.json``).

:class:`~curation.world.serve.WorldServer` serves it on 127.0.0.1 (byte ranges on and off, one
HLS stream). Command line: ``prevad curate world OUT --videos N``.

Modules: :mod:`~curation.world.grammar` (captions), :mod:`~curation.world.plan` (timelines),
:mod:`~curation.world.media` (frames, events, encoding), :mod:`~curation.world.generate`
(files), :mod:`~curation.world.truth` (truth table, truth of any span), and
:mod:`~curation.world.serve`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from curation.world.generate import (
    CORPUS_FILE,
    DEFAULT_BASE_URL,
    TEST_ANNOTATIONS,
    TEST_DEFINITION,
    WORLD_FILE,
    WorldError,
    WorldSummary,
    generate_world,
    read_manifest,
    write_corpus,
)
from curation.world.plan import PROFILES
from curation.world.truth import (
    SpanTruth,
    load_shots,
    load_truth,
    span_truth,
    world_id_of,
)

__all__ = [
    "CORPUS_FILE", "DEFAULT_BASE_URL", "TEST_ANNOTATIONS", "TEST_DEFINITION", "WORLD_FILE",
    "SpanTruth", "WorldError", "WorldSummary", "generate_world", "load_shots", "load_truth",
    "read_manifest", "register", "span_truth", "world_id_of", "write_corpus",
]


def register(app: typer.Typer) -> None:
    """Add ``prevad curate world``."""
    from prevad.cli_errors import exit_on
    from prevad.errors import PrevadError

    @app.command("world")
    @exit_on(PrevadError, OSError)
    def world_cmd(
        out: Path = typer.Argument(..., help="folder to write the world into (new or empty)"),
        videos: int = typer.Option(..., "--videos", help="corpus videos to generate (>= 1)"),
        seed: int = typer.Option(0, help="the world's seed (same seed, same world)"),
        test_videos: int = typer.Option(
            None, help="held-out test videos (default: a fifth of --videos, 10 to 500)"),
        categories: list[str] = typer.Option(
            None, "--categories", help="anomaly sub-categories or top-level classes to use "
            "(repeat or comma-separate; default all 28)"),
        scale_profile: str = typer.Option(
            "default", help=f"video lengths: {' | '.join(PROFILES)} (small: 2.5-6 s, for "
            "10,000 videos and more)"),
        base_url: str = typer.Option(DEFAULT_BASE_URL, help="URL prefix written in the "
                                     "corpus (the server's; see curation.world.serve)"),
        workers: int = typer.Option(2, help="rendering processes"),
    ) -> None:
        """Generate a curation world: corpus, videos with planted truth, truth table, test split."""
        cats = [c.strip() for item in categories or [] for c in item.split(",") if c.strip()]
        summary = generate_world(out, videos, seed=seed, test_videos=test_videos,
                                 categories=cats or None, scale_profile=scale_profile,
                                 base_url=base_url, workers=workers, progress=True)
        counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
        typer.echo(f"world in {summary.folder}: {summary.written} files written, "
                   f"{summary.reused} reused in {summary.seconds:.1f} s ({counts})")
        typer.echo(f"serve it: python -m curation.world.serve {summary.folder}")
