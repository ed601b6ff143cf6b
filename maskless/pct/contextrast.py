"""Contextrast (METHODS.md "Contextrast"): contextual contrastive learning (CCL) with boundary-aware negative
sampling (BANE), an auxiliary loss beside the pixel-wise cross entropy of the supervised terms.

Inputs: per encoder layer l = 1..I an L2-normalised embedding map (B, D, h_l, w_l) (maskless.pct.model,
`embed_levels`; the last one is layer I), the ground-truth label map (B, H, W) with 255 = ignore and the
network's prediction (B, H, W) at input resolution. Both maps are brought to each layer's size by nearest
sampling.

CCL (Contextrast Sec. 3.2):
- anchors A_l[c] = class centroid of layer l's embeddings over the batch's pixels labelled c;
- lower layers take in the last layer's context: A'_l = w_l A_l + w_h A_I (l < I), then every anchor is
  L2-normalised (similarities are cosines). A_I enters the lower layers detached, so their losses do not
  pull the top layer; where layer I lost a class to downsampling, A'_l = A_l;
- InfoNCE of each pixel against the anchors of the classes in the batch (positive: its own class) with
  temperature tau, plus BANE negatives of its class in the denominator;
- pixel-anchor loss: pull 1 - z.A'_y, plus push max(0, z.A'_c - margin) averaged over the other classes.

BANE (Contextrast Sec. 3.3): for each image and class c, the error map of pixels predicted c whose label is
another class (false positives of c: hard negatives for class c); its distance transform
(cv2.distanceTransform, L2) gives each error pixel its distance to the nearest correctly predicted or
ignored pixel; the `bane_fraction` of error pixels with the lowest distances (at least one), i.e. the rim of
each wrongly predicted region, become negatives of class c. Ties break by pixel order, so selection is
deterministic. The image border does not count as a boundary, except for an image that is wrong everywhere
for c (no zero pixel to measure from), where the border is used. Per layer and class at most
`bane_max_per_class` negatives are kept (lowest distances first).

Pixels: every valid pixel of a layer, or `max_pixels` of them evenly spaced (deterministic, no RNG).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maskless.pct.losses import IGNORE

__all__ = ["ContextrastParams", "TERMS", "downsample_labels", "class_anchors", "update_anchors",
           "bane_negatives", "anchor_info_nce", "pixel_anchor_loss", "contextrast_losses"]

TERMS = ("ctr_nce", "ctr_pa")


@dataclass
class ContextrastParams:
    """Hyperparameters; all tunable (METHODS.md gives no authoritative values)."""

    temperature: float = 0.1
    w_low: float = 0.5  # w_l: weight of a lower layer's own anchor
    w_high: float = 0.5  # w_h: weight of the last layer's anchor
    nce_weight: float = 0.1
    pa_weight: float = 0.1
    push_margin: float = 0.0  # cosine below which another class's anchor is not pushed further
    bane: bool = True
    bane_fraction: float = 0.1  # K%: share of each class's error pixels (per image) with the lowest distance
    bane_max_per_class: int = 64
    max_pixels: int = 8192  # per layer

    def __post_init__(self) -> None:
        name = "ContextrastParams"
        for key in ("temperature", "w_low", "w_high", "nce_weight", "pa_weight"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}.{key} must be a finite number >= 0, got {v!r}")
        if not self.temperature > 0:
            raise ValueError(f"{name}.temperature must be > 0, got {self.temperature}")
        if not -1.0 <= self.push_margin <= 1.0:
            raise ValueError(f"{name}.push_margin must lie in [-1, 1], got {self.push_margin}")
        if not 0.0 < self.bane_fraction <= 1.0:
            raise ValueError(f"{name}.bane_fraction must lie in (0, 1], got {self.bane_fraction}")
        for key in ("bane_max_per_class", "max_pixels"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {getattr(self, key)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def downsample_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) int label map -> (B, h, w) by nearest sampling (labels are not averaged; 255 stays 255)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def class_anchors(emb: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Class centroids. emb (B, D, h, w), labels (B, h, w) -> (anchors (K, D), has (K,) bool).

    Rows of classes without pixels are zero and has[c] is False.
    """
    b, d = emb.shape[:2]
    z = emb.permute(0, 2, 3, 1).reshape(-1, d)  # (N, D)
    y = labels.reshape(-1)  # (N,)
    valid = y != IGNORE
    z, y = z[valid], y[valid].long()
    onehot = F.one_hot(y, num_classes).to(z.dtype)  # (N, K)
    counts = onehot.sum(dim=0)  # (K,)
    sums = onehot.t() @ z  # (K, D)
    return sums / counts.clamp(min=1)[:, None], counts > 0


