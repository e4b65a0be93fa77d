"""The packages' layers (docs/DECISIONS.md, D2): every import points down.

``prevad`` (the dataset) imports nothing above it; ``lagovad`` imports ``prevad``; ``curation``
imports ``prevad`` and ``lagovad``; ``toolkit`` (the command composition) imports those three;
``flows`` may import everything. Every import statement counts, function-level ones included,
and so does ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prevad", "lagovad", "curation", "toolkit", "flows")

#: package -> the project packages it may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "prevad": frozenset(),
    "lagovad": frozenset({"prevad"}),
    "curation": frozenset({"prevad", "lagovad"}),
    "toolkit": frozenset({"prevad", "lagovad", "curation"}),
    "flows": frozenset({"prevad", "lagovad", "curation", "toolkit"}),
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and _callee(node.func) in ("import_module", "__import__")):
            found.append((node.lineno, node.args[0].value))
    return found


def _callee(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def upward_imports(root: Path) -> list[str]:
    """``file:line imports module`` for every import of a package its layer may not import."""
    bad = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imported_modules(path.read_text(encoding="utf-8")):
                top = module.split(".")[0]
                if top in PACKAGES and top != package and top not in ALLOWED[package]:
                    bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return bad


def test_every_import_points_down():
    assert upward_imports(ROOT) == []


def test_the_walk_sees_every_package_and_the_imports_that_are_allowed():
    # the check is not vacuous: each package has files, and the allowed arrows exist
    files = {p: list((ROOT / p).rglob("*.py")) for p in PACKAGES}
    assert all(files.values()), {p: len(f) for p, f in files.items()}
    seen = {p: {m.split(".")[0] for f in fs
                for _, m in imported_modules(f.read_text(encoding="utf-8"))} for p, fs in
            files.items()}
    assert {"prevad", "lagovad"} <= seen["curation"]
    assert "prevad" in seen["lagovad"]
    assert {"prevad", "curation"} <= seen["toolkit"]


@pytest.mark.parametrize("source", [
    "from curation.cli import app\n",
    "def f():\n    import lagovad.detect as d\n    return d\n",
    "class C:\n    def m(self):\n        from flows import demo\n",
    "import importlib\nimportlib.import_module('lagovad.detect')\n",
    "__import__('toolkit.cli')\n",
])
def test_an_upward_import_in_the_data_layer_is_found(tmp_path, source):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "prevad" / "bad.py").write_text(source)
    [found] = upward_imports(tmp_path)
    assert found.startswith("prevad/bad.py:")


def test_downward_and_relative_imports_are_fine(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "curation" / "ok.py").write_text(
        "from prevad.store import Store\nimport lagovad\nfrom . import sibling\n")
    (tmp_path / "flows" / "ok.py").write_text("from toolkit.cli import app\n")
    assert upward_imports(tmp_path) == []
