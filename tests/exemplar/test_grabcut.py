"""GrabCut coarse foreground: IoU on a synthetic object, both initial rectangles, and every failure returned
as an empty mask with a reason (uniform image, too small, no foreground, a GrabCut error)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maskless.exemplar import grabcut as gc_mod
from maskless.exemplar.grabcut import (BOX_FALLBACK, CENTER_FALLBACK, GrabCutParams, center_rect, grabcut_foreground,
                                       strongest_box)
from maskless.store import ImageMasks

# IoU bound for the blurred disc of radius r = 24: the blur (sigma 1 px) makes the edge's colour a mix over about
# +-1.5 px, so GrabCut may misplace the outline by up to delta = 1.5 px all round. A disc grown by delta has
# IoU (r / (r + delta))^2 = (24 / 25.5)^2 = 0.886 with the true one; a shrunk one (r - delta)^2 / r^2 = 0.879.
# So 0.87 is what a correct segmentation is sure to exceed; a wrong one (a rectangle, the background, a half
# disc) falls far below it. Measured: 0.93-0.94 over seeds 0-2.
DISC_IOU = 0.87


@pytest.mark.parametrize("seed", [0, 1])
def test_centred_rect_finds_the_disc(make_disc, mask_iou, seed):
    img, disc = make_disc(seed=seed)
    fg = grabcut_foreground(img, GrabCutParams(), image_id=7)
    assert not fg.empty and fg.init == "center" and fg.rect == (10, 10, 76, 76)
    assert fg.mask.shape == disc.shape and mask_iou(fg.mask, disc) > DISC_IOU


def test_freemask_box_finds_an_off_centre_disc(make_disc, mask_iou):
    """A disc (r 16) near the top-left corner, partly outside the centred rectangle (10..86) so that
    rectangle cannot give it whole. The strongest Free Mask (score 0.9) is the square 6..37 x 8..37 around
    it, a weaker one (0.2) lies elsewhere. The rectangle is the strong mask's box x 8, y 6, w 30, h 32 grown
    by 0.1 of w/h per side: x0 = floor(8 - 3) = 5, y0 = floor(6 - 3.2) = 2, x1 = ceil(38 + 3) = 41,
    y1 = ceil(38 + 3.2) = 42 -> (5, 2, 36, 40). Bound as DISC_IOU with r = 16: ((16 / 17.5)^2 = 0.836, 0.82)."""
    img, disc = make_disc(cy=20, cx=22, r=16)
    strong = np.zeros((96, 96), bool)
    strong[6:38, 8:38] = True
    weak = np.zeros((96, 96), bool)
    weak[60:90, 60:90] = True
    masks = ImageMasks(3, 96, 96, np.stack([weak, strong]), [0.2, 0.9])
    fg = grabcut_foreground(img, GrabCutParams(init="freemask"), masks=masks, image_id=3)
    assert fg.init == "freemask" and fg.rect == (5, 2, 36, 40)
    assert mask_iou(fg.mask, disc) > 0.82
    centred = grabcut_foreground(img, GrabCutParams(init="center"))
    assert mask_iou(centred.mask, disc) < mask_iou(fg.mask, disc)


def test_freemask_without_masks_falls_back_to_centre(make_disc):
    img, _ = make_disc()
    for masks in (None, ImageMasks(1, 96, 96, np.zeros((0, 96, 96), bool), [])):
        fg = grabcut_foreground(img, GrabCutParams(init="freemask"), masks=masks)
        assert fg.init == CENTER_FALLBACK and fg.rect == (10, 10, 76, 76) and not fg.empty


def test_freemask_sliver_in_the_background_falls_back_to_centre(make_disc, mask_iou):
    """The strongest Free Mask is a 4 x 4 sliver of plain background in a corner (as coco-tiny's strongest
    masks were: 0.1-0.4% of the photo). Its grown box (rows/cols 1..7) holds no object, GrabCut's foreground
    there is below min_area (0.5% of 96 x 96 = 46 px > the whole 6 x 6 box), so the centred rectangle is tried
    and finds the disc (same bound as the centred test)."""
    img, disc = make_disc()
    sliver = np.zeros((96, 96), bool)
    sliver[2:6, 2:6] = True
    masks = ImageMasks(4, 96, 96, sliver[None], [0.9])
    fg = grabcut_foreground(img, GrabCutParams(init="freemask"), masks=masks, image_id=4)
    assert fg.init == BOX_FALLBACK and fg.rect == (10, 10, 76, 76) and not fg.empty
    assert mask_iou(fg.mask, disc) > DISC_IOU


def test_failed_fallback_names_both_attempts():
    """An image where every rectangle yields too little (min_area 0.9): the reason names the Free Mask box too,
    the sliver 2..4 grown by 0.1 x 3 px per side: floor(1.7) = 1, ceil(5.3) = 6 -> (1, 1, 5, 5)."""
    img = np.full((64, 64, 3), 100, np.uint8)
    img[::2] = 110  # std 5 > min_std, but no object: a huge min_area rejects whatever GrabCut keeps
    sliver = np.zeros((64, 64), bool)
    sliver[2:5, 2:5] = True
    fg = grabcut_foreground(img, GrabCutParams(init="freemask", min_area=0.9), masks=ImageMasks(1, 64, 64,
                            sliver[None], [0.5]), image_id=1)
    assert fg.empty and fg.init == BOX_FALLBACK and "with the Free Mask box (1, 1, 5, 5)" in fg.reason


def test_largest_component_keeps_one_object(make_disc, mask_iou):
    """Two discs inside the rectangle (r 20 at (40, 36), r 10 at (70, 74)): with largest_component only the
    big one is kept; without, both are found (IoU with their union above the same bound)."""
    img, big = make_disc(cy=40, cx=36, r=20, extra=[(70, 74, 10)])
    _, small = make_disc(cy=70, cx=74, r=10)
    one = grabcut_foreground(img, GrabCutParams(largest_component=True))
    both = grabcut_foreground(img, GrabCutParams(largest_component=False))
    assert mask_iou(one.mask, big) > 0.85 and not (one.mask & small).any()
    assert mask_iou(both.mask, big | small) > 0.8


def test_uniform_image_gives_an_empty_mask_and_a_reason():
    fg = grabcut_foreground(np.full((40, 50, 3), 128, np.uint8), GrabCutParams(), image_id=5)
    assert fg.empty and "uniform" in fg.reason and fg.mask.shape == (40, 50) and not fg.mask.any()


def test_tiny_image_and_small_foreground_are_reported(make_disc):
    """2x2 leaves no room for a rectangle with a border; a disc of r 5 in 96x96 covers pi 25 / 9216 = 0.85%
    of the image, below min_area 2%."""
    rng = np.random.default_rng(0)
    fg = grabcut_foreground(rng.integers(0, 255, (2, 2, 3), dtype=np.uint8), GrabCutParams())
    assert fg.empty and "too small" in fg.reason
    img, _ = make_disc(r=5)
    fg = grabcut_foreground(img, GrabCutParams(min_area=0.02))
    assert fg.empty and "no foreground" in fg.reason and not fg.mask.any()


def test_grabcut_error_becomes_a_reason(make_disc, monkeypatch):
    def broken(*args, **kwargs):
        raise cv2.error("simulated failure")

    monkeypatch.setattr(gc_mod.cv2, "grabCut", broken)
    img, _ = make_disc()
    fg = grabcut_foreground(img, GrabCutParams())
    assert fg.empty and "GrabCut failed" in fg.reason


def test_deterministic_and_downscaled(make_disc, mask_iou):
    """Same input, same mask. A 192x192 image with max_side 96 runs GrabCut at half size and is upsampled
    back: same disc bound (r 48 at full size)."""
    img, disc = make_disc()
    a, b = grabcut_foreground(img, GrabCutParams()), grabcut_foreground(img, GrabCutParams())
    assert np.array_equal(a.mask, b.mask)
    big, big_disc = make_disc(h=192, w=192, cy=96, cx=96, r=48, blur=2.0)
    fg = grabcut_foreground(big, GrabCutParams(max_side=96))
    assert fg.mask.shape == (192, 192) and mask_iou(fg.mask, big_disc) > DISC_IOU


def test_boxes_by_hand():
    """center_rect(100, 50, 0.1): margins round(5) and round(10) -> (5, 10, 40, 80). strongest_box: the
    0.8 mask spans x 10..19, y 20..24 (w 10, h 5), grown by 0.2: (8, 19) to (22, 26) -> (8, 19, 14, 7);
    near the border the box is clipped at 0."""
    assert center_rect(100, 50, 0.1) == (5, 10, 40, 80)
    m = np.zeros((2, 40, 30), bool)
    m[0, 20:25, 10:20] = True
    m[1, 0:3, 0:3] = True
    assert strongest_box(ImageMasks(1, 40, 30, m, [0.8, 0.1]), 0.2) == (8, 19, 14, 7)
    assert strongest_box(ImageMasks(1, 40, 30, m, [0.1, 0.8]), 0.5) == (0, 0, 5, 5)  # 3 + 1.5 -> ceil 5


def test_bad_input_raises():
    with pytest.raises(ValueError, match="uint8"):
        grabcut_foreground(np.zeros((10, 10, 3), np.float32), GrabCutParams(), image_id=1)
    masks = ImageMasks(1, 20, 20, np.ones((1, 20, 20), bool), [1.0])
    with pytest.raises(ValueError, match="20x20 but the image is 10x10"):
        grabcut_foreground(np.zeros((10, 10, 3), np.uint8), GrabCutParams(init="freemask"), masks=masks)
    for bad in (dict(init="box"), dict(margin=0.5), dict(iterations=0), dict(min_area=1.0), dict(box_expand=-1)):
        with pytest.raises(ValueError, match="GrabCutParams"):
            GrabCutParams(**bad)
