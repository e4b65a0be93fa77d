"""Metric tests against hand-computed cases (and sklearn as a second opinion)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lagovad import metrics
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
    # A 4th class nobody has nor predicts: torchmetrics leaves it out, "zero" divides by 4.
    assert metrics.macro_f1(y_true, y_pred, 4) == pytest.approx(1.3 / 3)
    assert metrics.macro_f1(y_true, y_pred, 4, absent="zero") == pytest.approx(1.3 / 4)


def test_macro_f1_equals_torchmetrics_on_ucf_subset_without_a_class():
    # The UCF test labels without Abuse (what --allow-missing can produce), predictions that
    # never say Abuse: the authors' torchmetrics F1Score leaves Abuse out of the mean.
    torch = pytest.importorskip("torch")
    torchmetrics = pytest.importorskip("torchmetrics")
    from lagovad.eval.benchmarks import load_benchmark, load_definition

    defn = load_definition("ucf")
    order = defn.classification_classes
    abuse = order.index("Abuse")
    y_true = np.array([order.index(defn.label_map.get(v.class_name, v.class_name))
                       for v in load_benchmark("ucf").videos if v.class_name != "Abuse"])
    rng = np.random.default_rng(5)
    y_pred = np.where(rng.random(len(y_true)) < 0.4, y_true, rng.integers(0, len(order),
                                                                           len(y_true)))
    y_pred[y_pred == abuse] = 0
    f1 = torchmetrics.F1Score("multiclass", num_classes=len(order), average="macro")
    want = float(f1(torch.from_numpy(y_pred), torch.from_numpy(y_true)))
    assert metrics.macro_f1(y_true, y_pred, len(order)) == pytest.approx(want, abs=1e-6)
    zero = metrics.macro_f1(y_true, y_pred, len(order), absent="zero")
    assert zero == pytest.approx(want * 13 / 14, abs=1e-6) and zero < want


def test_segments_from_scores():
    got = metrics.segments_from_scores(np.array([0.1, 0.6, 0.7, 0.2, 0.9]), 0.5)
    assert got == [(1, 3), (4, 5)]


def _two_videos() -> tuple[list[np.ndarray], list, list]:
    """Two 32-frame videos, classes (Normal, A); hand-computed in the tests below."""
    v0 = np.zeros((32, 2))
    v0[:, 0] = 0.5  # constant Normal curve: no run above max - 0.6 (max - min) = 0.5
    v0[:, 1] = 0.2
    v0[8:16, 1] = 0.8  # run [8, 16)
    v0[20, 1] = 0.9  # a 1-frame run: dropped (runs need >= 2 frames)
    v1 = np.zeros((32, 2))
    v1[:16, 0], v1[16:, 0] = 0.9, 0.1
    v1[:, 1] = 1 - v1[:, 0]
    segments = [[(6, 16), (24, 30)], [(0, 16)]]
    labels = [[1, 1], [0]]
    return [v0, v1], segments, labels


def test_vadclip_map_hand_computed():
    # Class A: v0 top-2 mean (32 // 16 frames) = (.9 + .8) / 2 = .85, run [8,16) scores
    # max .8 + .7 * .85 = 1.395; v1's run [16,32) scores .9 + .7 * .9 = 1.53 and ranks first
    # but has no class-A ground truth (FP). [8,16) vs gt [6,16): IoU 8/10 = .8 -> TP at rank 2.
    # Non-interpolated AP = precision at the TP (1/2) / #gt (2) = .25 (interpolated: .25 too;
    # at IoU .9 no TP: 0). Normal: v1's run [0,16) equals its gt -> AP 1.
    # mAP over both classes incl. Normal: IoU .5 -> (1 + .25) / 2; IoU .9 -> (1 + 0) / 2.
    preds, segments, labels = _two_videos()
    got = metrics.vadclip_detection_map(preds, segments, labels, (0.5, 0.9))
    assert got == pytest.approx({0.5: 0.625, 0.9: 0.5})
    # A label that matches no class (VadCLIP's UCF 'A') is no ground truth: Normal AP 0, and
    # it still counts in the mean.
    got = metrics.vadclip_detection_map(preds, segments, [[1, 1], [None]], (0.5,))
    assert got == pytest.approx({0.5: 0.125})


def test_vadclip_map_zero_when_a_class_has_no_proposal():
    # VadCLIP returns 0 for the whole IoU as soon as one class has no proposal in any video.
    preds, segments, labels = _two_videos()
    for p in preds:
        p[:, 1] = 0.3
    assert metrics.vadclip_detection_map(preds, segments, labels, (0.5,)) == {0.5: 0.0}


def test_vadclip_map_rejects_mismatched_inputs():
    preds, segments, labels = _two_videos()
    with pytest.raises(EvalError, match="one entry per video"):
        metrics.vadclip_detection_map(preds, segments[:1], labels)
    with pytest.raises(EvalError, match=r"video 1 must be \[n_frames, 2\]"):
        metrics.vadclip_detection_map([preds[0], preds[1][:, :1]], segments, labels)
