"""FreeSOLO loss terms (METHODS.md "Self-supervised SOLO (FreeSOLO)"), each a plain function of tensors.

Mask terms on every positive cell (x = mask logits, p = sigmoid(x), t = coarse target, FreeSOLO Sec. 3.2,
after BoxInst, Tian et al. 2021, Sec. 3): projection dice on max- and mean-projections, and the pairwise
colour-affinity term (maskless.solo.pairwise, with its colour convention). Category terms on the grid: fg/bg
sigmoid focal loss and 1 - cos of the semantic embedding against the Free Mask embedding (the reference code
multiplies the latter by zero; ours trains).

solo_losses() checks the weighted total once per call and raises FloatingPointError naming the non-finite
terms and model outputs (one host sync per step, which the loop pays anyway to log the losses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from maskless.solo.pairwise import pairwise_terms, warmup_factor
from maskless.solo.targets import SoloTargets

__all__ = ["SoloLossWeights", "dice_loss", "projection_losses", "box_masks_from_targets", "sigmoid_focal_loss",
           "embedding_loss", "solo_losses"]

TERMS = ("loss_max", "loss_avg", "loss_pair", "loss_focal", "loss_emb")


@dataclass
class SoloLossWeights:
    """Term weights (named like the terms) and the loss hyperparameters (METHODS.md defaults).

    loss_emb's weight is tunable (no authoritative value). ignore_bottom_px is at network-input scale
    (BoxInst measures its 10 px on the original image; for small images the difference is below a row).
    """

    loss_max: float = 1.0
    loss_avg: float = 0.1
    loss_pair: float = 1.0
    loss_focal: float = 1.0
    loss_emb: float = 1.0
    pair_warmup: int = 1000
    pair_kernel: int = 3
    pair_dilation: int = 2
    color_thresh: float = 0.3
    ignore_bottom_px: float = 10.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # Reference reductions (FreeSOLO solov2.py loss): the pairwise term's box mask is the outer product of
    # the target's row and column projections, and the mask and pairwise terms are averaged per FPN level,
    # then over the levels that hold positives. "filled" / False: the filled box and one mean over all
    # positives (maskless before issue 15).
    pair_box: str = "projection"
    level_mean: bool = True
    # "weak": FreeSOLO's label-free mask terms above. "dice": SOLOv2's supervised mask loss instead of them
    # (AdelaiDet solov2.py: 1 - 2 sum(p t) / (sum(p^2) + sum(t^2) + 0.002) per positive, one mean over all
    # positives, weight loss_dice 3.0): for SOLO on ground-truth masks, the detector's fully supervised
    # ceiling beside the oracle that keeps the weak terms (BENCHMARKS.md "Supervised SOLO ceiling").
    mask: str = "weak"
    loss_dice: float = 3.0

    def __post_init__(self) -> None:
        if self.pair_box not in PAIR_BOXES:
            raise ValueError(f"SoloLossWeights.pair_box must be one of {PAIR_BOXES}, got {self.pair_box!r}")
        if self.mask not in MASK_LOSSES:
            raise ValueError(f"SoloLossWeights.mask must be one of {MASK_LOSSES}, got {self.mask!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("pair_box", "level_mean", "mask"):
                continue
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"SoloLossWeights.{f.name} must be finite and >= 0, got {value!r}")
        if self.pair_kernel % 2 != 1 or self.pair_dilation < 1:
            raise ValueError(f"SoloLossWeights: pair_kernel must be odd and pair_dilation >= 1, got "
                             f"{self.pair_kernel}, {self.pair_dilation}")


PAIR_BOXES = ("projection", "filled")
MASK_LOSSES = ("weak", "dice")
DICE_EPS = 0.002  # AdelaiDet's dice_loss adds 0.001 to each of the two sums of squares

# ---------------------------------------------------------------- mask terms


def dice_loss(a: Tensor, b: Tensor, eps: float = 1e-5) -> Tensor:
    """(..., L), (..., L) -> (...): 1 - 2 sum(ab) / (sum(a^2) + sum(b^2) + eps) over the last dim."""
    inter = (a * b).sum(-1)
    return 1.0 - 2.0 * inter / ((a * a).sum(-1) + (b * b).sum(-1) + eps)


def projection_terms(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """logits, targets: (N, h, w) -> (L_max, L_avg), each (N,): one value per instance.

    L_max = dice(max_y p, max_y t) + dice(max_x p, max_x t); L_avg the same with means (p = sigmoid).
    """
    if logits.shape != targets.shape or logits.ndim != 3:
        raise ValueError(f"projection_losses: logits {tuple(logits.shape)} and targets "
                         f"{tuple(targets.shape)} must both be (N, h, w)")
    p = logits.float().sigmoid()  # (N, h, w)
    t = targets.float()
    l_max = dice_loss(p.amax(1), t.amax(1)) + dice_loss(p.amax(2), t.amax(2))  # (N,)
    l_avg = dice_loss(p.mean(1), t.mean(1)) + dice_loss(p.mean(2), t.mean(2))  # (N,)
    return l_max, l_avg


def projection_losses(logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """logits, targets: (N, h, w) -> {"loss_max", "loss_avg"}, each a scalar mean over the N instances
    (projection_terms). N = 0 gives zeros that keep the graph (there is nothing to average)."""
    l_max, l_avg = projection_terms(logits, targets)
    if logits.shape[0] == 0:
        zero = logits.sum() * 0.0
        return {"loss_max": zero, "loss_avg": zero}
    return {"loss_max": l_max.mean(), "loss_avg": l_avg.mean()}


def box_masks_from_targets(targets: Tensor, mode: str = "projection") -> Tensor:
    """(N, h, w) -> (N, h, w) float box masks of the pairwise term.

    "projection" (FreeSOLO's box_target): the outer product of the target's row and column projections,
    1 where the pixel's row and its column both hold target pixels; for a fragmented mask it leaves out the
    rows and columns between the fragments. "filled": 1 inside the box spanned by the projections.
    """
    if mode not in PAIR_BOXES:
        raise ValueError(f"box mask mode must be one of {PAIR_BOXES}, got {mode!r}")
    rows = targets.amax(2) > 0  # (N, h)
    cols = targets.amax(1) > 0  # (N, w)
    if mode == "projection":
        return (rows[:, :, None] & cols[:, None, :]).float()
    n, h, w = targets.shape
    ys, xs = torch.arange(h, device=targets.device), torch.arange(w, device=targets.device)

    def span(occupied: Tensor, idx: Tensor) -> Tensor:  # (N, L) -> (N, L) filled between first and last
        first = torch.where(occupied, idx, idx.numel()).amin(1, keepdim=True)
        last = torch.where(occupied, idx, -1).amax(1, keepdim=True)
        return (idx >= first) & (idx <= last)

    return (span(rows, ys)[:, :, None] & span(cols, xs)[:, None, :]).float()


# ---------------------------------------------------------------- category terms


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """logits, targets: (...) with targets in {0, 1} -> scalar sum of focal terms / (num_pos + 1).

    Lin et al. 2017, Eq. 5: alpha_t (1 - p_t)^gamma CE; CE from logits, so stable for any finite logit.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"sigmoid_focal_loss: logits {tuple(logits.shape)} vs targets {tuple(targets.shape)}")
    x, t = logits.float(), targets.float()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p = x.sigmoid()
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * (1 - p_t) ** gamma * ce).sum() / (t.sum() + 1.0)


