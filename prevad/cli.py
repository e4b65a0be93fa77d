"""The data layer's commands of ``prevad``: init, import/export, query, stats, card, manifest,
compact, verify, repair.

The ``prevad`` command itself is assembled above the packages, in :mod:`toolkit.cli`: these
commands plus ``prevad curate`` (:mod:`curation.cli`) and ``prevad review``
(:mod:`prevad.review_cli`). This module imports nothing of ``curation``, ``lagovad`` or
``flows`` (docs/DECISIONS.md, D2).

Errors print one line (``error: ...``) and exit with code 2, never a traceback
(:mod:`prevad.cli_errors`, shared with ``lagovad``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from prevad.cli_errors import EXIT_BAD_INPUT, exit_on, fail, number_option
from prevad.errors import PrevadError
from prevad.store import Store

app = typer.Typer(help="PreVAD dataset layer: Parquet + DuckDB store.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
F = TypeVar("F", bound=Callable[..., Any])


class Fmt(StrEnum):
    """Output formats of `prevad query`."""

    table = "table"
    csv = "csv"
    json = "json"


def _clean_errors(fn: F) -> F:
    """Every command: a PrevadError or OSError is one `error: ...` line and exit code 2; so is a
    damaged file met outside the store's own checks (DuckDB / Arrow), with a hint."""
    inner = exit_on(PrevadError, OSError)(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return inner(*args, **kwargs)
        except (duckdb.Error, pa.ArrowException) as exc:
            fail(f"{str(exc).splitlines()[0]} (run `prevad verify`)")

    return wrapper  # type: ignore[return-value]



def _print_table(tbl: pa.Table, title: str | None = None) -> None:
    t = Table(title=title)
    for c in tbl.column_names:
        t.add_column(c)
    for r in tbl.to_pylist():
        t.add_row(*("" if r[c] is None else str(r[c]) for c in tbl.column_names))
    Console(width=200).print(t)


@app.command()
@_clean_errors
def init(
    root: Path,
    compact_threshold: int | None = number_option(
        None, integer=True, min=0,
        help="part files per partition that trigger automatic compaction (default 32; 0 = off)"),
) -> None:
    """Create a store at ROOT (idempotent; an existing store is checked, not trusted)."""
    store = Store.init(root, compact_threshold=compact_threshold)
    typer.echo(f"store ready at {store.root}")


@app.command()
@_clean_errors
def compact(root: Path, table: str | None = typer.Option(None, help="one table (default all)")
            ) -> None:
    """Merge each partition's part files into one (crash-safe; readers are not disturbed)."""
    res = Store(root).compact(table)
    for folder, (before, after) in res.partitions.items():
        typer.echo(f"{folder}: {before} -> {after} part files")
    typer.echo(f"compacted {len(res.partitions)} partitions: "
               f"{res.files_before} -> {res.files_after} part files")


@app.command()
@_clean_errors
def verify(root: Path) -> None:
    """Check ROOT: marker, journals, catalog, claims, links, Parquet files, lost part files,
    duplicate keys, rows referring to missing rows, temp files, feature files."""
    from prevad.maintenance import verify as run_verify

    report = run_verify(root)
    for p in report.problems:
        typer.echo(f"{p.kind}: {p}")
    if not report.ok:
        typer.echo(f"error: {len(report.problems)} problems in {report.root}; "
                   f"`prevad repair {root}` fixes what can be fixed", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    typer.echo(f"store ok: {report.files_checked} files checked in {report.root}")


@app.command()
@_clean_errors
def repair(
    root: Path,
    accept_loss: bool = typer.Option(
        False, "--accept-loss",
        help="record lost part files as lost and move rows that refer to missing rows into "
        "quarantine (without it such a store stays 'not ok' until the rows are restored)"),
) -> None:
    """Roll the journal forward (or set a refused one aside), rebuild the catalog, drop temp
    files and exact duplicates, quarantine unreadable files, links and malformed claims."""
    from prevad.maintenance import repair as run_repair

    report = run_repair(root, accept_loss=accept_loss)
    for a in report.actions:
        typer.echo(a)
    for p in report.remaining:
        typer.echo(f"left: {p.kind}: {p}")
    if report.remaining:
        typer.echo(f"error: {len(report.remaining)} problems remain in {report.root}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    typer.echo(f"store ok after repair ({len(report.quarantined)} files quarantined)")


@app.command("import-benchmark")
@_clean_errors
def import_benchmark(
    root: Path,
    name: str,
    file: Path,
    classes: str | None = typer.Option(
        None, "--classes",
        help="Comma-separated class list of a benchmark other than the seven known ones "
        "(ucf, xd, msad, ubnormal, dota, tad, lad), Normal included.",
    ),
) -> None:
    """Import an official benchmark FILE (test_annotations.json) as dataset NAME.

    Every entry's class must be in the benchmark's class list (known for the seven zero-shot
    benchmarks, else --classes); Normal entries must have no span, anomalies at least one.
    """
    from prevad import interop

    allowed = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    res = interop.import_benchmark(Store(root), name, file, classes=allowed)
    typer.echo(f"{name}: {res.written} rows written, {res.skipped} identical rows skipped")


@app.command("export-benchmark")
@_clean_errors
def export_benchmark(root: Path, name: str, out: Path) -> None:
    """Export dataset NAME in the official benchmark format to OUT."""
    from prevad import interop

    typer.echo(str(interop.export_benchmark(Store(root), name, out)))


@app.command("import-prevad")
@_clean_errors
def import_prevad(
    root: Path, file: Path, split: str = typer.Option("train", help="train | val | test")
) -> None:
    """Import a PreVAD training-format annotation FILE into split SPLIT."""
    from prevad import interop

    res = interop.import_prevad(Store(root), file, split)
    typer.echo(f"prevad/{split}: {res.written} rows written, {res.skipped} skipped")


@app.command("export-prevad")
@_clean_errors
def export_prevad(root: Path, out: Path, split: str = typer.Option("train")) -> None:
    """Export the PreVAD annotations of SPLIT in the training format to OUT."""
    from prevad import interop

    typer.echo(str(interop.export_prevad(Store(root), out, split)))


@app.command()
@_clean_errors
def manifest(
    root: Path,
    out: Path = typer.Argument(..., help="output .parquet or .jsonl"),
    dataset: str | None = typer.Option(None),
    split: str | None = typer.Option(None),
    model_id: str | None = typer.Option(None),
    require_features: bool = typer.Option(False, help="fail if a video has no feature"),
) -> None:
    """Write a trainer-ready manifest (video, feature location, label, category, spans)."""
    from prevad import interop

    tbl = interop.manifest(Store(root), dataset, split, model_id, require_features)
    typer.echo(f"{interop.write_manifest(tbl, out)}: {tbl.num_rows} rows")


@app.command()
@_clean_errors
def query(
    root: Path,
    sql: str,
    format: Fmt = typer.Option(Fmt.table, "--format", "-f", help="table | csv | json"),
) -> None:
    """Run a read-only SQL query over the store's views.

    Views: the tables (videos, segments, annotations, stage_results, features, scores,
    candidates) and the results (clips, final_labels, descriptions, verifications, judgements,
    stage_status). Only SELECT (and EXPLAIN [ANALYZE] SELECT) runs; files outside
    STORE/tables/ cannot be read, nothing can be written, no extension is loaded.
    """
    tbl = Store(root).query(sql)
    if format is Fmt.table:
        _print_table(tbl)
    elif format is Fmt.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(tbl.column_names)
        for r in tbl.to_pylist():
            w.writerow(["" if r[c] is None else r[c] for c in tbl.column_names])
        typer.echo(buf.getvalue(), nl=False)
    else:
        typer.echo(json.dumps(tbl.to_pylist(), default=str))


@app.command()
@_clean_errors
def stats(root: Path) -> None:
    """Counts by dataset, category, split, source and stage status; duration distribution."""
    from prevad.stats import compute_stats

    s = compute_stats(Store(root))
    _print_table(s.datasets, "labelled videos per dataset (final label: human over model; "
                 "annotation_rows = every annotation row)")
    _print_table(s.splits, "videos per split")
    _print_table(s.sources, "stored videos per source")
    _print_table(s.categories, "videos per category (final label)")
    _print_table(s.stages, "stage status (latest)")
    summ = s.duration_summary()
    _print_table(pa.table({k: [v] for k, v in summ.items()}), "durations (s)")


@app.command()
@_clean_errors
def card(
    root: Path,
    out: Path = typer.Option(Path("data_cards/PreVAD.md"), "--out", "-o"),
    title: str = typer.Option("PreVAD"),
) -> None:
    """Write a Markdown data card with stats tables and PNG plots next to it."""
    from prevad.card import write_card

    typer.echo(str(write_card(Store(root), out, title)))


if __name__ == "__main__":  # pragma: no cover
    app()
