"""Refining an exemplar's GrabCut mask with the round-0 SOLO (Exemplar-FreeSOLO EKA: "crop the foreground; run
a trained FreeSOLO on the crop for a refined object mask").

Our choices (RefineParams):
- Crop box: the GrabCut foreground's box grown by `crop_margin` of its width/height on every side (SOLO sees
  some context around the object, as in its training images), made square when `square` (the longer side,
  centred, shifted to stay inside the image) so the final resize to side x side does not distort the object,
  then clipped to the image (a box wider than the image stays non-square).
- SOLO runs on the crop resized to short side `input_size` (maskless.data.images.resized_hw, the resize of
  training and prediction; pass the SOLO stage's input_size), masks come back at the crop's size.
- Match: the predicted mask with the highest IoU against the GrabCut mask in the crop. When none reaches
  `min_iou` (or SOLO predicts nothing) the GrabCut mask is kept and Exemplar.method says "grabcut", so the
  caller counts fallbacks. Why IoU with GrabCut: SOLO predicts every object in the crop; the one GrabCut
  singled out is the exemplar.
- The crop is resized to `side` x `side` (area interpolation when shrinking, bilinear when enlarging), the mask
  bilinearly as 0/1 then thresholded at 1/2; a mask that vanishes at that size (a sliver) keeps every pixel
  with any coverage (> 0) instead, so an exemplar is never stored with an empty mask.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from maskless.data.images import resized_hw
from maskless.exemplar.grabcut import Foreground
from maskless.models.resnet import normalize
from maskless.ops.masks import boxes_xywh
from maskless.ops.masks import mask_iou as iou_matrix
from maskless.solo.exemplar_pool import METHODS as REFINE_METHODS  # which mask an exemplar keeps
from maskless.solo.inference import SoloInferenceParams, instance_strides, predict
from maskless.solo.model import pad_to_multiple

log = logging.getLogger(__name__)


@dataclass
class RefineParams:
    crop_margin: float = 0.15
    square: bool = True
    input_size: int = 160
    min_iou: float = 0.5
    side: int = 96
    inference: SoloInferenceParams = field(default_factory=SoloInferenceParams)

    def __post_init__(self) -> None:
        if isinstance(self.inference, dict):
            self.inference = SoloInferenceParams(**self.inference)
        name = "RefineParams"
        for key in ("input_size", "side"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {value!r}")
        if not 0.0 <= self.crop_margin <= 2.0:
            raise ValueError(f"{name}.crop_margin must lie in [0, 2], got {self.crop_margin}")
        if not 0.0 <= self.min_iou <= 1.0:
            raise ValueError(f"{name}.min_iou must lie in [0, 1], got {self.min_iou}")


@dataclass
class Exemplar:
    """One exemplar object: crop uint8 (S, S, 3) RGB, mask bool (S, S), box (x, y, w, h) of the crop in the
    source image, method "solo" or "grabcut" (which gave the mask), iou of the best SOLO mask with the
    GrabCut mask (0 when SOLO predicted nothing)."""

    image_id: int
    crop: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]
    method: str
    iou: float


def crop_box(mask: np.ndarray, *, margin: float, square: bool) -> tuple[int, int, int, int]:
    """(x, y, w, h) crop around the foreground of mask (H, W) (module docstring). Empty mask: ValueError."""
    height, width = mask.shape
    x, y, w, h = boxes_xywh(mask[None])[0]
    if w == 0:
        raise ValueError("crop_box: the foreground mask is empty")
    cx, cy = x + w / 2, y + h / 2
    bw, bh = w * (1 + 2 * margin), h * (1 + 2 * margin)
    if square:
        bw = bh = max(bw, bh)
    bw, bh = min(bw, width), min(bh, height)
    # Shift a box that sticks out back inside the image rather than cutting it (keeps it square).
    x0 = min(max(cx - bw / 2, 0.0), width - bw)
    y0 = min(max(cy - bh / 2, 0.0), height - bh)
    x0i, y0i = int(math.floor(x0)), int(math.floor(y0))
    x1i, y1i = min(width, int(math.ceil(x0 + bw))), min(height, int(math.ceil(y0 + bh)))
    return x0i, y0i, x1i - x0i, y1i - y0i


def mask_iou(masks: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """IoU (N,) float64 of each of masks (N, H, W) with ref (H, W); 0 where the union is empty."""

    return iou_matrix(np.asarray(masks, dtype=bool), np.asarray(ref, dtype=bool)[None])[:, 0]


def best_match(masks: np.ndarray, ref: np.ndarray, min_iou: float) -> tuple[int | None, float]:
    """(index of the mask with the highest IoU with ref, that IoU); index None when it is below min_iou or
    there are no masks (IoU 0). Ties go to the first (highest-scoring) mask."""
    if len(masks) == 0:
        return None, 0.0
    ious = mask_iou(masks, ref)
    k = int(np.argmax(ious))
    return (k if ious[k] >= min_iou else None), float(ious[k])


@torch.no_grad()
def solo_masks(model: torch.nn.Module, crop: np.ndarray, *, input_size: int, params: SoloInferenceParams,
               device: str | torch.device = "cpu") -> np.ndarray:
    """SOLO's masks bool (N, h, w) for crop uint8 (h, w, 3), sorted by score; the model is used in eval mode
    (its mode is restored)."""

    h, w = crop.shape[:2]
    rh, rw = resized_hw(h, w, input_size)
    interp = cv2.INTER_AREA if rh < h and rw < w else cv2.INTER_LINEAR
    resized = cv2.resize(crop, (rw, rh), interpolation=interp)
    x = normalize(torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].to(device))  # (1, 3, rh, rw)
    x, hw = pad_to_multiple(x)  # (1, 3, H', W')
    was_training = model.training
    model.eval()
    try:
        outputs = model(x)
    finally:
        model.train(was_training)
    # The reference's area filter (masks not above their level's instance stride dropped), as solo_predict.
    strides = instance_strides(model.params.levels)
    return predict(outputs, hw, params, out_hw=(h, w), strides=strides)[0]["masks"]


def resize_exemplar(crop: np.ndarray, mask: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """crop uint8 (h, w, 3), mask bool (h, w) -> (side, side, 3) uint8, (side, side) bool (module docstring)."""
    h, w = mask.shape
    interp = cv2.INTER_AREA if side < h and side < w else cv2.INTER_LINEAR
    out_crop = cv2.resize(crop, (side, side), interpolation=interp)
    soft = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    out_mask = soft >= 0.5
    if not out_mask.any():
        out_mask = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA) > 0
    return out_crop, out_mask


def refine_exemplar(image: np.ndarray, fg: Foreground, *, image_id: int, model: torch.nn.Module,
                    params: RefineParams, device: str | torch.device = "cpu") -> Exemplar:
    """The exemplar object of one image from its GrabCut foreground (module docstring). image: uint8 (H, W, 3).

    An empty foreground is a ValueError naming the image and GrabCut's reason: the caller counts those
    before refining.
    """
    if fg.empty:
        raise ValueError(f"refine_exemplar: image {image_id} has no foreground to refine ({fg.reason})")
    if fg.mask.shape != image.shape[:2]:
        raise ValueError(f"refine_exemplar: image {image_id} is {image.shape[:2]}, its foreground mask "
                         f"{fg.mask.shape}")
    x, y, w, h = crop_box(fg.mask, margin=params.crop_margin, square=params.square)
    crop, ref = image[y : y + h, x : x + w], fg.mask[y : y + h, x : x + w]
    preds = solo_masks(model, crop, input_size=params.input_size, params=params.inference, device=device)
    k, iou = best_match(preds, ref, params.min_iou)
    method = "grabcut" if k is None else "solo"
    if k is None:
        log.info("exemplar %d: no SOLO mask reaches IoU %.2f with GrabCut (best %.3f of %d); keeping GrabCut's",
                 image_id, params.min_iou, iou, len(preds))
    out_crop, out_mask = resize_exemplar(crop, ref if k is None else preds[k], params.side)
    return Exemplar(int(image_id), out_crop, out_mask, (x, y, w, h), method, iou)
