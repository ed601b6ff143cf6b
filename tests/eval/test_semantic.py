"""Semantic scores: confusion matrix, Hungarian matching, mIoU / pixel accuracy, metric rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskless.eval.metrics import metric_rows, write_metrics
from maskless.eval.semantic import (confusion_matrix, hungarian_match, matched_confusion, scores,
                                    semantic_confusion, semantic_results)

# gt / pred of the hand example (last pixel ignored):
GT = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 255])
PRED = np.array([2, 2, 2, 0, 1, 1, 0, 0, 0, 1])


def test_confusion_hand_example():
    """Rows gt, columns pred: gt0 -> pred2 x3, pred0 x1; gt1 -> pred1 x2, pred0 x1; gt2 -> pred0 x2; the
    ignored pixel (gt 255, pred 1) is not counted."""
    c = confusion_matrix(PRED, GT, 3, 3)
    assert c.dtype == np.int64
    np.testing.assert_array_equal(c, [[1, 0, 3], [1, 2, 0], [2, 0, 0]])


def test_hungarian_and_scores_hand_example():
    """Best one-to-one matching: pred2 -> class 0 (3 px), pred1 -> 1 (2 px), pred0 -> 2 (2 px), 7 px in all.
    Matched columns: class0 [3,0,0], class1 [0,2,0], class2 [1,1,2]; TP (3,2,2), GT (4,3,2), Pred (3,2,4):
    IoU = 3/4, 2/3, 2/4; mIoU = (0.75 + 0.6667 + 0.5) / 3 = 63.889 %; Acc = 7/9 = 77.778 %."""
    c = confusion_matrix(PRED, GT, 3, 3)
    match = hungarian_match(c)
    np.testing.assert_array_equal(match, [2, 1, 0])
    m = matched_confusion(c, match)
    np.testing.assert_array_equal(m, [[3, 0, 1], [0, 2, 1], [0, 0, 2]])
    s = scores(m)
    assert s["mIoU"] == pytest.approx(100 * (0.75 + 2 / 3 + 0.5) / 3)
    assert s["Acc"] == pytest.approx(700 / 9)
    assert s["IoU"] == pytest.approx([75.0, 200 / 3, 50.0])


def test_permuted_perfect_prediction_gives_100():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (2, 8, 8))
    perm = np.array([3, 0, 2, 1])
    res = semantic_results(list(perm[gt]), list(gt), num_pred=4, num_classes=4)
    assert res == {"semantic": {"mIoU": 100.0, "Acc": 100.0}}


def test_more_clusters_than_classes_counts_unmatched_pixels_as_errors():
    """2 classes, 3 clusters: class 0 = clusters 0 (3 px) and 2 (1 px), class 1 = cluster 1 (2 px).
    Cluster 2 stays unmatched: its pixel is an error. IoU0 = 3/4, IoU1 = 1; mIoU 87.5; Acc 5/6."""
    gt = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 2, 1, 1])
    c = confusion_matrix(pred, gt, 3, 2)
    np.testing.assert_array_equal(hungarian_match(c), [0, 1, -1])
    s = scores(matched_confusion(c, hungarian_match(c)))
    assert s["mIoU"] == pytest.approx(87.5) and s["Acc"] == pytest.approx(500 / 6)


def test_fewer_clusters_than_classes_gives_iou_zero_to_unmatched_class():
    """3 classes, 2 clusters: class 2 (1 px) gets no cluster: IoU 0. Cluster 0 covers class 0 (2 px) and
    the class-2 pixel: IoU0 = 2/3, IoU1 = 1, IoU2 = 0."""
    gt = np.array([0, 0, 1, 2])
    pred = np.array([0, 0, 1, 0])
    s = scores(matched_confusion(confusion_matrix(pred, gt, 2, 3), hungarian_match(confusion_matrix(pred, gt, 2, 3))))
    assert s["IoU"] == pytest.approx([200 / 3, 100.0, 0.0])


def test_class_without_gt_and_prediction_is_left_out_of_the_mean():
    """Class 2 never appears: IoU NaN, mean over classes 0 and 1 only (both perfect) = 100."""
    gt = np.array([0, 1, 1])
    s = scores(confusion_matrix(gt, gt, 3, 3))
    assert math.isnan(s["IoU"][2]) and s["mIoU"] == 100.0


def test_identity_match_and_tensor_input():
    gt = torch.tensor([[0, 1], [1, 255]])
    pred = torch.tensor([[1, 1], [1, 0]])  # ignored pixel's prediction does not count
    res = semantic_results([pred], [gt], num_pred=2, num_classes=2, match="identity", prefix="linear_")
    # class 0: TP 0, GT 1, Pred 0 -> IoU 0; class 1: TP 2, GT 2, Pred 3 -> 2/3; Acc 2/3
    assert res["semantic"]["linear_mIoU"] == pytest.approx(100 / 3)
    assert res["semantic"]["linear_Acc"] == pytest.approx(200 / 3)


def test_all_ignored_gives_nan():
    s = scores(confusion_matrix(np.zeros(3, int), np.full(3, 255), 2, 2))
    assert math.isnan(s["mIoU"]) and math.isnan(s["Acc"])


@pytest.mark.parametrize("pred,gt,match", [
    (np.array([0, 5]), np.array([0, 1]), "pred holds id 5"),
    (np.array([0, 1]), np.array([0, 7]), "gt holds class 7"),
    (np.array([0, 1, 1]), np.array([0, 1]), "shape"),
    (np.array([0.0, 1.0]), np.array([0, 1]), "integers"),
])
def test_bad_input_raises(pred, gt, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, gt, 2, 2)


def test_bad_image_is_named_and_options_checked():
    with pytest.raises(ValueError, match="image 1"):
        semantic_confusion([np.zeros(2, int), np.array([0, 9])], [np.zeros(2, int)] * 2, num_pred=2, num_classes=2)
    with pytest.raises(ValueError, match="identity"):
        semantic_results([np.zeros(2, int)], [np.zeros(2, int)], num_pred=3, num_classes=2, match="identity")
    with pytest.raises(ValueError, match="match"):
        semantic_results([np.zeros(2, int)], [np.zeros(2, int)], num_pred=2, num_classes=2, match="greedy")


def test_results_fit_metric_rows(tmp_path):
    gt = np.array([[0, 1], [1, 1]])
    res = semantic_results([gt], [gt], num_pred=2, num_classes=2, prefix="cluster_")
    rows = metric_rows(res, experiment="e", method="stego", variant="cluster", mode="plain", dataset="synthetic",
                       seed=0)
    write_metrics(tmp_path / "m.parquet", rows)
    assert [(r["iou_type"], r["metric"], r["value"]) for r in rows] == [
        ("semantic", "cluster_mIoU", 100.0), ("semantic", "cluster_Acc", 100.0)]


# Object-pixel scores (issue 15): 8 pixels, background 0 on four, class 1 on two, class 2 on two.
_GT8 = np.array([[0, 0, 0, 0, 1, 1, 2, 2]])


def test_background_everywhere_scores_nothing_on_object_pixels():
    res = semantic_results([np.zeros_like(_GT8)], [_GT8], num_pred=3, num_classes=3, match="identity",
                           background=0)["semantic"]
    # Confusion rows bg [4,0,0], 1 [2,0,0], 2 [2,0,0]: IoU bg 4/8, others 0 -> mIoU 50/3, Acc 4/8.
    assert res["mIoU"] == pytest.approx(50 / 3) and res["Acc"] == pytest.approx(50.0)
    # Object pixels alone: every one predicted background, an unmatched id -> 0 and 0.
    assert res["obj_mIoU"] == 0.0 and res["obj_Acc"] == 0.0


def test_object_scores_match_clusters_on_object_pixels_alone():
    pred = np.array([[1, 1, 1, 0, 0, 0, 2, 2]])
    res = semantic_results([pred], [_GT8], num_pred=3, num_classes=3, background=0)["semantic"]
    # All pixels: bg<-id1 (3 px), 1<-id0 (2), 2<-id2 (2). IoU 3/4, 2/3 (id0 also took a bg pixel), 2/2.
    assert res["mIoU"] == pytest.approx(100 * (3 / 4 + 2 / 3 + 1) / 3) and res["Acc"] == pytest.approx(87.5)
    # Object pixels: rows 1 [2,0,0], 2 [0,0,2]; 1<-id0, 2<-id2; the bg pixel id0 took is not scored.
    assert res["obj_mIoU"] == pytest.approx(100.0) and res["obj_Acc"] == pytest.approx(100.0)
    assert "obj_mIoU" not in semantic_results([pred], [_GT8], num_pred=3, num_classes=3)["semantic"]
    with pytest.raises(ValueError, match="background class 3"):
        semantic_results([pred], [_GT8], num_pred=3, num_classes=3, background=3)
