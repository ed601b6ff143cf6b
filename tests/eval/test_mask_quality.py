"""Coarse-mask quality figures (maskless.eval.mask_quality), each worked out by hand on tiny masks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from maskless.eval.mask_quality import image_quality, mask_quality, quality_markdown, summarize
from maskless.ops.masks import components, largest_component
from maskless.store import ImageMasks, build_index
from maskless.store_writer import write_shard


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_components_and_largest_component():
    m = _box(8, 8, 0, 2, 0, 2) | _box(8, 8, 4, 7, 4, 7)  # 4 px and 9 px, apart
    assert components(m) == 2 and components(np.zeros((8, 8), bool)) == 0
    assert components(_box(8, 8, 0, 1, 0, 1) | _box(8, 8, 1, 2, 1, 2)) == 1  # diagonal: 8-connected
    assert (largest_component(m) == _box(8, 8, 4, 7, 4, 7)).all()
    assert not largest_component(np.zeros((4, 4), bool)).any()


def test_image_quality_by_hand():
    h = w = 10
    obj_a, obj_b = _box(h, w, 0, 4, 0, 4), _box(h, w, 6, 10, 6, 10)  # 16 px each, boxes 4 x 4
    # Mask 1: obj_a exactly (IoU 1). Mask 2: obj_b plus a 2 x 2 blob at rows 0-1, cols 8-9 -> 2 components,
    # IoU 16/20 = 0.8, box rows 0..9 x cols 6..9 = 40 px over obj_b's 16 -> inflation 2.5; centre of mass
    # y (16*7.5 + 4*0.5)/20 = 6.1 -> 6, x (16*7.5 + 4*8.5)/20 = 7.7 -> 8: inside obj_b. Mask 3: a copy of
    # obj_a arriving second: overlaps a (IoU 1) but a is taken, so it is unmatched. Mask 4: an L along row 5
    # and column 5, touching no object.
    blob = _box(h, w, 0, 2, 0, 2) & ~obj_a | _box(h, w, 0, 2, 8, 10)  # only the (0..1, 8..9) square
    m2 = obj_b | blob
    m4 = _box(h, w, 5, 6, 5, 10) | _box(h, w, 5, 10, 5, 6)  # row 5 and column 5 from (5, 5): 9 px
    masks = np.stack([obj_a, m2, obj_a, m4])
    q = image_quality(masks, np.stack([obj_a, obj_b]))
    assert (q["masks"], q["objects"], q["matched"]) == (4, 2, 2)
    assert (q["nonempty"], q["components"], q["fragmented"]) == (4, 5, 1)
    # m4: overlaps nothing of obj_b (rows/cols 5 lie outside 6..9) -> not overlapping.
    assert q["overlapping"] == 3 and q["centre_outside"] == 0
    assert q["inflation"] == pytest.approx([1.0, 40 / 16, 1.0])
    s = summarize([q, image_quality(np.zeros((0, h, w), bool), np.stack([obj_a]))])
    assert s["precision50"] == pytest.approx(50.0) and s["recall50"] == pytest.approx(200 / 3)
    assert s["masks_per_object"] == pytest.approx(4 / 3) and s["components"] == pytest.approx(5 / 4)
    assert s["fragmented"] == pytest.approx(25.0) and s["box_inflation"] == pytest.approx(1.0)
    assert s["centre_outside"] == 0.0


def test_centre_outside_counts_a_ring():
    h = w = 9
    obj = _box(h, w, 0, 9, 0, 9) & ~_box(h, w, 3, 6, 3, 6)  # a ring: its own centre is a hole
    q = image_quality(obj[None], obj[None])
    assert q["centre_outside"] == 1 and q["overlapping"] == 1 and q["matched"] == 1


def test_mask_quality_over_an_index(tmp_path):
    h = w = 10
    obj = _box(h, w, 2, 6, 2, 6)
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": h, "width": w},
                     {"id": 2, "file_name": "b.png", "height": h, "width": w}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16.0,
                           "bbox": [2, 2, 4, 4], "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]},
                          {"id": 2, "image_id": 2, "category_id": 1, "iscrowd": 1, "area": 16.0,
                           "bbox": [2, 2, 4, 4], "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]}],
          "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    write_shard(str(tmp_path / "0.zarr"), [ImageMasks(1, h, w, obj[None], np.ones(1)),
                                          ImageMasks(2, h, w, obj[None], np.ones(1))], embedding_dim=2)
    build_index([str(tmp_path / "0.zarr")], str(tmp_path / "index.parquet"))
    row = mask_quality(tmp_path / "index.parquet", tmp_path / "gt.json")
    # The polygon rasterises to the 4 x 4 box; the crowd object of image 2 is not an object.
    assert (row["masks"], row["objects"]) == (2, 1)
    assert row["precision50"] == 50.0 and row["recall50"] == 100.0 and row["box_inflation"] == 1.0
    text = quality_markdown({"freemask": row})
    assert text.splitlines()[2].startswith("| freemask | 2 | 1 | 50.00 | 100.00 | 2.00 | 1.00 | 0.00 |")
    assert math.isnan(summarize([])["precision50"])
