"""Exemplar embedding contrastive loss, EEC (Exemplar-FreeSOLO; METHODS.md "Exemplar-FreeSOLO (EKA + EEC)").

The paper describes EEC in words only and publishes no code; this is our design, every choice a parameter
(EECParams) with the reason here.

1. Embedding map. EECHead turns SOLO's unified mask features mask_feat (B, D, H/4, W/4) into a transformed map:
   3x3 conv (no bias) - GroupNorm - ReLU - 1x1 conv to `dim` channels (default 64: a small projection, as
   contrastive heads use; the pool holds tens to hundreds of exemplars, far fewer than a MoCo queue), then
   L2-normalised over channels and upsampled bilinearly by `upsample` (default 2, the paper's "upsampled"),
   in that order, as METHODS.md lists them. Reading mask_feat (not a backbone level) ties the embeddings to
   the features the instance masks are made from.
2. Mask-guided embedding of an instance: the mask-weighted mean of the map over the instance's soft mask
   (sigmoid of its mask logits), L2-normalised (mask_pooled_embeddings). Masks at another size than the map
   are resized first ("area" when shrinking, so no pixel's weight is skipped; bilinear when enlarging).
   `detach_masks` (default False): the EEC gradient reaches the instance masks, and through them the kernel
   branch and the mask features: the paper aims the term at the masks (pulling fragments of one object
   towards its category's exemplars). True trains the embedding branch and the features under it alone.
3. Pool embeddings: the same model + head on the exemplar crops, mask-pooled the same way, under
   torch.no_grad and in eval mode (pool_embeddings). Like MoCo's keys they are constants for the loss;
   they are refreshed every `refresh_every` steps by the caller so they follow the model as it trains.
4. Centring (`center`, default True): before the cosine, the pool's mean embedding mu is subtracted from the
   instance and the pool embeddings and both are renormalised. Measured on a trained Exemplar-FreeSOLO
   (claims run seed 0, n8, 4 batches, 613 instances; BENCHMARKS.md "EEC similarities"): raw cosines to the
   pool lie in 0.04-0.997 (median 0.54) but every instance's nearest exemplar is one of the same three and
   instance-instance cosines have median 0.96; centred, cosines span -0.98..0.99, so fixed alpha/beta split
   the pool. Loss: s_ij = e_i . p_j (both unit vectors, so cosine similarity). Pairs with s_ij > alpha are positives,
   s_ij < beta negatives, the rest ignored. For each instance with at least one positive and one negative
       l_i = -log( sum_pos exp(s_ij / t) / (sum_pos exp(s_ij / t) + sum_neg exp(s_ij / t)) )
   (InfoNCE, Oord et al. 2018, with several positives summed inside the log, as in Miech et al. 2020's
   MIL-NCE), and the loss is the mean over those instances. Positives are exemplars the instance already
   resembles: the loss pulls it further towards those pivots and away from unlike exemplars.
   No such instance: an exact zero that keeps the graph (0 * e.sum()), never NaN, with the counts logged.
   Thresholds: "absolute" (default, the paper's) alpha and beta are fixed cosines. Without centring every
   instance-exemplar cosine lay above 0.5 in an early demo (+1050 positives, 0 negatives per batch: the term
   was exactly zero for the whole run); "quantile" is the option that made it non-zero then: per instance,
   the exemplars at or above the pos_quantile of its similarities are positives and those at or below
   neg_quantile negatives, whatever the similarities (so every instance gets both, which the paper's rule
   does not promise).
Defaults (ours where the paper gives no value): absolute alpha 0.5, beta 0.1; quantiles 0.75 / 0.25;
temperature 0.2 (MoCo v2's), weight 0.1 (a tenth of the mask terms' scale while the method is unproven
here), refresh_every 50 steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskless.models.resnet import normalize
from maskless.solo.model import pad_to_multiple


@dataclass
class EECParams:
    alpha: float = 0.5
    beta: float = 0.1
    temperature: float = 0.2
    weight: float = 0.1
    dim: int = 64
    refresh_every: int = 50
    upsample: int = 2
    detach_masks: bool = False
    center: bool = True
    thresholds: str = "absolute"
    pos_quantile: float = 0.75
    neg_quantile: float = 0.25

    def __post_init__(self) -> None:
        name = "EECParams"
        for key in ("alpha", "beta", "temperature", "weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}.{key} must be a finite number, got {value!r}")
        if not -1.0 <= self.beta <= self.alpha <= 1.0:
            raise ValueError(f"{name}: need -1 <= beta <= alpha <= 1 (cosine similarities), got alpha "
                             f"{self.alpha}, beta {self.beta}")
        if self.thresholds not in ("absolute", "quantile"):
            raise ValueError(f"{name}.thresholds {self.thresholds!r} unknown; choices: ['absolute', 'quantile']")
        if not 0.0 <= self.neg_quantile < self.pos_quantile <= 1.0:
            raise ValueError(f"{name}: need 0 <= neg_quantile < pos_quantile <= 1, got {self.neg_quantile}, "
                             f"{self.pos_quantile}")
        if not self.temperature > 0:
            raise ValueError(f"{name}.temperature must be > 0, got {self.temperature}")
        if self.weight < 0:
            raise ValueError(f"{name}.weight must be >= 0, got {self.weight}")
        for key in ("dim", "refresh_every", "upsample"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {value!r}")

    def refresh_due(self, step: int) -> bool:
        """True at steps 0, refresh_every, 2 refresh_every, ...: when the pool embeddings are recomputed."""
        return step % self.refresh_every == 0


class EECHead(nn.Module):
    """mask_feat (B, D, h, w) -> unit-norm embedding map (B, dim, h * upsample, w * upsample)."""

    def __init__(self, in_channels: int, *, dim: int = 64, hidden: int | None = None, gn_groups: int = 32,
                 upsample: int = 2):
        super().__init__()
        hidden = in_channels if hidden is None else hidden
        if hidden % gn_groups:
            raise ValueError(f"EECHead: hidden width {hidden} is not divisible by gn_groups {gn_groups}")
        if upsample < 1:
            raise ValueError(f"EECHead: upsample must be >= 1, got {upsample}")
        self.upsample = int(upsample)
        self.body = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
                                  nn.GroupNorm(gn_groups, hidden), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, dim, 1))

    def forward(self, mask_feat: Tensor) -> Tensor:
        emb = F.normalize(self.body(mask_feat), dim=1)  # (B, E, h, w)
        if self.upsample > 1:
            emb = F.interpolate(emb, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return emb  # (B, E, h u, w u)


def _resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) -> (N, H, W): area when shrinking (keeps every pixel's weight), bilinear otherwise."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    shrink = masks.shape[-2] >= size[0] and masks.shape[-1] >= size[1]
    mode = "area" if shrink else "bilinear"
    kw = {} if shrink else {"align_corners": False}
    return F.interpolate(masks[:, None], size=tuple(size), mode=mode, **kw)[:, 0]


def mask_pooled_embeddings(emb_map: Tensor, masks: Tensor, batch_index: Tensor, *, eps: float = 1e-6
                           ) -> tuple[Tensor, Tensor]:
    """Mask-guided embeddings (module docstring, 2).

    emb_map: (B, E, H, W); masks: (N, h, w) soft weights in [0, 1] (resized to (H, W) when different);
    batch_index: (N,) the image of each mask. Returns (emb (N, E), valid (N,) bool): emb_i is the
    L2-normalised sum_hw m_i e / sum_hw m_i; a mask of total weight <= eps gives a zero row and valid False.
    NaN/inf, weights outside [0, 1] or a batch index out of range: ValueError.
    """
    if emb_map.ndim != 4 or masks.ndim != 3 or batch_index.shape != masks.shape[:1]:
        raise ValueError(f"mask_pooled_embeddings: want emb_map (B, E, H, W), masks (N, h, w), batch_index (N,); "
                         f"got {tuple(emb_map.shape)}, {tuple(masks.shape)}, {tuple(batch_index.shape)}")
    if not (torch.isfinite(emb_map).all() and torch.isfinite(masks).all()):
        raise ValueError("mask_pooled_embeddings: emb_map or masks hold NaN or inf")
    if masks.numel() and (masks.amin() < 0 or masks.amax() > 1):
        raise ValueError(f"mask_pooled_embeddings: mask weights must lie in [0, 1], got "
                         f"[{float(masks.amin())}, {float(masks.amax())}]")
    b = emb_map.shape[0]
    if batch_index.numel() and (batch_index.amin() < 0 or batch_index.amax() >= b):
        raise ValueError(f"mask_pooled_embeddings: batch_index must lie in [0, {b}), got "
                         f"[{int(batch_index.amin())}, {int(batch_index.amax())}]")
    masks = _resize_masks(masks.to(emb_map.dtype), emb_map.shape[-2:])  # (N, H, W)
    sums = emb_map.new_zeros(masks.shape[0], emb_map.shape[1])  # (N, E)
    for img in torch.unique(batch_index).tolist():
        rows = (batch_index == img).nonzero().squeeze(1)  # (N_b,)
        # Per image: an (N_b, HW) x (HW, E) product, never an (N, E, H, W) gather.
        pooled = torch.einsum("nhw,ehw->ne", masks[rows], emb_map[img])  # (N_b, E)
        sums = sums.index_add(0, rows, pooled)
    mass = masks.sum(dim=(1, 2))  # (N,)
    valid = mass > eps
    mean = sums / mass.clamp(min=eps)[:, None]  # (N, E)
    return F.normalize(mean, dim=1) * valid[:, None], valid


def _as_tensor(x, dtype, device) -> Tensor:
    return (x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))).to(device=device, dtype=dtype)


@torch.no_grad()
def pool_embeddings(model: nn.Module, head: nn.Module | None, crops, masks, *, batch_size: int = 32) -> Tensor:
    """Embeddings (P, E) of the exemplar pool, detached (module docstring, 3).

    model: SOLOv2; head: EECHead, or None for the L2-normalised mask_feat itself (the mining stage's
    embeddings, before any head exists); crops: uint8 (P, S, S, 3) RGB; masks: bool (P, S, S). Crops are
    padded to a multiple of 32 and the masks with zeros alike. Model and head run in eval mode (no BatchNorm
    statistics move), their modes restored. An exemplar whose mask has no weight is a ValueError.
    """
    device = next(model.parameters()).device
    crops, masks = _as_tensor(crops, torch.uint8, device), _as_tensor(masks, torch.float32, device)
    if crops.ndim != 4 or crops.shape[-1] != 3 or masks.shape != crops.shape[:3]:
        raise ValueError(f"pool_embeddings: want crops (P, S, S, 3) and masks (P, S, S), got "
                         f"{tuple(crops.shape)}, {tuple(masks.shape)}")
    if crops.shape[0] == 0:
        raise ValueError("pool_embeddings: the exemplar pool is empty")
    modules = [m for m in (model, head) if m is not None]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        out = []
        for start in range(0, crops.shape[0], max(1, batch_size)):
            x, _ = pad_to_multiple(normalize(crops[start : start + batch_size].permute(0, 3, 1, 2)))  # (b, 3, H', W')
            feat = model(x)["mask_feat"].float()  # (b, D, H'/4, W'/4)
            emb_map = F.normalize(feat, dim=1) if head is None else head(feat)  # (b, E, h, w)
            m = masks[start : start + batch_size]
            m = F.pad(m, (0, x.shape[-1] - m.shape[-1], 0, x.shape[-2] - m.shape[-2]))  # (b, H', W')
            emb, valid = mask_pooled_embeddings(emb_map, m, torch.arange(len(m), device=device))
            if not valid.all():
                bad = (start + (~valid).nonzero().squeeze(1)).tolist()
                raise ValueError(f"pool_embeddings: exemplars {bad} have empty masks")
            out.append(emb)
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
    return torch.cat(out)  # (P, E)


def eec_loss(inst_emb: Tensor, pool_emb: Tensor, *, alpha: float, beta: float, temperature: float,
             valid: Tensor | None = None, thresholds: str = "absolute", pos_quantile: float = 0.75,
             neg_quantile: float = 0.25) -> tuple[Tensor, dict[str, Tensor]]:
    """EEC InfoNCE (module docstring, 4). inst_emb: (N, E) unit rows (zero rows allowed where valid is
    False); pool_emb: (P, E) unit rows, treated as constants; valid: (N,) bool, rows to use (default all).

    Returns (loss, stats): loss a scalar mean over the instances with >= 1 positive and >= 1 negative (an
    exact 0 that keeps the graph when there are none); stats: detached float counts "num_pos" and "num_neg"
    (positive / negative pairs of used rows), "num_valid" (instances in the mean). NaN/inf: ValueError.

    thresholds "absolute": positives s > alpha, negatives s < beta (the paper's fixed similarity bounds).
    "quantile": per instance, positives s >= the pos_quantile of its similarities to the pool, negatives
    s <= its neg_quantile (never a positive too): every instance whose similarities are not all equal has
    both, whatever the scale of the embedding space (module docstring, 4).
    """
    if inst_emb.ndim != 2 or pool_emb.ndim != 2 or inst_emb.shape[1] != pool_emb.shape[1]:
        raise ValueError(f"eec_loss: want inst_emb (N, E) and pool_emb (P, E), got {tuple(inst_emb.shape)}, "
                         f"{tuple(pool_emb.shape)}")
    if not (torch.isfinite(inst_emb).all() and torch.isfinite(pool_emb).all()):
        raise ValueError("eec_loss: inst_emb or pool_emb hold NaN or inf")
    if valid is None:
        valid = torch.ones(inst_emb.shape[0], dtype=torch.bool, device=inst_emb.device)
    sim = inst_emb.float() @ pool_emb.detach().float().T  # (N, P)
    if thresholds == "absolute":
        pos, neg = sim > alpha, sim < beta  # (N, P)
    elif thresholds == "quantile":
        if sim.shape[0]:
            q = torch.tensor([neg_quantile, pos_quantile], device=sim.device)
            lo, hi = torch.quantile(sim.detach(), q, dim=1, keepdim=True)  # (N, 1) each
        else:  # no instance in the batch (torch.quantile refuses an empty input)
            lo = hi = sim.new_zeros(0, 1)
        pos = sim >= hi  # (N, P)
        neg = (sim <= lo) & ~pos
    else:
        raise ValueError(f"eec_loss: thresholds {thresholds!r} unknown; choices: ['absolute', 'quantile']")
    pos, neg = pos & valid[:, None], neg & valid[:, None]
    rows = pos.any(1) & neg.any(1)  # (N,)
    stats = {"num_pos": pos.sum().float().detach(), "num_neg": neg.sum().float().detach(),
             "num_valid": rows.sum().float().detach()}
    logits = sim[rows] / temperature  # (V, P): only rows with both sets, so no logsumexp over nothing
    lse_pos = torch.logsumexp(logits.masked_fill(~pos[rows], -math.inf), dim=1)  # (V,)
    lse_all = torch.logsumexp(logits.masked_fill(~(pos | neg)[rows], -math.inf), dim=1)  # (V,)
    per_inst = lse_all - lse_pos  # (V,) = -log(sum_pos / (sum_pos + sum_neg))
    zero = 0.0 * inst_emb.sum()
    loss = per_inst.sum() / rows.sum().clamp(min=1) + zero  # mean over V; exact 0 with a graph when V = 0
    return loss, stats


def center_embeddings(emb: Tensor, valid: Tensor, pool_emb: Tensor) -> tuple[Tensor, Tensor]:
    """Subtract the pool's mean mu (a constant) from the instance rows (N, E) and the pool rows (P, E) and
    renormalise (module docstring, 4); rows that are not valid stay zero."""
    mu = pool_emb.detach().mean(0, keepdim=True)  # (1, E)
    return F.normalize(emb - mu, dim=1) * valid[:, None], F.normalize(pool_emb.detach() - mu, dim=1)


def eec_term(emb_map: Tensor, masks: Tensor, batch_index: Tensor, pool_emb: Tensor, params: EECParams
             ) -> dict[str, Tensor]:
    """The EEC term of a training batch: emb_map (B, E, H, W) from EECHead, masks (N, h, w) the positives'
    soft masks (sigmoid of their mask logits), batch_index (N,), pool_emb (P, E) from pool_embeddings.

    Returns "loss_eec" (unweighted: the caller adds params.weight x it to the total) and detached counts
    "num_eec_pos", "num_eec_neg", "num_eec_valid" (eec_loss), "num_eec_empty" (masks with no weight, left out).
    """
    if params.detach_masks:
        masks = masks.detach()
    emb, ok = mask_pooled_embeddings(emb_map, masks, batch_index)
    if params.center:
        emb, pool_emb = center_embeddings(emb, ok, pool_emb)
    loss, stats = eec_loss(emb, pool_emb, alpha=params.alpha, beta=params.beta,
                           temperature=params.temperature, valid=ok, thresholds=params.thresholds,
                           pos_quantile=params.pos_quantile, neg_quantile=params.neg_quantile)
    # + 0 x the map: the loss stays connected to the head when no instance pools anything (no positives in
    # this batch or this rank's share of it); otherwise a data-parallel rank would skip the head's gradient
    # all-reduce that the other ranks wait for.
    loss = loss + 0.0 * emb_map.sum()
    return {"loss_eec": loss, **{f"num_eec_{k[4:]}": v for k, v in stats.items()},
            "num_eec_empty": (~ok).sum().float().detach()}
