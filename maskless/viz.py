"""Figures for the pipeline's HTML report (``snakemake --report``), drawn with numpy and OpenCV only.

The report embeds PNG files; these functions make them. Each returns a uint8 RGB array of shape (H, W, 3)
and is deterministic (the same inputs give the same bytes), so report figures only change when the
results do:

    overlay_masks    instance masks (Free Mask, SOLO rounds) blended over the photo, each with an outline
    palette          the distinct bright colours every figure here uses (instances, series, bars)
    colorize_labels  a semantic class map (STEGO, PCT, ground truth) as colours; 0 black, ignore white
    line_plot        loss curves from a training run's loss CSV (see `read_loss_csv`)
    bar_chart        one number per method or round (e.g. mask AP, mIoU)
    grid             a contact sheet of thumbnails with captions
    side_by_side     "image | ground truth | coarse masks | round 0 | round 1" strips at one height
    save_png         writes an RGB figure as PNG, atomically (maskless.io.write_bytes_atomic)

Sizes are given as (width, height), the OpenCV order; arrays are (height, width, 3). Text is OpenCV's
Hershey font, so it is ASCII only (other characters are drawn as "?").
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from maskless.io import write_bytes_atomic

__all__ = ["palette", "overlay_masks", "colorize_labels", "line_plot", "bar_chart", "grid", "side_by_side",
           "read_loss_csv", "save_png", "CAPTION_HEIGHT", "TITLE_HEIGHT"]

GOLDEN = 0.6180339887498949  # hue step: consecutive colours sit far apart on the hue circle
SATURATION, VALUE = 0.75, 0.9
FONT = cv2.FONT_HERSHEY_SIMPLEX
SMALL = 0.4  # font scale of ticks, legends, captions
LARGE = 0.5  # font scale of titles
WHITE = (255, 255, 255)
TEXT = (30, 30, 30)
AXES = (70, 70, 70)
CAPTION_HEIGHT = 16  # px of caption band under each grid cell (when captions are given)
TITLE_HEIGHT = 20  # px of title band above each side_by_side panel


# ---------------------------------------------------------------------------------------------- colours

def _hsv_to_rgb(h: np.ndarray, s: float, v: float) -> np.ndarray:
    """h in [0, 1) (any shape) -> float RGB in [0, 1], shape (..., 3)."""
    h6 = h * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p = np.full_like(h, v * (1 - s))
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    vv = np.full_like(h, v)
    table = np.stack([np.stack(c, -1) for c in
                      ((vv, t, p), (q, vv, p), (p, vv, t), (p, q, vv), (t, p, vv), (vv, p, q))], 0)
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def palette(n: int, seed: int = 0) -> np.ndarray:
    """n distinct bright colours, uint8 (n, 3) RGB.

    Colour i has hue frac((seed + i) * golden ratio) at fixed saturation and value, so neighbours differ
    strongly, colour i does not depend on n (palette(n)[i] == palette(m)[i]) and palette(n, seed=1) is
    palette(n + 1)[1:]. Should two hues round to the same uint8 colour (hundreds of colours), the later one
    is darkened step by step until it is new, so the rows are always distinct.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    hues = np.mod((int(seed) + np.arange(n, dtype=np.float64)) * GOLDEN, 1.0)
    rgb = np.rint(_hsv_to_rgb(hues, SATURATION, VALUE) * 255).astype(np.uint8)
    seen: set[tuple[int, int, int]] = set()
    for i in range(n):
        colour, k = tuple(int(c) for c in rgb[i]), 0
        while colour in seen:
            k += 1
            v = VALUE * (1 - 0.01 * k) if k < 90 else VALUE * (1 - 0.01 * (k % 90))
            s = SATURATION if k < 90 else SATURATION * (1 - 0.005 * (k // 90))
            colour = tuple(int(c) for c in np.rint(_hsv_to_rgb(np.array([hues[i]]), s, v)[0] * 255))
            if k > 90 * 150:
                raise ValueError(f"cannot make {n} distinct colours")
        rgb[i] = colour
        seen.add(colour)
    return rgb


# --------------------------------------------------------------------------------------------- overlays

def _check_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    return image


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~interior


def overlay_masks(image: np.ndarray, masks: np.ndarray, *, alpha: float = 0.5, colors=None,
                  outline: bool = True) -> np.ndarray:
    """Instance masks over an RGB photo: a new uint8 (H, W, 3) array.

    image: uint8 (H, W, 3) RGB. masks: bool (N, H, W); N may be 0 (a copy of the image comes back).
    Instance i is blended as (1 - alpha) * pixel + alpha * colour inside its mask, colour palette(N)[i]
    (or colors[i]), and, with outline, its boundary pixels (in the mask, with a 4-neighbour or the image
    border outside it) are set to exactly that colour. Instances are drawn in order, later over earlier.
    Pixels outside every mask are left unchanged.
    """
    image = _check_rgb(image)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    masks = np.asarray(masks)
    if masks.size == 0:
        return image.copy()
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks must be (N, {image.shape[0]}, {image.shape[1]}), got {masks.shape}")
    masks = masks.astype(bool, copy=False)
    n = masks.shape[0]
    cols = palette(n) if colors is None else np.asarray(colors)
    if cols.shape != (n, 3):
        raise ValueError(f"colors must be ({n}, 3), got {cols.shape}")
    cols = cols.astype(np.float64)
    out = image.astype(np.float64)
    for mask, colour in zip(masks, cols):
        out[mask] = (1.0 - alpha) * out[mask] + alpha * colour
        if outline:
            out[_outline(mask)] = colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def colorize_labels(label: np.ndarray, num_classes: int, *, ignore: int | None = 255) -> np.ndarray:
    """A class map (H, W) of ints as uint8 (H, W, 3) RGB.

    Class 0 (background) is black, class c >= 1 is palette(num_classes - 1)[c - 1] (so a class keeps its
    colour whatever num_classes is), `ignore` is white. Any other value (outside [0, num_classes)) raises
    ValueError naming the values.
    """
    label = np.asarray(label)
    if label.ndim != 2 or not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        raise ValueError(f"label must be an (H, W) integer array, got {label.dtype} {label.shape}")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if ignore is not None and 0 <= ignore < num_classes:
        raise ValueError(f"ignore value {ignore} is also a class id (num_classes={num_classes})")
    values = np.unique(label)
    outside = (values < 0) | (values >= num_classes)
    if ignore is not None:
        outside &= values != ignore
    bad = values[outside]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise ValueError(f"label values outside [0, {num_classes}) (ignore={ignore}): {shown}")
    lut = np.concatenate([np.zeros((1, 3), np.uint8), palette(num_classes - 1)], 0)
    is_ignore = label == ignore if ignore is not None else np.zeros(label.shape, bool)
    out = lut[np.where(is_ignore, 0, label).astype(np.intp)]
    out[is_ignore] = WHITE
    return out


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


def _put_vertical(img: np.ndarray, text: str, cx: float, cy: float, max_len: int, scale: float = SMALL):
    """Text rotated 90 degrees counter-clockwise (reading upwards), centred on (cx, cy)."""
    text = _fit(text, max_len, scale)
    if not text:
        return
    w, h, base = _text_size(text, scale)
    patch = np.full((h + base + 2, w + 2, 3), 255, np.uint8)
    cv2.putText(patch, text, (1, h + 1), FONT, scale, TEXT, 1, cv2.LINE_AA)
    patch = cv2.rotate(patch, cv2.ROTATE_90_COUNTERCLOCKWISE)
    ph, pw = patch.shape[:2]
    y0, x0 = int(round(cy - ph / 2)), int(round(cx - pw / 2))
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + ph, img.shape[0]), min(x0 + pw, img.shape[1])
    if ye > ys and xe > xs:
        region = img[ys:ye, xs:xe]
        np.minimum(region, patch[ys - y0:ye - y0, xs - x0:xe - x0], out=region)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.4g}"


