"""Command-line options shared by the model-based stage commands (describe, verify, judge,
describe-anomaly), and their error handling: one ``error: ...`` line, exit code 2.

Nothing here imports the model stack: a stage command's module is imported only when that
command runs (see :mod:`curation.cli`), and torch only when a model is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from curation.engines import ENGINES, EngineError, Sampling
from curation.frames import FrameError
from curation.mllm import EngineConfig
from prevad.errors import PrevadError
from prevad.stage import StageSummary
from prevad.store import Store

if TYPE_CHECKING:
    from curation.model_stage import ModelStage

ROOT: Path = typer.Argument(..., help="The PreVAD store.")
ENGINE: str = typer.Option("transformers", help=f"Inference engine: {' | '.join(ENGINES)}.")
MODEL: str = typer.Option(..., help="Model directory or cached hub id (transformers, vllm); "
                          "served model name (openai).")
DEVICE: str = typer.Option("auto", help="transformers: auto | cpu | cuda | cuda:N.")
BATCH_SIZE: int = typer.Option(8, min=1, help="Requests per engine call.")
BASE_URL: str = typer.Option("", help="openai: server URL, e.g. http://127.0.0.1:8000/v1.")
API_KEY: str = typer.Option("EMPTY", envvar="OPENAI_API_KEY", help="openai: API key.")
CONCURRENCY: int = typer.Option(8, min=1, help="openai: requests in flight.")
TIMEOUT: float = typer.Option(120.0, help="openai: seconds per request.")
MAX_TOKENS: int = typer.Option(512, min=1, help="Most new tokens per answer.")
TEMPERATURE: float = typer.Option(0.0, min=0.0, help="0 = greedy.")
SEED: int = typer.Option(0, help="Sampling seed.")
NO_CACHE: bool = typer.Option(False, "--no-cache", help="Do not use the request cache.")
FRAMES: int = typer.Option(8, min=1, help="Frames sampled uniformly from each item's span.")
FRAME_SIZE: int = typer.Option(224, min=8, help="Frame side in pixels (square).")
LIMIT: int = typer.Option(0, min=0, help="Process at most this many items (0 = all).")
MIN_CHARS: int = typer.Option(20, help="Shorter descriptions are rejected.")
MAX_CHARS: int = typer.Option(2000, help="Longer descriptions are rejected.")


def engine_config(engine: str, model: str, device: str, batch_size: int, base_url: str,
                  api_key: str, concurrency: int, timeout: float, max_tokens: int,
                  temperature: float, seed: int, no_cache: bool) -> EngineConfig:
    """An :class:`EngineConfig` from the shared options.

    Raises:
        EngineError: unknown engine, or openai without --base-url.
    """
    if engine not in ENGINES:
        raise EngineError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "openai" and not base_url:
        raise EngineError("--engine openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    return EngineConfig(engine, model, device=device, batch_size=batch_size,
                        base_url=base_url or None, api_key=api_key, concurrency=concurrency,
                        timeout=timeout, sampling=Sampling(max_tokens, temperature, 1.0, seed),
                        cache=not no_cache)


def domain_errors() -> tuple[type[BaseException], ...]:
    """The errors a stage command reports as one line.

    ``lagovad.LagovadError`` is among them once :mod:`lagovad.errors` is loaded: importing it
    here would import torch (the ``lagovad`` package's front door) for every command, and no
    LagovadError can be raised before its module is loaded.
    """
    errors: tuple[type[BaseException], ...] = (PrevadError, EngineError, FrameError, OSError,
                                               ValueError)
    lagovad_errors = sys.modules.get("lagovad.errors")
    return errors + ((lagovad_errors.LagovadError,) if lagovad_errors is not None else ())


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn domain errors into one ``error: ...`` line and exit code 2."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, domain_errors()):
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def print_summary(summary: StageSummary) -> None:
    """The run's summary as one JSON line."""
    typer.echo(json.dumps(summary.to_dict()))


#: The engine options every model-stage command takes: name -> (type, typer default).
ENGINE_OPTIONS: dict[str, tuple[type, Any]] = {
    "engine": (str, ENGINE), "model": (str, MODEL), "device": (str, DEVICE),
    "batch_size": (int, BATCH_SIZE), "base_url": (str, BASE_URL), "api_key": (str, API_KEY),
    "concurrency": (int, CONCURRENCY), "timeout": (float, TIMEOUT),
    "max_tokens": (int, MAX_TOKENS), "temperature": (float, TEMPERATURE), "seed": (int, SEED),
    "no_cache": (bool, NO_CACHE),
}


def upstream_option(stage: str) -> Any:
    """``--<stage>-version``: the upstream version a stage reads (default: newest with ok)."""
    return typer.Option("", f"--{stage}-version",
                        help=f"The {stage} version to read (default: the newest one with ok "
                        f"results; `prevad curate status` shows it).")


def model_stage_command(app: typer.Typer, spec: ModelStage) -> Callable[[Any], Any]:
    """Register ``prevad curate <spec.name>`` for a model stage from its config builder.

    The decorated function takes the stage's own options (typer defaults) and returns the
    stage's config object; the command adds the store argument, the engine options
    (:data:`ENGINE_OPTIONS`), one ``--<upstream>-version`` option per upstream stage the spec
    reads, and ``--limit``, and runs ``spec.run(store, ecfg, cfg, limit=..., progress=True)``
    with one-line errors. Its help is the decorated function's docstring.
    """
    from curation.model_stage import version_field

    versions = {version_field(up): up for up in spec.upstream}

    def decorate(build_cfg: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(build_cfg)
        own = [p.replace(annotation=hints[p.name], kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(build_cfg).parameters.values()]
        kw = inspect.Parameter.KEYWORD_ONLY
        params = [
            inspect.Parameter("root", kw, default=ROOT, annotation=Path),
            *(inspect.Parameter(n, kw, default=d, annotation=t)
              for n, (t, d) in ENGINE_OPTIONS.items()),
            *own,
            *(inspect.Parameter(f, kw, default=upstream_option(up), annotation=str)
              for f, up in versions.items()),
            inspect.Parameter("limit", kw, default=LIMIT, annotation=int),
        ]

        def command(**values: Any) -> None:
            root, limit = values.pop("root"), values.pop("limit")
            engine_values = {n: values.pop(n) for n in ENGINE_OPTIONS}
            chosen = {f: values.pop(f) or None for f in versions}
            with cli_errors():
                store = Store(root)
                ecfg = engine_config(**engine_values)
                cfg = dataclasses.replace(build_cfg(**values), **chosen)
                print_summary(spec.run(store, ecfg, cfg, limit=limit or None, progress=True))

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__doc__ = build_cfg.__doc__
        command.__name__ = f"{build_cfg.__name__}_cmd"
        app.command(spec.name)(command)
        return build_cfg

    return decorate


def registrar(spec: ModelStage, options: Callable[..., Any]) -> Callable[[typer.Typer], None]:
    """The ``register(app)`` of a model stage's module (see :mod:`curation.cli`).

    Args:
        spec: the stage's declaration.
        options: the stage's own options (typer defaults) -> its config; its docstring is the
            command's help (see :func:`model_stage_command`).
    """

    def register(app: typer.Typer) -> None:
        model_stage_command(app, spec)(options)

    register.__doc__ = f"Add ``prevad curate {spec.name}``."
    return register
