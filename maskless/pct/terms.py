"""The loss terms of one training step (maskless.pct.train, module doc "PCT batch" and "Supervised"):
pct_losses (Hybrid-Net and Pseudo-Net cross-trained), supervised_losses (one network), the names a run logs
(term_names), and PCTPair, the module that holds both networks and the dynamic evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from maskless import dist
from maskless.pct.contextrast import contextrast_losses
from maskless.pct.losses import (DynamicEvaluation, cce, confusion_counts, h2p_loss, mlsm_loss, p2h_loss,
                                 restricted_argmax)
from maskless.pct.model import SegNet
from maskless.pct.train_data import Batch

if TYPE_CHECKING:
    from maskless.pct.train import PCTParams, SegTrainParams


PCT_TERMS = ("h_cce", "h_mlsm", "p_cce", "h2p", "p2h")


# ---------------------------------------------------------------- loss steps


class PCTPair(nn.Module):
    """Hybrid-Net, Pseudo-Net and the dynamic evaluation: one state dict, one optimiser."""

    def __init__(self, hybrid: SegNet, pseudo: SegNet, dyn: DynamicEvaluation):
        super().__init__()
        self.hybrid, self.pseudo, self.dyn = hybrid, pseudo, dyn


def _ctr_terms(prefix: str, out: dict, logits: Tensor, labels: Tensor, params: SegTrainParams,
               stats: dict) -> dict[str, Tensor]:
    s = labels.shape[0]
    ctr_stats: dict = {}
    terms = contextrast_losses([e[:s].float() for e in out["embeddings"]], labels, logits.argmax(dim=1),
                               params.model.num_classes, params.contextrast, stats=ctr_stats)
    stats[f"{prefix}bane_negatives"] = float(ctr_stats["bane_negatives"])
    return {f"{prefix}{k}": v for k, v in terms.items()}


def pct_losses(hybrid_out: dict, pseudo_out: dict, batch: Batch, dyn: DynamicEvaluation,
               params: PCTParams) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Weighted PCT terms (module doc) and stats (mean P2H weight, Pseudo-Net's EMA mIoU on strong images).

    hybrid_out / pseudo_out: SegNet outputs on batch.images ("embeddings" needed with use_contextrast).
    """
    s = batch.n_strong
    hl, pl = hybrid_out["logits"].float(), pseudo_out["logits"].float()  # (B, K, S, S)
    gt, present, valid = batch.labels[:s], batch.present, batch.valid
    if s:  # counts summed over the ranks, so every rank keeps the same EMA (and weights)
        counts = confusion_counts(restricted_argmax(pl[:s], present[:s]), gt, dyn.num_classes)
        dyn.update_counts([dist.all_sum_(c) for c in counts])
    w = dyn.weights(present[s:])  # (B_weak,)
    terms = {
        "h_cce": cce(hl[:s], gt, present[:s]),
        "h_mlsm": params.mlsm_weight * mlsm_loss(hl[s:], present[s:], valid=valid[s:]),
        "p_cce": params.pseudo_gt_weight * cce(pl[:s], gt, present[:s]),
        "h2p": params.h2p_weight * h2p_loss(pl[s:], hl[s:], present[s:], valid=valid[s:]),
        "p2h": params.p2h_weight * p2h_loss(hl[s:], pl[s:], present[s:], w, valid=valid[s:]),
    }
    iou = dyn.iou()
    seen = (dyn.gt + dyn.pred) > 0
    stats = {"p2h_weight": float(w.mean()) if w.numel() else 0.0,
             "p_ema_miou": float(iou[seen].mean()) if seen.any() else 0.0}
    if params.use_contextrast:
        terms.update(_ctr_terms("h_", hybrid_out, hl[:s], gt, params, stats))
        terms.update(_ctr_terms("p_", pseudo_out, pl[:s], gt, params, stats))
    return terms, stats


def supervised_losses(out: dict, batch: Batch, params: SegTrainParams) -> tuple[dict[str, Tensor], dict]:
    """Plain cross entropy (CCE with every class present; 0 when every pixel is ignored) + Contextrast."""
    logits = out["logits"].float()  # (B, K, S, S)
    everything = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    terms = {"ce": cce(logits, batch.labels, everything)}
    stats: dict = {}
    if params.use_contextrast:
        terms.update(_ctr_terms("", out, logits, batch.labels, params, stats))
    return terms, stats


def term_names(kind: str, params: SegTrainParams) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(loss term names, stat names) logged for a run of `kind` ("pct" or "segnet")."""
    if kind == "pct":
        ctr = ("h_ctr_nce", "h_ctr_pa", "p_ctr_nce", "p_ctr_pa") if params.use_contextrast else ()
        return PCT_TERMS + ctr, ("p2h_weight", "p_ema_miou") + (
            ("h_bane_negatives", "p_bane_negatives") if params.use_contextrast else ())
    ctr = ("ctr_nce", "ctr_pa") if params.use_contextrast else ()
    return ("ce",) + ctr, ("bane_negatives",) if params.use_contextrast else ()
