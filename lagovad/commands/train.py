"""`lagovad train`: train LaGoVAD on the features and annotations of a prevad store."""

from __future__ import annotations

from pathlib import Path

import typer

from lagovad.commands import handles_errors


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""
    app.command("train")(handles_errors(train_command))


def train_command(
    store: Path = typer.Option(..., "--store", help="prevad store root."),
    out: Path = typer.Option(..., "--out", help="Output folder for checkpoints."),
    model: str = typer.Option("lagovad-b16", "--model", help="Model config name."),
    pretrained: str | None = typer.Option(None, help="Start from these weights."),
    feature_model: str | None = typer.Option(
        None, help="Feature model_id in the store (default: the only one stored)."
    ),
    dataset: str | None = typer.Option(None, help="Only annotations of this dataset."),
    labels: str = typer.Option(
        "final", help="final: a video's human annotation, else its model pre-label; human: "
        "only human-confirmed annotations (a curated store's reviewed labels)."
    ),
    train_split: str = typer.Option("train", help="Split to train on."),
    val_split: str = typer.Option("val", help="Split to validate on each epoch ('' = none)."),
    epochs: int = typer.Option(40, help="Epochs."),
    batch_size: int = typer.Option(64, help="Synthesized videos per batch."),
    lr: float = typer.Option(5e-5, help="AdamW learning rate."),
    weight_decay: float = typer.Option(0.0, help="AdamW weight decay."),
    warmup_steps: int = typer.Option(20, help="Linear warm-up steps before the cosine decay."),
    seed: int = typer.Option(2024, help="Seed (runs with the same seed are identical)."),
    max_len: int | None = typer.Option(None, help="Synthesized length (default: model max_len)."),
    grad_clip: float = typer.Option(
        0.0, help="Max gradient norm (0 = off, the authors'; our addition, e.g. 1.0)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    recipe: str = typer.Option(
        "official",
        help="official: the authors' training step term for term (both branches every step, "
        "36-class names definition); paper: the paper's equations (one branch per batch).",
    ),
    exclude_prob: float = typer.Option(
        0.0,
        help="Chance a batch definition leaves out a present class, whose videos are then "
        "trained as normal: makes the definition steer detection (0 = the authors'; e.g. 0.5).",
    ),
    detach_pool: bool = typer.Option(
        False, help="Detach the contrastive pooling weights (off = the authors')."
    ),
    synth_cut: str = typer.Option(
        "",
        help="Synthesis cut to max_len: first (the authors': may cut the abnormal clip) or "
        "window (ours: keeps it); default the recipe's (official: first, paper: window).",
    ),
    neighbour_cache: Path | None = typer.Option(
        None, help="The authors' train_search_cache.json, used as the synthesis neighbours."
    ),
    manifest: Path | None = typer.Option(
        None, help="Train on exactly the dataset an earlier run recorded (its dataset.parquet, "
        "or a checkpoint folder): refused if a listed annotation or feature is gone or changed."
    ),
    workers: int = typer.Option(
        2, help="DataLoader processes synthesizing batches while the model trains (0 = none)."
    ),
    description_prob: float = typer.Option(
        0.5, help="Paper recipe: chance a batch uses descriptions instead of names."
    ),
    resume: Path | None = typer.Option(
        None, help="Continue from a checkpoint folder (or an output folder's latest epoch)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite",
        help="Replace a run already in --out (its epochs are deleted once the new run's inputs "
        "pass every check). Without it such an --out is refused.",
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
    keep_last: int = typer.Option(0, help="Keep only the newest N epoch checkpoints (0 = all)."),
) -> None:
    """Train LaGoVAD on a prevad store (validated before the first step)."""
    # Imported here so `lagovad --help` stays fast.
    from lagovad.train import TrainConfig, train

    cfg = TrainConfig(
        store=str(store),
        out=str(out),
        model=model,
        pretrained=pretrained,
        feature_model=feature_model,
        dataset=dataset,
        labels=labels,
        train_split=train_split,
        val_split=val_split,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        seed=seed,
        max_len=max_len,
        grad_clip=grad_clip,
        device=device,
        recipe=recipe,
        exclude_prob=exclude_prob,
        detach_pool=detach_pool,
        synth_cut=synth_cut,
        neighbour_cache=str(neighbour_cache) if neighbour_cache else None,
        description_prob=description_prob,
        workers=workers,
        manifest=str(manifest) if manifest else None,
        progress=progress,
        keep_last=keep_last,
        resume=str(resume) if resume else None,
        overwrite=overwrite,
    )
    metrics = train(cfg)  # a LagovadError becomes `error: ...`, exit 2 (handles_errors)
    keep = ("epoch", "step", "loss", "val_auc", "val_ap")
    shown = {k: v for k, v in metrics.items() if k in keep}
    typer.echo(f"done: {shown}; checkpoints in {out}")
