"""The pairwise colour-affinity term of FreeSOLO (Sec. 3.2, after BoxInst, Tian et al. 2021, Sec. 3), the Lab
conversion it compares colours in, and its linear warm-up; maskless.solo.losses adds it to the other terms.

Colour convention for the pairwise term (BoxInst's): CIE Lab in its usual units (L in [0, 100]) of the
sRGB image average-pooled to mask resolution; S_ij = exp(-||Lab_i - Lab_j||_2 / 2), edge kept when
S_ij >= 0.3, i.e. a colour distance of at most 2 ln(1/0.3) = 2.41 Lab units. Edges whose neighbour falls
outside the real image (padding, off the border) or in the ignored bottom rows are dropped, as BoxInst's
image mask does; only the neighbour decides, so an edge from an ignored centre pixel stays.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rgb_to_lab", "lab_at_mask_resolution", "pairwise_terms", "pairwise_affinity_loss", "warmup_factor"]


def rgb_to_lab(images: Tensor) -> Tensor:
    """sRGB (B, 3, H, W) -> CIE Lab (B, 3, H, W), D65 white, L in [0, 100].

    uint8 images are read as 0..255; floating images must already lie in [0, 1] (checked). The formula:
    sRGB gamma removed (IEC 61966-2-1), linear RGB -> XYZ by the sRGB matrix, divided by the D65 white
    (taken as the matrix's row sums, ~(0.95046, 1, 1.08875), so grey has a = b = 0),
    f(t) = t^(1/3) above (6/29)^3 else t / (3 (6/29)^2) + 4/29, then L = 116 f(Y) - 16,
    a = 500 (f(X) - f(Y)), b = 200 (f(Y) - f(Z)).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"rgb_to_lab expects (B, 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        rgb = images.float() / 255.0
    else:
        rgb = images.float()
        if rgb.numel() and (rgb.amin() < -1e-3 or rgb.amax() > 1 + 1e-3):
            raise ValueError("rgb_to_lab: floating images must lie in [0, 1] (uint8 is read as 0..255)")
        rgb = rgb.clamp(0.0, 1.0)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)  # (B, 3, H, W)
    m = torch.tensor([[0.412453, 0.357580, 0.180423],
                      [0.212671, 0.715160, 0.072169],
                      [0.019334, 0.119193, 0.950227]], device=rgb.device)
    # Reference white = the matrix applied to RGB white, D65 ~(0.9505, 1, 1.0888): grey gets a = b = 0 exactly.
    white = m.sum(1)
    xyz = torch.einsum("ij,bjhw->bihw", m, linear) / white[None, :, None, None]  # (B, 3, H, W)
    delta = 6.0 / 29.0
    f = torch.where(xyz > delta**3, xyz.clamp(min=1e-12) ** (1.0 / 3.0), xyz / (3 * delta**2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_at_mask_resolution(images: Tensor, mask_stride: int = 4) -> Tensor:
    """(B, 3, H, W) sRGB (uint8, or float in [0, 1]) -> (B, 3, ceil(H/s), ceil(W/s)) Lab.

    Average-pools RGB to mask resolution first, then converts (BoxInst's order); edge blocks average only
    the pixels they hold.
    """
    rgb = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    pooled = F.avg_pool2d(rgb, mask_stride, stride=mask_stride, ceil_mode=True)  # (B, 3, Hf, Wf)
    return rgb_to_lab(pooled)


def _neighbours(x: Tensor, kernel: int, dilation: int, fill: float | bool) -> Tensor:
    """(M, C, h, w) -> (M, C, K, h, w): the K = kernel^2 - 1 dilated neighbours of each pixel, `fill` off
    the border."""
    r = dilation * (kernel // 2)
    h, w = x.shape[-2:]
    padded = F.pad(x.float(), (r, r, r, r), value=float(fill)).to(x.dtype)  # (M, C, h + 2r, w + 2r)
    offs = [(dy, dx) for dy in range(-r, r + 1, dilation) for dx in range(-r, r + 1, dilation) if dy or dx]
    return torch.stack([padded[..., r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in offs], dim=2)


def _valid_region(m: int, h: int, w: int, valid_hw, ignore_bottom: int, device) -> Tensor:
    """(M, 1, h, w) bool: the real image (top-left valid_hw) minus its `ignore_bottom` last rows.

    Used on the NEIGHBOUR side of each edge only (pairwise_terms).
    """
    vh, vw = (h, w) if valid_hw is None else (int(valid_hw[0]), int(valid_hw[1]))
    valid = torch.zeros(m, 1, h, w, dtype=torch.bool, device=device)
    valid[..., : max(vh - int(ignore_bottom), 0), :vw] = True
    return valid


def pairwise_terms(logits: Tensor, image_lab: Tensor, box_masks: Tensor, *, kernel: int = 3, dilation: int = 2,
                   color_thresh: float = 0.3, ignore_bottom: int = 0,
                   valid_hw: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """The pairwise term's numerator and denominator per instance: (sum w_ij * -log P(y_i = y_j), sum w_ij),
    each (N,), the sums over one instance's edges.

    Split out so a batch can be normalised over all its images, or per level (BoxInst, FreeSOLO). Arguments
    as in pairwise_affinity_loss.
    """
    n, h, w = logits.shape
    if image_lab.ndim != 4 or image_lab.shape[1] != 3 or image_lab.shape[-2:] != (h, w) \
            or image_lab.shape[0] not in (1, n) or box_masks.shape != logits.shape:
        raise ValueError(f"pairwise loss: logits {tuple(logits.shape)} needs image_lab (N or 1, 3, {h}, {w}) "
                         f"and box_masks of the same shape; got {tuple(image_lab.shape)}, "
                         f"{tuple(box_masks.shape)}")
    x = logits.float()[:, None]  # (N, 1, h, w)
    log_fg, log_bg = F.logsigmoid(x), F.logsigmoid(-x)  # log p, log(1 - p)
    nb_fg, nb_bg = _neighbours(log_fg, kernel, dilation, 0.0), _neighbours(log_bg, kernel, dilation, 0.0)
    # log(p_i p_j + (1 - p_i)(1 - p_j)) as a logsumexp of the two log-products: finite for any logits.
    log_same = torch.logaddexp(log_fg[:, :, None] + nb_fg, log_bg[:, :, None] + nb_bg)[:, 0]  # (N, K, h, w)
    with torch.no_grad():  # the weights are constants of the image
        lab = image_lab.float()
        diff = lab[:, :, None] - _neighbours(lab, kernel, dilation, 0.0)  # (M, 3, K, h, w)
        similar = torch.exp(-diff.norm(dim=1) / 2.0) >= color_thresh  # (M, K, h, w)
        valid = _valid_region(lab.shape[0], h, w, valid_hw, ignore_bottom, lab.device)  # (M, 1, h, w)
        # BoxInst (AdelaiDet condinst.get_images_color_similarity) multiplies the similarity by the unfolded
        # image mask: only the neighbour j decides; an edge whose centre i lies in the ignored rows stays.
        edge_ok = similar & _neighbours(valid, kernel, dilation, False)[:, 0]  # (M, K, h, w)
        weight = edge_ok.float() * box_masks.float()[:, None]  # (N, K, h, w)
    return (weight * -log_same).flatten(1).sum(1), weight.flatten(1).sum(1)


def pairwise_affinity_loss(logits: Tensor, image_lab: Tensor, box_masks: Tensor, *, kernel: int = 3,
                           dilation: int = 2, color_thresh: float = 0.3, ignore_bottom: int = 0,
                           valid_hw: tuple[int, int] | None = None) -> Tensor:
    """BoxInst pairwise loss -> scalar.

    logits: (N, h, w) mask logits; image_lab: (N or 1, 3, h, w) Lab image at mask resolution; box_masks:
    (N, h, w) 0/1. Edges go from each pixel i to its 8 neighbours j in a kernel x kernel window with
    `dilation`; w_ij = [S_ij >= color_thresh] * valid_j * boxmask_i; loss = sum w_ij * -log(p_i p_j +
    (1-p_i)(1-p_j)) / max(sum w, 1). valid_j: the neighbour lies inside the real image (valid_hw: its rows
    and cols at mask resolution when the rest is padding) and above its `ignore_bottom` last rows; as in
    BoxInst, only the neighbour decides, so an edge from an ignored or padded centre pixel i is kept (its
    boxmask_i still applies).
    """
    num, den = pairwise_terms(logits, image_lab, box_masks, kernel=kernel, dilation=dilation,
                              color_thresh=color_thresh, ignore_bottom=ignore_bottom, valid_hw=valid_hw)
    return num.sum() / den.sum().clamp(min=1.0)


def warmup_factor(step: int, warmup: int = 1000) -> float:
    """min(step / warmup, 1): the pairwise term's linear warm-up (METHODS.md); 1 when warmup <= 0."""
    return 1.0 if warmup <= 0 else min(max(step, 0) / warmup, 1.0)
