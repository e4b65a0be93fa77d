"""The model-based stage commands (describe, verify, judge, describe-anomaly): their engine
options, the command generated from a :class:`~curation.model_stage.ModelStage` declaration,
and their error handling (one ``error: ...`` line, exit code 2).

A model stage's options are declared once: the engine options here (:class:`EngineOptions`)
and the stage's config dataclass (its fields, :mod:`curation.options`). The command, ``prevad
curate run -p`` (:mod:`curation.stage_params`) and the flows (:mod:`curation.stages`) all read
and check them from there.

Nothing here imports the model stack: a stage command's module is imported only when that
command runs (see :mod:`curation.cli`), and torch only when a model is built.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from curation.engines import ENGINES, EngineError, Sampling
from curation.frames import FrameError
from curation.mllm import EngineConfig
from curation.options import (
    check_bool,
    check_choice,
    check_limit,
    check_number,
    check_text,
    command_from,
    json_option,
    opt,
    settings_from,
    settings_from_cli,
    settings_parameters,
    store_argument,
)
from prevad.errors import PrevadError, ValidationError
from prevad.store import Store

if TYPE_CHECKING:
    from curation.model_stage import ModelStage


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The engine options every model stage takes (command options, ``-p`` keywords and flow
    parameters alike), checked when built; :meth:`config` is the :class:`EngineConfig`.

    Raises:
        ValidationError: a value breaks its rule (unknown engine, openai without a base URL,
            a count below 1, a NaN or negative timeout or temperature, ...).
    """

    engine: str = opt("transformers", f"Inference engine: {' | '.join(ENGINES)}.")
    model: str = opt("", "Model directory or cached hub id (transformers, vllm); served model "
                     "name (openai).", required=True)
    device: str = opt("auto", "transformers: auto | cpu | cuda | cuda:N.")
    batch_size: int = opt(8, "Requests per engine call.")
    base_url: str = opt("", "openai: server URL, e.g. http://127.0.0.1:8000/v1.")
    api_key: str = opt("EMPTY", "openai: API key.", envvar="OPENAI_API_KEY")
    concurrency: int = opt(8, "openai: requests in flight.")
    timeout: float = opt(120.0, "openai: seconds per request.")
    max_tokens: int = opt(512, "Most new tokens per answer.")
    temperature: float = opt(0.0, "Sampling temperature; 0 = greedy.")
    seed: int = opt(0, "Sampling seed.")
    cache: bool = opt(True, "Use the request cache under <store>/cache (--no-cache: ask the "
                      "engine every time).")

    def __post_init__(self) -> None:
        check_choice(self, "engine", list(ENGINES))
        check_text(self, "model", optional=False)
        check_text(self, "device", optional=False)
        for name in ("batch_size", "concurrency", "max_tokens"):
            check_number(self, name, integer=True, minimum=1, strict=False)
        check_number(self, "timeout")
        check_number(self, "temperature", strict=False)
        check_number(self, "seed", integer=True, strict=False)
        check_bool(self, "cache")
        for name in ("base_url", "api_key"):
            if not isinstance(getattr(self, name), str):
                raise ValidationError(f"--{name.replace('_', '-')} ({name}) must be a text, "
                                      f"got {getattr(self, name)!r}")
        if self.engine == "openai" and not self.base_url:
            raise ValidationError("--engine openai needs --base-url (e.g. "
                                  "http://127.0.0.1:8000/v1)")

    def config(self) -> EngineConfig:
        """The :class:`EngineConfig` of these options."""
        return EngineConfig(self.engine, self.model, device=self.device,
                            batch_size=self.batch_size, base_url=self.base_url or None,
                            api_key=self.api_key, concurrency=self.concurrency,
                            timeout=self.timeout,
                            sampling=Sampling(self.max_tokens, self.temperature, 1.0, self.seed),
                            cache=self.cache)


def engine_config(**values: Any) -> EngineConfig:
    """An :class:`EngineConfig` from engine option keywords (:class:`EngineOptions`).

    Raises:
        ValidationError: an unknown keyword or a value its option refuses.
    """
    return settings_from(EngineOptions, values, "engine options").config()


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


def model_stage_command(app: typer.Typer, spec: ModelStage) -> None:
    """Register ``prevad curate <spec.name>`` for a model stage, generated from declarations.

    Options: the store argument, the engine options (:class:`EngineOptions`), one option per
    option of the stage's config class (``spec.config``: frames, thresholds, and the
    ``--<upstream>-version`` of each upstream stage it reads), ``--limit`` and ``--json``. The
    configs are built (and so checked) before the store is opened; the command runs
    ``spec.run(store, ecfg, cfg, limit=..., progress=True)`` and prints its summary the way
    every stage command does (:func:`curation.common.print_summary`); errors are one line.
    """
    from curation.common import print_summary

    engine_params = settings_parameters(EngineOptions)
    config_params = settings_parameters(spec.config)
    engine_keys = {p.name for p in engine_params}
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        store_argument(), *engine_params, *config_params,
        inspect.Parameter("limit", kw, annotation=int | None,
                          default=typer.Option(None, help="at most this many items")),
        json_option(),
    ]

    def body(root: Path, limit: int | None, as_json: bool, **values: Any) -> None:
        with cli_errors():
            check_limit(limit)
            ecfg = settings_from(EngineOptions, {k: v for k, v in values.items()
                                                 if k in engine_keys}).config()
            cfg = settings_from_cli(spec.config, {k: v for k, v in values.items()
                                                  if k not in engine_keys})
            store = Store(root)
            summary = spec.run(store, ecfg, cfg, limit=limit, progress=True)
        print_summary(summary, as_json=as_json)

    doc = spec.help or (spec.config.__doc__ or "").split("\n\n")[0]
    app.command(spec.name)(command_from(body, params, doc,
                                        f"{spec.name.replace('-', '_')}_cmd"))


def registrar(spec: ModelStage) -> Callable[[typer.Typer], None]:
    """The ``register(app)`` of a model stage's module (see :mod:`curation.cli`)."""

    def register(app: typer.Typer) -> None:
        model_stage_command(app, spec)

    register.__doc__ = f"Add ``prevad curate {spec.name}``."
    return register
