"""mAP@IoU against values produced once by VadCLIP's own ``getDetectionMAP``.

``golden/make_vadclip_map_golden.py`` (not run in CI) wrote fixed class predictions for a small
real-format subset of the UCF-Crime / XD-Violence test lists and ran VadCLIP's unchanged function
on them (commit recorded in ``golden/vadclip_map_golden.json``). Here the same predictions go
through ``lagovad eval --scores`` (our annotation parsing, class-column mapping and metric).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lagovad.eval.benchmarks import load_benchmark

GOLDEN = Path(__file__).parent / "golden"
runner = CliRunner()


def _app():
    from tests.lagovad.test_eval_cli import _app as app

    return app()


@pytest.mark.parametrize(("name", "protocol", "classes"), [
    ("xd", "vadclip", "file"),  # columns named by XD codes A, B1, ... in __classes__
    ("ucf", "vadclip", "vadclip"),  # VadCLIP's named layout
    ("ucf", "vadclip-ucf-quirk", "lagovad"),  # normal videos labelled 'A': Normal AP 0
])
def test_localisation_equals_vadclip_getdetectionmap(tmp_path, name, protocol, classes):
    golden = json.loads((GOLDEN / "vadclip_map_golden.json").read_text())
    assert golden["vadclip_commit"].startswith("f643c91")
    out = tmp_path / "out"
    res = runner.invoke(_app(), ["eval", "-b", name, "--scores",
                                 str(GOLDEN / f"vadclip_map_{name}.npz"), "--score-stride", "16",
                                 "--score-classes", classes, "--localisation", protocol,
                                 "--allow-missing", "--no-plots", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"Localisation protocol: {protocol}" in res.output
    data = json.loads((out / "results.json").read_text())["benchmarks"][name]
    loc = data["localisation"]
    assert loc["protocol"] == protocol and loc["n_videos"] == len(golden[name]["videos"])
    got = [100 * loc[f"mAP@{t:.1f}"] for t in golden["iou"]]
    np.testing.assert_allclose(got, golden[name][protocol], rtol=0, atol=1e-6)
    assert 100 * loc["mAP@avg"] == pytest.approx(np.mean(golden[name][protocol]), abs=1e-6)
    # The class scores also reach classification; anomaly = 1 - P(Normal) reaches detection.
    assert data["classification"]["n_videos"] == len(golden[name]["videos"])
    assert data["detection"]["n_videos"] == len(golden[name]["videos"])


def test_golden_subset_is_real_and_covers_the_hard_cases():
    golden = json.loads((GOLDEN / "vadclip_map_golden.json").read_text())
    for name in ("ucf", "xd"):
        bench = {v.name: v for v in load_benchmark(name).videos}
        videos = golden[name]["videos"]
        assert set(videos) <= set(bench)
        assert sum(not bench[v].is_anomaly for v in videos) >= 5
        # every class has ground truth, so a wrong class mapping changes the numbers
        assert {bench[v].class_name for v in videos} == {v.class_name for v in bench.values()}
    # XD videos with segments of two classes (label_B2-B6 ...) are in the subset.
    assert sum("-0-0" not in v for v in golden["xd"]["videos"]) >= 2
    # The quirk changes UCF's numbers (Normal scored vs always 0).
    assert golden["ucf"]["vadclip"] != golden["ucf"]["vadclip-ucf-quirk"]
