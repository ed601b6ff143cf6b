"""PCT loss terms (METHODS.md "PCT: semi-and-weakly supervised semantic segmentation"), plain functions of
tensors, and the dynamic evaluation (the one piece with state, hence an nn.Module).

Conventions: logits (B, K, H, W) with class 0 = background; label maps (B, H, W) int64 with 255 = ignore;
`present` (B, K) bool = the classes of each image (ground-truth classes for a strong image, its tags for a
weak one). Background always counts as present: the functions set present[:, 0] themselves.

- cce: class-aware cross entropy, p_c = exp(f_c) / sum_{k in Y} exp(f_k): absent classes are set to -inf
  before log_softmax, so they get exactly zero probability and zero gradient. A non-ignored target pixel of
  an absent class is a ValueError (it would be an infinite loss: a label map and its class list disagree).
  Reduction: sum over valid pixels of weight x nll, divided by the number of valid pixels (not by the sum of
  weights), so an image of weight w contributes w times its plain loss, and weight 0 switches it off.
- mlsm_loss: multi-label soft margin on global max pooled foreground logits against the tags.
- h2p_loss / p2h_loss: cross supervision with the other network's class-restricted argmax as hard target
  (no gradient through the target); P2H carries the per-image dynamic-evaluation weight.
- DynamicEvaluation: EMA (momentum 0.99) of Pseudo-Net's per-class TP, GT and predicted pixel counts on the
  strong half; IoU_c = TP / (GT + Pred - TP); the weight of a weak image is min_{c in Y} IoU_c ^ 8, with Y its
  tags plus background.

Decisions where the paper is silent: before the first update, and for a class whose EMA union is still
zero (never in a strong image's ground truth nor predicted), IoU_c = `unseen_iou` (default 0: no evidence
that Pseudo-Net handles the class, so P2H is off for the images that carry it). The EMA starts from zero
counts; IoU is a ratio of three counts that share the same (1 - m^t) start-up factor, so no bias
correction is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskless.data.semantic import IGNORE  # the one ignore label of every semantic map

__all__ = ["IGNORE", "with_background", "restricted_logits", "restricted_argmax", "cce", "mlsm_loss",
           "h2p_loss", "p2h_loss", "confusion_counts", "DynamicEvaluation"]


def _check_logits(name: str, logits: Tensor, ndim: int = 4) -> None:
    if logits.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")


def with_background(present: Tensor, num_classes: int) -> Tensor:
    """(B, K) bool class sets with column 0 (background) set; ValueError on a wrong shape."""
    if present.ndim != 2 or present.shape[1] != num_classes:
        raise ValueError(f"present must be (B, {num_classes}), got shape {tuple(present.shape)}")
    present = present.to(torch.bool).clone()
    present[:, 0] = True
    return present


def restricted_logits(logits: Tensor, present: Tensor) -> Tensor:
    """(B, K, H, W) logits with absent classes set to -inf (background always kept)."""
    keep = with_background(present, logits.shape[1]).to(logits.device)  # (B, K)
    return logits.masked_fill(~keep[:, :, None, None], float("-inf"))  # (B, K, H, W)


def restricted_argmax(logits: Tensor, present: Tensor) -> Tensor:
    """(B, H, W) int64: the best class among the image's classes; no gradient."""
    return restricted_logits(logits.detach(), present).argmax(dim=1)


def cce(logits: Tensor, target: Tensor, present: Tensor, *, weight: Tensor | None = None,
        ignore_index: int = IGNORE) -> Tensor:
    """Class-aware cross entropy (PCT, METHODS.md "CCE"). Scalar.

    logits (B, K, H, W); target (B, H, W) int with ignore_index; present (B, K) bool; weight None, (B,) per
    image or (B, H, W) per pixel. With no valid pixel the result is 0 (still attached to the graph).
    """
    _check_logits("cce logits", logits)
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"cce target must be {(logits.shape[0], *logits.shape[2:])}, got {tuple(target.shape)}")
    logp = F.log_softmax(restricted_logits(logits, present), dim=1)  # (B, K, H, W)
    valid = target != ignore_index  # (B, H, W)
    tgt = torch.where(valid, target, torch.zeros_like(target)).long()  # (B, H, W)
    if tgt.numel() and (tgt.min() < 0 or tgt.max() >= logits.shape[1]):
        raise ValueError(f"cce target holds class ids outside [0, {logits.shape[1]}) besides {ignore_index}")
    nll = -logp.gather(1, tgt[:, None]).squeeze(1)  # (B, H, W)
    if torch.isinf(nll[valid]).any():
        raise ValueError("cce target has pixels of a class that `present` marks absent for their image")
    if weight is not None:
        if weight.ndim == 1 and weight.shape[0] == logits.shape[0]:
            weight = weight[:, None, None]  # (B, 1, 1)
        elif weight.shape != nll.shape:
            raise ValueError(f"cce weight must be (B,) or (B, H, W), got shape {tuple(weight.shape)}")
        nll = nll * weight.to(nll.dtype)
    nll = torch.where(valid, nll, torch.zeros_like(nll))
    return nll.sum() / valid.sum().clamp(min=1)


