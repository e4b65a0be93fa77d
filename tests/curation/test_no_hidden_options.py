"""No hidden options: every keyword ``prevad curate run STAGE -p`` accepts is an option of
``prevad curate STAGE`` (and shows in its ``--help``), with the same default.

What ``-p`` accepts comes from the stage factories and their config dataclasses
(:func:`curation.stage_params.accepted_params`); what the command offers comes from the typer
command. A command may name an option a little differently from the field (see
:func:`_option_for`): without the ``_s`` unit suffix (``--min-shot`` for ``min_shot_s``),
inverted (``--no-cache`` for ``cache``), or one of :data:`ALIASES`.
"""

from __future__ import annotations

import inspect

import click
import pytest
import typer
from typer.testing import CliRunner

from curation.cli import app
from curation.registry import STAGES
from curation.stage_params import accepted_params

#: Field -> the option name commands use for it.
ALIASES = {"socket_timeout_s": "timeout", "io_timeout_s": "timeout", "model_dir": "model"}

#: The stage commands and the factory their ``-p`` goes to (retrieve's settings are built by
#: ``curation.stages.retrieve_settings``, used by the flows).
COMMANDS = {**{name: name for name in STAGES}, "retrieve": "curation.stages:retrieve_settings"}


def _commands() -> dict[str, click.Command]:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _is_option(p: click.Parameter) -> bool:
    # typer's parameters may come from its own copy of click: compare by kind, not class
    return getattr(p, "param_type_name", "") == "option"


def _option_names(cmd: click.Command) -> dict[str, click.Parameter]:
    out: dict[str, click.Parameter] = {}
    for p in cmd.params:
        if not _is_option(p):
            continue
        out[p.name] = p
        for flag in (*p.opts, *p.secondary_opts):
            out[flag.lstrip("-").replace("-", "_")] = p
    return out


def _option_for(field: str, options: dict[str, click.Parameter]
                ) -> tuple[click.Parameter | None, bool]:
    """(the option showing ``field``, whether it is inverted) or (None, False)."""
    for name in (field, field.removesuffix("_s"), ALIASES.get(field, "")):
        if name in options:
            return options[name], False
    if f"no_{field}" in options:
        return options[f"no_{field}"], True
    return None, False


def _gaps(stage: str, params: dict | None = None) -> tuple[list[str], list[str]]:
    """(fields without an option, fields whose option has another default)."""
    cmd = _commands()[stage]
    options = _option_names(cmd)
    if params is None:
        params, _ = accepted_params(COMMANDS[stage])
    missing, defaults = [], []
    for name, param in sorted(params.items()):
        opt, inverted = _option_for(name, options)
        if opt is None:
            missing.append(f"{name} ({param.origin})")
            continue
        if param.default is inspect.Parameter.empty or opt.required:
            continue
        shown = (not opt.default) if inverted else opt.default
        want = param.default
        if isinstance(want, tuple | list):
            want, shown = list(want), list(shown or [])
        if hasattr(want, "__fspath__"):
            want, shown = str(want), str(shown)
        if shown != want:
            defaults.append(f"{name}: option {opt.opts[0]} defaults to {shown!r}, "
                            f"-p default {want!r}")
    return missing, defaults


@pytest.mark.parametrize("stage", sorted(COMMANDS))
def test_every_run_parameter_is_a_command_option(stage):
    missing, defaults = _gaps(stage)
    assert not missing, f"`prevad curate {stage}` lacks options for: {', '.join(missing)}"
    assert not defaults, f"`prevad curate {stage}` shows other defaults: {'; '.join(defaults)}"


def test_every_add_setting_is_an_option_of_add():
    """``add`` is not a work-list stage (no ``-p``): its settings class is what its command,
    and anything calling :func:`curation.add.add`, configures."""
    from curation.add import AddSettings
    from curation.stage_params import _from_dataclass

    missing, defaults = _gaps("add", _from_dataclass(AddSettings))
    assert not missing and not defaults, (missing, defaults)


@pytest.mark.parametrize("stage", sorted([*COMMANDS, "add"]))
def test_help_lists_the_options(stage):
    """What the test above compares is what ``--help`` prints."""
    res = CliRunner().invoke(app, [stage, "--help"], env={"COLUMNS": "240"})
    assert res.exit_code == 0, res.output
    for p in _commands()[stage].params:
        if _is_option(p) and not p.hidden:
            assert p.opts[0] in res.output, (stage, p.opts[0])


def test_the_comparison_sees_a_missing_option():
    """The checker itself: a command without an option for a field is reported."""
    probe = typer.Typer()

    @probe.command()
    def clean(root: str, threshold: float = 27.0) -> None:  # pragma: no cover - never run
        """Only one of CleanPolicy's options."""

    options = _option_names(typer.main.get_command(probe))
    assert _option_for("threshold", options)[0] is not None
    assert _option_for("min_keep_s", options) == (None, False)


def test_accepted_params_match_what_the_factories_build(tmp_path):
    """Every keyword listed for the non-model stages really builds the stage (the list is not
    made up): the factory gets each at its default."""
    from curation.registry import build_stage
    from prevad.store import Store

    store = Store.init(tmp_path / "s")
    for stage in ("acquire", "record", "clean"):
        params, complete = accepted_params(stage)
        assert complete
        values = {n: p.default for n, p in params.items()}
        built = build_stage(stage, {"store": str(store.root), **values})
        assert built.name == stage
