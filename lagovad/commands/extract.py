"""`lagovad extract`, `lagovad detect` and `lagovad rescore`."""

from __future__ import annotations

from pathlib import Path

import typer

from lagovad.commands import handles_errors
from prevad.cli_errors import fail, number_option


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(code=2) from exc


NORMAL_HELP = ("Normal class added to the definition: 'name' (the word Normal), 'prompt' (the "
               "authors' sentence 'Normal behavior, views or surveillance content ...'), 'auto' "
               "(name for class names, prompt for descriptions).")


def _definition(define: list[str] | None, normal: str = "auto"):
    from lagovad.definition import AnomalyDefinition, DefinitionError

    if not define:
        raise DefinitionError(
            "--define is required at least once (a class name like 'Fighting' or a description "
            "like 'A man points a gun at a cashier.')"
        )
    return AnomalyDefinition.from_strings(define, normal=normal)


def extract_cmd(
    inputs: list[Path] = typer.Argument(None, help="Video files and/or folders (recursive)."),
    out: Path = typer.Option(None, "--out", "-o", help="Plain folder output: <out>/<stem>.npy."),
    store: Path = typer.Option(None, "--store", help="prevad store root to write features into "
                               "(without INPUTS: every clip of the store: one array per clip "
                               "that clean cut, the whole video for one never split)."),
    export: Path = typer.Option(None, "--export", help="With --store, also write every "
                                "requested clip's array, extracted now or before, as "
                                "<export>/<source name>.npy (the authors' layout; clips of a "
                                "split video add __clip<index>_<start>-<end>)."),
    model: str = typer.Option("ViT-B-16", help="open_clip model name."),
    pretrained: str = typer.Option("openai", help="open_clip pretrained tag or local checkpoint "
                                   "file; 'none' for random weights."),
    stride: int = number_option(8, integer=True, min=1,
                                help="Sample one frame every STRIDE frames."),
    offset: int = number_option(None, integer=True, min=0,
                                help="First sampled frame (default stride // 2)."),
    size: int = number_option(None, integer=True, min=1,
                              help="Frame side, no crop (default: the model's input size)."),
    batch_size: int = number_option(64, integer=True, min=1, help="Frames per encoder forward."),
    workers: int = number_option(2, integer=True, min=1, help="Videos decoded concurrently."),
    device: str = typer.Option(None, help="cuda / cpu (default: cuda when present)."),
    model_id: str = typer.Option(None, help="Feature model id stored with the features."),
    commit_every: int = number_option(32, integer=True, min=1, help="With --store: clips per "
                                      "store commit (also every 5 s); a crash loses at most "
                                      "these, extracted again on the next run."),
) -> None:
    """Extract CLIP frame features (default: the authors' protocol, ViT-B/16 openai, 4, 12, ...)."""
    from lagovad.extract import ExtractError, extract
    from lagovad.image_encoder import ImageEncoderError, load_image_encoder

    try:
        encoder = load_image_encoder(model, pretrained, device=device)
        st = None
        if store is not None:
            from prevad import Store

            st = Store(store)
        summary = extract(inputs or None, encoder, out_dir=out, store=st, export_dir=export,
                          stride=stride, offset=offset, size=size, batch_size=batch_size,
                          decode_workers=workers, model_id=model_id,
                          commit_every=commit_every)
    except (ExtractError, ImageEncoderError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(
        f"extracted {summary.extracted}, skipped {summary.skipped}, failed {summary.failed} of "
        f"{summary.total} videos; {summary.frames_decoded} frames in {summary.seconds:.1f} s "
        f"({summary.frames_per_s:.0f} frames/s)"
    )
    if export is not None and store is not None:
        typer.echo(f"exported {summary.exported} feature arrays to {export}")
    for f in summary.failures:
        typer.echo(f"  failed: {f['path']}: {f['reason']}")
    if summary.failed and summary.failed == summary.total:
        # nothing usable came out: a script must not read this as success
        fail(f"every input failed ({summary.failed} of {summary.total} videos; reasons above)")


def detect_cmd(
    video: Path = typer.Argument(..., help="The video file."),
    define: list[str] = typer.Option(None, "--define", "-d", help="A class name or description; "
                                     "repeat for several."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="lagovad checkpoint directory."),
    model: str = typer.Option(None, "--model", help="Named model config (with --weights)."),
    weights: Path = typer.Option(None, "--weights", help="Weights for --model (e.g. .ckpt)."),
    out: Path = typer.Option(Path("detect_out"), "--out", "-o", help="Output folder."),
    clip_model: str = typer.Option(None, help="Image encoder override (default: checkpoint's)."),
    clip_pretrained: str = typer.Option(None, help="Image encoder tag or checkpoint file."),
    cache_dir: Path = typer.Option(None, help="Feature cache (default ~/.cache/lagovad/features)."),
    store: Path = typer.Option(None, "--store", help="Cache features in this prevad store."),
    threshold: float = number_option(0.5, integer=False, min=0, max=1,
                                     help="Anomaly score threshold for intervals."),
    min_duration: float = number_option(1.0, integer=False, min=0,
                                        help="Minimum interval length, seconds."),
    merge_gap: float = number_option(1.0, integer=False, min=0,
                                     help="Merge intervals closer than this, seconds."),
    device: str = typer.Option(None, help="cuda / cpu."),
    plot: bool = typer.Option(True, help="Write the PNG plot."),
    normal: str = typer.Option("auto", "--normal", help=NORMAL_HELP),
) -> None:
    """Detect anomalies in one video under your own definition (names and/or descriptions)."""
    from lagovad.definition import DefinitionError
    from lagovad.detect import DetectError, detect, encoder_for, load_detector, write_outputs
    from lagovad.image_encoder import ImageEncoderError

    try:
        definition = _definition(define, normal)
        net, label = load_detector(checkpoint, model, weights, device=device)
        if checkpoint is not None:
            from lagovad.manifest import describe_checkpoint

            typer.echo(describe_checkpoint(checkpoint), err=True)
        encoder = encoder_for(net, clip_model, clip_pretrained, device=device)
        st = None
        if store is not None:
            from prevad import Store

            st = Store(store)
        det = detect(video, definition, net, encoder, checkpoint=label, cache_dir=cache_dir,
                     store=st, threshold=threshold, min_duration_s=min_duration,
                     merge_gap_s=merge_gap, progress=True)
        paths = write_outputs(det, out, plot=plot)
    except (DefinitionError, DetectError, ImageEncoderError, ValueError, OSError) as exc:
        _fail(exc)
    top = ", ".join(f"{n} {p:.2f}" for n, p in det.top_classes(3))
    typer.echo(f"{video.name}: {len(det.anomaly_scores)} steps, max score "
               f"{det.anomaly_scores.max():.3f}; top classes: {top}")
    for iv in det.intervals:
        typer.echo(f"  {iv.start_s:8.2f}-{iv.end_s:8.2f} s  peak {iv.peak_score:.3f}  "
                   f"{iv.top_class} ({iv.top_class_prob:.2f})")
    for kind, p in paths.items():
        typer.echo(f"  {kind}: {p}")


def rescore_cmd(
    store: Path = typer.Option(..., "--store", help="prevad store root."),
    define: list[str] = typer.Option(None, "--define", "-d", help="A class name or description; "
                                     "repeat for several."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="lagovad checkpoint directory."),
    model: str = typer.Option(None, "--model", help="Named model config (with --weights)."),
    weights: Path = typer.Option(None, "--weights", help="Weights for --model."),
    model_id: str = typer.Option(None, help="Stored feature model to score (if several)."),
    device: str = typer.Option(None, help="cuda / cpu."),
    normal: str = typer.Option("auto", "--normal", help=NORMAL_HELP),
) -> None:
    """Score every stored video under a new definition from cached features (no decoding)."""
    from lagovad.definition import DefinitionError
    from lagovad.detect import DetectError, load_detector
    from lagovad.rescore import rescore
    from prevad import Store

    try:
        definition = _definition(define, normal)
        net, label = load_detector(checkpoint, model, weights, device=device)
        if checkpoint is not None:
            from lagovad.manifest import describe_checkpoint

            typer.echo(describe_checkpoint(checkpoint), err=True)
        summary = rescore(Store(store), net, definition, label, model_id=model_id)
    except (DefinitionError, DetectError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(f"definition {summary.definition_id}: scored {summary.scored}, skipped "
               f"{summary.skipped} videos, {summary.rows} score rows (features {summary.model_id})")
    for f in summary.failures:
        typer.echo(f"  failed: {f['video_id']}: {f['reason']}")
    typer.echo("query: lagovad.rescore.CLASS_INTERVALS_SQL with definition_id="
               f"{summary.definition_id!r}, checkpoint={summary.checkpoint!r}")


def register(app: typer.Typer) -> None:
    """Add `extract`, `detect` and `rescore` to the lagovad app."""
    app.command("extract")(handles_errors(extract_cmd))
    app.command("detect")(handles_errors(detect_cmd))
    app.command("rescore")(handles_errors(rescore_cmd))
