"""Full-length chunked inference and the evaluation protocol on model outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lagovad.eval import protocol
from lagovad.eval.benchmarks import load_benchmark, load_definition
from lagovad.eval.runner import ModelScorer, definition_texts


def test_chunked_inference_matches_per_chunk_forward(tiny_model):
    bench, defn = load_benchmark("tad"), load_definition("tad")
    rng = np.random.default_rng(0)
    max_len = tiny_model.config["max_len"]
    arrays = {bench.videos[0].name: rng.standard_normal((2 * max_len + 7, 32), np.float32),
              bench.videos[1].name: rng.standard_normal((5, 32), np.float32)}
    feats = {k: (lambda a=a: a) for k, a in arrays.items()}
    scorer = ModelScorer(tiny_model, torch.device("cpu"), batch_size=2)
    got = scorer.score(bench, defn, feats, progress=False)
    # Same scores whatever the batching across videos.
    again = ModelScorer(tiny_model, torch.device("cpu"), batch_size=64).score(
        bench, defn, feats, progress=False)
    long = arrays[bench.videos[0].name]
    assert got[bench.videos[0].name].anomaly.shape == (len(long),)
    np.testing.assert_allclose(got[bench.videos[0].name].anomaly,
                               again[bench.videos[0].name].anomaly, atol=1e-5)
    # The third chunk (7 steps) alone, unpadded, gives the last 7 scores: chunks do not overlap.
    text, _ = scorer.text_features(defn)
    with torch.no_grad():
        out = tiny_model(torch.from_numpy(long[2 * max_len:])[None], None, text=text)
    np.testing.assert_allclose(got[bench.videos[0].name].anomaly[2 * max_len:],
                               torch.sigmoid(out.frame_logits[0]).numpy(), atol=1e-5)
    # Class similarities: Normal + one TAD class, each the mean over its descriptions.
    assert got[bench.videos[1].name].class_sims.shape == (5, 2)


def test_definition_texts_descriptions_and_names():
    defn = load_definition("ucf")
    texts, cols, kind = definition_texts(defn, "descriptions")
    assert kind == "descriptions" and texts[0] == defn.normal and len(cols) == 14
    assert all(1 <= len(c) <= 6 for c in cols)
    texts, cols, kind = definition_texts(defn, "names")
    assert texts[:2] == ["Normal", "Abuse"] and cols[3] == [3]


def test_dota_minmax_per_video_changes_pooled_auc():
    # Two abnormal videos with offset score levels: pooled raw AUC < 1, min-max makes it 1.
    from lagovad.eval.benchmarks import Benchmark, BenchmarkVideo

    vids = (BenchmarkVideo("a", "Abnormal", ((0.5, 1.0),)),
            BenchmarkVideo("b", "Abnormal", ((0.5, 1.0),)))
    scores = {"a": np.array([0.6, 0.6, 0.9, 0.9]), "b": np.array([0.1, 0.1, 0.4, 0.4])}
    raw = protocol.evaluate_detection(Benchmark("dota", vids, "auc", False), scores)
    norm = protocol.evaluate_detection(Benchmark("dota", vids, "auc", True), scores)
    # raw: positives {.9,.9,.4,.4} vs negatives {.6,.6,.1,.1}: 12 of 16 pairs correct -> .75.
    assert raw.auc == pytest.approx(0.75) and norm.auc == pytest.approx(1.0)


def test_classification_uses_min_normal_max_class():
    bench, defn = load_benchmark("xd"), load_definition("xd")
    order = defn.classification_classes
    sims = {}
    for v in bench.videos:
        s = np.zeros((6, len(order)))
        s[:, 0] = 1.0
        target = order.index(defn.label_map.get(v.class_name, v.class_name))
        if target:
            s[2, 0] = -1.0  # Normal dips once: the min rule must see it
            s[2, target] = 0.5  # only the max over time exceeds min(Normal)
        sims[v.name] = s
    res = protocol.evaluate_classification(bench, defn, sims)
    assert res["accuracy"] == pytest.approx(1.0) and res["macro_f1"] == pytest.approx(1.0)
