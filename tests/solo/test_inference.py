"""SOLOv2 inference on crafted model outputs whose masks, scores and decays are worked out by hand.

Layout used throughout: one level with a 4x4 grid, D = 2 mask-feature channels at 8x8 (a 32x32 padded
input), E = 3. Background cells get cate logit -10 (sigmoid 4.5e-5, far below score_thresh 0.1). A kernel
(1, 0) selects mask_feat channel 0, which holds logit -10 outside a square at stride-4 rows 2..4, cols 3..5.
Bilinear x4 upsampling (align_corners=False) puts output pixel r at input coordinate (r + 0.5) / 4 - 0.5,
so across the square's edge the probability is 0.375 p (out) then 0.625 p, 0.875 p (in, for p = sig(3) =
0.953): the square comes back as rows 8..19, cols 12..23 of the 32x32 image, less its 4 corner pixels,
where both axes weigh 0.625 and 0.625^2 p = 0.372 < 0.5 (their neighbours: 0.625 * 0.875 p = 0.521 > 0.5).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from maskless.solo.inference import SoloInferenceParams, point_nms, predict

SQUARE = (slice(8, 20), slice(12, 24))  # the stride-4 square rows 2..4, cols 3..5 at full size


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _outputs(cells: dict, *, square_logit: float = 3.0, batch: int = 1) -> dict:
    """cells: {(i, j): cate logit}; each such cell gets kernel (1, 0) and embedding (3, 4, 0)."""
    cate = torch.full((batch, 1, 4, 4), -10.0)
    kernel = torch.zeros(batch, 2, 4, 4)
    emb = torch.zeros(batch, 3, 4, 4)
    for (i, j), logit in cells.items():
        cate[:, 0, i, j] = logit
        kernel[:, 0, i, j] = 1.0
        emb[:, :, i, j] = torch.tensor([3.0, 4.0, 0.0])
    mask_feat = torch.full((batch, 2, 8, 8), -10.0)
    mask_feat[:, 0, 2:5, 3:6] = square_logit
    return {"cate": [cate], "emb": [emb], "kernel": [kernel], "mask_feat": mask_feat}


def _square(hw=(32, 32)) -> np.ndarray:
    m = np.zeros(hw, dtype=bool)
    m[SQUARE] = True
    for r, c in [(8, 12), (8, 23), (19, 12), (19, 23)]:
        m[r, c] = False  # bilinear corners: 0.625^2 sig(3) < 0.5
    return m


def test_point_nms_by_hand():
    """A cell survives when >= its up, left and up-left neighbours (ties survive, borders have fewer).
    Survivors worked out cell by cell: (0,0) 0.1 alone; (0,1) 0.5 > 0.1; (0,3) 0.2 ties its left 0.2;
    (1,0) 0.3 > 0.1; (1,2) 0.9 > 0.2, 0.4, 0.5; (2,0) 0.8 > 0.3. Every other cell has a larger such
    neighbour, e.g. (2,3) 0.7 < up-left 0.9 and (3,1) 0.7 < up-left 0.8."""
    heat = torch.tensor([[0.1, 0.5, 0.2, 0.2],
                         [0.3, 0.4, 0.9, 0.1],
                         [0.8, 0.2, 0.3, 0.7],
                         [0.6, 0.7, 0.1, 0.6]])
    want = torch.zeros(4, 4)
    for i, j in [(0, 0), (0, 1), (0, 3), (1, 0), (1, 2), (2, 0)]:
        want[i, j] = heat[i, j]
    out = point_nms(heat[None, None].repeat(2, 1, 1, 1))
    assert out.shape == (2, 1, 4, 4)
    assert torch.equal(out[0, 0], want) and torch.equal(out[1, 0], want)
    one = torch.tensor([[[[0.3]]]])
    assert torch.equal(point_nms(one), one)  # a single cell is its own maximum


def test_one_cell_gives_the_square_with_hand_score():
    """Square logits 3 except the centre (row 3, col 4) at 1: maskness = (8 sig(3) + sig(1)) / 9 at
    stride 4; score = sig(2) x maskness = 0.88080 x 0.92797 = 0.81736; no other mask, so no decay.
    The centre's neighbours are all sig(3), so upsampling keeps it inside (>= 0.73)."""
    out = _outputs({(1, 2): 2.0})
    out["mask_feat"][0, 0, 3, 4] = 1.0
    (res,) = predict(out, (32, 32), SoloInferenceParams())
    assert res["masks"].dtype == bool and res["masks"].shape == (1, 32, 32)
    assert np.array_equal(res["masks"][0], _square())
    maskness = (8 * sig(3.0) + sig(1.0)) / 9
    assert res["scores"].dtype == np.float32
    assert res["scores"][0] == pytest.approx(sig(2.0) * maskness, rel=1e-5)
    np.testing.assert_allclose(res["embeddings"], [[0.6, 0.8, 0.0]], rtol=1e-6)  # (3, 4, 0) / 5


