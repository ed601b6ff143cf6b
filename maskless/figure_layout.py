"""Image layouts of the report's figures: contact sheets and side-by-side strips, captioned in OpenCV's
Hershey font, and the PNG writer. maskless.viz, the report's figure module, imports these three, so the
report reaches every figure as viz.<name>:

    grid             a contact sheet of thumbnails with captions
    side_by_side     "image | ground truth | coarse masks | round 0 | round 1" strips at one height
    save_png         writes an RGB figure as PNG, atomically (maskless.io.write_bytes_atomic)

Each layout returns a uint8 RGB array of shape (H, W, 3) and is deterministic (maskless.viz). Sizes are given
as (width, height), the OpenCV order; arrays are (height, width, 3). Captions and panel titles are ASCII only
(other characters are drawn as "?").
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from maskless.io import write_bytes_atomic

FONT = cv2.FONT_HERSHEY_SIMPLEX
SMALL = 0.4  # Hershey font scale of captions and panel titles
LARGE = 0.5  # Hershey font scale of "no images"
TEXT = (30, 30, 30)
CAPTION_HEIGHT = 16  # px of caption band under each grid cell (when captions are given)
TITLE_HEIGHT = 20  # px of title band above each side_by_side panel


# ------------------------------------------------------------------------------------------------ text

def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))


def _text_size(text: str, scale: float) -> tuple[int, int, int]:
    """(width, height above baseline, baseline depth) in pixels."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    return w, h, base


def _fit(text: str, max_w: int, scale: float = SMALL) -> str:
    """`text` shortened with ".." so that it is at most max_w px wide ("" if not even ".." fits)."""
    text = _ascii(text)
    if _text_size(text, scale)[0] <= max_w:
        return text
    while text and _text_size(text + "..", scale)[0] > max_w:
        text = text[:-1]
    return text + ".." if text or _text_size("..", scale)[0] <= max_w else ""


def _put(img: np.ndarray, text: str, x: float, y: float, *, scale: float = SMALL, color=TEXT,
         align: str = "left", valign: str = "baseline") -> None:
    """Draw `text` with (x, y) at its left/center/right and baseline/middle."""
    text = _ascii(text)
    if not text:
        return
    w, h, _ = _text_size(text, scale)
    x = x - (w / 2 if align == "center" else w if align == "right" else 0)
    y = y + (h / 2 if valign == "middle" else 0)
    cv2.putText(img, text, (int(round(x)), int(round(y))), FONT, scale, color, 1, cv2.LINE_AA)


def _message(img: np.ndarray, text: str) -> None:
    """`text` centred in the image."""
    _put(img, text, img.shape[1] / 2, img.shape[0] / 2, scale=LARGE, align="center", valign="middle")


# ------------------------------------------------------------------------------------- image layouts