def update_anchors(anchors: list[Tensor], has: list[Tensor], *, w_low: float, w_high: float) -> list[Tensor]:
    """A'_l = w_low A_l + w_high A_I for l < I where both exist, else A_l; the last layer is kept.
    Returns the anchors L2-normalised, (K, D) each (module doc)."""
    top, top_has = anchors[-1].detach(), has[-1]
    out = []
    for a, h in zip(anchors[:-1], has[:-1]):
        both = (h & top_has)[:, None]  # (K, 1)
        out.append(torch.where(both, w_low * a + w_high * top, a))
    out.append(anchors[-1])
    return [F.normalize(a, dim=1) for a in out]


def _rim_pixels(err: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices, distances) of the `fraction` of error pixels nearest a non-error pixel (at least one)."""
    if err.all():  # no zero pixel: measure from the image border instead
        dist = cv2.distanceTransform(np.pad(err, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        dist = dist[1:-1, 1:-1]
    else:
        dist = cv2.distanceTransform(err.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    idx = np.flatnonzero(err)
    keep = max(1, math.ceil(fraction * idx.size))
    order = np.argsort(dist.reshape(-1)[idx], kind="stable")[:keep]
    return idx[order], dist.reshape(-1)[idx[order]]


def bane_negatives(emb: Tensor, labels: Tensor, pred: Tensor, *, fraction: float,
                   max_per_class: int) -> tuple[Tensor, Tensor]:
    """Boundary-aware negatives. emb (B, D, h, w); labels, pred (B, h, w) int (255 = ignore).

    Returns (negatives (M, D), negative_of (M,) int64: the class each one is a negative for), classes in
    increasing order, each class's negatives by increasing distance (then image, then pixel order).
    """
    b, d, h, w = emb.shape
    if labels.shape != (b, h, w) or pred.shape != (b, h, w):
        raise ValueError(f"bane_negatives: labels {tuple(labels.shape)} and pred {tuple(pred.shape)} must be "
                         f"{(b, h, w)}")
    lab, prd = labels.cpu().numpy(), pred.cpu().numpy()
    found: dict[int, list[tuple[float, int]]] = {}
    for i in range(b):
        for c in np.unique(prd[i]):
            err = (prd[i] == c) & (lab[i] != c) & (lab[i] != IGNORE)  # (h, w) false positives of c
            if err.any():
                flat, dist = _rim_pixels(err, fraction)
                found.setdefault(int(c), []).extend(zip(dist.tolist(), (i * h * w + flat).tolist()))
    rows, classes = [], []
    for c in sorted(found):
        best = sorted(found[c])[:max_per_class]  # by distance, then by global pixel index
        rows += [r for _, r in best]
        classes += [c] * len(best)
    z = emb.permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, D)
    index = torch.tensor(rows, dtype=torch.long, device=emb.device)
    return z[index], torch.tensor(classes, dtype=torch.long, device=emb.device)


def _pixels(emb: Tensor, labels: Tensor, max_pixels: int) -> tuple[Tensor, Tensor]:
    """Valid pixels' embeddings (N, D) and labels (N,), at most max_pixels evenly spaced ones."""
    d = emb.shape[1]
    z = emb.permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, D)
    y = labels.reshape(-1).long()
    keep = torch.nonzero(y != IGNORE).squeeze(1)  # (N,)
    if keep.numel() > max_pixels:
        keep = keep[torch.linspace(0, keep.numel() - 1, max_pixels, device=keep.device).round().long()]
    return z[keep], y[keep]


