"""Report figures (maskless.viz, maskless.figure_layout): pixel colours at known places, sizes, determinism,
PNG round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maskless import figure_layout, viz

DARK = 128  # text is drawn dark on white: a channel below this marks text/axes


def _image(h: int = 12, w: int = 16) -> np.ndarray:
    return ((np.arange(h * w * 3).reshape(h, w, 3) * 7) % 200 + 20).astype(np.uint8)


def _count(img: np.ndarray, colour) -> int:
    return int((img == np.asarray(colour, np.uint8)).all(-1).sum())


# ----------------------------------------------------------------------------------------------- palette

def test_palette_distinct_bright_deterministic_and_prefix_stable():
    p = viz.palette(12)
    assert p.shape == (12, 3) and p.dtype == np.uint8
    assert len({tuple(r) for r in p}) == 12
    assert (p.max(1) == round(viz.VALUE * 255)).all()  # fixed value: every colour equally bright
    assert np.array_equal(p, viz.palette(12))
    assert np.array_equal(viz.palette(5), p[:5])  # colour i does not depend on n
    assert np.array_equal(viz.palette(4, seed=1), p[1:5])
    assert viz.palette(0).shape == (0, 3)
    big = viz.palette(1500)  # ~500 hues collide after rounding to uint8; they are nudged apart
    assert len({tuple(r) for r in big}) == 1500
    with pytest.raises(ValueError):
        viz.palette(-1)


# ---------------------------------------------------------------------------------------------- overlay

def test_overlay_changes_inside_only_and_outlines_in_the_exact_colour():
    img = _image()
    masks = np.zeros((1, 12, 16), bool)
    masks[0, 3:9, 4:12] = True
    out = viz.overlay_masks(img, masks, alpha=0.5)
    colour = viz.palette(1)[0].astype(float)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out[~masks[0]], img[~masks[0]])  # outside every mask: untouched
    assert np.array_equal(out[3, 4], viz.palette(1)[0])  # corner: outline, exactly the colour
    assert np.array_equal(out[8, 7], viz.palette(1)[0])  # bottom edge
    interior = np.zeros_like(masks[0])
    interior[4:8, 5:11] = True
    expected = np.rint(0.5 * img[interior] + 0.5 * colour).astype(np.uint8)
    assert np.array_equal(out[interior], expected)
    assert (out[interior] != img[interior]).any(-1).all()

    flat = viz.overlay_masks(img, masks, alpha=0.5, outline=False)  # no outline: border only blended
    assert np.array_equal(flat[3, 4], np.rint(0.5 * img[3, 4] + 0.5 * colour).astype(np.uint8))


def test_overlay_draws_later_masks_over_earlier_and_accepts_none():
    img = _image()
    masks = np.zeros((2, 12, 16), bool)
    masks[0, 2:10, 2:10] = True
    masks[1, 5:11, 6:14] = True
    cols = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    out = viz.overlay_masks(img, masks, alpha=0.5, colors=cols)
    assert np.array_equal(out[5, 7], cols[1])  # mask 1's outline, inside mask 0: drawn last, wins
    twice = np.rint(0.5 * (0.5 * img[7, 8].astype(float) + 0.5 * cols[0]) + 0.5 * cols[1]).astype(np.uint8)
    assert np.array_equal(out[7, 8], twice)  # both interiors: blended with 0, then with 1
    assert np.array_equal(out, viz.overlay_masks(img, masks, alpha=0.5, colors=cols))

    empty = viz.overlay_masks(img, np.zeros((0, 12, 16), bool))
    assert np.array_equal(empty, img) and empty is not img
    with pytest.raises(ValueError):
        viz.overlay_masks(img, np.zeros((1, 12, 15), bool))


# ------------------------------------------------------------------------------------------ class maps

def test_colorize_labels_fixed_colours_and_bad_ids():
    label = np.array([[0, 1, 2], [255, 3, 0]], np.int64)
    rgb = viz.colorize_labels(label, 4)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all() and (rgb[1, 2] == 0).all()  # background black
    assert (rgb[1, 0] == 255).all()  # ignore white
    assert np.array_equal(rgb[0, 1], viz.palette(3)[0]) and np.array_equal(rgb[1, 1], viz.palette(3)[2])
    # a class keeps its colour whatever num_classes is
    assert np.array_equal(viz.colorize_labels(label, 27)[:, :2], rgb[:, :2])
    with pytest.raises(ValueError, match=r"7") as err:
        viz.colorize_labels(np.array([[0, 7], [4, 1]]), 4)
    assert "4" in str(err.value).split(":")[-1] and "-1" not in str(err.value)
    with pytest.raises(ValueError, match=r"-1"):
        viz.colorize_labels(np.array([[0, -1]]), 4)
    with pytest.raises(ValueError, match=r"255"):
        viz.colorize_labels(np.array([[0, 255]]), 4, ignore=None)


# ---------------------------------------------------------------------------------------------- charts

def _components(img: np.ndarray, colour) -> int:
    """Connected regions (8-neighbour) of pixels of exactly `colour`."""
    mask = (img == np.asarray(colour, np.uint8)).all(-1).astype(np.uint8)
    return cv2.connectedComponents(mask, connectivity=8)[0] - 1


def test_line_plot_size_determinism_and_skipped_points():
    xs = np.arange(10.0)
    ys = np.array([5, 4, 3, np.nan, 2, 1.5, np.inf, 1.2, 1.1, 1.0])
    kw = dict(title="SOLO round 0", xlabel="step", ylabel="loss")
    a = viz.line_plot({"loss": (xs, ys)}, **kw)
    assert a.shape == (320, 480, 3) and a.dtype == np.uint8
    assert viz.line_plot({"loss": (xs, ys)}, **kw).tobytes() == a.tobytes()
    assert viz.line_plot({"loss": (xs, ys)}, size=(300, 200), **kw).shape == (200, 300, 3)
    assert viz.line_plot({"loss": (xs, ys)}, size=(333, 217), **kw).shape == (217, 333, 3)  # no px lost to rounding
    ok = np.isfinite(ys)
    # NaN/inf points are skipped: the same picture as without them, and the line is drawn
    assert np.array_equal(a, viz.line_plot({"loss": (xs[ok], ys[ok])}, **kw))
    assert _count(a, viz.palette(1)[0]) > 400  # the curve, ~400 px long and 2.5 px wide, plus the legend
    # two series: the second colour appears too, and the first keeps its colour
    b = viz.line_plot({"loss": (xs, ys), "lr": (xs, xs * 0.1)}, **kw)
    assert _count(b, viz.palette(2)[1]) > 400 and _count(b, viz.palette(2)[0]) > 400
    # a single point is drawn as a dot
    assert _count(viz.line_plot({"loss": ([3.0], [2.0])}, **kw), viz.palette(1)[0]) > 20
    with pytest.raises(ValueError):
        viz.line_plot({"loss": (xs, ys)}, size=(50, 40), **kw)


def test_line_plot_log_y_drops_non_positive_values():
    xs = np.arange(8.0)
    ys = np.array([100.0, 30.0, 0.0, 10.0, 3.0, -1.0, 1.0, 0.5])
    kw = dict(title="t", xlabel="step", ylabel="loss", log_y=True)
    img = viz.line_plot({"loss": (xs, ys)}, **kw)
    keep = ys > 0
    assert np.array_equal(img, viz.line_plot({"loss": (xs[keep], ys[keep])}, **kw))
    assert _count(img, viz.palette(1)[0]) > 400
    # a log axis: the same data on a linear axis is a different picture
    assert not np.array_equal(img, viz.line_plot({"loss": (xs[keep], ys[keep])}, **{**kw, "log_y": False}))
    # only non-positive values: nothing to draw on a log axis
    none = viz.line_plot({"loss": ([0, 1], [0.0, -2.0])}, **kw)
    assert _count(none, viz.palette(1)[0]) == 0 and (none[150:180, 200:280] < DARK).any()


def test_line_plot_without_data_says_so():
    empty = viz.line_plot({}, title="t", xlabel="x", ylabel="y")
    assert empty.shape == (320, 480, 3)
    assert (empty[150:180, 200:280] < DARK).any()  # "no data" in the middle of the plot area
    all_nan = viz.line_plot({"loss": ([0, 1], [np.nan, np.nan])}, title="t", xlabel="x", ylabel="y")
    assert _count(all_nan, viz.palette(1)[0]) == 0 and (all_nan[150:180, 200:280] < DARK).any()
    assert np.array_equal(all_nan, empty)  # the empty series is not in the legend either
    with pytest.raises(ValueError):
        viz.line_plot({"bad": ([0, 1, 2], [1, 2])}, title="t", xlabel="x", ylabel="y")


def test_bar_chart_heights_and_nan():
    values = {"freemask": 10.0, "round 0": float("nan"), "round 1": 20.0}
    img = viz.bar_chart(values, title="mask AP", ylabel="AP", size=(360, 240))
    assert img.shape == (240, 360, 3) and img.dtype == np.uint8
    assert viz.bar_chart(values, title="mask AP", ylabel="AP", size=(360, 240)).tobytes() == img.tobytes()
    cols = viz.palette(3)
    assert _count(img, cols[1]) == 0  # NaN: no bar in its colour anywhere
    assert _components(img, cols[0]) == 1 and _components(img, cols[2]) == 1  # one region per bar
    (r0, c0), (r2, c2) = [np.nonzero((img == c).all(-1)) for c in (cols[0], cols[2])]
    # solid bars of the same width on the same baseline, heights proportional to the values (+-1 px)
    assert _count(img, cols[0]) == (np.ptp(r0) + 1) * (np.ptp(c0) + 1) and np.ptp(c0) == np.ptp(c2)
    assert r0.max() == r2.max() and abs((np.ptp(r2) + 1) - 2 * (np.ptp(r0) + 1)) <= 2
    # the NaN slot, between the two bars, shows a dark "-" just above the baseline
    baseline = r0.max() + 1
    assert (img[baseline - 12:baseline, c0.max() + 1:c2.min()] < DARK).any()
    # each bar's label is written under the axis, below its bar
    for c in (c0, c2):
        assert (img[baseline + 2:baseline + 20, c.min():c.max() + 1] < DARK).any()
    assert viz.bar_chart({}, title="t", ylabel="y").shape == (320, 480, 3)


def test_bar_chart_negative_inf_and_empty():
    values = {"a": 5.0, "b": -5.0, "c": float("inf"), "d": 2.5}
    img = viz.bar_chart(values, title="t", ylabel="y")
    cols = viz.palette(4)
    assert [_components(img, c) for c in cols] == [1, 1, 0, 1]  # inf: no bar
    (ra, _), (rb, _) = [np.nonzero((img == c).all(-1)) for c in cols[:2]]
    assert rb.min() > ra.max()  # the negative bar hangs below the positive one, from the same axis
    assert abs((np.ptp(ra) + 1) - (np.ptp(rb) + 1)) <= 1
    empty = viz.bar_chart({}, title="t", ylabel="y")
    assert (empty[150:180, 200:280] < DARK).any() and (empty[150:180, 200:280] < DARK).mean() < 0.5  # "no data"


@pytest.mark.filterwarnings("error")  # e.g. constrained layout giving up on a long label
def test_bar_chart_shortens_labels_to_their_slot():
    short = viz.bar_chart({"a": 1.0, "b": 2.0}, title="t", ylabel="y", size=(240, 200))
    long = viz.bar_chart({"a" * 60: 1.0, "b": 2.0}, title="t", ylabel="y", size=(240, 200))
    bars = [np.nonzero((short == c).all(-1))[1] for c in viz.palette(2)]
    # the long label stays inside its own slot: the second bar's label region is unchanged
    mid = (bars[0].max() + bars[1].min()) // 2
    assert np.array_equal(short[:, mid + 2:], long[:, mid + 2:]) and not np.array_equal(short, long)
    assert viz.label_width(["a" * 60]) > 120 > viz.label_width(["b"]) > 0 and viz.label_width([]) == 0


def _ink(img: np.ndarray, rows: slice) -> int:
    return int((img[rows] < DARK).any(-1).sum())


@pytest.mark.filterwarnings("error")  # matplotlib warns of a glyph missing from the font: the test fails
def test_charts_render_unicode_and_dollar_signs_as_written():
    kw = dict(xlabel="step", ylabel="mIoU ± std")
    series = {"α": ([0, 1, 2], [1.0, 2.0, 1.5])}
    alpha = viz.line_plot(series, title="α", **kw)
    assert not np.array_equal(alpha, viz.line_plot(series, title="a", **kw))
    assert not np.array_equal(alpha, viz.line_plot(series, title="?", **kw))  # not a "?" stand-in
    bars = viz.bar_chart({"β": 1.0, "γ": 2.0}, title="mIoU ± std", ylabel="%")
    assert not np.array_equal(bars, viz.bar_chart({"b": 1.0, "g": 2.0}, title="mIoU ± std", ylabel="%"))
    with pytest.warns(UserWarning, match="missing from font"):  # what a glyph DejaVu Sans lacks does
        viz.line_plot(series, title="\u4e2d", **kw)
    # "$x$" is text, not mathtext (which would draw an italic x alone): both "$" are drawn in the title
    title = slice(0, 20)
    dollars, plain = viz.line_plot(series, title="$x$", **kw), viz.line_plot(series, title="x", **kw)
    assert _ink(dollars, title) > 2 * _ink(plain, title) > 0
    viz.bar_chart({"co$t": 1.0, "$$": 2.0}, title="$", ylabel="$$")  # lone or empty "$" pairs do not raise


def test_charts_ignore_and_keep_the_callers_matplotlib_settings(tmp_path):
    import matplotlib

    series = {"loss": ([0, 1, 2], [3.0, 2.0, 1.0])}
    kw = dict(title="t", xlabel="x", ylabel="y")
    ref_line, ref_bar = viz.line_plot(series, **kw), viz.bar_chart({"a": 1.0}, title="t", ylabel="y")
    with matplotlib.rc_context({"font.size": 20, "lines.linewidth": 7, "axes.facecolor": "black"}):
        assert np.array_equal(viz.line_plot(series, **kw), ref_line)
        assert np.array_equal(viz.bar_chart({"a": 1.0}, title="t", ylabel="y"), ref_bar)
        assert matplotlib.rcParams["font.size"] == 20  # the caller's settings are back afterwards
    # same input, same PNG bytes
    a = figure_layout.save_png(tmp_path / "a.png", ref_line)
    b = figure_layout.save_png(tmp_path / "b.png", viz.line_plot(series, **kw))
    assert a.read_bytes() == b.read_bytes()


# --------------------------------------------------------------------------------------------- layouts

def test_grid_size_letterbox_and_captions():
    red = np.zeros((10, 20, 3), np.uint8)
    red[..., 0] = 255  # wide: fills a (64, 48) cell as 64 x 32, white bands of 8 px above and below
    blue = np.zeros((48, 64, 3), np.uint8)
    blue[..., 2] = 255  # same aspect as the cell: fills it exactly
    images = [red, _image(), _image(20, 8), np.ones((5, 5), bool), blue]
    out = figure_layout.grid(images, columns=2, cell=(64, 48), captions=["a", "b", "c", "d", "e"], pad=4)
    # rows = ceil(5 / 2) = 3, columns = 2, caption band 16 px:
    # height = 3 * (48 + 16) + (3 + 1) * 4 = 208, width = 2 * 64 + (2 + 1) * 4 = 140
    assert figure_layout.CAPTION_HEIGHT == 16 and out.shape == (208, 140, 3)
    assert (out[:4] == 255).all() and (out[:, :4] == 255).all()  # outer padding is white
    assert np.array_equal(out[4 + 24, 4 + 32], [255, 0, 0])  # cell (0, 0) centre: red
    assert np.array_equal(out[4 + 8, 4], [255, 0, 0]) and np.array_equal(out[4 + 39, 4 + 63], [255, 0, 0])
    assert (out[4:4 + 8, 4:68] == 255).all() and (out[4 + 40:4 + 48, 4:68] == 255).all()  # letterbox
    y5 = 4 + 2 * (48 + 16 + 4)  # row 2, column 0
    assert (out[y5:y5 + 48, 4:68] == [0, 0, 255]).all()
    assert (out[y5 + 48:y5 + 64, 4:68] < DARK).any()  # caption "e" under it
    assert np.array_equal(out, figure_layout.grid(images, columns=2, cell=(64, 48), captions=list("abcde"), pad=4))
    no_captions = figure_layout.grid(images, columns=2, cell=(64, 48), pad=4)
    assert no_captions.shape == (3 * 48 + 4 * 4, 140, 3)
    empty = figure_layout.grid([], columns=3)
    assert empty.ndim == 3 and (empty < DARK).any() and (empty == 255).mean() > 0.8
    with pytest.raises(ValueError):
        figure_layout.grid(images, columns=2, captions=["only one"])


def test_side_by_side_common_height_and_titles():
    tall = np.zeros((20, 10, 3), np.uint8)
    tall[..., 1] = 255
    square = np.zeros((10, 10), np.uint8)
    out = figure_layout.side_by_side([("a", tall), ("b", square)], height=40, pad=4)
    # widths 20 and 40; height pad + title + 40 + pad; width 20 + 40 + 3 pads
    assert out.shape == (4 + figure_layout.TITLE_HEIGHT + 40 + 4, 20 + 40 + 3 * 4, 3)
    top = 4 + figure_layout.TITLE_HEIGHT
    assert (out[top:top + 40, 4:24] == [0, 255, 0]).all()
    assert (out[top:top + 40, 28:68] == 0).all()
    assert (out[4:top, 4:24] < DARK).any() and (out[4:top, 28:68] < DARK).any()  # titles
    assert figure_layout.side_by_side([]).ndim == 3


# ------------------------------------------------------------------------------------------------ files

def test_save_png_round_trip(tmp_path):
    rgb = np.zeros((7, 9, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB: a BGR/RGB mix-up would show up as blue
    rgb[2:5, 3:6] = [10, 120, 250]
    path = figure_layout.save_png(tmp_path / "sub" / "fig.png", rgb)
    back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, rgb)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["fig.png"]  # no temp file left behind
    with pytest.raises(ValueError):
        figure_layout.save_png(tmp_path / "bad.png", rgb.astype(np.float32))


def test_read_loss_csv_feeds_line_plot(tmp_path):
    path = tmp_path / "loss.csv"
    path.write_text("step,loss,loss_ins,lr\n1,2.5,1.0,0.01\n2,nan,0.8,0.01\n3,1.5,,0.01\n")
    series = viz.read_loss_csv(path, columns=("loss", "loss_ins"))
    assert list(series) == ["loss", "loss_ins"]
    xs, ys = series["loss"]
    assert xs.tolist() == [1.0, 2.0, 3.0] and ys[0] == 2.5 and np.isnan(ys[1])
    assert np.isnan(series["loss_ins"][1][2])
    assert viz.line_plot(series, title="t", xlabel="step", ylabel="loss").shape == (320, 480, 3)
    with pytest.raises(KeyError, match="missing"):
        viz.read_loss_csv(path, columns=("missing",))
