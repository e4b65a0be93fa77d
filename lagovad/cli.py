"""The `lagovad` command line: one typer app, commands registered by `lagovad.commands.*`."""

from __future__ import annotations

import typer

from lagovad.commands import convert, evaluate, extract, train

app = typer.Typer(
    name="lagovad",
    help="Language-guided open-world video anomaly detection: train, extract, detect, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

for _module in (convert, train, extract, evaluate):
    _module.register(app)


if __name__ == "__main__":
    app()