def anchor_info_nce(z: Tensor, y: Tensor, anchors: Tensor, has: Tensor, *, temperature: float,
                    negatives: Tensor | None = None, negative_of: Tensor | None = None) -> Tensor:
    """InfoNCE of pixels against class anchors. z (N, D) unit rows; y (N,); anchors (K, D) unit rows;
    has (K,) bool (every y must have an anchor); negatives (M, D) with negative_of (M,): extra negatives
    for the pixels of that class. -log(exp(z.A_y/t) / (sum_{c in has} exp(z.A_c/t) + sum_n exp(z.n/t))),
    averaged over pixels. Scalar; 0 without pixels."""
    if z.shape[0] == 0:
        return anchors.sum() * 0.0
    if not has[y].all():
        raise ValueError("anchor_info_nce: some pixels' classes have no anchor")
    logits = (z @ anchors.t()) / temperature  # (N, K)
    logits = logits.masked_fill(~has[None], float("-inf"))
    pos = logits.gather(1, y[:, None]).squeeze(1)  # (N,)
    if negatives is not None and negatives.shape[0] > 0:
        neg = (z @ negatives.t()) / temperature  # (N, M)
        neg = neg.masked_fill(negative_of[None] != y[:, None], float("-inf"))
        logits = torch.cat([logits, neg], dim=1)  # (N, K + M)
    return (torch.logsumexp(logits, dim=1) - pos).mean()


def pixel_anchor_loss(z: Tensor, y: Tensor, anchors: Tensor, has: Tensor, *, margin: float) -> Tensor:
    """Pull each pixel to its class anchor (1 - cos), push it from the batch's other class anchors
    (max(0, cos - margin), averaged over pixel-class pairs). Scalar; 0 without pixels."""
    if z.shape[0] == 0:
        return anchors.sum() * 0.0
    cos = z @ anchors.t()  # (N, K)
    pull = (1.0 - cos.gather(1, y[:, None])).mean()
    others = has[None] & (torch.arange(anchors.shape[0], device=z.device)[None] != y[:, None])  # (N, K)
    push = torch.where(others, F.relu(cos - margin), torch.zeros_like(cos)).sum() / others.sum().clamp(min=1)
    return pull + push


def contextrast_losses(embeddings: list[Tensor], labels: Tensor, pred: Tensor | None, num_classes: int,
                       params: ContextrastParams, *, stats: dict | None = None) -> dict[str, Tensor]:
    """Weighted Contextrast terms {"ctr_nce", "ctr_pa"}, each averaged over the layers.

    embeddings: [(B, D, h_l, w_l)] unit-norm, last = layer I; labels (B, H, W) int, 255 = ignore; pred
    (B, H, W) prediction (argmax of the logits) for BANE, or None to skip BANE. stats, when given, receives
    "bane_negatives" (count over layers).
    """
    if not embeddings:
        raise ValueError("contextrast_losses needs at least one embedding layer")
    if labels.ndim != 3 or labels.shape[0] != embeddings[0].shape[0]:
        raise ValueError(f"contextrast labels must be (B, H, W) with B = {embeddings[0].shape[0]}, "
                         f"got {tuple(labels.shape)}")
    if labels.numel() and ((labels < 0) | ((labels >= num_classes) & (labels != IGNORE))).any():
        raise ValueError(f"contextrast labels hold class ids outside [0, {num_classes}) besides {IGNORE}")
    embs = [e.float() for e in embeddings]
    labs = [downsample_labels(labels, tuple(e.shape[-2:])) for e in embs]
    found = [class_anchors(e, lab, num_classes) for e, lab in zip(embs, labs)]
    anchors = update_anchors([a for a, _ in found], [h for _, h in found], w_low=params.w_low,
                             w_high=params.w_high)
    nce, pa, n_neg = [], [], 0
    for e, lab, a, (_, has) in zip(embs, labs, anchors, found):
        negatives = negative_of = None
        if params.bane and pred is not None:
            negatives, negative_of = bane_negatives(
                e, lab, downsample_labels(pred, tuple(e.shape[-2:])), fraction=params.bane_fraction,
                max_per_class=params.bane_max_per_class)
            n_neg += negatives.shape[0]
        z, y = _pixels(e, lab, params.max_pixels)
        nce.append(anchor_info_nce(z, y, a, has, temperature=params.temperature, negatives=negatives,
                                   negative_of=negative_of))
        pa.append(pixel_anchor_loss(z, y, a, has, margin=params.push_margin))
    if stats is not None:
        stats["bane_negatives"] = n_neg
    return {"ctr_nce": params.nce_weight * torch.stack(nce).mean(),
            "ctr_pa": params.pa_weight * torch.stack(pa).mean()}
