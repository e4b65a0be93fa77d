"""`lagovad convert-official CKPT OUT`: the authors' Lightning checkpoint -> our checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from lagovad.commands import handles_errors


def register(app: typer.Typer) -> None:
    """Add the ``convert-official`` command to ``app``."""

    @app.command("convert-official")
    @handles_errors
    def convert_official_cmd(
        ckpt: Path = typer.Argument(..., help="The authors' Lightning .ckpt (or a state dict)."),
        out: Path = typer.Argument(..., help="Output checkpoint directory."),
        model: str = typer.Option("lagovad-b16", "--model", help="Our model config name."),
        clip: str | None = typer.Option(
            None, "--clip",
            help="Hugging Face id or local directory of the CLIP text model to record in the "
            "checkpoint (default: the config's, openai/clip-vit-base-patch16).",
        ),
    ) -> None:
        """Map the authors' checkpoint onto LaGoVAD; save model.safetensors + config.json."""
        from lagovad.factory import convert_official

        console = Console(stderr=True)
        override = {"backend": "hf", "name": clip} if clip else None
        report = convert_official(ckpt, out, model_name=model, clip=override)
        console.print(
            f"converted {len(report.mapped)} tensors from {ckpt} -> {out} "
            f"(prefix {report.prefix!r}, ignored {len(report.ignored)} CLIP/buffer keys)"
        )