def _blank(size: tuple[int, int]) -> np.ndarray:
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError(f"size must be (width, height) >= 1, got {size}")
    return np.full((h, w, 3), 255, np.uint8)


def _message(img: np.ndarray, text: str, box: tuple[int, int, int, int] | None = None) -> None:
    """`text` centred in box (x0, y0, x1, y1) or the whole image."""
    x0, y0, x1, y1 = box if box is not None else (0, 0, img.shape[1], img.shape[0])
    _put(img, text, (x0 + x1) / 2, (y0 + y1) / 2, scale=LARGE, align="center", valign="middle")


# -------------------------------------------------------------------------------------------- charts

class _Frame:
    """Plot-area layout of a chart of `size` (width, height) with y tick labels up to `tick_w` px wide."""

    def __init__(self, size: tuple[int, int], tick_w: int, x_axis_rows: int):
        self.w, self.h = int(size[0]), int(size[1])
        self.left = 6 + 14 + tick_w + 6  # margin, rotated ylabel, tick labels, gap
        self.right = self.w - 12
        self.top = 28
        self.bottom = self.h - 6 - 14 * x_axis_rows
        if self.right - self.left < 20 or self.bottom - self.top < 20:
            raise ValueError(f"size {size} is too small for a chart")

    def decorate(self, img, title: str, ylabel: str, xlabel: str | None) -> None:
        _put(img, _fit(title, self.w - 8, LARGE), self.w / 2, 19, scale=LARGE, align="center")
        _put_vertical(img, ylabel, 13, (self.top + self.bottom) / 2, self.bottom - self.top)
        if xlabel is not None:
            _put(img, _fit(xlabel, self.right - self.left), (self.left + self.right) / 2, self.h - 6,
                 align="center")


