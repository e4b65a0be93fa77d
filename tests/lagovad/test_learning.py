"""The model learns planted anomalies: detection, classification and definition steering.

Trained with the default recipe (the authors' training step) plus ``exclude_prob`` and
``detach_pool`` (see the config below).

Synthetic features: noise, plus a class-specific direction over the anomalous steps ("Assault"
and "Explosion" each have their own). Training videos are weakly labelled (video level only);
held-out test videos carry a short anomaly inside normal context.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import lagovad
from lagovad.data import frame_ground_truth, load_split
from lagovad.train import TrainConfig, train
from prevad import Store
from tests.lagovad.helpers import DESCRIPTIONS, DIM, MODEL_ID, make_store

CLASSES = list(DESCRIPTIONS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[torch.nn.Module, list]:
    root = tmp_path_factory.mktemp("learn-store")
    make_store(root, n_train=24, n_val=4, seed=1, splits=("train", "test"))
    out = tmp_path_factory.mktemp("learn-run")
    cfg = TrainConfig(
        store=str(root),
        out=str(out),
        model="lagovad-tiny",
        # steering (the last test) needs more steps than detection: at 20 epochs the scores
        # moved by only ~0.01 when a class was removed, at 100 they fall by ~0.4
        epochs=100,
        batch_size=16,
        lr=2e-3,
        warmup_steps=5,
        seed=11,
        device="cpu",
        val_split="",  # held-out videos are scored below, on the test split
        # the default (official) recipe with two of our additions: definition exclusion, which
        # steering needs, and detached contrastive pooling, without which the authors' raw
        # dot-product contrastive term swamps detection on these small features
        exclude_prob=0.5,
        detach_pool=True,
        progress=False,
    )
    metrics = train(cfg)
    assert metrics["epoch"] == 100
    model, _ = lagovad.load_checkpoint(out / "epoch-100")
    test = load_split(Store(root), "test", MODEL_ID, DIM, require_spans=True)
    return model, test


@torch.no_grad()
def _score(model, video: np.ndarray, classes: list[str]):
    definition = lagovad.AnomalyDefinition.from_strings(classes)
    out = model(torch.from_numpy(video)[None], None, definition)
    return torch.sigmoid(out.frame_logits[0]).numpy(), out.class_logits[0].numpy()


def test_frame_auc_on_held_out_videos(trained):
    model, test = trained
    scores, gts = [], []
    for v in test.videos:
        scores.append(_score(model, v.features, CLASSES)[0])
        gts.append(frame_ground_truth(test.spans[v.video_id], len(v.features)))
    auc = roc_auc_score(np.concatenate(gts), np.concatenate(scores))
    assert auc >= 0.9, auc


def test_class_head_names_the_planted_class(trained):
    model, test = trained
    hits = []
    for v in (v for v in test.videos if v.is_anomaly):
        _, sims = _score(model, v.features, CLASSES)
        # the authors' rule: min over time for Normal, max over time for each anomaly class
        video_logits = np.concatenate([[sims[:, 0].min()], sims[:, 1:].max(axis=0)])
        # index 0 is Normal: CLASSES[0 - 1] would wrongly count Normal as the last class
        hits.append((["Normal", *CLASSES])[int(video_logits.argmax())] == v.category)
    assert np.mean(hits) >= 0.9, hits


def test_removing_a_class_from_the_definition_lowers_its_videos_scores(trained):
    model, test = trained
    for cls in CLASSES:
        others = [c for c in CLASSES if c != cls]
        with_cls, without = [], []
        for v in (v for v in test.videos if v.category == cls):
            gt = frame_ground_truth(test.spans[v.video_id], len(v.features)).astype(bool)
            with_cls.append(_score(model, v.features, CLASSES)[0][gt].mean())
            without.append(_score(model, v.features, others)[0][gt].mean())
        # every video of the class scores lower, and clearly so on average
        assert all(w < k for w, k in zip(without, with_cls, strict=True)), (cls, with_cls, without)
        assert np.mean(with_cls) - np.mean(without) >= 0.1, (cls, with_cls, without)
