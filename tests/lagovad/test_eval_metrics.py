"""Metric tests against hand-computed cases (and sklearn as a second opinion)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lagovad.eval import metrics
from lagovad.eval.benchmarks import EvalError


def test_roc_auc_hand_computed():
    # labels 1,0,1,0 with scores .9,.8,.7,.1: positive/negative pairs (pos > neg):
    # (.9,.8) (.9,.1) (.7,.1) correct, (.7,.8) wrong -> 3/4.
    assert metrics.roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.75)


def test_roc_auc_ties_count_half():
    # One positive and one negative with the same score: the pair counts 1/2.
    # Pairs: (.5 vs .5) -> .5, (.5 vs .2) -> 1; two pairs -> 0.75.
    assert metrics.roc_auc([1, 0, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.75)


def test_average_precision_hand_computed():
    # Ranking .9(1) .8(0) .7(1) .1(0): precision at each positive = 1/1 and 2/3;
    # AP = (1 + 2/3) / 2 = 0.8333...
    assert metrics.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)


def test_pr_auc_trapezoid_hand_computed():
    # PR points (recall, precision) from sklearn's curve: (0,1) (.5,1) (.5,.5) (1,2/3) (1,.5).
    # Trapezoids: 0->.5 at height 1 -> .5; .5->.5 -> 0; .5->1 between .5 and 2/3 -> .5*(7/12)=7/24;
    # 1->1 -> 0. Total = 12/24 + 7/24 = 19/24, different from the step-wise AP (5/6 = 20/24).
    got = metrics.pr_auc_trapezoid([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    assert got == pytest.approx(19 / 24)
    assert got != pytest.approx(metrics.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]))


def test_metrics_match_sklearn_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 2)  # rounding creates ties
    assert metrics.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert metrics.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s))
    p, r, _ = skm.precision_recall_curve(y, s)
    assert metrics.pr_auc_trapezoid(y, s) == pytest.approx(skm.auc(r, p))


def test_roc_needs_both_classes():
    with pytest.raises(EvalError, match="both positive and negative"):
        metrics.roc_auc([1, 1], [0.1, 0.2])


def test_minmax_normalise():
    np.testing.assert_allclose(metrics.minmax_normalise(np.array([2.0, 4.0, 3.0])), [0, 1, 0.5])
    np.testing.assert_allclose(metrics.minmax_normalise(np.array([3.0, 3.0])), [0, 0])


def test_video_class_logits_min_normal_max_anomaly():
    sims = np.array([[5.0, 1.0, 0.0],
                     [2.0, 3.0, 0.5],
                     [4.0, 0.0, 2.5]])
    # Normal: min(5,2,4) = 2; class 1: max = 3; class 2: max = 2.5 -> argmax = class 1.
    np.testing.assert_allclose(metrics.video_class_logits(sims), [2.0, 3.0, 2.5])


def test_accuracy_and_macro_f1_hand_computed():
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    # accuracy 3/5. class 0: tp1 fp1 fn1 -> F1 .5; class 1: tp2 fp1 fn0 -> 4/5;
    # class 2: tp0 -> 0. macro = (0.5 + 0.8 + 0) / 3 = 0.4333...
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(0.6)
    assert metrics.macro_f1(y_true, y_pred, 3) == pytest.approx(1.3 / 3)
    assert metrics.macro_f1(y_true, y_pred, 3) == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro"))


def test_segments_from_scores():
    got = metrics.segments_from_scores(np.array([0.1, 0.6, 0.7, 0.2, 0.9]), 0.5)
    assert got == [(1, 3), (4, 5)]


def test_detection_map_hand_computed():
    # Class 1 has two ground-truth instances; proposals ranked .9 (IoU 1 with gt a: TP),
    # .8 (IoU 0 : FP), .7 (gt b [10,20) vs [12,20): IoU .8: TP at 0.5).
    # Precision/recall: (1, .5), (.5, .5), (2/3, 1). Interpolated AP = .5*1 + .5*(2/3) = 5/6.
    gts = [("v", 1, 0.0, 5.0), ("w", 1, 10.0, 20.0)]
    props = [("v", 1, 0.0, 5.0, 0.9), ("v", 1, 30.0, 40.0, 0.8), ("w", 1, 12.0, 20.0, 0.7)]
    res = metrics.detection_map(props, gts, n_classes=2, iou_thresholds=(0.5, 0.9))
    assert res[0.5] == pytest.approx(5 / 6)
    # At IoU 0.9 the third proposal misses: only 1 of 2 instances found -> AP = .5.
    assert res[0.9] == pytest.approx(0.5)