def _as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 or bool image, (H, W), (H, W, 1), (H, W, 3) or (H, W, 4, alpha dropped) -> uint8 (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    channels_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
    if image.dtype != np.uint8 or not channels_ok:
        raise ValueError(f"images must be uint8 or bool (H, W[, 1|3|4]), got {image.dtype} {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image {image.shape}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, 2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, 2)
    return np.ascontiguousarray(image[:, :, :3])


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Area averaging when shrinking, nearest neighbour when enlarging (label maps stay crisp)."""
    if (w, h) == (image.shape[1], image.shape[0]):
        return image.copy()
    shrink = w * h < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)


def _letterbox(image: np.ndarray, cw: int, ch: int) -> np.ndarray:
    """`image` scaled to fit (cw, ch), aspect ratio kept, centred on white."""
    h, w = image.shape[:2]
    scale = min(cw / w, ch / h)
    nw, nh = max(1, min(cw, int(round(w * scale)))), max(1, min(ch, int(round(h * scale))))
    cell = np.full((ch, cw, 3), 255, np.uint8)
    y0, x0 = (ch - nh) // 2, (cw - nw) // 2
    cell[y0:y0 + nh, x0:x0 + nw] = _resize(image, nw, nh)
    return cell


def _no_images(w: int, h: int) -> np.ndarray:
    img = np.full((max(h, 24), max(w, _text_size("no images", LARGE)[0] + 8), 3), 255, np.uint8)
    _message(img, "no images")
    return img


def grid(images: Sequence[np.ndarray], *, columns: int, cell: tuple[int, int] = (128, 128),
         captions: Sequence[str] | None = None, pad: int = 4) -> np.ndarray:
    """Thumbnails in rows of `columns`, uint8 RGB on white.

    cell = (cw, ch) is each thumbnail's box (width, height); every image is scaled to fit it with its
    aspect ratio kept and centred (letterboxed on white). Images may be uint8 or bool, grey, RGB or RGBA.
    With captions (one per image, shortened to fit) a band of CAPTION_HEIGHT (16) px under each cell holds
    it. For n images, with k = min(columns, n) columns, r = ceil(n / columns) rows and c = CAPTION_HEIGHT
    if captions else 0, the result is

        height = r * (ch + c) + (r + 1) * pad,    width = k * cw + (k + 1) * pad

    e.g. 5 images, columns=2, cell=(64, 48), pad=4, with captions: height 3 * (48 + 16) + 4 * 4 = 208,
    width 2 * 64 + 3 * 4 = 140.
    Cell (row i, column j) starts at x = pad + j * (cw + pad), y = pad + i * (ch + c + pad).
    An empty list gives a small white image saying "no images".
    """
    cw, ch = int(cell[0]), int(cell[1])
    if int(columns) < 1 or cw < 1 or ch < 1 or int(pad) < 0:
        raise ValueError(f"need columns >= 1, cell >= (1, 1), pad >= 0; got {columns}, {cell}, {pad}")
    columns, pad = int(columns), int(pad)
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images")
    n = len(images)
    if n == 0:
        return _no_images(cw + 2 * pad, ch + 2 * pad)
    k, r = min(columns, n), math.ceil(n / columns)
    cap = CAPTION_HEIGHT if captions is not None else 0
    out = np.full((r * (ch + cap) + (r + 1) * pad, k * cw + (k + 1) * pad, 3), 255, np.uint8)
    for idx, image in enumerate(images):
        i, j = divmod(idx, columns)
        x, y = pad + j * (cw + pad), pad + i * (ch + cap + pad)
        out[y:y + ch, x:x + cw] = _letterbox(_as_rgb(image), cw, ch)
        if captions is not None:
            _put(out, _fit(captions[idx], cw), x + cw / 2, y + ch + cap / 2, align="center", valign="middle")
    return out


def side_by_side(panels: Sequence[tuple[str, np.ndarray]], *, height: int = 160, pad: int = 4) -> np.ndarray:
    """Panels in a row at one height with their titles above, uint8 RGB on white.

    Each image (uint8 or bool, grey, RGB or RGBA) is scaled to `height` px, aspect ratio kept (width
    round(w * height / h)). A panel's column is as wide as the image or its title, whichever is wider (the
    image centred). Result: height pad + TITLE_HEIGHT + height + pad, width sum(columns) + (n + 1) * pad.
    An empty list gives a small white image saying "no images".
    """
    height, pad = int(height), int(pad)
    if height < 1 or pad < 0:
        raise ValueError(f"need height >= 1 and pad >= 0, got {height}, {pad}")
    if not panels:
        return _no_images(height, height + TITLE_HEIGHT)
    scaled, widths, titles = [], [], []
    for title, image in panels:
        image = _as_rgb(image)
        w = max(1, int(round(image.shape[1] * height / image.shape[0])))
        scaled.append(_resize(image, w, height))
        titles.append(_ascii(title))
        widths.append(max(w, _text_size(titles[-1], SMALL)[0] + 2))
    out = np.full((2 * pad + TITLE_HEIGHT + height, sum(widths) + (len(widths) + 1) * pad, 3), 255, np.uint8)
    x = pad
    for image, cw, title in zip(scaled, widths, titles):
        x0 = x + (cw - image.shape[1]) // 2
        out[pad + TITLE_HEIGHT:pad + TITLE_HEIGHT + height, x0:x0 + image.shape[1]] = image
        _put(out, title, x + cw / 2, pad + TITLE_HEIGHT / 2, align="center", valign="middle")
        x += cw + pad
    return out


# ------------------------------------------------------------------------------------------------- files

def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) RGB (or (H, W) grey) image as PNG, atomically; returns the path."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise ValueError(f"save_png needs uint8 (H, W, 3) RGB or (H, W), got {rgb.dtype} {rgb.shape}")
    data = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", data)
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    write_bytes_atomic(path, buf.tobytes())
    return Path(path)
