"""SOLOv2 inference: model outputs -> scored binary instance masks (METHODS.md "Self-supervised SOLO",
"Inference"; SOLOv2 Wang et al. 2020, Sec. 4).

Per image, in the reference's order (AdelaiDet SOLOv2 `inference_single_image`, which FreeSOLO runs):
sigmoid category maps, 2x2 point NMS, every cell above score_thresh, its dynamic 1x1 kernel applied to the
stride-4 mask features, sigmoid, binary at mask_thresh, masks whose area (in stride-4 cells) is not above the
instance stride of their FPN level dropped (INSTANCE_STRIDES; with no strides given, only empty masks),
score = category score x maskness (mean sigmoid inside the binary mask), the nms_pre best of those scores,
class-agnostic Matrix NMS, decayed scores >= update_thresh, the max_per_img best. Everything up to Matrix NMS
runs at stride 4 on the unpadded region; only the kept masks are upsampled to image size. (Before issue 15
the nms_pre cut came before the dynamic convolution, by category score alone, and masks of any area were
kept.)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maskless.ops.matrix_nms import KERNELS, matrix_nms

log = logging.getLogger(__name__)

MASK_STRIDE = 4  # mask_feat resolution relative to the padded input (SOLOv2 Sec. 3.2.2)
# The reference's instance strides per FPN level (AdelaiDet SOLOv2 config INSTANCE_STRIDES [8, 8, 16, 32, 32]
# for p2..p6): a mask must cover more stride-4 cells than its level's stride.
INSTANCE_STRIDES = {"p2": 8, "p3": 8, "p4": 16, "p5": 32, "p6": 32}


def instance_strides(levels) -> tuple[int, ...]:
    """The instance stride of each FPN level name (a SoloModelParams.levels tuple)."""
    unknown = [lv for lv in levels if lv not in INSTANCE_STRIDES]
    if unknown:
        raise ValueError(f"instance_strides: FPN levels {unknown} unknown; choices: {list(INSTANCE_STRIDES)}")
    return tuple(INSTANCE_STRIDES[lv] for lv in levels)


@dataclass
class SoloInferenceParams:
    """SOLOv2 test-time settings; defaults are the reference values (METHODS.md "Inference")."""

    score_thresh: float = 0.1  # on the category score, before maskness
    update_thresh: float = 0.05  # on the Matrix-NMS decayed score
    mask_thresh: float = 0.5  # sigmoid mask probability -> binary
    max_per_img: int = 100
    nms_pre: int = 500  # candidates kept (by category x maskness score) before Matrix NMS
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0

    def __post_init__(self) -> None:
        name = "SoloInferenceParams"
        for key in ("score_thresh", "update_thresh", "mask_thresh"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{name}.{key} must lie in [0, 1], got {getattr(self, key)}")
        for key in ("max_per_img", "nms_pre"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.nms_kernel not in KERNELS:
            raise ValueError(f"{name}.nms_kernel {self.nms_kernel!r} unknown; choices: {list(KERNELS)}")
        if not self.nms_sigma > 0:
            raise ValueError(f"{name}.nms_sigma must be > 0, got {self.nms_sigma}")


def point_nms(heat: Tensor) -> Tensor:
    """Zero every cell that is below a neighbour in its 2x2 window reaching up and left (SOLOv2 Sec. 4).

    heat: (B, C, S, S) category probabilities -> (B, C, S, S). A cell (i, j) survives when
    heat[i, j] >= heat[i-1, j], heat[i, j-1] and heat[i-1, j-1] (missing neighbours at the top/left border
    count as -inf): SOLOv2's 2x2 max pool with stride 1 and padding 1, cropped to S x S. Ties survive.
    """
    if heat.ndim != 4:
        raise ValueError(f"point_nms expects (B, C, S, S), got shape {tuple(heat.shape)}")
    padded = F.pad(heat, (1, 0, 1, 0), value=-math.inf)  # (B, C, S+1, S+1): a -inf row on top, column left
    window_max = F.max_pool2d(padded, kernel_size=2, stride=1)  # (B, C, S, S) max over rows i-1..i, cols j-1..j
    return heat * (window_max == heat)


def _empty(hw: tuple[int, int], emb_dim: int) -> dict[str, np.ndarray]:
    return {"masks": np.zeros((0, *hw), dtype=bool), "scores": np.zeros(0, dtype=np.float32),
            "embeddings": np.zeros((0, emb_dim), dtype=np.float32)}


def _check_outputs(outputs: dict) -> None:
    missing = [k for k in ("cate", "emb", "kernel", "mask_feat") if k not in outputs]
    if missing:
        raise KeyError(f"predict: model outputs lack keys {missing}; got {sorted(outputs)}")
    n = len(outputs["cate"])
    if n == 0 or len(outputs["emb"]) != n or len(outputs["kernel"]) != n:
        raise ValueError(f"predict: 'cate', 'emb' and 'kernel' need the same non-zero number of levels, got "
                         f"{len(outputs['cate'])}, {len(outputs['emb'])}, {len(outputs['kernel'])}")
    mask_feat = outputs["mask_feat"]
    if mask_feat.ndim != 4:
        raise ValueError(f"predict: 'mask_feat' must be (B, D, Hf, Wf), got {tuple(mask_feat.shape)}")
    b, d = mask_feat.shape[:2]
    for lvl, (c, e, k) in enumerate(zip(outputs["cate"], outputs["emb"], outputs["kernel"])):
        if c.shape[:2] != (b, 1) or k.shape[:2] != (b, d) or e.shape[0] != b or \
                not c.shape[-2:] == e.shape[-2:] == k.shape[-2:]:
            raise ValueError(f"predict: level {lvl} shapes cate {tuple(c.shape)}, emb {tuple(e.shape)}, "
                             f"kernel {tuple(k.shape)} do not fit mask_feat {tuple(mask_feat.shape)}")
    for key in ("cate", "kernel"):
        if not all(torch.isfinite(t).all() for t in outputs[key]):
            raise ValueError(f"predict: model output {key!r} contains NaN or inf")
    if not torch.isfinite(mask_feat).all():
        raise ValueError("predict: model output 'mask_feat' contains NaN or inf")


def _cells(outputs: dict, b: int, strides) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Image b's grid cells over all levels: scores (N,) after point NMS, kernels (N, D), embeddings (N, E)
    and the minimum mask area of each cell (N,): its level's instance stride, 0 with no strides."""
    scores, kernels, embs, min_area = [], [], [], []
    levels = zip(outputs["cate"], outputs["emb"], outputs["kernel"], strides or [0] * len(outputs["cate"]))
    for cate, emb, kernel, stride in levels:
        heat = point_nms(cate[b : b + 1].float().sigmoid())  # (1, 1, S, S)
        scores.append(heat.flatten())  # (S*S,)
        kernels.append(kernel[b].float().flatten(1).T)  # (S*S, D)
        embs.append(emb[b].float().flatten(1).T)  # (S*S, E)
        min_area.append(torch.full((heat.numel(),), float(stride)))
    return torch.cat(scores), torch.cat(kernels), torch.cat(embs), torch.cat(min_area)


