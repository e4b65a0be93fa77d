"""``prevad curate run STORE STAGE``: any stage by reference, locally or on Ray (no Prefect)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _parse_params(items: list[str] | None) -> dict[str, object]:
    """``key=value`` pairs; values are JSON when they parse (numbers, lists, ...), else text."""
    params: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param must look like key=value, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def run_command(
    store: Path = typer.Argument(..., help="Store root."),
    stage: str = typer.Argument(..., help="Registered stage name or package.module:factory."),
    param: list[str] = typer.Option(None, "--param", "-p", help="Factory keyword, key=value "
                                    "(value parsed as JSON when possible); repeatable."),
    engine: str = typer.Option("auto", help="local, ray, or auto (ray when RAY_ADDRESS is set)."),
    actors: int = typer.Option(1, help="Ray actors (each builds the stage once)."),
    num_gpus: float = typer.Option(0.0, help="GPUs per Ray actor."),
    shard_size: int = typer.Option(64, help="Items committed together."),
    limit: int | None = typer.Option(None, help="Process at most this many items."),
) -> None:
    """Run one stage over its work list; print the summary (ok / rejected / failed)."""
    from curation.ray_exec import mapper_for
    from curation.registry import stage_factory, with_store
    from prevad.errors import PrevadError
    from prevad.stage import run_stage
    from prevad.store import Store

    try:
        factory = stage_factory(stage, with_store(stage, _parse_params(param), str(store)))
        st = factory()
        mapper = mapper_for(engine, factory, actors=actors, num_gpus=num_gpus)
        summary = run_stage(Store(store), st, shard_size=shard_size, limit=limit,
                            progress=True, map_batches=mapper)
    except (PrevadError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(json.dumps(summary.to_dict()))


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``prevad curate`` group."""
    app.command("run")(run_command)
