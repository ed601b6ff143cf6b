"""Semantic segmentation scores: confusion matrix, Hungarian matching, mIoU and pixel accuracy.

METHODS.md "Evaluation": unsupervised outputs (cluster ids) are mapped to classes by Hungarian matching on
the confusion matrix (maximising the matched pixels, as STEGO, Hamilton et al. 2022, Sec. 4 evaluates);
supervised outputs (a linear probe) are scored with the identity mapping.

Conventions:
- A confusion matrix is int64 (num_classes, num_pred): rows are ground-truth classes, columns predicted
  ids; pixels whose ground truth is `ignore_index` are left out.
- With more predicted ids than classes, the unmatched ids stay in the matched confusion as extra columns:
  their pixels are errors (they count in the ground truth of their row, never as a true positive). With
  fewer, the classes that get no id have an all-zero column (IoU 0 when they have ground truth).
- IoU_c = TP_c / (GT_c + Pred_c - TP_c). A class with no ground-truth pixel and no predicted pixel has an
  undefined IoU (NaN) and is left out of the mean; a class with predictions but no ground truth has IoU 0
  and counts. Acc = matched pixels / valid pixels. Both in percent.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

MATCHES = ("hungarian", "identity")


def confusion_matrix(pred, gt, num_pred: int, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(num_classes, num_pred) int64 counts of (gt class, predicted id) over the pixels of one map or a batch.

    pred, gt: integer arrays (or tensors) of the same shape. Values of gt must lie in [0, num_classes) or be
    ignore_index; values of pred in [0, num_pred) wherever gt is valid. Anything else is a ValueError.
    """
    pred, gt = _as_int_array(pred, "pred"), _as_int_array(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    if num_pred < 1 or num_classes < 1:
        raise ValueError(f"num_pred ({num_pred}) and num_classes ({num_classes}) must be >= 1")
    valid = gt != ignore_index
    g, p = gt[valid], pred[valid]
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        bad = g[(g < 0) | (g >= num_classes)][0]
        raise ValueError(f"gt holds class {bad} outside [0, {num_classes}) (ignore_index {ignore_index})")
    if p.size and (p.min() < 0 or p.max() >= num_pred):
        bad = p[(p < 0) | (p >= num_pred)][0]
        raise ValueError(f"pred holds id {bad} outside [0, {num_pred}) at a valid gt pixel")
    counts = np.bincount(g * num_pred + p, minlength=num_classes * num_pred)
    return counts.reshape(num_classes, num_pred).astype(np.int64)


def _as_int_array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {x.dtype}")
    return x.astype(np.int64, copy=False)


def hungarian_match(confusion: np.ndarray) -> np.ndarray:
    """(num_pred,) int64: the class matched to each predicted id, -1 where none (more ids than classes).

    One-to-one assignment maximising the matched pixels sum_c confusion[c, match^-1(c)]
    (scipy.optimize.linear_sum_assignment on the rectangular matrix).
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2:
        raise ValueError(f"confusion must be 2-D (num_classes, num_pred), got shape {confusion.shape}")
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    match = np.full(confusion.shape[1], -1, dtype=np.int64)
    match[cols] = rows
    return match


def matched_confusion(confusion: np.ndarray, match: np.ndarray) -> np.ndarray:
    """(C, max(C, P)) columns reordered so that column c holds the id matched to class c (zeros if none);
    the unmatched ids follow as extra columns (their pixels count as errors)."""
    num_classes, num_pred = confusion.shape
    if match.shape != (num_pred,):
        raise ValueError(f"match has shape {match.shape}, expected ({num_pred},)")
    out = np.zeros((num_classes, max(num_classes, num_pred)), dtype=np.int64)
    extra = num_classes
    for p, c in enumerate(match):
        if c >= 0:
            out[:, c] += confusion[:, p]
        else:
            out[:, extra] = confusion[:, p]
            extra += 1
    return out


def scores(confusion: np.ndarray) -> dict:
    """{"mIoU", "Acc"} in percent and "IoU": per-class IoU in percent (NaN where undefined).

    confusion: (C, P) with P >= C where column c is the prediction of class c (identity, or the output of
    matched_confusion); columns past C are unmatched ids. No valid pixel at all gives NaN for both.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    num_classes, num_pred = confusion.shape
    if num_pred < num_classes:
        raise ValueError(f"scores needs at least as many columns as classes, got shape {confusion.shape}; "
                         "apply matched_confusion first")
    tp = np.diag(confusion[:, :num_classes])  # (C,)
    gt = confusion.sum(1)  # (C,)
    pred = confusion[:, :num_classes].sum(0)  # (C,)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = confusion.sum()
    miou = float(np.nanmean(iou)) * 100 if np.isfinite(iou).any() else float("nan")
    acc = float(tp.sum() / total) * 100 if total > 0 else float("nan")
    return {"mIoU": miou, "Acc": acc, "IoU": [float(v) * 100 for v in iou]}


def semantic_confusion(preds: Sequence, gts: Sequence, *, num_pred: int, num_classes: int,
                       ignore_index: int = 255) -> np.ndarray:
    """Summed confusion over a list of per-image maps (each pair of equal shape; sizes may differ)."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground-truth maps")
    total = np.zeros((num_classes, num_pred), dtype=np.int64)
    for i, (p, g) in enumerate(zip(preds, gts)):
        try:
            total += confusion_matrix(p, g, num_pred, num_classes, ignore_index)
        except ValueError as e:
            raise ValueError(f"image {i}: {e}") from e
    return total


def object_confusion(confusion: np.ndarray, background: int, match: str) -> np.ndarray:
    """The confusion of the object pixels alone, ready for `scores`: the background row left out (its pixels
    are not scored), then cluster ids Hungarian-matched to the object classes on those pixels ("hungarian"),
    or for class predictions ("identity") the object classes' columns with the background column last, as an
    unmatched id (a background prediction on an object pixel is an error)."""
    obj = np.delete(np.asarray(confusion), background, axis=0)  # (C - 1, P)
    if match == "hungarian":
        return matched_confusion(obj, hungarian_match(obj))
    return np.concatenate([np.delete(obj, background, axis=1), obj[:, [background]]], axis=1)


def semantic_results(preds: Sequence, gts: Sequence, *, num_pred: int, num_classes: int,
                     match: str = "hungarian", ignore_index: int = 255, prefix: str = "",
                     background: int | None = None) -> dict:
    """{"semantic": {prefix + "mIoU": .., prefix + "Acc": ..}} for maskless.eval.metrics.metric_rows.

    match: "hungarian" for cluster ids (one matching over the whole dataset), "identity" for class
    predictions (then num_pred must equal num_classes). `prefix` tells probes apart in one stage's rows
    (e.g. "cluster_", "linear_crf_"). With `background` (a class id), also "obj_mIoU" and "obj_Acc": the
    same scores on the object pixels alone (object_confusion), which a map of background everywhere cannot
    score on: on data that is mostly background, mIoU and Acc reward predicting background.
    """
    if match not in MATCHES:
        raise ValueError(f"match {match!r} unknown; choices: {list(MATCHES)}")
    if match == "identity" and num_pred != num_classes:
        raise ValueError(f"identity matching needs num_pred == num_classes, got {num_pred} and {num_classes}")
    raw = semantic_confusion(preds, gts, num_pred=num_pred, num_classes=num_classes, ignore_index=ignore_index)
    confusion = matched_confusion(raw, hungarian_match(raw)) if match == "hungarian" else raw
    s = scores(confusion)
    out = {f"{prefix}mIoU": s["mIoU"], f"{prefix}Acc": s["Acc"]}
    if background is not None:
        if not 0 <= background < num_classes or num_classes < 2:
            raise ValueError(f"background class {background} is not one of {num_classes} classes (2 or more)")
        o = scores(object_confusion(raw, background, match))
        out.update({f"{prefix}obj_mIoU": o["mIoU"], f"{prefix}obj_Acc": o["Acc"]})
    return {"semantic": out}
