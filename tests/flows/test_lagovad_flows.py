"""The extract-features, train and evaluate flows on tiny models (embedded Prefect server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flows.lagovad_flows import evaluate, extract_features, train_flow
from lagovad import get_model_config, load_checkpoint
from lagovad.eval.benchmarks import load_benchmark
from lagovad.synthetic import (
    DEFAULT_DESCRIPTIONS,
    SYNTHETIC_MODEL_ID,
    class_directions,
    populate_store,
    write_benchmark_features,
)
from lagovad.video import write_video
from prevad.store import Store


@pytest.mark.slow
def test_extract_features_flow_fills_the_store_and_resumes(tmp_path):
    video = write_video(tmp_path / "clip.mp4", 40,
                        lambda i: np.full((64, 80, 3), (i * 6) % 255, np.uint8))
    store = Store.init(tmp_path / "store")
    first = extract_features(str(store.root), inputs=[str(video)], model="lagovad-clip-tiny",
                             pretrained="none", device="cpu", batch_size=8)
    assert (first["extracted"], first["failed"]) == (1, 0)
    feats = store.read("features").to_pylist()
    assert len(feats) == 1 and feats[0]["model_id"] == first["model_id"]
    again = extract_features(str(store.root), model="lagovad-clip-tiny", pretrained="none",
                             device="cpu", batch_size=8)
    assert (again["extracted"], again["skipped"]) == (0, 1)


@pytest.mark.slow
def test_train_then_evaluate_flows(tmp_path):
    dim = int(get_model_config("lagovad-tiny")["video_dim"])
    store = Store.init(tmp_path / "store")
    populate_store(store, dim=dim)
    trained = train_flow(str(store.root), str(tmp_path / "train"), model="lagovad-tiny",
                         epochs=2, batch_size=16, lr=2e-3, feature_model=SYNTHETIC_MODEL_ID,
                         device="cpu", options={"warmup_steps": 5})
    assert trained["metrics"]["epoch"] == 2 and "val_auc" in json.dumps(trained["metrics"])
    load_checkpoint(Path(trained["checkpoint"]))  # a loadable safetensors checkpoint

    bench = load_benchmark("tad")
    rng = np.random.default_rng(0)
    direction = class_directions(list(DEFAULT_DESCRIPTIONS), dim)["Explosion"]
    write_benchmark_features([(v.name, v.spans, int(rng.integers(32, 96))) for v in bench.videos],
                             tmp_path / "features" / "tad", direction)
    results = evaluate(str(tmp_path / "features"), out=str(tmp_path / "eval"),
                       checkpoint=trained["checkpoint"], benchmarks=["tad"], device="cpu")
    det = results["benchmarks"]["tad"]["detection"]
    assert det["n_videos"] == len(bench.videos) == 100 and 0.0 <= det["auc"] <= 1.0
    assert Path(results["files"]["json"]).is_file()