def _finite_points(xs, ys, log_y: bool) -> tuple[np.ndarray, np.ndarray]:
    xs = np.asarray(xs, dtype=np.float64).ravel()
    ys = np.asarray(ys, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"series xs and ys differ in length: {xs.size} != {ys.size}")
    keep = np.isfinite(xs) & np.isfinite(ys)
    if log_y:
        with np.errstate(invalid="ignore"):
            keep &= ys > 0
    xs, ys = xs[keep], ys[keep]
    return xs, (np.log10(ys) if log_y else ys)


def _span(lo: float, hi: float) -> tuple[float, float]:
    if hi > lo:
        return lo, hi
    d = max(abs(lo) * 0.05, 0.5)
    return lo - d, hi + d


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str,
              ylabel: str, size: tuple[int, int] = (480, 320), log_y: bool = False) -> np.ndarray:
    """A line chart, uint8 (size[1], size[0], 3) RGB: e.g. loss curves from `read_loss_csv`.

    series: {name: (xs, ys)}, drawn in order as polylines in palette(len(series)) colours, with a legend
    at the top right of the plot area. Points where x or y is NaN or infinite (with log_y: y <= 0 too) are
    skipped; the line joins the points either side. Ticks mark the smallest and largest x and y drawn (log_y:
    values shown, not their logarithms). With no point to draw (an empty dict, say) the plot area says
    "no data".
    """
    names = [str(k) for k in series]
    points = [_finite_points(xs, ys, log_y) for xs, ys in series.values()]
    colours = palette(len(points))
    drawn = [p for p in points if p[0].size]
    if drawn:
        x_lo, x_hi = min(p[0].min() for p in drawn), max(p[0].max() for p in drawn)
        y_lo, y_hi = min(p[1].min() for p in drawn), max(p[1].max() for p in drawn)
        y_text = [_fmt(10 ** v if log_y else v) for v in (y_lo, y_hi)]
        tick_w = max(_text_size(t, SMALL)[0] for t in y_text)
    else:
        tick_w = 0
    fr = _Frame(size, tick_w, x_axis_rows=2)
    img = _blank(size)
    fr.decorate(img, title, ylabel + (" (log)" if log_y else ""), xlabel)
    cv2.rectangle(img, (fr.left, fr.top), (fr.right, fr.bottom), AXES, 1, cv2.LINE_8)
    if not drawn:
        _message(img, "no data", (fr.left, fr.top, fr.right, fr.bottom))
        return img

    # y: 6% headroom each side so the lines stay off the frame; x: the data range spans the frame
    inset = 4
    xa, xb = _span(x_lo, x_hi)
    ya, yb = _span(y_lo, y_hi)
    ya, yb = ya - 0.06 * (yb - ya), yb + 0.06 * (yb - ya)
    x0, x1 = fr.left + inset, fr.right - inset

    def px(x):
        return x0 + (np.asarray(x) - xa) / (xb - xa) * (x1 - x0)

    def py(y):
        return fr.bottom - (np.asarray(y) - ya) / (yb - ya) * (fr.bottom - fr.top)

    for v, t in zip((y_lo, y_hi), y_text):
        y = int(round(float(py(v))))
        cv2.line(img, (fr.left - 4, y), (fr.left, y), AXES, 1, cv2.LINE_8)
        _put(img, t, fr.left - 6, y, align="right", valign="middle")
    for v, align in ((x_lo, "left"), (x_hi, "right")):
        x = int(round(float(px(v))))
        cv2.line(img, (x, fr.bottom), (x, fr.bottom + 4), AXES, 1, cv2.LINE_8)
        _put(img, _fmt(v), x, fr.bottom + 15, align=align if x_hi > x_lo else "center")

    for (xs, ys), colour in zip(points, colours):
        if not xs.size:
            continue
        colour = tuple(int(c) for c in colour)
        pts = np.rint(np.stack([px(xs), py(ys)], -1) * 16).astype(np.int32)  # 4 fractional bits
        if len(pts) == 1:
            cv2.circle(img, tuple(int(c) for c in pts[0]), 3 * 16, colour, -1, cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA, shift=4)

    # legend: white box, top right inside the plot area
    labels = [_fit(n, 150) for n in names]
    row_h = 14
    box_w = 8 + 18 + 6 + max(_text_size(t, SMALL)[0] for t in labels) + 8
    bx1, by0 = fr.right - 6, fr.top + 6
    bx0, by1 = max(bx1 - box_w, fr.left + 6), by0 + 6 + row_h * len(labels)
    cv2.rectangle(img, (bx0, by0), (bx1, by1), WHITE, -1)
    cv2.rectangle(img, (bx0, by0), (bx1, by1), (170, 170, 170), 1)
    for i, (t, colour) in enumerate(zip(labels, colours)):
        yc = by0 + 3 + row_h * i + row_h // 2
        cv2.line(img, (bx0 + 8, yc), (bx0 + 26, yc), tuple(int(c) for c in colour), 2, cv2.LINE_8)
        _put(img, t, bx0 + 32, yc, valign="middle")
    return img


