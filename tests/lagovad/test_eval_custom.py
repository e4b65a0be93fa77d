"""`lagovad eval` on a custom benchmark: any split in the benchmarks' JSON format with its own
definition (e.g. a generated world's held-out split, curation.world)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from lagovad.cli import app
from lagovad.eval.benchmarks import load_benchmark, load_definition

runner = CliRunner()
#: The shared Normal prompt of the benchmarks' definitions (what the world's definition uses).
NORMAL = ("Normal behavior, views or surveillance content captured by camera that not involve "
          "any unexpected or unusual events.")


def _split(tmp_path):
    """Three videos (one abnormal) whose scores can only come from the given definition."""
    ann = [
        {"path": "test/videos/t000000.mp4", "class_name": "Fire", "anomaly_span": [[0.25, 0.5]]},
        {"path": "test/videos/t000001.mp4", "class_name": "Normal", "anomaly_span": []},
        {"path": "test/videos/t000002.mp4", "class_name": "Normal", "anomaly_span": []},
    ]
    definition = {"normal": NORMAL, "classes": ["Fire"],
                  "descriptions": {"Fire": ["A house is on fire."]}}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "def.json").write_text(json.dumps(definition))
    rng = np.random.default_rng(0)
    feats = tmp_path / "feats"
    feats.mkdir()
    for i in range(3):
        np.save(feats / f"t00000{i}.npy", rng.standard_normal((16, 32)).astype(np.float32))
    return tmp_path / "ann.json", tmp_path / "def.json", feats


def test_custom_benchmark_is_scored_with_its_definition(tmp_path, tiny_lagovad_checkpoint):
    ann, definition, feats = _split(tmp_path)
    bench = load_benchmark("world", ann)
    assert bench.metric == "auc" and not bench.minmax_per_video and bench.display_name == "world"
    assert [v.name for v in bench.videos] == ["t000000", "t000001", "t000002"]
    assert load_definition("world", definition).classes == ("Fire",)
    res = runner.invoke(app, ["eval", "-b", "world", "--annotations", str(ann), "--definition",
                              str(definition), "--features", str(feats), "--checkpoint",
                              str(tiny_lagovad_checkpoint), "--out", str(tmp_path / "out"),
                              "--device", "cpu", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "| world AUC |" in res.output
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    det = data["benchmarks"]["world"]["detection"]
    assert det["n_videos"] == 3 and 0.0 <= det["auc"] <= 1.0


def test_custom_benchmark_needs_its_files(tmp_path, tiny_lagovad_checkpoint):
    ann, definition, feats = _split(tmp_path)
    base = ["eval", "-b", "world", "--features", str(feats), "--checkpoint",
            str(tiny_lagovad_checkpoint), "--device", "cpu", "--no-plots"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"classes": ["Fire"]}))
    cases = [
        ([], "or a custom name"),  # no annotation nor definition file
        (["--annotations", str(ann)], "or a custom name"),  # no definition
        (["--annotations", str(ann), "--definition", str(broken)], "must be a JSON object with"),
        (["--annotations", str(ann), "--definition", str(tmp_path / "none.json")],
         "not found"),
    ]
    for extra, message in cases:
        res = runner.invoke(app, [*base, *extra])
        lines = [x for x in res.output.splitlines() if x.startswith("error:")]
        assert res.exit_code == 2, (extra, res.output)
        assert len(lines) == 1 and message in lines[0], (extra, res.output)
    # the seven keep their packaged definitions; a definition override is for one benchmark
    res = runner.invoke(app, [*base[:2], "ucf,tad", *base[3:], "--definition", str(definition)])
    assert res.exit_code == 2 and "--definition overrides one benchmark" in res.output