def embedding_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """pred, target: (P, E) -> (mean over valid rows of 1 - cos(pred, target), number of valid rows).

    A row is valid when its TARGET norm exceeds eps (self-training labels may carry no embedding). With no
    valid row the loss is an exact 0 that keeps the graph (a sum over zero rows), and the count, a 0-d
    float tensor, says so: the caller logs it instead of mistaking the 0 for a trained term.
    """
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"embedding_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                         f"must both be (P, E)")
    valid = target.float().norm(dim=1) > eps  # (P,)
    p, t = pred.float()[valid], target.float()[valid]  # (V, E)
    cos = (F.normalize(p, dim=1, eps=eps) * F.normalize(t, dim=1, eps=eps)).sum(1)  # (V,)
    count = valid.sum().float()
    return (1.0 - cos).sum() / count.clamp(min=1.0), count


# ---------------------------------------------------------------- the whole loss


@dataclass
class Positives:
    """Positive cells of a batch, levels concatenated per image. P_b rows for image b."""

    kernels: list[Tensor]  # per image (P_b, D)
    emb_pred: Tensor  # (P, E)
    emb_target: Tensor  # (P, E), zero rows where the instance has no embedding
    mask_targets: list[Tensor]  # per image (P_b, Hf, Wf)
    levels: list[Tensor]  # per image (P_b,) long: the FPN level of each positive cell


