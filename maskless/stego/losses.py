"""The STEGO feature-correspondence distillation loss (METHODS.md "STEGO"; Hamilton et al. 2022, Eqs. 3-5).

For an image pair (a, b), both sampled at P x P random points:
    F[p, q] = cos(f_a[p], f_b[q])                        frozen-feature correspondence   (B, P, P, P, P)
    F <- F - mean_q F[p, q] + mean_all F                 spatial centring (Eq. 4): subtract the mean over
                                                         the partner image's points, restore the global mean
    S[p, q] = cos(s_a[p], s_b[q])                        code correspondence
    loss(a, b, shift) = mean(-clamp(S, min=0) * (F - shift))
Where the (centred) features agree above `shift` the gradient raises S (codes pulled together); below it,
S is pushed down to 0 (the clamp stops pushing further: Sec. 3.2, "zero clamp").
L = w_self loss(x, x, b_self) + w_knn loss(x, x_knn, b_knn) + w_rand mean_n loss(x, x_rand_n, b_rand).

As the reference (mhamilton723/STEGO src/modules.py, ContrastiveCorrelationLoss.forward):
- the self pair is the anchor against itself at the SAME points (helper(feats, feats, code, code,
  pos_intra_shift)): S and F are 1 on the diagonal p = q;
- the kNN partner and every random partner are sampled at a second set of points, shared by all of them;
- there are neg_samples random partners (5 in train_config.yml), each image of the batch against an
  in-batch partner; the reference concatenates the neg_samples loss tensors and takes one mean, which equals
  the mean of the per-sample means (equal sizes);
- pointwise centring, zero clamp, no "stabalize" (train_config.yml: pointwise True, zero_clamp True,
  stabalize False).

The "global mean" is the mean over the whole (B, P, P, P, P) tensor of one pair term, as in the reference
(one scalar per helper call). Feature correlations carry no gradient (frozen backbone).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PAIRS = ("self", "knn", "rand")
TERMS = tuple(f"corr_{p}" for p in PAIRS)


@dataclass
class StegoLossParams:
    """Weights and shifts of the three pair terms; the defaults are the synthetic preset.

    Shifts only mean something relative to the distribution of the centred feature correlations F, which
    depends on the backbone. On the pipeline's DenseCL resnet18 (800 steps) res3 features of the default
    160 px data, the percentiles (5 / 10 / 25 / 50 / 75 / 90 / 95) of F are: self pairs (same points)
    0.40 / 0.48 / 0.58 / 0.69 / 0.77 / 0.85 / 0.90; kNN pairs 0.39 / 0.46 / 0.56 / 0.66 / 0.74 / 0.81 / 0.84;
    random pairs 0.26 / 0.30 / 0.36 / 0.42 / 0.50 / 0.58 / 0.64. The synthetic preset puts the self and kNN
    shifts at about the median of their pairs' F (so about half of those pairs are pushed apart) and the
    random shift at the 90th percentile of its pairs' F; weights are the reference's.

    Measured against the reference's ordering (issue 15 item 4; BENCHMARKS.md "STEGO: reference alignment",
    cluster probe, 3 training seeds, mean +- sample std, k-means 11.9 +- 2.2 mIoU / 67.1 +- 16.4 obj_mIoU,
    constant background 17.8 / 0.0):
      self / kNN / random shifts                            mIoU         obj_mIoU
      0.68 / 0.65 / 0.58  (P50 / P50 / P90, this preset)    15.0 +- 1.4  75.3 +- 1.9
      0.68 / 0.65 / 0.66  (random above self and kNN)       14.6 +- 1.9  70.1 +- 7.3
      0.58 / 0.56 / 0.58  (P25 / P25 / P90)                 13.9 +- 0.6  74.6 +- 4.6
      0.48 / 0.46 / 0.58  (P10 / P10 / P90)                  9.0 +- 0.2  47.4 +- 0.7
      0.08 / 0.02 / 0.66  (reference COCO-Stuff)            10.4 +- 0.7  30.3 +- 10.7 (collapse: the
                                                            linear probe falls to the constant map)
    Attracting (nearly) every self and kNN pair, as the reference's low shifts (tuned for DINO ViT features)
    do, scores worst on these features; the median shifts are the best of the settings tried, not a tuned
    optimum. STEGO's lead over k-means on obj_mIoU is within k-means' seed spread, and on mIoU and pixel
    accuracy neither beats the constant background map.
    """

    weight_self: float = 0.67
    weight_knn: float = 0.25
    weight_rand: float = 0.63
    shift_self: float = 0.68
    shift_knn: float = 0.65
    shift_rand: float = 0.58

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"StegoLossParams.{f.name} must be a finite number, got {value!r}")
            if f.name.startswith("weight") and value < 0:
                raise ValueError(f"StegoLossParams.{f.name} must be >= 0, got {value}")

    @classmethod
    def cocostuff(cls) -> "StegoLossParams":
        """The reference preset (COCO-Stuff, ViT-S; METHODS.md; mhamilton723/STEGO src/configs/train_config.yml,
        "Cocostuff27 vit small 1/31/22")."""
        return cls(weight_self=0.67, weight_knn=0.25, weight_rand=0.63,
                   shift_self=0.08, shift_knn=0.02, shift_rand=0.66)

    @classmethod
    def synthetic(cls) -> "StegoLossParams":
        """Our small synthetic data with a DenseCL ResNet res3 backbone (the dataclass defaults; the class
        docstring gives the measurement that picked them)."""
        return cls()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS = {"synthetic": StegoLossParams.synthetic, "cocostuff": StegoLossParams.cocostuff}


def random_coords(rng: np.random.Generator, batch: int, points: int) -> torch.Tensor:
    """(B, P, P, 2) float32 point coordinates uniform in [-1, 1] (grid_sample order: x, y)."""
    return torch.from_numpy(rng.uniform(-1.0, 1.0, (batch, points, points, 2)).astype(np.float32))


def random_derangement(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) int64 permutation with no fixed point, uniform over derangements (rejection: about e draws).

    The reference's super_perm (src/modules.py) bumps fixed points of a random permutation by one, which
    avoids self pairs but can repeat an image; a derangement gives every image exactly one partner role.
    """
    if n < 2:
        raise ValueError(f"random_derangement needs n >= 2, got {n}")
    while True:
        perm = rng.permutation(n)
        if (perm != np.arange(n)).all():
            return perm.astype(np.int64)


