"""The package's layering: one error root, no import cycle, no global state changed, no I/O
when a model is constructed."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import lagovad
from lagovad.config import ModelConfig, ModelConfigError
from lagovad.errors import LagovadError
from lagovad.model import LaGoVAD
from lagovad.text import load_clip_text

PACKAGE = Path(lagovad.__file__).parent


def _lagovad_imports(module: Path) -> set[str]:
    """Every lagovad module imported anywhere in a file, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lagovad"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lagovad")}
    return found


@pytest.mark.parametrize("lower", ["checkpoint", "convert", "model", "config", "text"])
def test_files_and_models_sit_below_the_factory(lower):
    # checkpoint <-> factory <-> convert used to import each other inside functions
    assert "lagovad.factory" not in _lagovad_imports(PACKAGE / f"{lower}.py")
    assert "lagovad" not in _lagovad_imports(PACKAGE / f"{lower}.py")  # nor the front door


@pytest.mark.parametrize("lower", ["train", "data", "synthesis", "loss", "recipe", "labels",
                                   "metrics"])
def test_training_sits_below_the_evaluation_harness(lower):
    # labels and metrics are shared by the trainer and the harness: they live below both
    assert not {m for m in _lagovad_imports(PACKAGE / f"{lower}.py")
                if m.startswith("lagovad.eval")}


def test_every_domain_error_derives_from_lagovad_error():
    roots = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                roots.append((path.relative_to(PACKAGE).as_posix(), node.name))
    assert len(roots) >= 15
    import importlib

    for rel, name in roots:
        module = importlib.import_module("lagovad." + rel.removesuffix(".py").replace("/", "."))
        assert issubclass(getattr(module, name), LagovadError), (rel, name)


def test_plots_leave_the_callers_matplotlib_backend_alone(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    from lagovad.train import plot_history

    matplotlib.use("pdf")  # stands for a caller's own backend (a notebook's, a GUI's)
    try:
        history = [{"epoch": e, "loss": 1.0 / e, "val_auc": 0.5 + e / 10} for e in (1, 2)]
        plot_history(history, tmp_path / "curves.png")
        from prevad import Store
        from prevad.card import write_card

        write_card(Store.init(tmp_path / "s"), tmp_path / "card" / "c.md")
        assert matplotlib.get_backend() == "pdf"
        assert plt.get_fignums() == []  # no pyplot figure left open
        assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        matplotlib.use("agg")


def test_constructing_a_model_does_no_io(monkeypatch, tiny_model):
    config = lagovad.get_model_config("lagovad-tiny")
    backbone = tiny_model.text.backbone

    def no_io(*args, **kwargs):
        raise AssertionError("file or network I/O while constructing a model")

    monkeypatch.setattr("builtins.open", no_io)
    monkeypatch.setattr(Path, "read_bytes", no_io)
    monkeypatch.setattr(Path, "read_text", no_io)
    monkeypatch.setattr("lagovad.text.load_clip_text", no_io)
    monkeypatch.setattr("lagovad.factory.load_clip_text", no_io)
    model = LaGoVAD(config, backbone)
    assert model.text.backbone is backbone
    with pytest.raises(TypeError):
        LaGoVAD(config)  # the backbone is the caller's (the factory's) to load


def test_model_config_is_typed_with_defaults_in_one_place():
    raw = lagovad.get_model_config("lagovad-tiny")
    del raw["temporal"]["dropout"], raw["prompts"]["init_std"], raw["class_head"]
    cfg = ModelConfig.from_dict(raw)
    assert cfg.temporal.dropout == 0.1 and cfg.prompts.init_std == 0.02
    assert cfg.class_head.temperature_init == 0.2
    model = LaGoVAD(cfg, load_clip_text(cfg.clip))
    assert model.cfg == cfg and model.config["temporal"]["dropout"] == 0.1
    assert json.loads(json.dumps(model.config)) == cfg.to_dict()


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["class_head"].update(temperature_init=float("nan")),
     "class_head.temperature_init must be a finite number, got nan"),
    (lambda c: c["temporal"].update(heads="2"), "temporal.heads must be an integer"),
    (lambda c: c.pop("fusion"), "fusion is missing"),
    (lambda c: c["binary_head"].update(kernal_size=3), r"unknown key\(s\) \['kernal_size'\]"),
    (lambda c: c["clip"].update(scale=float("inf")), "clip.scale must be a finite number"),
])
def test_model_config_errors_name_the_field(edit, message):
    raw = lagovad.get_model_config("lagovad-tiny")
    edit(raw)
    with pytest.raises(ModelConfigError, match=message):
        lagovad.factory.build_model(raw)


def test_lagovad_error_is_exported():
    assert lagovad.LagovadError is LagovadError
    assert issubclass(lagovad.CheckpointError, LagovadError)
