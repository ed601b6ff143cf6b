"""The MoCo v2 / DenseCL two-view augmentation, in numpy and OpenCV (METHODS.md, "DenseCL").

Per view, in the reference order: random resized crop (scale 0.2-1, ratio 3/4-4/3) -> colour jitter
(brightness, contrast, saturation 0.4, hue 0.1; random order) with p 0.8 -> grayscale p 0.2 -> Gaussian blur
p 0.5 -> horizontal flip p 0.5. Every random draw comes from the numpy Generator passed in, so a training
step's views are a function of the generator's seed alone (reproducible, resumable training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from maskless.data.photometric import color_jitter, gray

@dataclass(frozen=True)
class AugmentParams:
    crop_size: int = 96
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    p_jitter: float = 0.8
    p_gray: float = 0.2
    p_blur: float = 0.5
    # MoCo v2 draws sigma in [0.1, 2.0] px on 224 px crops; we scale it by crop_size / 224 so small crops
    # get the same relative blur.
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    p_flip: float = 0.5


def crop_box(height: int, width: int, rng: np.random.Generator, scale: tuple[float, float],
             ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering `scale` of the area with aspect w/h in `ratio`.

    Ten tries (the usual random-resized-crop procedure), then the largest centred crop whose aspect is
    clamped into `ratio`.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """image: (H, W, 3) -> (size, size, 3), same dtype."""
    top, left, h, w = crop_box(image.shape[0], image.shape[1], rng, scale, ratio)
    patch = image[top : top + h, left : left + w]
    interp = cv2.INTER_AREA if h > size and w > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def augment_view(image: np.ndarray, rng: np.random.Generator, params: AugmentParams) -> np.ndarray:
    """image: (H, W, 3) uint8 RGB -> one augmented view, (3, crop, crop) float32 in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"augment_view expects (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    view = random_resized_crop(image, rng, params.crop_size, params.scale, params.ratio)
    view = view.astype(np.float32) / 255.0  # (S, S, 3)
    if rng.random() < params.p_jitter:
        view = color_jitter(view, rng, params.jitter)
    if rng.random() < params.p_gray:
        view = np.repeat(gray(view)[..., None], 3, axis=2)
    if rng.random() < params.p_blur:
        sigma = rng.uniform(*params.blur_sigma) * params.crop_size / 224.0
        view = cv2.GaussianBlur(view, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    if rng.random() < params.p_flip:
        view = view[:, ::-1]
    return np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32)  # (3, S, S)


def two_views(image: np.ndarray, rng: np.random.Generator, params: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Two independent augmentations of one image (the query and key views)."""
    return augment_view(image, rng, params), augment_view(image, rng, params)
