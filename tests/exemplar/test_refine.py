"""Refining an exemplar with SOLO: crop box, IoU matching, the GrabCut fallback, the final resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskless.exemplar.grabcut import Foreground
from maskless.exemplar.refine import (RefineParams, best_match, crop_box, mask_iou, refine_exemplar,
                                      resize_exemplar, solo_masks)
from maskless.solo.inference import SoloInferenceParams

# With a category bias of +10 every cell scores ~1 and mask_thresh 0 turns every predicted mask into the
# whole crop (sigmoid > 0 everywhere): the tiny untrained SOLO then predicts a known mask.
WHOLE_CROP = SoloInferenceParams(score_thresh=0.5, update_thresh=0.0, mask_thresh=0.0, max_per_img=3)


def _box_mask(h, w, x, y, bw, bh):
    m = np.zeros((h, w), bool)
    m[y : y + bh, x : x + bw] = True
    return m


def test_crop_box_by_hand():
    """Foreground box x 40, y 30, w 20, h 10 in 100x100, margin 0.25: 30 x 15 around the centre (50, 35).
    Square: 30 x 30 from (35, 20). Not square: x 35..65, y 27.5..42.5 -> floor/ceil (35, 27, 30, 16).
    A box at the image's left edge is shifted inside, not cut: x0 = 0, still 30 wide."""
    m = _box_mask(100, 100, 40, 30, 20, 10)
    assert crop_box(m, margin=0.25, square=True) == (35, 20, 30, 30)
    assert crop_box(m, margin=0.25, square=False) == (35, 27, 30, 16)
    edge = _box_mask(100, 100, 0, 30, 20, 10)
    assert crop_box(edge, margin=0.25, square=True) == (0, 20, 30, 30)
    wide = _box_mask(20, 100, 0, 5, 100, 10)  # wider than the image is tall: clipped, not square
    assert crop_box(wide, margin=0.0, square=True) == (0, 0, 100, 20)
    with pytest.raises(ValueError, match="empty"):
        crop_box(np.zeros((5, 5), bool), margin=0.1, square=True)


def test_iou_and_best_match_by_hand():
    """ref = 4 pixels; mask a = the same 4 (IoU 1); b = 2 of them plus 2 others (2 / 6); c = empty (0 / 4)."""
    ref = _box_mask(4, 4, 0, 0, 2, 2)
    a, b, c = ref.copy(), _box_mask(4, 4, 1, 0, 2, 2), np.zeros((4, 4), bool)
    assert np.allclose(mask_iou(np.stack([a, b, c]), ref), [1.0, 2 / 6, 0.0])
    assert best_match(np.stack([b, a]), ref, 0.5) == (1, 1.0)
    assert best_match(np.stack([b, c]), ref, 0.5) == (None, pytest.approx(2 / 6))
    assert best_match(np.zeros((0, 4, 4), bool), ref, 0.5) == (None, 0.0)
    assert np.allclose(mask_iou(c[None], c), [0.0])  # empty union: 0, not NaN


def test_resize_keeps_a_sliver():
    """A one-pixel mask in 200x200 shrunk to 10x10 covers 1/400 of a pixel: bilinear-then-1/2 loses it, the
    any-coverage fallback keeps one pixel."""
    crop = np.zeros((200, 200, 3), np.uint8)
    mask = np.zeros((200, 200), bool)
    mask[100, 100] = True
    c, m = resize_exemplar(crop, mask, 10)
    assert c.shape == (10, 10, 3) and c.dtype == np.uint8 and m.shape == (10, 10) and m.sum() >= 1


def _disc_fg(make_disc):
    """The synthetic disc (r 16 at the centre of 96x96) with its true mask as the GrabCut foreground; its box is
    (32, 32, 33, 33), margin 0.15 grows it to 42.9 around the centre 48.5: x from floor(27.05) = 27 to
    ceil(69.95) = 70, so the crop is (27, 27, 43, 43)."""
    img, disc = make_disc(r=16)
    return img, disc, Foreground(disc, (10, 10, 76, 76), "center")


