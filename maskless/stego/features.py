"""Dense features of a frozen backbone (METHODS.md "STEGO": the head learns on frozen features f).

The backbone is any of maskless.models.backbones.BACKBONES: a ResNet (returning {"res2": stride 4, ...,
"res5": stride 32}) or a DINO ViT (returning {"tokens": stride 8 or 16}, the last block's normed patch
tokens, as STEGO takes them); `layer` picks the level. On the small default images (160 px) res3 (stride 8, a
20 x 20 map) keeps enough spatial detail for 11 x 11 sampled points; res4/res5 give 10 x 10 / 5 x 5 maps.
Both families take ImageNet-normalised images (DINO trains on them too).
"""

from __future__ import annotations

import logging
from typing import Iterable

import cv2
import numpy as np
import torch

from maskless.data.semantic import square_crop_geometry
from maskless.models.resnet import normalize

log = logging.getLogger(__name__)


def _as_images(images) -> torch.Tensor:
    """(B, 3, H, W) tensor from a tensor or a numpy array of that shape (or (B, H, W, 3) uint8 numpy)."""
    if isinstance(images, np.ndarray):
        if images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] != 3:
            images = images.transpose(0, 3, 1, 2)  # (B, 3, H, W)
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be (B, 3, H, W), got {shape}")
    if images.is_floating_point() and not torch.isfinite(images).all():
        raise ValueError("images hold NaN or inf values")
    return images


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, images, layer: str = "res3") -> torch.Tensor:
    """(B, C, H/s, W/s) float32 features of `layer` for images (B, 3, H, W) uint8 in [0, 255] or float in
    [0, 1] (ImageNet-normalised here). The backbone runs in eval mode (BatchNorm running statistics: the
    features of an image never depend on its batch) and is put back in its previous mode."""
    levels = list(getattr(backbone, "strides", {}))
    if layer not in levels:
        raise ValueError(f"layer {layer!r} is not a feature level of the backbone; its levels: {levels}")
    images = _as_images(images)
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    try:
        feats = backbone(normalize(images.to(device)))[layer]  # (B, C, h, w)
    finally:
        backbone.train(was_training)
    return feats.float()


def square_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8: short side resized to `size` (area when shrinking), centre crop; the same
    geometry as maskless.data.semantic.square_labels, so features and labels stay aligned."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"square_image expects (H, W, 3) RGB, got shape {rgb.shape}")
    (h, w), (top, left) = square_crop_geometry(rgb.shape[0], rgb.shape[1], size)
    down = h < rgb.shape[0]
    out = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[top : top + size, left : left + size])


def extract_all(backbone: torch.nn.Module, images: Iterable[np.ndarray], *, layer: str = "res3",
                batch_size: int = 16) -> torch.Tensor:
    """(N, C, h, w) float32 CPU features of equal-sized (H, W, 3) uint8 images, `batch_size` at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[torch.Tensor] = []
    batch: list[np.ndarray] = []
    for img in images:
        if batch and img.shape != batch[0].shape:
            raise ValueError(f"images differ in size ({batch[0].shape} then {img.shape}); make them one size "
                             "first (square_image)")
        batch.append(img)
        if len(batch) == batch_size:
            out.append(extract_features(backbone, np.stack(batch), layer).cpu())
            batch = []
    if batch:
        out.append(extract_features(backbone, np.stack(batch), layer).cpu())
    if not out:
        raise ValueError("no images to extract features from")
    shapes = {tuple(t.shape[1:]) for t in out}
    if len(shapes) != 1:
        raise ValueError(f"feature maps differ in size between batches: {sorted(shapes)}")
    return torch.cat(out)  # (N, C, h, w)