def bar_chart(values: Mapping[str, float], *, title: str, ylabel: str,
              size: tuple[int, int] = (480, 320)) -> np.ndarray:
    """Vertical bars in insertion order, uint8 (size[1], size[0], 3) RGB.

    Bar i is filled with palette(len(values))[i] from 0 to its value (down for negative values), with
    the value (1 decimal) printed beyond its end and its label, shortened to the bar's slot, under the axis.
    NaN shows "-" and no bar; +-inf shows "inf"/"-inf" and no bar. An empty dict says "no data".
    """
    names = [str(k) for k in values]
    vals = np.array([float(v) for v in values.values()], dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(0.0, float(finite.max())) if finite.size else 0.0
    if hi == lo:
        hi = lo + 1.0
    y_text = [_fmt(lo), _fmt(hi)]
    fr = _Frame(size, max(_text_size(t, SMALL)[0] for t in y_text), x_axis_rows=1)
    img = _blank(size)
    fr.decorate(img, title, ylabel, None)
    if not names:
        cv2.rectangle(img, (fr.left, fr.top), (fr.right, fr.bottom), AXES, 1, cv2.LINE_8)
        _message(img, "no data", (fr.left, fr.top, fr.right, fr.bottom))
        return img

    room = 16  # px kept beyond the longest bars for their value text
    top, bottom = fr.top + room, fr.bottom - (room if lo < 0 else 0)

    def py(v: float) -> int:
        return int(round(bottom - (v - lo) / (hi - lo) * (bottom - top)))

    base = py(0.0)
    slot = (fr.right - fr.left) / len(names)
    colours = palette(len(names))
    for i, (name, v) in enumerate(zip(names, vals)):
        cx = fr.left + slot * (i + 0.5)
        half = max(1.0, slot * 0.35)
        if np.isfinite(v):
            end = py(v)
            if end != base:  # |end - base| rows of bar, the axis line at `base` not included
                y0, y1 = (end, base - 1) if end < base else (base + 1, end)
                cv2.rectangle(img, (int(round(cx - half)), y0), (int(round(cx + half)) - 1, y1),
                              tuple(int(c) for c in colours[i]), -1, cv2.LINE_8)
            text, ty = f"{v:.1f}", (end - 4 if v >= 0 else end + 13)
        else:
            text, ty = ("-" if np.isnan(v) else "inf" if v > 0 else "-inf"), base - 4
        _put(img, _fit(text, int(slot) - 2), cx, ty, align="center")
        _put(img, _fit(name, int(slot) - 4), cx, fr.bottom + 15, align="center")
    cv2.line(img, (fr.left, fr.top), (fr.left, fr.bottom), AXES, 1, cv2.LINE_8)
    cv2.line(img, (fr.left, base), (fr.right, base), AXES, 1, cv2.LINE_8)
    ticks = [(lo, y_text[0]), (hi, y_text[1])] + ([(0.0, "0")] if lo < 0 < hi else [])
    for v, t in ticks:
        y = py(v)
        cv2.line(img, (fr.left - 4, y), (fr.left, y), AXES, 1, cv2.LINE_8)
        _put(img, t, fr.left - 6, y, align="right", valign="middle")
    return img


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

def read_loss_csv(path: str | os.PathLike, *, x: str = "step",
                  columns: Sequence[str] = ("loss",)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{column: (xs, ys)} from a training loss log (header "step,loss,..."), ready for line_plot.

    Empty or unparsable cells become NaN (line_plot skips them). A missing column raises KeyError.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for name in (x, *columns):
            if name not in header:
                raise KeyError(f"{path}: no column {name!r} (has {', '.join(header)})")
        rows = list(reader)

    def num(s: str | None) -> float:
        try:
            return float(s)
        except (TypeError, ValueError):
            return math.nan

    xs = np.array([num(r[x]) for r in rows], dtype=np.float64)
    return {c: (xs, np.array([num(r[c]) for r in rows], dtype=np.float64)) for c in columns}


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
