"""Coarse foreground of an exemplar image by OpenCV GrabCut (Exemplar-FreeSOLO EKA; Rother et al. 2004,
"GrabCut: interactive foreground extraction using iterated graph cuts").

GrabCut needs a rectangle: pixels outside it are sure background, pixels inside are "probably foreground";
colour GMMs and a graph cut are then iterated. Our choices (all GrabCutParams):

- init "center": a centred rectangle leaving `margin` of the width and height on every side (exemplar images
  are unlabeled; photographers centre their subject). init "freemask": the box of the image's strongest Free
  Mask (highest score), grown by `box_expand` of its width/height on every side, so the object's border is not
  cut off by a tight coarse box. An image with no Free Mask falls back to the centred rectangle, and
  Foreground.init says so ("center (no free mask)"), for the caller to count. So does an image whose Free
  Mask box gives no usable foreground (below `min_area`: on real photographs with a weak backbone the
  strongest Free Mask is often a sliver; coco-tiny's were 0.1-0.4% of the image): GrabCut runs again on the
  centred rectangle, init "center (free mask box failed)", and the reason for an empty result names both.
- The rectangle always leaves at least one pixel of background on each side: GrabCut fits its background
  GMM on the outside pixels and fails with none.
- Images are downscaled (area interpolation) so the long side is at most `max_side` before GrabCut (its cost
  grows with the pixel count; a coarse mask does not need full resolution) and the mask is upsampled back
  (bilinear on 0/1, threshold 1/2).
- `largest_component`: keep only the largest 8-connected foreground region (one object per exemplar).
- cv2's random generator (k-means seeding of the GMMs) is seeded with `seed` before each call: same input,
  same mask.

Failure is a value, never an exception or a silent drop: a uniform image (pixel standard deviation below
`min_std`), an image too small for a rectangle, a GrabCut error, or a foreground below `min_area` of the image
give an empty mask and a `reason` the caller counts and logs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from maskless.ops.masks import boxes_xywh
from maskless.store import ImageMasks

log = logging.getLogger(__name__)

INITS = ("center", "freemask")
CENTER_FALLBACK = "center (no free mask)"
BOX_FALLBACK = "center (free mask box failed)"


@dataclass
class GrabCutParams:
    """Defaults are ours (module docstring). iterations 5: OpenCV's sample uses a handful; on the synthetic
    test disc (tests/exemplar) 5 and 10 iterations give identical masks."""

    init: str = "center"
    iterations: int = 5
    margin: float = 0.1
    box_expand: float = 0.1
    max_side: int = 320
    min_std: float = 2.0  # grey levels (0..255), over every pixel and channel
    min_area: float = 0.005  # fraction of the image
    largest_component: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        name = "GrabCutParams"
        if self.init not in INITS:
            raise ValueError(f"{name}.init {self.init!r} unknown; choices: {list(INITS)}")
        for key in ("iterations", "max_side"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {value!r}")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"{name}.margin must lie in [0, 0.5), got {self.margin}")
        if not 0.0 <= self.box_expand <= 1.0:
            raise ValueError(f"{name}.box_expand must lie in [0, 1], got {self.box_expand}")
        if not (self.min_std >= 0 and 0.0 <= self.min_area < 1.0):
            raise ValueError(f"{name}: min_std must be >= 0 and min_area in [0, 1), got {self.min_std}, "
                             f"{self.min_area}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"{name}.seed must be an integer >= 0, got {self.seed!r}")


@dataclass
class Foreground:
    """GrabCut's answer for one image: mask (H, W) bool; rect, the initial rectangle (x, y, w, h) at the
    image's resolution; init, how it was made ("center", "freemask", CENTER_FALLBACK or BOX_FALLBACK); reason, None when
    the mask is usable, else why it is empty."""

    mask: np.ndarray
    rect: tuple[int, int, int, int]
    init: str
    reason: str | None = None

    @property
    def empty(self) -> bool:
        return self.reason is not None


def center_rect(height: int, width: int, margin: float) -> tuple[int, int, int, int]:
    """(x, y, w, h) leaving round(margin * side) on every side (at least one pixel of each side inside)."""
    mx, my = round(margin * width), round(margin * height)
    return mx, my, max(1, width - 2 * mx), max(1, height - 2 * my)


def strongest_box(masks: ImageMasks, expand: float) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the highest-scoring mask grown by `expand` of its w/h per side, clipped to the
    image; None when the image has no non-empty mask. Ties go to the first mask."""
    areas = masks.masks.sum(axis=(1, 2))  # (N,)
    if not (areas > 0).any():
        return None
    scores = np.where(areas > 0, masks.scores, -np.inf)
    x, y, w, h = boxes_xywh(masks.masks[int(np.argmax(scores))][None])[0]
    x0, y0 = max(0, int(np.floor(x - expand * w))), max(0, int(np.floor(y - expand * h)))
    x1 = min(masks.width, int(np.ceil(x + w + expand * w)))
    y1 = min(masks.height, int(np.ceil(y + h + expand * h)))
    return x0, y0, x1 - x0, y1 - y0


