"""``prevad curate run STORE STAGE``: any stage by reference, locally or on Ray (no Prefect).

Every ``-p key=value`` is checked against what the stage's factory accepts
(:mod:`curation.stage_params`) before anything is built or run: an unknown name, a value of the
wrong type, NaN, an infinity or a negative number where none is allowed is one ``error:`` line
and exit code 2, with nothing touched.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from prevad.errors import ValidationError


def _parse_params(items: list[str] | None) -> tuple[dict[str, object], dict[str, str]]:
    """``key=value`` pairs -> (values, texts as given); values are JSON when they parse.

    JSON's ``NaN``/``Infinity`` parse (Python's json accepts them) and are refused later by the
    range check, with the parameter's name.

    Raises:
        ValidationError: an item without ``=``, an empty or repeated key.
    """
    params: dict[str, object] = {}
    raw: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValidationError(f"--param must look like key=value, got {_short(item)}")
        if not key.isidentifier():
            raise ValidationError(f"--param {_short(item)}: {_short(key)} is not a parameter "
                                  "name")
        if key in params:
            raise ValidationError(f"--param {key} is given twice ({_short(raw[key])} and "
                                  f"{_short(value)})")
        try:
            params[key] = json.loads(value)
        except (ValueError, RecursionError):  # not JSON (or an integer over 4300 digits)
            params[key] = value
        raw[key] = value
    return params, raw


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else f"{shown[:60]}...({len(shown)} characters)"


def _check_run_options(actors: int, num_gpus: float, shard_size: int,
                       limit: int | None) -> None:
    if actors < 1:
        raise ValidationError(f"--actors {actors}: expected an integer >= 1")
    if not math.isfinite(num_gpus) or num_gpus < 0:
        raise ValidationError(f"--num-gpus {num_gpus}: expected a finite number >= 0")
    if shard_size < 1:
        raise ValidationError(f"--shard-size {shard_size}: expected an integer >= 1")
    if limit is not None and limit < 0:
        raise ValidationError(f"--limit {limit}: expected an integer >= 0")


def run_command(
    store: Path = typer.Argument(..., help="Store root."),
    stage: str = typer.Argument(..., help="Registered stage name or package.module:factory."),
    param: list[str] = typer.Option(None, "--param", "-p", help="Factory keyword, key=value "
                                    "(value parsed as JSON when possible); repeatable. Checked "
                                    "against the stage's options before anything runs."),
    engine: str = typer.Option("auto", help="local, ray, or auto (ray when RAY_ADDRESS is set)."),
    actors: int = typer.Option(1, help="Ray actors (each builds the stage once)."),
    num_gpus: float = typer.Option(0.0, help="GPUs per Ray actor."),
    shard_size: int = typer.Option(64, help="Items committed together."),
    limit: int | None = typer.Option(None, help="Process at most this many items."),
    as_json: bool = typer.Option(False, "--json", help="print the run's summary as one JSON "
                                 "line (the file saved under stage_runs/) instead of the "
                                 "human line"),
) -> None:
    """Run one stage over its work list; print the summary (ok / rejected / failed)."""
    from curation.common import print_summary
    from curation.ray_exec import mapper_for
    from curation.registry import stage_factory, with_store
    from curation.stage_params import check_params
    from prevad.errors import PrevadError
    from prevad.stage import run_stage
    from prevad.store import Store

    try:
        _check_run_options(actors, num_gpus, shard_size, limit)
        values, raw = _parse_params(param)
        values = check_params(stage, values, raw)
        st_store = Store(store)  # a missing store is an error before any stage is built
        factory = stage_factory(stage, with_store(stage, values, str(store)))
        st = factory()
        mapper = mapper_for(engine, factory, actors=actors, num_gpus=num_gpus)
        summary = run_stage(st_store, st, shard_size=shard_size, limit=limit,
                            progress=True, map_batches=mapper)
    except (PrevadError, ValueError, TypeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    print_summary(summary, as_json=as_json)


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``prevad curate`` group."""
    app.command("run")(run_command)