def _check_outputs(outputs: dict, targets: list[SoloTargets], images_lab: Tensor) -> None:
    for key in ("cate", "emb", "kernel", "mask_feat"):
        if key not in outputs:
            raise KeyError(f"solo_losses: model outputs lack {key!r} (have {sorted(outputs)})")
    b, levels = len(targets), len(outputs["cate"])
    feat = outputs["mask_feat"]
    if b == 0 or feat.shape[0] != b:
        raise ValueError(f"solo_losses: {b} targets for a batch of {feat.shape[0]} images")
    for key in ("emb", "kernel"):
        if len(outputs[key]) != levels:
            raise ValueError(f"solo_losses: outputs[{key!r}] has {len(outputs[key])} levels, cate {levels}")
    for i, tgt in enumerate(targets):
        if [len(x) for x in tgt.labels] != [c.shape[-1] * c.shape[-2] for c in outputs["cate"]]:
            raise ValueError(f"solo_losses: targets[{i}] grids {[len(x) for x in tgt.labels]} (cells per level) "
                             f"do not match outputs['cate'] {[tuple(c.shape[-2:]) for c in outputs['cate']]}; "
                             f"SoloGeometry.grids must equal the model's grids")
        if tuple(tgt.mask_targets.shape[-2:]) != tuple(feat.shape[-2:]):
            raise ValueError(f"solo_losses: targets[{i}] masks are {tuple(tgt.mask_targets.shape[-2:])}, "
                             f"mask_feat is {tuple(feat.shape[-2:])}")
    if tuple(images_lab.shape) != (b, 3, *feat.shape[-2:]):
        raise ValueError(f"solo_losses: images_lab must be {(b, 3, *feat.shape[-2:])}, got "
                         f"{tuple(images_lab.shape)}")


def gather_positives(outputs: dict, targets: list[SoloTargets]) -> Positives:
    """Kernels, embedding predictions and targets of every positive cell (SOLOv2's target gathering)."""
    kernels, emb_pred, emb_target, mask_targets, levels = [], [], [], [], []
    emb_dim = outputs["emb"][0].shape[1]
    for b, tgt in enumerate(targets):
        ids_b, kern_b, lev_b = [], [], []
        for level, ins in enumerate(tgt.instance):
            cells = (ins >= 0).nonzero().squeeze(1)  # (P_bl,)
            kern_b.append(outputs["kernel"][level][b].flatten(1)[:, cells].T)  # (P_bl, D)
            emb_pred.append(outputs["emb"][level][b].flatten(1)[:, cells].T)  # (P_bl, E)
            ids_b.append(ins[cells])
            lev_b.append(torch.full_like(cells, level))
        ids = torch.cat(ids_b)  # (P_b,)
        kernels.append(torch.cat(kern_b))
        levels.append(torch.cat(lev_b))
        mask_targets.append(tgt.mask_targets[ids])  # (P_b, Hf, Wf)
        if tgt.embeddings is None:
            emb_target.append(torch.zeros(len(ids), emb_dim, device=ids.device))
        elif tgt.embeddings.shape[1] != emb_dim:
            raise ValueError(f"solo_losses: targets[{b}] embeddings have dim {tgt.embeddings.shape[1]}, the "
                             f"model predicts {emb_dim}")
        else:
            emb_target.append(tgt.embeddings[ids].float())
    return Positives(kernels, torch.cat(emb_pred), torch.cat(emb_target), mask_targets, levels)


