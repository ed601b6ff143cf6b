"""Inference for the PCT networks (METHODS.md "PCT", pseudo labels).

- predict: plain single-scale inference (evaluation of Hybrid-Net and of the retrained model, no tags).
- pseudo_label: Pseudo-Net's labels for a weak image: for each scale in `scales` (relative to a short side
  of input_size, or to the image's own size when input_size is None) and each flip, the softmax over the
  image's classes only (background always included; other classes get probability 0) at the original
  resolution; the probabilities are averaged and the argmax is the label (uint8).

Every function takes uint8 (H, W, 3) RGB images, runs the model in eval mode under inference_mode on the
model's device, and restores the model's train/eval mode afterwards.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskless.io import write_bytes_atomic
from maskless.models.resnet import normalize
from maskless.pct.losses import restricted_logits
from maskless.pct.split import tag_matrix

__all__ = ["DEFAULT_SCALES", "predict", "predict_logits", "pseudo_label", "pseudo_labels", "write_label_png"]

DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
MIN_SIDE = 16  # one output-stride-16 cell


@contextlib.contextmanager
def _eval(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"image must be non-empty uint8 (H, W, 3), got {image.dtype} {image.shape}")


def _logits_at(model: nn.Module, image: np.ndarray, scale: float, flip: bool, device) -> Tensor:
    """(K, H, W) logits of `image` run at `scale`, mirrored back when `flip`, at the original size."""
    h, w = image.shape[:2]
    size = (max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale)))
    img = image if size == (w, h) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(device)  # (1, 3, h', w')
    if flip:
        x = x.flip(-1)
    logits = model(normalize(x))["logits"].float()  # (1, K, h', w')
    if flip:
        logits = logits.flip(-1)
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0]  # (K, H, W)


def _base_scale(image: np.ndarray, input_size: int | None) -> float:
    return 1.0 if input_size is None else input_size / min(image.shape[:2])


def predict_logits(model: nn.Module, image: np.ndarray, *, input_size: int | None = None) -> Tensor:
    """(K, H, W) float32 logits at the image's resolution (single scale, no flip), on the CPU."""
    _check_image(image)
    with _eval(model) as dev:
        return _logits_at(model, image, _base_scale(image, input_size), False, dev).cpu()


def predict(model: nn.Module, image: np.ndarray, *, input_size: int | None = None) -> np.ndarray:
    """(H, W) uint8 label map: argmax over all classes (no tags)."""
    return predict_logits(model, image, input_size=input_size).argmax(dim=0).numpy().astype(np.uint8)


def pseudo_label(model: nn.Module, image: np.ndarray, classes: Iterable[int], *,
                 scales: Sequence[float] = DEFAULT_SCALES, flip: bool = True,
                 input_size: int | None = None) -> np.ndarray:
    """(H, W) uint8 label map restricted to `classes` (foreground ids; background implied), multi-scale and
    flip averaged (module doc)."""
    _check_image(image)
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"pseudo_label: scales must be positive numbers, got {list(scales)}")
    classes = list(classes)
    with _eval(model) as dev:
        probs, present = None, None
        for s in scales:
            for f in (False, True) if flip else (False,):
                logits = _logits_at(model, image, _base_scale(image, input_size) * s, f, dev)  # (K, H, W)
                if present is None:
                    present = torch.from_numpy(tag_matrix([classes], logits.shape[0])).to(dev)  # (1, K)
                p = F.softmax(restricted_logits(logits[None], present)[0], dim=0)  # (K, H, W)
                probs = p if probs is None else probs + p
        return probs.argmax(dim=0).cpu().numpy().astype(np.uint8)


def pseudo_labels(model: nn.Module, images: Sequence[np.ndarray], tags: Sequence[Iterable[int]], **kw
                  ) -> list[np.ndarray]:
    """pseudo_label for each (image, tags) pair; keyword arguments as pseudo_label's."""
    if len(images) != len(tags):
        raise ValueError(f"pseudo_labels: {len(images)} images but {len(tags)} tag sets")
    return [pseudo_label(model, img, cats, **kw) for img, cats in zip(images, tags)]


def write_label_png(path: str | Path, label: np.ndarray) -> None:
    """Write a (H, W) uint8 label map as a single-channel PNG, atomically."""
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"label map for {path} must be uint8 (H, W), got {label.dtype} {label.shape}")
    ok, buf = cv2.imencode(".png", label)
    if not ok:
        raise RuntimeError(f"cv2.imencode failed to encode the label map for {path}")
    write_bytes_atomic(path, buf.tobytes())
