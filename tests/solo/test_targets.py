"""SOLOv2 target assignment against cells worked out by hand (maskless/solo/targets.py conventions).

Rule used in every docstring below: pixel rows/cols a..b (inclusive) have centre of mass (a + b + 1) / 2 in
continuous coordinates; on an H-pixel image with an S-cell grid the cell of coordinate c is
floor(c / H * S); the centre region is centre +- 0.2 * box / 2, clamped to the centre cell +- 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskless.solo.targets import SoloGeometry, assign_targets, downsample_masks


def geometry(grids=(4,), ranges=((1, 2048),)) -> SoloGeometry:
    return SoloGeometry(grids=grids, strides=(8,) * len(grids), scale_ranges=ranges, sigma=0.2, mask_stride=4)


def squares(hw, *boxes) -> torch.Tensor:
    """(N, H, W) bool with a filled rectangle (r0, r1, c0, c1) inclusive per mask."""
    m = torch.zeros(len(boxes), *hw, dtype=torch.bool)
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        m[i, r0 : r1 + 1, c0 : c1 + 1] = True
    return m


def positives(ins: torch.Tensor, grid: int) -> dict[tuple[int, int], int]:
    return {(int(c) // grid, int(c) % grid): int(ins[c]) for c in (ins >= 0).nonzero().flatten()}


def test_one_small_square_one_cell():
    """64x64, grid 4 (16 px cells), square rows/cols 20..27: centre 24 -> cell 1; half = 0.2 * 8 / 2 = 0.8,
    [23.2, 24.8] -> cell 1 only. One positive, cell (1, 1) = flat index 5. Mask target at stride 4: blocks
    5..6 fully covered."""
    t = assign_targets(squares((64, 64), (20, 27, 20, 27)), geometry())
    assert positives(t.instance[0], 4) == {(1, 1): 0}
    assert t.labels[0].tolist() == [1.0 if i == 5 else 0.0 for i in range(16)]
    expected = torch.zeros(16, 16)
    expected[5:7, 5:7] = 1
    assert torch.equal(t.mask_targets[0], expected)
    assert t.num_pos == 1 and (t.num_empty, t.num_unassigned) == (0, 0)


def test_large_square_centre_region_clamped_to_3x3():
    """grid 16 (4 px cells), square 8..55 (48 px): centre 32 -> cell 8; half = 4.8, [27.2, 36.8] -> cells
    6..9, clamped to 8 +- 1 = 7..9: the 3x3 block rows/cols 7..9."""
    t = assign_targets(squares((64, 64), (8, 55, 8, 55)), geometry(grids=(16,)))
    assert set(positives(t.instance[0], 16)) == {(r, c) for r in (7, 8, 9) for c in (7, 8, 9)}


def test_levels_by_scale_and_an_instance_in_two_levels():
    """grids (8, 4) = 8 and 16 px cells, ranges (1, 16) and (8, 64).
    A rows/cols 4..7 (scale 4, level 0 only): centre 6 -> cell 0, half 0.4 -> level 0 cell (0, 0).
    B rows/cols 32..63 (scale 32, level 1 only): centre 48 -> 48/16 = 3; half 3.2, [44.8, 51.2] -> 2..3:
      level 1 cells rows/cols 2..3.
    C rows 0..11, cols 40..51 (scale 12, both levels): centre (6, 46); level 0: row 0, col 46/8 -> 5,
      [44.8, 47.2]/8 -> 5: cell (0, 5); level 1: row 0, col 46/16 -> 2, [44.8, 47.2]/16 -> 2: cell (0, 2)."""
    masks = squares((64, 64), (4, 7, 4, 7), (32, 63, 32, 63), (0, 11, 40, 51))
    t = assign_targets(masks, geometry(grids=(8, 4), ranges=((1, 16), (8, 64))))
    assert positives(t.instance[0], 8) == {(0, 0): 0, (0, 5): 2}
    assert positives(t.instance[1], 4) == {(2, 2): 1, (2, 3): 1, (3, 2): 1, (3, 3): 1, (0, 2): 2}
    assert [lab.sum().item() for lab in t.labels] == [2.0, 5.0]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_smaller_instance_wins_a_shared_cell_whatever_the_input_order(order):
    """grid 4: big square 0..47 (centre 24 -> cell 1, half 4.8 -> [19.2, 28.8] -> cell 1) and small square
    20..27 (cell 1) both claim cell (1, 1). Descending-area painting: the small one wins."""
    boxes = [(0, 47, 0, 47), (20, 27, 20, 27)]
    masks = squares((64, 64), *[boxes[i] for i in order])
    t = assign_targets(masks, geometry())
    small = order.index(1)
    assert positives(t.instance[0], 4) == {(1, 1): small}


def test_no_instances_gives_all_background():
    g = geometry(grids=(8, 4), ranges=((1, 16), (8, 64)))
    t = assign_targets(torch.zeros(0, 64, 48, dtype=torch.bool), g)
    assert [lab.sum().item() for lab in t.labels] == [0.0, 0.0]
    assert all((ins == -1).all() for ins in t.instance)
    assert [len(lab) for lab in t.labels] == [64, 16]
    assert t.mask_targets.shape == (0, 16, 12) and t.num_pos == 0


def test_one_pixel_instance_and_an_empty_mask():
    """Pixel (10, 37) on 64x64, grid 16: centre (10.5, 37.5) -> cell (2, 9) = flat 41; scale 1 is inside
    (1, 2048). At stride 4 it covers 1/16 of block (2, 9) < 0.5, so the any-pixel fallback keeps that block.
    The empty mask is skipped and counted."""
    m = torch.zeros(2, 64, 64, dtype=torch.bool)
    m[1, 10, 37] = True
    t = assign_targets(m, geometry(grids=(16,)))
    assert positives(t.instance[0], 16) == {(2, 9): 1}
    assert t.num_empty == 1 and t.num_unassigned == 0
    assert t.mask_targets[1].nonzero().tolist() == [[2, 9]]
    assert t.mask_targets[0].sum() == 0


def test_instance_outside_every_range_is_counted():
    t = assign_targets(squares((64, 64), (0, 7, 0, 7)), geometry(ranges=((1, 4),)))
    assert t.num_pos == 0 and t.num_unassigned == 1


def test_downsample_masks_area_threshold_on_odd_size():
    """10x10 -> ceil(10/4) = 3x3 blocks. Block (0, 0) gets 8 of 16 pixels (= 0.5, kept); block (0, 1) gets 7
    (< 0.5, dropped); the bottom-right block holds only 2x2 real pixels of its 16, all set: 4/16, dropped."""
    m = torch.zeros(1, 10, 10, dtype=torch.bool)
    m[0, 0:2, 0:4] = True  # 8 pixels in block (0, 0)
    m[0, 0:2, 4:7] = True  # 6 pixels in block (0, 1)
    m[0, 2, 4] = True  # 7th
    m[0, 8:10, 8:10] = True
    out = downsample_masks(m, 4)
    assert out.shape == (1, 3, 3)
    assert out[0].nonzero().tolist() == [[0, 0]]


def test_embeddings_image_hw_and_numpy_input():
    masks = squares((64, 64), (20, 27, 20, 27)).numpy()
    emb = torch.arange(6.0).reshape(1, 6)
    t = assign_targets(masks, geometry(), embeddings=emb, image_hw=(50, 61))
    assert torch.equal(t.embeddings, emb)
    assert t.valid_hw == (13, 16) and t.image_hw == (64, 64)  # ceil(50 / 4), ceil(61 / 4)


def test_bad_inputs_raise_clear_errors():
    g = geometry()
    with pytest.raises(ValueError, match="bool"):
        assign_targets(torch.zeros(1, 8, 8), g)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        assign_targets(torch.zeros(8, 8, dtype=torch.bool), g)
    with pytest.raises(ValueError, match="embeddings"):
        assign_targets(np.zeros((2, 8, 8), bool), g, embeddings=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="image_hw"):
        assign_targets(np.zeros((1, 8, 8), bool), g, image_hw=(9, 8))


def test_geometry_validation_and_presets():
    with pytest.raises(ValueError, match="one entry per level"):
        SoloGeometry(grids=(24, 16), strides=(8, 16, 32), scale_ranges=((1, 48), (24, 96)))
    with pytest.raises(ValueError, match="lower <= upper"):
        SoloGeometry(grids=(4,), strides=(8,), scale_ranges=((10, 5),))
    ref = SoloGeometry.reference()
    assert ref.grids == (40, 36, 24, 16, 12) and ref.num_levels == 5 and ref.mask_stride == 4
    small = SoloGeometry.small()
    assert small.grids == (24, 16, 12) and small.strides == (8, 16, 32)
    # a whole-image instance of a 320 px image still has a level
    t = assign_targets(torch.ones(1, 320, 320, dtype=torch.bool), small)
    assert t.num_pos > 0 and t.labels[2].sum() > 0
