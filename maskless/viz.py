"""Figures for the pipeline's HTML report (``snakemake --report``): charts drawn with matplotlib (Agg),
images and their layouts with numpy and OpenCV.

The report embeds PNG files; these functions make them. Each returns a uint8 RGB array of shape (H, W, 3)
and is deterministic (the same inputs give the same bytes), so report figures only change when the
results do:

    overlay_masks    instance masks (Free Mask, SOLO rounds) blended over the photo, each with an outline
    palette          the distinct bright colours every figure here uses (instances, series, bars)
    colorize_labels  a semantic class map (STEGO, PCT, ground truth) as colours; 0 black, ignore white
    line_plot        loss curves from a training run's loss CSV (see `read_loss_csv`)
    bar_chart        one number per method or round (e.g. mask AP, mIoU); label_width sizes its slots
    grid             a contact sheet of thumbnails with captions
    side_by_side     "image | ground truth | coarse masks | round 0 | round 1" strips at one height
    save_png         writes an RGB figure as PNG, atomically (maskless.io.write_bytes_atomic)

Sizes are given as (width, height), the OpenCV order; arrays are (height, width, 3). Chart text is
matplotlib's bundled DejaVu Sans, so titles, axis labels, legends and bar labels may be Unicode ("mIoU ±
std", "α"). Captions and panel titles of grid and side_by_side are OpenCV's Hershey font, ASCII only
(other characters are drawn as "?").

grid, side_by_side and save_png live in maskless.figure_layout (with their Hershey text helpers); this
module imports them so that the report (maskless.report) reaches every figure as viz.<name>.
"""

from __future__ import annotations

import csv
import math
import os
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from maskless.figure_layout import grid, save_png, side_by_side

__all__ = ["palette", "overlay_masks", "colorize_labels", "line_plot", "bar_chart", "label_width", "grid",
           "side_by_side", "read_loss_csv", "save_png"]

GOLDEN = 0.6180339887498949  # hue step: consecutive colours sit far apart on the hue circle
SATURATION, VALUE = 0.75, 0.9
WHITE = (255, 255, 255)


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


# -------------------------------------------------------------------------------------------- charts
# Drawn by matplotlib's Agg renderer on a Figure of their own: no pyplot, so no global figure registry and
# no backend switch for anyone else using matplotlib in the process. While a chart is drawn, rcParams are
# matplotlib's built-in defaults plus CHART_RC whatever a matplotlibrc or the caller set (rc_context
# restores them afterwards), so the pixels depend only on the inputs and the pinned matplotlib (and the
# FreeType its wheel bundles).

DPI = 100
MIN_CHART_SIZE = (160, 120)  # (width, height) px: below this the title and ticks leave no plot area
CHART_RC = {"font.family": "DejaVu Sans",  # bundled with matplotlib: Greek, "±" etc. render everywhere
            "font.size": 8, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8}
LINE_WIDTH = 1.8  # points: 2.5 px at DPI, so a curve has pixels of exactly its palette colour


def _plain(text) -> str:
    """`text` shown as written: a "$" pair would otherwise start matplotlib mathtext."""
    return str(text).replace("$", r"\$")


@contextmanager
def _chart_rc() -> Iterator[None]:
    """matplotlib's built-in rcParams plus CHART_RC inside; the caller's rcParams again after."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(CHART_RC)
        yield


def _render(size: tuple[int, int], draw: Callable[[Axes], None]) -> np.ndarray:
    """A (size[1], size[0], 3) uint8 RGB image of one Axes filled in by draw(ax)."""
    w, h = int(size[0]), int(size[1])
    if w < MIN_CHART_SIZE[0] or h < MIN_CHART_SIZE[1]:
        raise ValueError(f"chart size must be (width, height) >= {MIN_CHART_SIZE}, got {size}")
    with _chart_rc():
        # + 0.25 px: the canvas is int(inches * DPI) px and w / DPI * DPI may round to just under w
        fig = Figure(figsize=((w + 0.25) / DPI, (h + 0.25) / DPI), dpi=DPI, layout="constrained")
        canvas = FigureCanvasAgg(fig)
        draw(fig.add_subplot())
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
    if rgba.shape[:2] != (h, w):
        raise RuntimeError(f"matplotlib drew {rgba.shape[1]}x{rgba.shape[0]} px for a {w}x{h} chart")
    return np.ascontiguousarray(rgba[..., :3])


def _decorate(ax: Axes, title: str, xlabel: str | None, ylabel: str) -> None:
    ax.set_title(_plain(title))
    ax.set_ylabel(_plain(ylabel))
    if xlabel is not None:
        ax.set_xlabel(_plain(xlabel))


def _no_data(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=10)


def _points(xs, ys, log_y: bool) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) pairs of a series that can be drawn: both finite (and y > 0 with log_y)."""
    xs = np.asarray(xs, dtype=np.float64).ravel()
    ys = np.asarray(ys, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"series xs and ys differ in length: {xs.size} != {ys.size}")
    keep = np.isfinite(xs) & np.isfinite(ys)
    if log_y:
        with np.errstate(invalid="ignore"):
            keep &= ys > 0
    return xs[keep], ys[keep]


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str,
              ylabel: str, size: tuple[int, int] = (480, 320), log_y: bool = False) -> np.ndarray:
    """A line chart, uint8 (size[1], size[0], 3) RGB: e.g. loss curves from `read_loss_csv`.

    series: {name: (xs, ys)}, drawn in order as lines in palette(len(series)) colours, with a legend of
    the drawn ones at the top right. Points where x or y is NaN or infinite (with log_y: y <= 0 too) are
    skipped; the line joins the points either side (a series of one point is a dot). log_y draws y on a
    log axis. With no point to draw (an empty dict, say) the plot area says "no data". Labels may be any
    Unicode that DejaVu Sans has (e.g. "±", Greek).
    """
    names = [str(k) for k in series]
    points = [_points(xs, ys, log_y) for xs, ys in series.values()]
    colours = palette(len(points)).astype(np.float64) / 255.0

    def draw(ax: Axes) -> None:
        _decorate(ax, title, xlabel, ylabel)
        drawn = [(n, p, c) for n, p, c in zip(names, points, colours) if p[0].size]
        if not drawn:
            _no_data(ax)
            return
        if log_y:
            ax.set_yscale("log")
        for name, (xs, ys), colour in drawn:
            ax.plot(xs, ys, color=colour, linewidth=LINE_WIDTH, marker="o" if xs.size == 1 else "",
                    label=_plain(name))
        ax.legend(loc="upper right")

    return _render(size, draw)


