"""Photometric image augmentation shared by the training stages (DenseCL's views, SOLO's strong view)."""

from __future__ import annotations

import cv2
import numpy as np

# ITU-R 601 luma weights, as used by PIL's "L" conversion and torchvision's rgb_to_grayscale.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB -> (H, W) luma."""
    return img @ LUMA  # (H, W)


def color_jitter(img: np.ndarray, rng: np.random.Generator,
                 strength: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)) -> np.ndarray:
    """img: (H, W, 3) float32 RGB in [0, 1]. Brightness, contrast and saturation factors are drawn from
    [1 - s, 1 + s], the hue shift from [-h, h] turns of the colour wheel; the four are applied in a random
    order, clipping to [0, 1] after each."""
    b, c, s, h = strength
    out = img
    for op in rng.permutation(4):
        if op == 0 and b > 0:
            out = out * rng.uniform(max(0.0, 1 - b), 1 + b)
        elif op == 1 and c > 0:
            f = rng.uniform(max(0.0, 1 - c), 1 + c)
            mean = float(gray(out).mean())
            out = (out - mean) * f + mean
        elif op == 2 and s > 0:
            f = rng.uniform(max(0.0, 1 - s), 1 + s)
            luma = gray(out)[..., None]  # (H, W, 1)
            out = luma + (out - luma) * f
        elif op == 3 and h > 0:
            shift = rng.uniform(-h, h) * 360.0
            hsv = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_RGB2HSV)  # H in degrees
            hsv[..., 0] = np.mod(hsv[..., 0] + shift, 360.0)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return out