def sample_points(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of x (B, C, h, w) at coords (B, P, Q, 2) in [-1, 1] -> (B, C, P, Q).

    align_corners=True: -1 and 1 are the centres of the border cells, so every point lies inside the map.
    """
    return F.grid_sample(x, coords.to(x.device, x.dtype), mode="bilinear", align_corners=True)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of every point of a (B, C, P, Q) with every point of b (B, C, R, S) -> (B, P, Q, R, S)."""
    return torch.einsum("bcpq,bcrs->bpqrs", F.normalize(a, dim=1), F.normalize(b, dim=1))


def centre(corr: torch.Tensor) -> torch.Tensor:
    """Spatial centring (Eq. 4) of a (B, P, Q, R, S) correlation: minus the mean over the partner's points
    (R, S), plus the global mean of the tensor."""
    return corr - corr.mean(dim=(3, 4), keepdim=True) + corr.mean()


def corr_loss(feats_a: torch.Tensor, feats_b: torch.Tensor, codes_a: torch.Tensor, codes_b: torch.Tensor,
              *, shift: float) -> torch.Tensor:
    """mean(-clamp(S, min=0) * (F - shift)) for sampled feats (B, C, P, P) and codes (B, D, P, P)."""
    return _pair_loss(F.normalize(feats_a, dim=1), F.normalize(feats_b, dim=1), codes_a, codes_b, shift=shift)


def _pair_loss(unit_a: torch.Tensor, unit_b: torch.Tensor, codes_a: torch.Tensor, codes_b: torch.Tensor,
               *, shift: float) -> torch.Tensor:
    """corr_loss with the feats already L2-normalised over channels (correlation's own normalisation, done
    once per sampled tensor by the caller: the same values, bit for bit)."""
    with torch.no_grad():
        fd = centre(torch.einsum("bcpq,bcrs->bpqrs", unit_a, unit_b))  # (B, P, P, P, P)
    cd = correlation(codes_a, codes_b)  # (B, P, P, P, P)
    return -(cd.clamp(min=0) * (fd - shift)).mean()


Pair = tuple[torch.Tensor, torch.Tensor]  # (feats (B, C, P, P), codes (B, D, P, P)) at sampled points


def stego_losses(anchor: Pair, knn: Pair, rand: list[Pair], *, weight_self: float, weight_knn: float,
                 weight_rand: float, shift_self: float, shift_knn: float,
                 shift_rand: float) -> dict[str, torch.Tensor]:
    """{"corr_self", "corr_knn", "corr_rand" (unweighted), "corr" (their weighted sum)}.

    anchor: x at its points; knn: its neighbour at the partners' points; rand: one entry per random
    partner (neg_samples of them), each another image at the partners' points. The self term is the anchor
    against itself (same points, the reference's pos_intra pair); corr_rand is the mean over `rand`.
    """
    if not rand:
        raise ValueError("stego_losses: rand holds no random partner (need neg_samples >= 1)")
    # Each sampled feature tensor is normalised once, not once per pair it enters (the anchor's enters all
    # 2 + neg_samples pairs): identical values, 1.06x on the training step (BENCHMARKS.md "STEGO's step").
    # The codes are normalised per pair, as in correlation: sharing them too would sum their gradients in
    # another order (weights 1e-5 apart after 20 steps).
    with torch.no_grad():
        unit = F.normalize(anchor[0], dim=1)
        unit_knn = F.normalize(knn[0], dim=1)
        units_rand = [F.normalize(f, dim=1) for f, _ in rand]
    out = {"corr_self": _pair_loss(unit, unit, anchor[1], anchor[1], shift=shift_self),
           "corr_knn": _pair_loss(unit, unit_knn, anchor[1], knn[1], shift=shift_knn),
           "corr_rand": torch.stack([_pair_loss(unit, u, anchor[1], c, shift=shift_rand)
                                     for u, (_, c) in zip(units_rand, rand)]).mean()}
    out["corr"] = weight_self * out["corr_self"] + weight_knn * out["corr_knn"] + weight_rand * out["corr_rand"]
    return out
