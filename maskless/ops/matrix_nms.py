"""Matrix NMS (SOLOv2, Wang et al. 2020, Sec. 4.2; METHODS.md "Matrix NMS").

Soft, parallel NMS on masks: every mask's score is decayed by its worst overlap with a higher-scored mask,
compensated by how much that higher-scored mask was itself suppressed. No mask is removed here; the caller
keeps masks by decayed score (a threshold, or top-k as in Free Mask).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["matrix_nms", "matrix_nms_top_k", "intersections", "KERNELS"]

KERNELS = ("gaussian", "linear")
_BITS = (torch.bool, torch.int8)  # mask dtypes `intersections` multiplies as int8 on the CPU


def intersections(a: Tensor, b: Tensor) -> Tensor:
    """a (M, P) @ b (N, P).T -> (M, N) float32: for masks, the pixel counts of every pair's intersection.

    Boolean (or 0/1 int8, see as_bits) masks on the CPU go through an int8 x int8 -> int32 product
    (torch._int_mm, oneDNN's integer kernels): the counts are exact integers either way (float32 holds them
    exactly up to 2^24 pixels), so the result is bit-identical to the float product, 4-7x faster on 2 cores
    at Free Mask's sizes (512-2048 masks of 1600-6400 cells; BENCHMARKS.md "Free Mask cost"). Other dtypes
    and devices: the float product.
    """
    if a.dtype in _BITS and b.dtype in _BITS and a.device.type == "cpu" and a.shape[1] < 2**24:
        # b.T as a view: oneDNN reads the transposed layout itself (a contiguous copy of it cost as much as
        # the product: 1.7x on the call at Free Mask's sizes, identical counts)
        return torch._int_mm(as_bits(a), as_bits(b).T).float()
    return a.float() @ b.float().T


def as_bits(masks: Tensor) -> Tensor:
    """Boolean masks as 0/1 int8 for `intersections` on the CPU, other masks unchanged. A view, no copy: a
    bool is stored as one byte holding 0 or 1, which is that int8 (the copy took 0.5 ms for 1,000 masks
    of 1,600 cells)."""
    return masks.view(torch.int8) if masks.dtype == torch.bool and masks.device.type == "cpu" else masks


def _pairwise_iou(masks: Tensor, areas: Tensor | None) -> Tensor:
    """IoU of every pair of (N, H, W) masks -> (N, N)."""
    n = masks.shape[0]
    flat = masks.reshape(n, -1)  # (N, HW)
    inter = intersections(flat, flat)  # (N, N)
    area = flat.float().sum(dim=1) if areas is None else areas.float()  # (N,)
    union = area[:, None] + area[None, :] - inter  # (N, N)
    return inter / union.clamp(min=1e-6)


def check_inputs(masks: Tensor, scores: Tensor, kernel: str) -> None:
    """The kernel's name and the shapes (N, H, W) and (N,): errors name what is wrong."""
    if kernel not in KERNELS:
        raise ValueError(f"matrix_nms kernel must be one of {KERNELS}, got {kernel!r}")
    if masks.ndim != 3 or scores.ndim != 1 or masks.shape[0] != scores.shape[0]:
        raise ValueError(f"matrix_nms needs masks (N, H, W) and scores (N,), "
                         f"got {tuple(masks.shape)} and {tuple(scores.shape)}")


def check_finite(scores: Tensor) -> None:
    """Scores must be finite: a NaN would make the sort, and so every decay, arbitrary."""
    if not torch.isfinite(scores).all():
        raise ValueError("matrix_nms scores contain NaN or inf")