def _fit_rect(rect, scale: float, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Scale an (x, y, w, h) rectangle into a height x width image, keeping a 1-pixel border outside."""
    x, y, w, h = rect
    x0, y0 = max(1, int(np.floor(x * scale))), max(1, int(np.floor(y * scale)))
    x1, y1 = min(width - 1, int(np.ceil((x + w) * scale))), min(height - 1, int(np.ceil((y + h) * scale)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _largest_component(fg: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 2:  # background plus at most one region
        return fg
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def _initial_rect(height: int, width: int, params: GrabCutParams, masks: ImageMasks | None, image_id
                  ) -> tuple[tuple[int, int, int, int], str]:
    if params.init == "center":
        return center_rect(height, width, params.margin), "center"
    if masks is not None:
        if (masks.height, masks.width) != (height, width):
            raise ValueError(f"grabcut_foreground: Free Masks of image {image_id} are {masks.height}x{masks.width} "
                             f"but the image is {height}x{width}")
        box = strongest_box(masks, params.box_expand)
        if box is not None:
            return box, "freemask"
    return center_rect(height, width, params.margin), CENTER_FALLBACK


def grabcut_foreground(image: np.ndarray, params: GrabCutParams, *, masks: ImageMasks | None = None,
                       image_id: int | None = None) -> Foreground:
    """Coarse foreground of image uint8 (H, W, 3) RGB (module docstring). masks: the image's Free Masks at
    its own size, used when params.init == "freemask". Never raises on image content; raises ValueError
    on a wrongly typed or shaped image."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"grabcut_foreground: image {image_id} must be uint8 (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    height, width = image.shape[:2]
    rect, init = _initial_rect(height, width, params, masks, image_id)
    fg = _grabcut(image, rect, init, params)
    if fg.empty and init == "freemask" and fg.reason.startswith(NO_FOREGROUND):
        retry = _grabcut(image, center_rect(height, width, params.margin), BOX_FALLBACK, params)
        if retry.empty:
            retry.reason = f"{retry.reason}; with the Free Mask box {rect}: {fg.reason}"
        return retry
    return fg


NO_FOREGROUND = "no foreground found"


def _grabcut(image: np.ndarray, rect: tuple[int, int, int, int], init: str, params: GrabCutParams) -> Foreground:
    """GrabCut from one initial rectangle (x, y, w, h) at the image's resolution."""
    height, width = image.shape[:2]
    empty = np.zeros((height, width), dtype=bool)
    std = float(image.std())
    if std < params.min_std:
        return Foreground(empty, rect, init, f"uniform image (pixel std {std:.2f} < min_std {params.min_std})")
    scale = min(1.0, params.max_side / max(height, width))
    small = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    fitted = _fit_rect(rect, scale, *small.shape[:2])
    if fitted is None:
        return Foreground(empty, rect, init, f"image {width}x{height} too small for a GrabCut rectangle")
    gc = np.zeros(small.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(params.seed)
    try:
        cv2.grabCut(np.ascontiguousarray(small), gc, fitted, bgd, fgd, params.iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error as e:
        return Foreground(empty, rect, init, f"GrabCut failed: {e.err or e}")
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)  # (h, w)
    if params.largest_component:
        fg = _largest_component(fg)
    if scale != 1.0:
        up = cv2.resize(fg.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        fg = up >= 0.5  # (H, W)
    frac = float(fg.mean())
    if frac < params.min_area or not fg.any():
        return Foreground(empty, rect, init, f"{NO_FOREGROUND} (GrabCut foreground {100 * frac:.2f}% of the "
                                             f"image; min_area {100 * params.min_area:.2f}%)")
    return Foreground(fg, rect, init)
