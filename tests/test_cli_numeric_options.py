"""Every numeric option of ``prevad`` and ``lagovad`` refuses NaN, inf, negatives and zero
where they mean nothing: one ``error:`` line naming the option and its rule, exit code 2, and
nothing written.

The commands are found by walking the click command tree of both apps, so a numeric option
added later is checked too. ``prevad curate`` (its stage options are checked by the stages'
own tests) and ``lagovad train`` (its own tests) are left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from lagovad.cli import app as lagovad_app
from toolkit.cli import app as prevad_app

runner = CliRunner()
BAD_VALUES = ("nan", "inf", "-1", "0")
#: Sub-trees checked elsewhere.
SKIPPED = {("prevad", "curate"), ("lagovad", "train")}
#: Values a numeric option legitimately takes, with why (anything else is refused).
ACCEPTED: dict[tuple[str, str, str], str] = {
    ("prevad init", "--compact-threshold", "0"): "0 turns automatic compaction off",
    ("lagovad extract", "--offset", "0"): "frame 0 is the first frame",
    ("lagovad detect", "--threshold", "0"): "a threshold in [0, 1]: every step is anomalous",
    ("lagovad detect", "--min-duration", "0"): "keep intervals of any length",
    ("lagovad detect", "--merge-gap", "0"): "merge only touching intervals",
}
#: Arguments that make a command cheap and fail early for an unrelated reason once its
#: options are accepted (no model is loaded, no network is asked).
EXTRA: dict[str, list[str]] = {
    "lagovad extract": ["--model", "lagovad-clip-tiny", "--pretrained", "none"],
}
#: Options the walk must find (it would pass vacuously if it found none).
EXPECTED = {
    ("prevad init", "--compact-threshold"), ("prevad review push", "--media-fps"),
    ("prevad review export", "--media-fps"), ("lagovad extract", "--stride"),
    ("lagovad extract", "--offset"), ("lagovad extract", "--size"),
    ("lagovad extract", "--batch-size"), ("lagovad extract", "--workers"),
    ("lagovad detect", "--threshold"), ("lagovad detect", "--min-duration"),
    ("lagovad detect", "--merge-gap"), ("lagovad eval", "--score-stride"),
    ("lagovad eval", "--frame-repeat"), ("lagovad eval", "--batch-size"),
}


def _annotation(param: Any) -> Any:
    desc = getattr(param, "type_descriptor", None)
    if desc is not None:
        return desc.annotation
    return {"integer": int, "float": float}.get(getattr(getattr(param, "type", None), "name",
                                                        None))


def _commands(app: typer.Typer, name: str) -> list[tuple[list[str], Any]]:
    """(argv prefix, click command) of every leaf command under ``app``."""
    out = []

    def walk(cmd: Any, path: list[str]) -> None:
        if (path[0], path[1] if len(path) > 1 else "") in SKIPPED:
            return
        subs = getattr(cmd, "commands", None)
        if subs is None:
            out.append((path, cmd))
            return
        for sub_name in sorted(subs):
            walk(subs[sub_name], [*path, sub_name])

    walk(get_command(app), [name])
    return out


def _placeholder(param: Any, tmp: Path) -> str:
    ann = _annotation(param)
    return str(tmp / "missing") if ann is Path or ann is None or "path" in str(ann).lower() \
        else "x"


def _cases() -> list[tuple[str, list[str], str, str]]:
    """(command, argv, option, value) for every numeric option and bad value."""
    cases = []
    for app, name in ((prevad_app, "prevad"), (lagovad_app, "lagovad")):
        for path, cmd in _commands(app, name):
            numeric = [p for p in cmd.params if _annotation(p) in (int, float)
                       and not getattr(p, "is_flag", False)]
            for p in numeric:
                opt = next(o for o in p.opts if o.startswith("--"))
                for value in BAD_VALUES:
                    cases.append((" ".join(path), path[1:], opt, value))
    return cases


CASES = _cases()


def test_the_walk_finds_every_known_numeric_option() -> None:
    found = {(c, opt) for c, _, opt, _ in CASES}
    assert found >= EXPECTED, EXPECTED - found
    assert not {c for c, _, _, _ in CASES} & {"prevad curate", "lagovad train"}


def _required(app_name: str, argv: list[str], tmp: Path) -> list[str]:
    """Placeholder values for a command's required arguments and options."""
    app = prevad_app if app_name == "prevad" else lagovad_app
    cmd = get_command(app)
    for part in argv:
        cmd = cmd.commands[part]
    args: list[str] = []
    for p in cmd.params:
        if not p.required:
            continue
        if p.opts[0].startswith("-"):
            args += [p.opts[0], "http://127.0.0.1:9" if "url" in p.name else
                     _placeholder(p, tmp)]
        else:
            args.append(_placeholder(p, tmp))
    return args


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("command, argv, option, value", CASES,
                         ids=[f"{c}-{o}={v}" for c, _, o, v in CASES])
def test_numeric_option_values(command: str, argv: list[str], option: str, value: str,
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # outputs that default to the working folder land here
    app = prevad_app if command.startswith("prevad") else lagovad_app
    args = [*argv, *_required(command.split()[0], argv, tmp_path), *EXTRA.get(command, []),
            f"{option}={value}"]
    before = _tree(tmp_path)
    res = runner.invoke(app, args, env={**os.environ, "LABEL_STUDIO_API_KEY": "t"})
    naming = [ln for ln in res.stderr.splitlines() if ln.startswith("error:") and option in ln]
    if (command, option, value) in ACCEPTED:
        assert not naming, res.output  # got past the option checks
        return
    errors = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2, (args, res.output)
    assert len(errors) == 1 and errors[0].startswith(f"error: {option} must be "), res.stderr
    assert f"got {value}" in errors[0] or f"got {float(value)!r}" in errors[0], errors
    assert _tree(tmp_path) == before  # nothing written


def test_a_valid_value_is_passed_on_unchanged(tmp_path: Path) -> None:
    res = runner.invoke(prevad_app, ["init", str(tmp_path / "s"), "--compact-threshold", "7"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s" / "store.json").read_text())["compact_threshold"] == 7
    res = runner.invoke(prevad_app, ["init", str(tmp_path / "t"), "--compact-threshold", "2.5"])
    assert res.exit_code == 2 and res.stderr.strip() == (
        "error: --compact-threshold must be a whole number >= 0, got 2.5"), res.stderr