def test_refine_takes_the_solo_mask_or_falls_back(make_disc, make_solo):
    """Every SOLO mask is the whole 43x43 crop (WHOLE_CROP), whose IoU with the disc is disc area / 43^2
    (the disc lies inside the crop). min_iou below that: method "solo" and an all-True mask; above: "grabcut"
    and the disc; either way iou is that ratio."""
    img, disc, fg = _disc_fg(make_disc)
    model = make_solo(cate_bias=10.0)
    expected = disc.sum() / 43**2  # 0.44
    low = RefineParams(min_iou=0.3, side=32, input_size=64, inference=WHOLE_CROP)
    ex = refine_exemplar(img, fg, image_id=4, model=model, params=low)
    assert ex.method == "solo" and ex.box == (27, 27, 43, 43) and ex.mask.all()
    assert ex.iou == pytest.approx(expected) and ex.image_id == 4
    assert ex.crop.shape == (32, 32, 3) and ex.crop.dtype == np.uint8 and ex.mask.shape == (32, 32)
    high = RefineParams(min_iou=0.6, side=32, input_size=64, inference=WHOLE_CROP)
    ex = refine_exemplar(img, fg, image_id=4, model=model, params=high)
    assert ex.method == "grabcut" and ex.iou == pytest.approx(expected)
    _, want = resize_exemplar(img[27:70, 27:70], disc[27:70, 27:70], 32)
    assert np.array_equal(ex.mask, want)


def test_refine_without_predictions_falls_back(make_disc, make_solo):
    """score_thresh 1: no cell passes, SOLO predicts nothing: GrabCut's mask, iou 0."""
    img, _, fg = _disc_fg(make_disc)
    params = RefineParams(input_size=64, inference=SoloInferenceParams(score_thresh=1.0))
    ex = refine_exemplar(img, fg, image_id=1, model=make_solo(), params=params)
    assert ex.method == "grabcut" and ex.iou == 0.0 and ex.mask.any()


def test_solo_masks_at_crop_size_and_mode_restored(make_solo):
    model = make_solo(cate_bias=10.0).train()
    crop = np.random.default_rng(0).integers(0, 255, (37, 51, 3), dtype=np.uint8)
    masks = solo_masks(model, crop, input_size=48, params=WHOLE_CROP)
    assert masks.shape[1:] == (37, 51) and len(masks) >= 1 and masks.all() and model.training


def test_solo_masks_pass_the_instance_strides(make_solo, monkeypatch):
    """The exemplar refinement filters masks by area as solo_predict does: predict gets the model's levels'
    instance strides (the reference's `sum_masks > strides`)."""
    import maskless.exemplar.refine as refine
    import maskless.solo.inference as inference

    seen = {}

    def spy(outputs, hw, params, *, out_hw=None, strides=None):
        seen["strides"] = strides
        return [{"masks": np.zeros((0, *out_hw), dtype=bool)}]

    monkeypatch.setattr(refine, "predict", spy)  # the name refine calls
    model = make_solo()
    solo_masks(model, np.zeros((20, 20, 3), dtype=np.uint8), input_size=32, params=WHOLE_CROP)
    assert seen["strides"] == inference.instance_strides(model.params.levels) and all(seen["strides"])


def test_empty_foreground_is_an_error_naming_the_image(make_disc, make_solo):
    img, _ = make_disc()
    fg = Foreground(np.zeros((96, 96), bool), (10, 10, 76, 76), "center", "uniform image (pixel std 0.00)")
    with pytest.raises(ValueError, match="image 12 has no foreground.*uniform"):
        refine_exemplar(img, fg, image_id=12, model=make_solo(), params=RefineParams())


@pytest.mark.parametrize("bad", [dict(side=0), dict(min_iou=1.5), dict(crop_margin=-0.1), dict(input_size=0)])
def test_params_validation(bad):
    with pytest.raises(ValueError, match="RefineParams"):
        RefineParams(**bad)
    assert RefineParams(inference={"score_thresh": 0.2}).inference.score_thresh == 0.2
    torch.manual_seed(0)  # keep the global seed tidy for other tests
