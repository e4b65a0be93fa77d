"""`lagovad eval` and `lagovad gt`: zero-shot evaluation on the seven benchmarks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import typer

from lagovad.commands import handles_errors
from lagovad.eval.benchmarks import BENCHMARKS, EvalError, check_name, load_benchmark, load_native
from lagovad.eval.gt import GT_RESOLUTIONS
from lagovad.eval.protocol import LOCALISATION_PROTOCOLS
from lagovad.eval.sources import SCORE_CLASS_SOURCES
from prevad.cli_errors import number_option

DEFAULT_OUT = Path("runs/eval")


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code=2)


def _names(benchmark: list[str] | None, all_: bool, custom: bool = False) -> list[str]:
    if all_:
        return list(BENCHMARKS)
    if not benchmark:
        _fail("pass --benchmark NAME (repeatable) or --all; benchmarks: " + ", ".join(BENCHMARKS))
    names = [check_name(n, custom) for item in benchmark for n in item.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def _feature_scorer(features: Path, allow_missing: bool, feature_model: str | None, score_fn):
    from lagovad.eval.sources import feature_source

    coverage: dict[str, dict] = {}

    def scorer(bench, defn):
        src = feature_source(features, bench, allow_missing, feature_model)
        coverage[bench.name] = {"found": len(src.loaders), "missing": len(src.missing),
                                "origin": src.origin}
        if src.missing:
            typer.echo(f"{bench.name}: features for {len(src.loaders)}/{len(bench.videos)} "
                       f"videos ({len(src.missing)} missing, e.g. {src.missing[0]})", err=True)
        return score_fn(bench, defn, src.loaders)

    return scorer, coverage


def _scores_scorer(scores_file: Path, names: list[str], allow_missing: bool,
                   score_classes: str, annotations: Path | None, native: bool):
    from lagovad.eval.sources import (
        MISSING_SHOWN,
        MissingFeaturesError,
        benchmark_scores,
        missing_message,
        read_scores,
    )

    table = read_scores(scores_file)
    known: set[str] = set()
    for n in names:
        bench = load_native(n) if native else load_benchmark(n, annotations)
        known |= {v.name for v in bench.videos}
    unknown = sorted(table.videos - known)
    if unknown:
        raise EvalError(
            f"{scores_file} has scores for {len(unknown)} video(s) that are not in "
            f"{', '.join(names)}: {', '.join(unknown[:MISSING_SHOWN])}; keys must be benchmark "
            "video names (e.g. Abuse028_x264)")

    def scorer(bench, defn):
        missing = [v.name for v in bench.videos if v.name not in table.videos]
        if missing and not allow_missing:
            raise MissingFeaturesError(missing_message("scores", bench.name, missing,
                                                       len(bench.videos)))
        return benchmark_scores(table, bench, defn, score_classes)

    return scorer


def eval_command(
    benchmark: list[str] | None = typer.Option(None, "--benchmark", "-b",
                                               help=f"One of {', '.join(BENCHMARKS)}."),
    all_: bool = typer.Option(False, "--all", help="Evaluate all seven benchmarks."),
    features: Path | None = typer.Option(
        None, help="Folder of <video>.npy [T, D] (flat or one sub-folder per benchmark), or a "
                   "prevad store root (holds catalog.duckdb)."),
    checkpoint: Path | None = typer.Option(None, help="LaGoVAD checkpoint directory or file."),
    clip_baseline: str | None = typer.Option(
        None, help="Run the training-free CLIP baseline with this open_clip model name "
                   "(e.g. ViT-B-16) instead of a checkpoint."),
    clip_pretrained: str | None = typer.Option(
        "openai", help="open_clip pretrained tag or local weights file for --clip-baseline."),
    scores: Path | None = typer.Option(
        None, help="External per-video scores (.npz or .parquet keyed by video name): [T] "
                   "anomaly scores, or [T, C] per-step class probabilities (then anomaly = "
                   "1 - P(Normal), and classification and mAP@IoU are computed too)."),
    score_classes: str = typer.Option(
        "file", help="Column order of [T, C] class scores: file (the names in the file's "
                     "__classes__ entry / Parquet metadata), vadclip (VadCLIP's softmax order: "
                     "XD A,B1,B2,B4,B5,B6,G = Normal, Fighting, Shooting, Riot, Abuse, Car "
                     "accident, Explosion; UCF Normal, Abuse, Arrest, Arson, Assault, Burglary, "
                     "Explosion, Fighting, RoadAccidents, Robbery, Shooting, Shoplifting, "
                     "Stealing, Vandalism) or lagovad (Normal, then the definition's "
                     "classification classes)."),
    localisation: str = typer.Option(
        "vadclip", help="mAP@IoU protocol: vadclip (VadCLIP's getDetectionMAP) or "
                        "vadclip-ucf-quirk (also its UCF label quirk: Normal scores AP 0)."),
    score_stride: int | None = number_option(
        None, integer=True, min=1, help="Frames per score in --scores (required with --scores)."),
    frames: Path | None = typer.Option(
        None, help="Per-video frame counts (csv/json). Every scored video needs one, and its "
                   "score count must be floor or ceil(frames / frames-per-score); frame16 "
                   "ground truth is then built over the real frame count, never padded."),
    gt_resolution: str = typer.Option(
        "feature", help="feature (official: spans x T, round half-even, end-exclusive) or "
                        "frame16 (scores repeated per frame, VadCLIP/PEL)."),
    frame_repeat: int = number_option(16, integer=True, min=1,
                                      help="Frames per feature step for frame16."),
    native: bool = typer.Option(False, help="Use native UCF/XD frame annotations (frame16)."),
    annotations: Path | None = typer.Option(None, help="Override the annotation JSON "
                                                       "(single benchmark)."),
    definition: Path | None = typer.Option(
        None, help="Definition JSON (normal, classes, descriptions) overriding the packaged one "
                   "(single benchmark). With --annotations it makes any test split in the "
                   "benchmarks' JSON format a custom benchmark: --benchmark NAME (a new name) "
                   "--annotations FILE --definition FILE, e.g. a generated world's test/."),
    allow_missing: bool = typer.Option(False, help="Evaluate the videos present; report "
                                                   "coverage instead of failing."),
    feature_model: str | None = typer.Option(None, help="Feature model_id inside a store."),
    prompts: str = typer.Option("descriptions", help="descriptions (official) or names."),
    out: Path | None = typer.Option(None, help="Output folder (default runs/eval/<method>)."),
    method: str | None = typer.Option(None, help="Row label in the tables."),
    device: str | None = typer.Option(None, help="Torch device (default: cuda if present)."),
    batch_size: int = number_option(16, integer=True, min=1, help="Chunks per forward pass."),
    plots: bool = typer.Option(True, help="Write PNG curves and timelines."),
) -> None:
    """Evaluate a checkpoint, the CLIP baseline or external scores on the benchmarks."""
    from lagovad.eval import report, runner

    try:
        custom = annotations is not None and definition is not None
        names = _names(benchmark, all_, custom)
        if gt_resolution not in GT_RESOLUTIONS:
            _fail(f"--gt-resolution must be one of {GT_RESOLUTIONS}, got {gt_resolution!r}")
        sources = sum(x is not None for x in (checkpoint, clip_baseline, scores))
        if sources != 1:
            _fail("pass exactly one of --checkpoint, --clip-baseline or --scores")
        if annotations and len(names) != 1:
            _fail("--annotations overrides one benchmark; pass a single --benchmark")
        if definition and len(names) != 1:
            _fail("--definition overrides one benchmark; pass a single --benchmark")
        if localisation not in LOCALISATION_PROTOCOLS:
            _fail(f"--localisation must be one of {LOCALISATION_PROTOCOLS}, got "
                  f"{localisation!r}")
        if score_classes not in SCORE_CLASS_SOURCES:
            _fail(f"--score-classes must be one of {SCORE_CLASS_SOURCES}, got "
                  f"{score_classes!r}")
        if native and gt_resolution != "frame16":
            _fail("--native frame annotations need --gt-resolution frame16")
        repeat = frame_repeat
        if scores is not None:
            if score_stride is None or score_stride < 1:
                _fail(f"--score-stride must be an integer >= 1 with --scores, got {score_stride}")
            repeat = score_stride
            scorer = _scores_scorer(scores, names, allow_missing, score_classes, annotations,
                                    native)
            label = method or scores.stem
            coverage = {}
        else:
            if features is None:
                _fail("--features DIR|STORE is needed with --checkpoint or --clip-baseline")
            dev = runner.pick_device(device)
            if checkpoint is not None:
                import lagovad
                from lagovad.manifest import describe_checkpoint

                model, _ = lagovad.load_checkpoint(checkpoint, device=dev)
                typer.echo(describe_checkpoint(checkpoint), err=True)
                scorer_obj = runner.ModelScorer(model, dev, prompts, batch_size)
                label = method or f"LaGoVAD ({checkpoint.name})"
            else:
                from lagovad.eval.baseline import ClipBaseline

                scorer_obj = ClipBaseline(clip_baseline, clip_pretrained, dev, prompts)
                label = method or f"CLIP {clip_baseline} (training-free)"
            scorer, coverage = _feature_scorer(features, allow_missing, feature_model,
                                               scorer_obj.score)
            typer.echo(f"device: {dev}", err=True)
        frame_counts = None
        if frames is not None:
            from lagovad.eval.sources import read_frames

            frame_counts = read_frames(frames)
        out_dir = out or DEFAULT_OUT / "".join(c if c.isalnum() else "_" for c in label)
        results = runner.run(names, scorer, label, gt_resolution, repeat, native,
                             {names[0]: annotations} if annotations else None, frame_counts,
                             out_dir if plots else None, localisation,
                             {names[0]: definition} if definition else None)
        if coverage:
            results["coverage"] = coverage
        if not plots:
            results["files"] = {k: str(v) for k, v in report.write_reports(results,
                                                                            out_dir).items()}
    except EvalError as exc:
        _fail(str(exc))
    typer.echo(report.markdown_tables(results))
    typer.echo(f"reports: {out_dir}")


def gt_command(
    benchmark: str = typer.Option(..., "--benchmark", "-b", help="Benchmark name."),
    frames: Path = typer.Option(..., help="Per-video frame counts: csv name,n_frames or json."),
    out: Path = typer.Option(..., help="Output .npz (uint8 arrays) or .json (frame spans)."),
    native: bool = typer.Option(False, help="Use native UCF/XD frame annotations."),
    annotations: Path | None = typer.Option(None, help="Override the annotation JSON."),
) -> None:
    """Write frame ground truth (end-exclusive spans, half-even rounding) for given frame counts."""
    from lagovad.eval.gt import frame_ground_truth
    from lagovad.eval.report import atomic_write_bytes, atomic_write_text
    from lagovad.eval.sources import read_frames
    from lagovad.metrics import segments_from_scores

    try:
        name = check_name(benchmark)
        bench = load_native(name) if native else load_benchmark(name, annotations)
        masks = frame_ground_truth(bench.videos, read_frames(frames), native)
        if out.suffix == ".npz":
            buf = io.BytesIO()
            np.savez_compressed(buf, **masks)
            atomic_write_bytes(out, buf.getvalue())
        elif out.suffix == ".json":
            data = {"benchmark": name, "convention": "frame spans [start, end), 0-based",
                    "videos": {k: {"n_frames": len(m), "spans": segments_from_scores(m, 1)}
                               for k, m in masks.items()}}
            atomic_write_text(out, json.dumps(data, indent=1) + "\n")
        else:
            _fail(f"--out must end in .npz or .json, got {out.name}")
    except EvalError as exc:
        _fail(str(exc))
    n_abn = sum(int(m.any()) for m in masks.values())
    typer.echo(f"wrote frame ground truth of {len(masks)} videos ({n_abn} abnormal) to {out}")


def register(app: typer.Typer) -> None:
    """Add the `eval` and `gt` commands to the `lagovad` app."""
    app.command("eval")(handles_errors(eval_command))
    app.command("gt")(handles_errors(gt_command))