def _shorten(label: Text, text: str, max_w: float, renderer) -> str:
    """`text`, cut and ended with ".." until it is at most max_w px wide in `label`'s font (label is
    used to measure and left set to the result)."""
    cut, shown = text, _plain(text)
    label.set_text(shown)
    while cut and label.get_window_extent(renderer).width > max_w:
        cut = cut[:-1]
        shown = _plain(cut) + ".."
        label.set_text(shown)
    return shown


def label_width(labels: Sequence[str]) -> int:
    """Width in px of the widest of `labels` as bar_chart writes them under its bars (0 for none): a bar
    chart whose slots are this plus a few px wide shows every label in full."""
    with _chart_rc():
        fig = Figure(dpi=DPI)
        renderer = FigureCanvasAgg(fig).get_renderer()
        size = matplotlib.rcParams["xtick.labelsize"]
        return max((math.ceil(fig.text(0, 0, _plain(t), fontsize=size).get_window_extent(renderer).width)
                    for t in labels), default=0)


def _value_texts(ax: Axes, pos: np.ndarray, vals: np.ndarray) -> None:
    """Each value (1 decimal) beyond its bar's end; "-" (NaN) or "inf"/"-inf" just above the axis."""
    for x, v in zip(pos, vals):
        if np.isfinite(v):
            text, y, up = f"{v:.1f}", v, v >= 0
        else:
            text, y, up = ("-" if np.isnan(v) else "inf" if v > 0 else "-inf"), 0.0, True
        ax.annotate(text, (x, y), xytext=(0, 2 if up else -2), textcoords="offset points", ha="center",
                    va="bottom" if up else "top")


def _bar_labels(ax: Axes, pos: np.ndarray, names: list[str]) -> None:
    """`names` under the bars at `pos`, each shortened to its slot.

    The labels are empty while the figure is laid out (a long one would squeeze the plot area), then cut
    to the slot width; tick texts are rewritten from the formatter at each draw, so the cut labels are set
    as the formatter's.
    """
    ax.set_xticks(pos, [""] * len(names))
    ax.tick_params(axis="x", length=0)
    ax.figure.draw_without_rendering()
    slot = ax.bbox.width / len(names)
    renderer = ax.figure.canvas.get_renderer()
    ax.set_xticks(pos, [_shorten(t, n, slot - 4, renderer) for t, n in zip(ax.get_xticklabels(), names)])


def bar_chart(values: Mapping[str, float], *, title: str, ylabel: str,
              size: tuple[int, int] = (480, 320)) -> np.ndarray:
    """Vertical bars in insertion order, uint8 (size[1], size[0], 3) RGB.

    Bar i is a solid (not anti-aliased) rectangle of palette(len(values))[i] from 0 to its value (down
    for negative values), with the value (1 decimal) printed beyond its end and its label, shortened with
    ".." to the bar's slot, under the axis. NaN shows "-" and no bar; +-inf shows "inf"/"-inf" and no bar.
    An empty dict says "no data". Labels may be any Unicode that DejaVu Sans has.
    """
    names = [str(k) for k in values]
    vals = np.array([float(v) for v in values.values()], dtype=np.float64)
    colours = palette(len(names)).astype(np.float64) / 255.0

    def draw(ax: Axes) -> None:
        _decorate(ax, title, None, ylabel)
        if not names:
            _no_data(ax)
            return
        pos = np.arange(len(names), dtype=np.float64)
        finite = np.isfinite(vals)
        ax.bar(pos[finite], vals[finite], width=0.7, color=colours[finite], edgecolor="none", antialiased=False)
        lo = min(0.0, float(vals[finite].min())) if finite.any() else 0.0
        hi = max(0.0, float(vals[finite].max())) if finite.any() else 0.0
        room = 0.12 * ((hi - lo) or 1.0)  # beyond the longest bars, for their value text
        ax.set_ylim(lo - (room if lo < 0 else 0.0), hi + room)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        _value_texts(ax, pos, vals)
        _bar_labels(ax, pos, names)

    return _render(size, draw)


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