def test_padding_is_cropped_and_ignored_by_maskness():
    """image_hw (32, 24): stride-4 width ceil(24 / 4) = 6, so cols 6..7 are padding. There channel 0 is
    logit 1 (> 0.5 after sigmoid): were it counted, maskness would mix in sig(1). It must stay sig(3).
    The padding's sig(1) = 0.731 lifts the square's right corners (rows 8, 19, col 23) back in:
    0.625 * (0.625 sig(3) + 0.375 sig(1)) = 0.543 > 0.5; the crop then cuts the image at col 24."""
    out = _outputs({(1, 2): 2.0})
    out["mask_feat"][0, 0, 2:5, 6:8] = 1.0
    (res,) = predict(out, (32, 24), SoloInferenceParams())
    want = _square()[:, :24]
    want[[8, 19], 23] = True
    assert res["masks"].shape == (1, 32, 24)
    assert np.array_equal(res["masks"][0], want)
    assert res["scores"][0] == pytest.approx(sig(2.0) * sig(3.0), rel=1e-5)


def test_out_hw_resizes_to_the_original_size():
    """x2 from 32x32: the 32x32 edge values 0.357 / 0.595 (0.375 and 0.625 of sig(3)) interpolate to
    0.75 * 0.357 + 0.25 * 0.595 = 0.417 (out) and 0.25 * 0.357 + 0.75 * 0.595 = 0.536 (in): the mask spans
    rows 16..39, cols 24..47, the stride-4 square scaled by 8. The full mask (rounded corners included)
    is checked against OpenCV's bilinear resize (same half-pixel convention), an independent implementation."""
    (res,) = predict(_outputs({(1, 2): 2.0}), (32, 32), SoloInferenceParams(), out_hw=(64, 64))
    m = res["masks"][0]
    assert res["masks"].shape == (1, 64, 64)
    assert np.flatnonzero(m.any(axis=1)).tolist() == list(range(16, 40))
    assert np.flatnonzero(m.any(axis=0)).tolist() == list(range(24, 48))
    soft = np.full((8, 8), sig(-10.0), dtype=np.float32)
    soft[2:5, 3:6] = sig(3.0)
    up = cv2.resize(cv2.resize(soft, (32, 32), interpolation=cv2.INTER_LINEAR), (64, 64),
                    interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(m, up > 0.5)


def test_duplicate_cells_matrix_nms_decays_the_second():
    """Cells (0,0) and (3,3) (not neighbours, both survive point NMS) predict the same square: IoU 1.
    Scores sig(2) m and sig(1) m with m = sig(3); Gaussian decay of the second = exp(-2 * 1^2) / exp(0)
    = 0.13534, so 0.69644 -> 0.09425 (kept above update_thresh 0.05, dropped at 0.1)."""
    out = _outputs({(0, 0): 2.0, (3, 3): 1.0})
    (res,) = predict(out, (32, 32), SoloInferenceParams())
    m = sig(3.0)
    np.testing.assert_allclose(res["scores"], [sig(2.0) * m, sig(1.0) * m * math.exp(-2.0)], rtol=1e-5)
    assert res["masks"].shape == (2, 32, 32) and np.array_equal(res["masks"][0], res["masks"][1])
    (res,) = predict(out, (32, 32), SoloInferenceParams(update_thresh=0.1))
    assert len(res["scores"]) == 1 and res["scores"][0] == pytest.approx(sig(2.0) * m, rel=1e-5)
    (res,) = predict(out, (32, 32), SoloInferenceParams(max_per_img=1))
    assert len(res["scores"]) == 1


def test_point_nms_removes_a_weaker_neighbour_before_matrix_nms():
    """(1,2) logit 1 lies right of (1,1) logit 2: point NMS zeroes it, so one instance with no decay."""
    (res,) = predict(_outputs({(1, 1): 2.0, (1, 2): 1.0}), (32, 32), SoloInferenceParams())
    assert res["scores"] == pytest.approx([sig(2.0) * sig(3.0)], rel=1e-5)


@pytest.mark.parametrize("case", ["below_threshold", "empty_mask"])
def test_no_predictions_give_empty_arrays(case):
    """All cate logits -10 -> no candidate; or a candidate whose mask logits are all -10 -> empty mask."""
    out = _outputs({}) if case == "below_threshold" else _outputs({(1, 2): 2.0}, square_logit=-10.0)
    (res,) = predict(out, (32, 28), SoloInferenceParams())
    assert res["masks"].shape == (0, 32, 28) and res["masks"].dtype == bool
    assert res["scores"].shape == (0,) and res["scores"].dtype == np.float32
    assert res["embeddings"].shape == (0, 3) and res["embeddings"].dtype == np.float32


def test_batch_with_per_image_sizes():
    out = _outputs({(1, 2): 2.0}, batch=2)
    out["cate"][0][1] = -10.0  # second image: nothing
    res = predict(out, [(32, 32), (20, 28)], SoloInferenceParams())
    assert res[0]["masks"].shape == (1, 32, 32) and res[1]["masks"].shape == (0, 20, 28)


def test_bad_outputs_raise_clear_errors():
    out = _outputs({(1, 2): 2.0})
    with pytest.raises(KeyError, match="mask_feat"):
        predict({k: v for k, v in out.items() if k != "mask_feat"}, (32, 32), SoloInferenceParams())
    with pytest.raises(ValueError, match="does not fit"):
        predict(out, (40, 32), SoloInferenceParams())
    out["cate"][0][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        predict(out, (32, 32), SoloInferenceParams())
    with pytest.raises(ValueError, match="nms_kernel"):
        SoloInferenceParams(nms_kernel="hard")
    with pytest.raises(ValueError, match="score_thresh"):
        SoloInferenceParams(score_thresh=1.5)


@pytest.mark.parametrize("logit, pixels", [(3.0, 12), (0.2, 0)])
def test_one_pixel_mask(logit, pixels):
    """A single stride-4 pixel (row 3, col 4) of probability p: at full size its 4x4 block weighs
    0.875^2 p (centre 2x2), 0.875 * 0.625 p (edges) and 0.625^2 p (corners). p = sig(3) = 0.953 keeps
    0.729, 0.521 and drops 0.372: 12 pixels. p = sig(0.2) = 0.550 peaks at 0.421 < 0.5: the mask vanishes
    at full size and is dropped, leaving empty arrays."""
    out = _outputs({(1, 2): 2.0}, square_logit=-10.0)
    out["mask_feat"][0, 0, 3, 4] = logit
    (res,) = predict(out, (32, 32), SoloInferenceParams())
    assert res["masks"].sum() == pixels and len(res["scores"]) == (1 if pixels else 0)
    if pixels:
        assert res["masks"][0, 12:16, 16:20].sum() == 12
        assert res["scores"][0] == pytest.approx(sig(2.0) * sig(3.0), rel=1e-5)


def test_area_must_exceed_the_level_instance_stride():
    """The reference drops a mask whose area in stride-4 cells is not above its level's instance stride
    (`sum_masks > strides`): the square covers 3 x 3 = 9 cells, so stride 8 keeps it and stride 9 drops it;
    without strides only empty masks go."""
    out = _outputs({(1, 2): 2.0})
    assert len(predict(out, (32, 32), SoloInferenceParams(), strides=[8])[0]["scores"]) == 1
    assert len(predict(out, (32, 32), SoloInferenceParams(), strides=[9])[0]["scores"]) == 0
    assert len(predict(out, (32, 32), SoloInferenceParams())[0]["scores"]) == 1
    with pytest.raises(ValueError, match="2 strides for 1 levels"):
        predict(out, (32, 32), SoloInferenceParams(), strides=[8, 8])


def test_nms_pre_cuts_by_the_final_score_after_maskness():
    """Cell A (0, 0): category sig(1) = 0.731 on the square of logit 3 (maskness sig(3) = 0.953): score 0.696.
    Cell B (3, 3): category sig(1.5) = 0.818 on another 3 x 3 square (channel 1, rows 5..7, cols 0..2) of
    logit 0.5 (maskness sig(0.5) = 0.622): score 0.509. nms_pre 1 keeps A, as the reference cuts after
    maskness; a cut by category score alone (the old order) would have kept B."""
    out = _outputs({(0, 0): 1.0, (3, 3): 1.5})
    out["kernel"][0][0, :, 3, 3] = torch.tensor([0.0, 1.0])
    out["mask_feat"][0, 1, 5:8, 0:3] = 0.5
    (res,) = predict(out, (32, 32), SoloInferenceParams(nms_pre=1))
    assert len(res["scores"]) == 1 and np.array_equal(res["masks"][0], _square())
    assert res["scores"][0] == pytest.approx(sig(1.0) * sig(3.0), rel=1e-5)
    (both,) = predict(out, (32, 32), SoloInferenceParams())
    assert both["scores"] == pytest.approx([sig(1.0) * sig(3.0), sig(1.5) * sig(0.5)], rel=1e-5)
