"""``prevad curate``: every curation stage on the command line, without Prefect.

Each stage module exposes ``register(app: typer.Typer) -> None`` and adds its own command
(``prevad curate <stage> STORE [options]``); :data:`STAGE_COMMANDS` names the module of each
command. A stage's module is imported only when its command runs (or ``--help`` lists the
commands), so ``prevad curate status`` and ``prevad --help`` start without the stages' libraries,
and none of them imports torch before a model is built. The flows in ``flows/`` call the same
functions.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from prevad import queries
from prevad.cli_errors import exit_on
from prevad.errors import PrevadError
from prevad.store import Store

#: Command -> the module whose ``register(app)`` adds it (a new stage adds one line here).
STAGE_COMMANDS: dict[str, str] = {
    "world": "curation.world",
    "retrieve": "curation.retrieve",
    "add": "curation.add",
    "acquire": "curation.acquire",
    "record": "curation.record",
    "dedup": "curation.dedup",
    "clean": "curation.clean",
    "describe": "curation.describe",
    "verify": "curation.verify",
    "judge": "curation.judge",
    "describe-anomaly": "curation.describe_anomaly",
    # the generic runner (any stage by reference, --engine local|ray|auto)
    "run": "curation.run_cmd",
}

#: Modules of the model stages (their ``SPEC`` says which upstream stages they read).
MODEL_STAGE_MODULES: tuple[str, ...] = (
    "curation.describe", "curation.verify", "curation.judge", "curation.describe_anomaly",
)


@functools.cache
def stage_command(name: str) -> click.Command:
    """The click command ``name`` of :data:`STAGE_COMMANDS` (its module imported now)."""
    sub = typer.Typer(pretty_exceptions_enable=False)
    importlib.import_module(STAGE_COMMANDS[name]).register(sub)
    group = typer.main.get_group(sub)
    command = group.commands.get(name)
    if command is None:
        raise RuntimeError(f"{STAGE_COMMANDS[name]}.register added {sorted(group.commands)}, "
                           f"not {name!r}")
    return command


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands: its own, plus every stage of :data:`STAGE_COMMANDS`, whose module is
    imported when the command is first looked up (``commands["acquire"]``, ``.get``), never when
    the names are listed."""

    def __init__(self, own: dict[str, click.Command] | None = None) -> None:
        self._own: dict[str, click.Command] = dict(own or {})

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._own and name in STAGE_COMMANDS:
            self._own[name] = stage_command(name)
        return self._own[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._own[name] = command

    def __delitem__(self, name: str) -> None:
        del self._own[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._own
        yield from (n for n in STAGE_COMMANDS if n not in self._own)

    def __len__(self) -> int:
        return len(set(self._own) | set(STAGE_COMMANDS))

    def __contains__(self, name: object) -> bool:
        return name in self._own or name in STAGE_COMMANDS


class StageGroup(TyperGroup):
    """``prevad curate``: its own commands, plus the stage commands loaded on first use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(self.commands)  # type: ignore[assignment]

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Own commands first, then the stages in :data:`STAGE_COMMANDS` order (nothing
        imported)."""
        return list(self.commands)


app = typer.Typer(cls=StageGroup,
                  help="Curation stages (retrieve, acquire, record, clean, describe, verify, "
                  "judge, ...) on a PreVAD store.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def _curate() -> None:
    """Curation stages (retrieve, acquire, record, clean, describe, verify, judge, ...) on a
    PreVAD store."""
    # a callback keeps ``app`` a group even while ``status`` is its only own command


def upstream_reads(store: Store) -> list[dict[str, str]]:
    """Per model stage and upstream stage it reads: the version it would read by default (D3).

    Rows: ``stage``, ``reads``, ``version`` (the newest upstream version with ok results, or
    ``(no ok result)``) and ``option`` (the stage command's option that names another one).
    """
    from curation.model_stage import version_field

    rows = []
    for module in MODEL_STAGE_MODULES:
        spec = importlib.import_module(module).SPEC
        versions = spec.upstream_versions(store, spec.config())
        for up in spec.upstream:
            rows.append({
                "stage": spec.name, "reads": up,
                "version": versions.get(up) or "(no ok result)",
                "option": "--" + version_field(up).replace("_", "-"),
            })
    return rows


def _print(rows: list[dict[str, str]], columns: list[str], title: str) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if r[c] is None else str(r[c]) for c in columns))
    Console(width=200).print(t)


@app.command()
@exit_on(PrevadError, OSError)
def status(root: Path) -> None:
    """Per stage and version: latest status counts (ok / rejected by reason / failed), and the
    upstream version each downstream stage reads by default."""
    store = Store(root)
    tbl = queries.stage_status_counts(store)
    _print(tbl.to_pylist(), tbl.column_names, "curation stages (latest result per item)")
    _print(upstream_reads(store), ["stage", "reads", "version", "option"],
           "upstream versions read by default (newest with ok results)")