def _resolve_hw(image_hw, batch: int) -> list[tuple[int, int]]:
    if len(image_hw) == 2 and all(isinstance(v, (int, np.integer)) for v in image_hw):
        return [(int(image_hw[0]), int(image_hw[1]))] * batch
    if len(image_hw) != batch:
        raise ValueError(f"predict: image_hw needs one (H, W) or one per image ({batch}), got {image_hw!r}")
    return [(int(h), int(w)) for h, w in image_hw]


def _predict_one(outputs: dict, b: int, hw: tuple[int, int], out_hw: tuple[int, int],
                 p: SoloInferenceParams, strides) -> dict[str, np.ndarray]:
    mask_feat = outputs["mask_feat"][b].float()  # (D, Hf, Wf)
    emb_dim = outputs["emb"][0].shape[1]
    scores, kernels, embs, min_area = _cells(outputs, b, strides)  # (N,), (N, D), (N, E), (N,)
    cand = torch.nonzero(scores > p.score_thresh).flatten()  # (K,)
    if cand.numel() == 0:
        return _empty(out_hw, emb_dim)
    # Dynamic convolution: each kernel is a 1x1 conv over the D mask-feature channels (SOLOv2 Sec. 3.2).
    soft = torch.einsum("kd,dhw->khw", kernels[cand], mask_feat).sigmoid()  # (K, Hf, Wf)
    hc, wc = math.ceil(hw[0] / MASK_STRIDE), math.ceil(hw[1] / MASK_STRIDE)
    soft_c = soft[:, :hc, :wc]  # (K, hc, wc) the unpadded region
    binary = soft_c > p.mask_thresh  # (K, hc, wc)
    area = binary.sum(dim=(1, 2)).float()  # (K,)
    big = (area > min_area[cand]) & (area > 0)  # the reference's `sum_masks > strides`
    if not big.all():
        log.debug("predict: image %d: dropped %d masks of %d candidates (area not above the level's stride)",
                  b, int((~big).sum()), cand.numel())
    cand, soft, soft_c, binary, area = (t[big] for t in (cand, soft, soft_c, binary, area))
    if cand.numel() == 0:
        return _empty(out_hw, emb_dim)
    maskness = (soft_c * binary).sum(dim=(1, 2)) / area  # (K,) mean probability inside the mask
    score = scores[cand] * maskness  # (K,)
    top = torch.argsort(score, descending=True, stable=True)[: p.nms_pre]  # the best by the final score
    cand, soft, binary, area, score = (t[top] for t in (cand, soft, binary, area, score))
    decayed = matrix_nms(binary, score, kernel=p.nms_kernel, sigma=p.nms_sigma, areas=area)  # (K,)
    keep = torch.nonzero(decayed >= p.update_thresh).flatten()
    keep = keep[torch.argsort(decayed[keep], descending=True, stable=True)][: p.max_per_img]  # (N,)
    if keep.numel() == 0:
        return _empty(out_hw, emb_dim)
    # Upsample the padded stride-4 map to the padded input size, crop the padding, then resize to out_hw.
    hp, wp = soft.shape[-2] * MASK_STRIDE, soft.shape[-1] * MASK_STRIDE
    full = F.interpolate(soft[keep][None], size=(hp, wp), mode="bilinear", align_corners=False)[0]
    full = full[:, : hw[0], : hw[1]]  # (N, H, W)
    if tuple(out_hw) != tuple(hw):
        full = F.interpolate(full[None], size=out_hw, mode="bilinear", align_corners=False)[0]
    masks = full > p.mask_thresh  # (N, H_out, W_out)
    visible = masks.flatten(1).any(dim=1)  # a thin stride-4 mask can vanish after upsampling
    if not visible.all():
        log.debug("predict: image %d: dropped %d masks empty at full size", b, int((~visible).sum()))
    keep, masks = keep[visible], masks[visible]
    return {"masks": masks.cpu().numpy(),
            "scores": decayed[keep].cpu().numpy().astype(np.float32),
            "embeddings": F.normalize(embs[cand[keep]], dim=1).cpu().numpy().astype(np.float32)}