def mask_logits(kernels: Tensor, mask_feat: Tensor) -> Tensor:
    """Dynamic 1x1 conv: kernels (P, D), mask_feat (D, Hf, Wf) -> (P, Hf, Wf) logits (SOLOv2 Sec. 3.2)."""
    d, h, w = mask_feat.shape
    return (kernels @ mask_feat.reshape(d, h * w)).reshape(-1, h, w)


def _mask_terms(outputs: dict, targets: list[SoloTargets], pos: Positives, images_lab: Tensor,
                weights: SoloLossWeights) -> dict[str, Tensor]:
    feat = outputs["mask_feat"]
    logits = [mask_logits(k, feat[b]) for b, k in enumerate(pos.kernels)]  # per image (P_b, Hf, Wf)
    if weights.mask == "dice":
        return _dice_terms(logits, pos, feat)
    l_max, l_avg = projection_terms(torch.cat(logits), torch.cat(pos.mask_targets))  # (P,) each
    nums, dens = [], []
    for b, (lg, mt) in enumerate(zip(logits, pos.mask_targets)):
        rows = math.ceil(weights.ignore_bottom_px / targets[b].mask_stride)
        n_b, d_b = pairwise_terms(lg, images_lab[b : b + 1], box_masks_from_targets(mt, weights.pair_box),
                                  kernel=weights.pair_kernel, dilation=weights.pair_dilation,
                                  color_thresh=weights.color_thresh, ignore_bottom=rows,
                                  valid_hw=targets[b].valid_hw)
        nums.append(n_b)
        dens.append(d_b)
    num, den = torch.cat(nums), torch.cat(dens)  # (P,) each
    level = torch.cat(pos.levels) if weights.level_mean else torch.zeros(len(num), dtype=torch.long,
                                                                           device=num.device)
    if not len(level):  # no positive in the batch: zeros that keep the graph
        zero = feat.sum() * 0.0
        return {"loss_max": zero, "loss_avg": zero, "loss_pair": zero, "mask_fg": foreground_fraction(logits)}
    return {**reduce_mask_terms(l_max, l_avg, num, den, level), "mask_fg": foreground_fraction(logits)}


def _dice_terms(logits: list[Tensor], pos: Positives, feat: Tensor) -> dict[str, Tensor]:
    """SOLOv2's supervised mask term (SoloLossWeights.mask "dice"): the weak terms are zeros, loss_dice the
    mean dice loss of sigmoid(logits) against the targets over every positive of the batch."""
    zero = feat.sum() * 0.0
    out = {"loss_max": zero, "loss_avg": zero, "loss_pair": zero, "mask_fg": foreground_fraction(logits)}
    x = torch.cat(logits)  # (P, Hf, Wf)
    if not len(x):
        return out | {"loss_dice": zero}
    per = dice_loss(x.float().sigmoid().flatten(1), torch.cat(pos.mask_targets).float().flatten(1), eps=DICE_EPS)
    return out | {"loss_dice": per.mean()}


def reduce_mask_terms(l_max: Tensor, l_avg: Tensor, num: Tensor, den: Tensor, group: Tensor) -> dict[str, Tensor]:
    """Per-instance terms (P,) -> scalars: within each group (FPN level, or one group for all), L_max and
    L_avg are means and the pairwise term is sum(num) / max(sum(den), 1); then the mean over the groups."""
    groups = [group == g for g in group.unique()]
    return {"loss_max": torch.stack([l_max[g].mean() for g in groups]).mean(),
            "loss_avg": torch.stack([l_avg[g].mean() for g in groups]).mean(),
            "loss_pair": torch.stack([num[g].sum() / den[g].sum().clamp(min=1.0) for g in groups]).mean()}


