"""``prevad curate``: every curation stage on the command line, without Prefect.

Each stage module exposes ``register(app: typer.Typer) -> None`` and adds its own command
(``prevad curate <stage> STORE [options]``); the modules are listed in :data:`STAGE_MODULES`.
The flows in ``flows/`` call the same functions.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from prevad import queries
from prevad.cli_errors import exit_on
from prevad.errors import PrevadError
from prevad.store import Store

app = typer.Typer(help="Curation stages (retrieve, acquire, record, clean, describe, verify, "
                  "judge, ...) on a PreVAD store.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

#: Modules (under ``curation``) whose ``register(app)`` adds a stage command.
STAGE_MODULES: tuple[str, ...] = (
    "retrieve", "acquire", "record", "clean", "describe", "verify", "judge", "describe_anomaly",
    "world",  # not a stage: the generated world the chain is measured on (curation.world)
)


@app.command()
@exit_on(PrevadError, OSError)
def status(root: Path) -> None:
    """Per stage and version: latest status counts (ok / rejected by reason / failed)."""
    tbl = queries.stage_status_counts(Store(root))
    t = Table(title="curation stages (latest result per item)")
    for c in tbl.column_names:
        t.add_column(c)
    for r in tbl.to_pylist():
        t.add_row(*("" if r[c] is None else str(r[c]) for c in tbl.column_names))
    Console(width=200).print(t)


for _name in STAGE_MODULES:
    importlib.import_module(f"curation.{_name}").register(app)

# The generic runner (any stage by reference, --engine local|ray|auto).
importlib.import_module("curation.run_cmd").register(app)
