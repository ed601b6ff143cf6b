"""Mask utilities: boxes, bit packing and RLE, checked on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from maskless.ops.masks import boxes_xywh, decode_rle, encode_rle, encode_rles, pack_mask, unpack_mask


def test_boxes_hand_example():
    """Mask 0: one pixel at row 2, col 3 -> (3, 2, 1, 1). Mask 1: rows 1-3, cols 0-4 (an L shape) ->
    (0, 1, 5, 3). Mask 2: empty -> zeros. Mask 3: the whole 5x6 image -> (0, 0, 6, 5)."""
    m = np.zeros((4, 5, 6), dtype=bool)
    m[0, 2, 3] = True
    m[1, 1, 0:5] = True
    m[1, 1:4, 0] = True
    m[3] = True
    boxes = boxes_xywh(m)
    assert boxes.dtype == np.float32
    assert boxes.tolist() == [[3, 2, 1, 1], [0, 1, 5, 3], [0, 0, 0, 0], [0, 0, 6, 5]]
    assert boxes_xywh(np.zeros((0, 5, 6), bool)).shape == (0, 4)


@pytest.mark.parametrize("kind", ["empty", "full", "pixel", "random", "corner"])
def test_pack_unpack_round_trip(kind):
    rng = np.random.default_rng(1)
    h, w = 13, 17
    m = np.zeros((h, w), bool)
    if kind == "full":
        m[:] = True
    elif kind == "pixel":
        m[12, 16] = True
    elif kind == "random":
        m = rng.random((h, w)) > 0.6
    elif kind == "corner":
        m[9:, 11:] = rng.random((4, 6)) > 0.3
        m[9, 11] = m[12, 16] = True
    bits, box = pack_mask(m)
    assert bits.dtype == np.uint8 and bits.ndim == 1
    expected_box = {"empty": (0, 0, 0, 0), "full": (0, 0, w, h), "pixel": (16, 12, 1, 1), "corner": (11, 9, 6, 4)}
    if kind in expected_box:
        assert box == expected_box[kind]
    assert bits.size == (box[2] * box[3] + 7) // 8  # crop only: 1 pixel -> 1 byte, empty -> 0 bytes
    assert np.array_equal(unpack_mask(bits, box, h, w), m)


def test_unpack_rejects_inconsistent_input():
    bits, box = pack_mask(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="packed bytes"):
        unpack_mask(bits[:1], box, 4, 4)
    with pytest.raises(ValueError, match="outside"):
        unpack_mask(bits, (2, 2, 4, 4), 4, 4)


def test_rle_round_trip_and_json_ready():
    """A 3x4 mask: column 0 on and pixel (1, 2). Column-major it reads 111 000 010 000, so its uncompressed
    runs are 0 zeros, 3 ones, 4 zeros, 1 one, 4 zeros."""
    m = np.zeros((3, 4), bool)
    m[:, 0] = True
    m[1, 2] = True
    rle = encode_rle(m)
    assert rle["size"] == [3, 4] and isinstance(rle["counts"], str)
    assert np.array_equal(decode_rle(rle), m)
    many = encode_rles(np.stack([m, ~m, np.zeros_like(m)]))
    assert [r["counts"] for r in many][0] == rle["counts"]
    assert np.array_equal(decode_rle(many[1]), ~m) and not decode_rle(many[2]).any()
    assert encode_rles(np.zeros((0, 3, 4), bool)) == []
    # uncompressed (list) counts, as in some COCO ground truth
    assert np.array_equal(decode_rle({"size": [3, 4], "counts": [0, 3, 4, 1, 4]}), m)