def mlsm_loss(logits: Tensor, tags: Tensor, *, valid: Tensor | None = None) -> Tensor:
    """Multi-label soft margin on global max pooled foreground logits (PCT, Hybrid-Net on weak images).

    logits (B, K, H, W); tags (B, K) bool (column 0, background, is not scored); valid (B, H, W) bool or
    None: pixels outside it (crop padding) do not take part in the max. Scalar; 0 for an empty batch.
    """
    _check_logits("mlsm logits", logits)
    if tags.shape != logits.shape[:2]:
        raise ValueError(f"mlsm tags must be {tuple(logits.shape[:2])}, got {tuple(tags.shape)}")
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if valid is not None:
        if not valid.flatten(1).any(dim=1).all():
            raise ValueError("mlsm valid mask leaves an image without any pixel")
        logits = logits.masked_fill(~valid[:, None], float("-inf"))  # (B, K, H, W)
    scores = logits.flatten(2).amax(dim=2)[:, 1:]  # (B, K-1)
    return F.multilabel_soft_margin_loss(scores, tags[:, 1:].to(scores.dtype))


def _pseudo_target(teacher_logits: Tensor, present: Tensor, valid: Tensor | None) -> Tensor:
    target = restricted_argmax(teacher_logits, present)  # (B, H, W)
    if valid is not None:
        target = target.masked_fill(~valid, IGNORE)
    return target


def h2p_loss(pseudo_logits: Tensor, hybrid_logits: Tensor, present: Tensor, *,
             valid: Tensor | None = None) -> Tensor:
    """H2P: CCE of Pseudo-Net against Hybrid-Net's class-restricted argmax (no gradient into H). Scalar."""
    _check_logits("h2p hybrid logits", hybrid_logits)
    return cce(pseudo_logits, _pseudo_target(hybrid_logits, present, valid), present)


def p2h_loss(hybrid_logits: Tensor, pseudo_logits: Tensor, present: Tensor, weight: Tensor, *,
             valid: Tensor | None = None) -> Tensor:
    """P2H: mean of w_i x CCE of Hybrid-Net against Pseudo-Net's class-restricted argmax; weight (B,). Scalar."""
    _check_logits("p2h pseudo logits", pseudo_logits)
    return cce(hybrid_logits, _pseudo_target(pseudo_logits, present, valid), present, weight=weight)


def confusion_counts(pred: Tensor, target: Tensor, num_classes: int, *,
                     ignore_index: int = IGNORE) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class (TP, GT, Pred) pixel counts, each (K,) float64, over pixels whose target is not ignored."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    valid = target != ignore_index
    p, t = pred[valid].long(), target[valid].long()  # (N,)
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"target holds class ids outside [0, {num_classes}) besides {ignore_index}")
    gt = torch.bincount(t, minlength=num_classes).double()
    pr = torch.bincount(p, minlength=num_classes)[:num_classes].double()
    tp = torch.bincount(t[p == t], minlength=num_classes).double()
    return tp, gt, pr


class DynamicEvaluation(nn.Module):
    """EMA of Pseudo-Net's per-class TP / GT / Pred counts on strong images and the P2H weights (module doc).

    Buffers (float64, saved with the model's state dict, so a resume continues them exactly): tp, gt, pred
    (K,) and updates (number of update calls).
    """

    def __init__(self, num_classes: int, *, momentum: float = 0.99, power: float = 8.0,
                 unseen_iou: float = 0.0):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"DynamicEvaluation momentum must lie in [0, 1), got {momentum}")
        if not (math.isfinite(power) and power > 0):
            raise ValueError(f"DynamicEvaluation power must be > 0, got {power}")
        if not 0.0 <= unseen_iou <= 1.0:
            raise ValueError(f"DynamicEvaluation unseen_iou must lie in [0, 1], got {unseen_iou}")
        self.num_classes, self.momentum, self.power, self.unseen_iou = num_classes, momentum, power, unseen_iou
        for name in ("tp", "gt", "pred"):
            self.register_buffer(name, torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: (B, H, W) label maps of Pseudo-Net and ground truth (255 ignored): this process's
        counts (a data-parallel step sums them over the ranks first and calls update_counts)."""
        self.update_counts(confusion_counts(pred, target, self.num_classes))

    @torch.no_grad()
    def update_counts(self, counts) -> None:
        """One EMA step with the (TP, GT, Pred) per-class counts of confusion_counts."""
        m = self.momentum
        for buf, new in zip((self.tp, self.gt, self.pred), counts):
            buf.mul_(m).add_(new.to(buf.device), alpha=1.0 - m)
        self.updates += 1

    def iou(self) -> Tensor:
        """(K,) float64: TP / (GT + Pred - TP); unseen_iou where the union is zero."""
        union = self.gt + self.pred - self.tp
        iou = self.tp / union.clamp(min=1e-12)
        return torch.where(union > 0, iou, torch.full_like(iou, self.unseen_iou))

    def weights(self, present: Tensor) -> Tensor:
        """(B,) float32 P2H weights: (min over each image's classes, background included, of IoU_c) ^ power."""
        present = with_background(present, self.num_classes).to(self.tp.device)  # (B, K)
        iou = self.iou()[None].expand(present.shape[0], -1)  # (B, K)
        worst = torch.where(present, iou, torch.ones_like(iou)).amin(dim=1)  # (B,)
        return (worst ** self.power).float()