def matrix_nms(
    masks: Tensor,
    scores: Tensor,
    *,
    labels: Tensor | None = None,
    kernel: str = "gaussian",
    sigma: float = 2.0,
    areas: Tensor | None = None,
) -> Tensor:
    """Decayed scores of Matrix NMS, returned in the ORIGINAL order of the inputs.

    masks: (N, H, W) bool or float (binary values expected); scores: (N,); labels: (N,) or None
    (class-agnostic: every pair may suppress); areas: (N,) precomputed mask sums or None.
    Returns (N,) float32 scores * decay.

    With masks sorted by score descending (ties keep input order), IoU_ij for i < j (upper triangle, zero
    across labels), comp_i = max_{k<i} IoU_ki and
        gaussian: decay_j = min_i exp(-sigma IoU_ij^2) / exp(-sigma comp_i^2)
        linear:   decay_j = min_i (1 - IoU_ij) / (1 - comp_i).
    Terms with i >= j have IoU_ij = 0 and are >= 1, so they never lower the minimum below the true one.

    Worked example (tests/ops/test_matrix_nms.py): 1x8 strips m0 = cols 0-3 (score 0.9), m1 = cols 1-4
    (0.8), m2 = cols 2-5 (0.7). IoU01 = 3/5, IoU02 = 2/6, IoU12 = 3/5; comp = (0, 0.6, 0.6).
    Gaussian (sigma 2): decay1 = exp(-2 * 0.36) = 0.48675, decay2 = min(exp(-2/9), exp(-2(0.36 - 0.36)))
    = 0.80074 (without the compensation it would be 0.48675). Linear: decay1 = 0.4, decay2 = min(2/3, 1) = 2/3.
    """
    check_inputs(masks, scores, kernel)
    n = scores.shape[0]
    if n == 0:
        return scores.new_zeros(0, dtype=torch.float32)
    check_finite(scores)

    order = torch.argsort(scores, descending=True, stable=True)  # (N,)
    sorted_areas = None if areas is None else areas[order]
    iou = _pairwise_iou(masks[order], sorted_areas).triu(diagonal=1)  # (N, N), row i < column j
    if labels is not None:
        lab = labels[order]
        iou = iou * (lab[:, None] == lab[None, :])  # suppress only within a label
    comp = iou.amax(dim=0)  # (N,) comp_i = max_{k<i} IoU_ki (column max)
    if kernel == "gaussian":
        ratio = torch.exp(-sigma * (iou**2 - comp[:, None] ** 2))  # (N, N) row i, column j
    else:
        # clamp: two identical masks give comp_i = 1, and 0/0 would poison the minimum with NaN
        ratio = (1.0 - iou) / (1.0 - comp[:, None]).clamp(min=1e-6)  # (N, N)
    decay = ratio.amin(dim=0)  # (N,)
    decayed = scores[order].float() * decay  # (N,)
    out = torch.empty_like(decayed)
    out[order] = decayed
    return out


def matrix_nms_top_k(
    masks: Tensor,
    scores: Tensor,
    k: int,
    *,
    kernel: str = "gaussian",
    sigma: float = 2.0,
    areas: Tensor | None = None,
    block: int = 128,
) -> tuple[Tensor, Tensor]:
    """The k best masks by class-agnostic Matrix NMS score: (indices into the inputs, their decayed scores),
    exactly `argsort(matrix_nms(...), descending=True, stable=True)[:k]` and those scores, bit for bit, at a
    fraction of the cost when k is much smaller than N (Free Mask: top 20 of ~1000 queries at res3).

    Why it can stop early: a mask's decay depends only on the masks ranked above it (and theirs), and it is
    at most 1 (the top-ranked mask i = 0 has comp 0, so its term is <= 1 for every j > 0; j = 0 keeps 1).
    So, walking the masks in score order a block at a time, every mask not yet reached has a decayed score
    <= its raw score <= the next raw score; once the k-th best decayed score so far is strictly above that,
    none of them can enter the top k (ties cannot reorder: the bound is strict). Each block computes its
    masks' IoU with the masks above it only (the upper triangle, never the full N x N product), with the same
    float32 operations as matrix_nms, so every value is identical (the intersections are exact integer sums).
    """
    check_inputs(masks, scores, kernel)
    n = scores.shape[0]
    if n == 0 or k < 1:
        return scores.new_zeros(0, dtype=torch.long), scores.new_zeros(0, dtype=torch.float32)
    check_finite(scores)

    order = torch.argsort(scores, descending=True, stable=True)  # (N,) sorted position -> input index
    flat = as_bits(masks[order].reshape(n, -1))  # (N, HW): 0/1 int8 for boolean masks on the CPU, else as given
    area = (flat.sum(dim=1, dtype=torch.float32) if areas is None else areas[order].float())  # (N,)
    ranked = scores[order].float()  # (N,)
    comp = area.new_zeros(n)  # comp_i, filled block by block
    decayed = torch.full((n,), -math.inf, dtype=torch.float32, device=scores.device)  # sorted order
    start = 0
    while start < n:
        end = min(n, start + block)
        inter = intersections(flat[:end], flat[start:end])  # (end, B): rows i < end, columns j in the block
        union = area[:end, None] + area[None, start:end] - inter
        iou = (inter / union.clamp(min=1e-6)).triu(diagonal=1 - start)  # keep row i < column j (= start + c)
        comp[start:end] = iou.amax(dim=0)  # (B,) column max over the rows above
        if kernel == "gaussian":
            ratio = torch.exp(-sigma * (iou**2 - comp[:end, None] ** 2))  # (end, B)
        else:
            ratio = (1.0 - iou) / (1.0 - comp[:end, None]).clamp(min=1e-6)
        # the terms i >= j (IoU 0) are >= 1 and never lower the minimum (matrix_nms's docstring)
        decayed[start:end] = ranked[start:end] * ratio.amin(dim=0)
        start = end
        if start < n and start >= k and torch.topk(decayed[:start], k).values[-1] > ranked[start]:
            break
    out = torch.full((n,), -math.inf, dtype=torch.float32, device=scores.device)
    out[order] = decayed  # unreached masks stay -inf: each is below the k-th best
    top = torch.argsort(out, descending=True, stable=True)[:k]
    return top, out[top]