def foreground_fraction(logits: list[Tensor]) -> Tensor:
    """Detached share of the positives' mask pixels predicted foreground (logit > 0); 0 without positives.

    A diagnostic, not a term: it sits near 1 when training has collapsed to whole-image masks (the dynamic
    conv's logits move together at first, since the mask features are non-negative; once every pixel is
    saturated foreground the sigmoid passes almost no gradient back: BENCHMARKS.md "SOLO round 0 collapses")."""
    total = sum(lg.numel() for lg in logits)
    if not total:
        return torch.tensor(0.0)
    # Counted on the logits' device: one host sync per step, when the loop reads the values (maskless.train).
    return torch.stack([(lg.detach() > 0).sum() for lg in logits]).sum().float() / total


def _raise_non_finite(losses: dict[str, Tensor], outputs: dict) -> None:
    bad_terms = [k for k in (*TERMS, "loss_dice") if k in losses and not torch.isfinite(losses[k]).all()]
    bad_outputs = [f"{key}[{i}]" for key in ("cate", "emb", "kernel") for i, t in enumerate(outputs[key])
                   if not torch.isfinite(t).all()]
    if not torch.isfinite(outputs["mask_feat"]).all():
        bad_outputs.append("mask_feat")
    raise FloatingPointError(f"solo_losses: non-finite loss terms {bad_terms}; model outputs with NaN/inf: "
                             f"{bad_outputs or 'none'}")


def solo_losses(outputs: dict, targets: list[SoloTargets], images_lab: Tensor, *, weights: SoloLossWeights,
                step: int) -> dict[str, Tensor]:
    """All FreeSOLO terms for a batch.

    outputs: the model's dict ("cate" [(B, 1, S, S)], "emb" [(B, E, S, S)], "kernel" [(B, D, S, S)],
    "mask_feat" (B, D, Hf, Wf)); targets: one SoloTargets per image; images_lab: (B, 3, Hf, Wf) Lab at mask
    resolution (lab_at_mask_resolution). Returns the unweighted terms loss_max, loss_avg, loss_pair (already
    times the warm-up factor), loss_focal, loss_emb (with weights.mask "dice" also loss_dice, the three weak
    mask terms then zeros); "loss", their weighted sum; and detached float counts
    "num_pos" (positive cells), "num_emb" (positives with a usable embedding target) and "mask_fg"
    (foreground_fraction: the collapse diagnostic). Raises
    FloatingPointError when the total is NaN/inf (module docstring).
    """
    _check_outputs(outputs, targets, images_lab)
    device = outputs["mask_feat"].device
    targets = [t.to(device) for t in targets]
    pos = gather_positives(outputs, targets)
    losses = _mask_terms(outputs, targets, pos, images_lab, weights)
    losses["loss_pair"] = losses["loss_pair"] * warmup_factor(step, weights.pair_warmup)
    cate = torch.cat([c.flatten(1) for c in outputs["cate"]], dim=1)  # (B, sum S^2)
    labels = torch.stack([torch.cat(t.labels) for t in targets]).to(cate.device)  # (B, sum S^2)
    losses["loss_focal"] = sigmoid_focal_loss(cate, labels, alpha=weights.focal_alpha, gamma=weights.focal_gamma)
    losses["loss_emb"], num_emb = embedding_loss(pos.emb_pred, pos.emb_target)
    losses["loss"] = sum(getattr(weights, k) * losses[k] for k in TERMS)
    if "loss_dice" in losses:  # mask "dice" (its weak terms are zeros)
        losses["loss"] = losses["loss"] + weights.loss_dice * losses["loss_dice"]
    if not torch.isfinite(losses["loss"]):
        _raise_non_finite(losses, outputs)
    losses["num_pos"] = labels.sum().detach()
    losses["num_emb"] = num_emb.detach()
    return losses