@torch.no_grad()
def predict(outputs: dict, image_hw, params: SoloInferenceParams, *, out_hw: tuple[int, int] | None = None,
            strides=None) -> list[dict[str, np.ndarray]]:
    """Instances per image from SOLOv2 outputs (the dict of maskless.solo.model.SOLOv2.forward).

    image_hw: the unpadded input size (H, W), or a list with one per image; out_hw: resize the masks to
    this size instead (the original image size when the caller resized before the network); strides: the
    instance stride of each level (instance_strides(model.params.levels)), the minimum mask area in
    stride-4 cells as in the reference; None keeps every non-empty mask.
    Returns, per image, {"masks": bool (N, H, W), "scores": float32 (N,) Matrix-NMS-decayed
    category x maskness scores, "embeddings": float32 (N, E) L2-normalised embedding-branch outputs at the
    instances' cells}, sorted by score descending; N may be 0.
    """
    _check_outputs(outputs)
    if strides is not None and len(strides) != len(outputs["cate"]):
        raise ValueError(f"predict: {len(strides)} strides for {len(outputs['cate'])} levels")
    batch = outputs["mask_feat"].shape[0]
    hws = _resolve_hw(image_hw, batch)
    hp, wp = (s * MASK_STRIDE for s in outputs["mask_feat"].shape[-2:])
    results = []
    for b, hw in enumerate(hws):
        if not (0 < hw[0] <= hp and 0 < hw[1] <= wp):
            raise ValueError(f"predict: image_hw {hw} of image {b} does not fit the padded input {hp}x{wp}")
        results.append(_predict_one(outputs, b, hw, hw if out_hw is None else tuple(out_hw), params, strides))
    return results
