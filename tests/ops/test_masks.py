"""Mask utilities: boxes, bit packing and RLE, checked on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from maskless.ops.masks import (
    boxes_xywh,
    decode_rle,
    delta_nbytes,
    encode_rle,
    encode_rles,
    pack_mask_delta,
    unpack_mask_delta,
)


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


def test_delta_packing_hand_example():
    """A 3x10 crop at (x=1, y=2) of a 5x12 image: row 0 all on, row 1 all on, row 2 only its two ends.
    Packed rows (2 bytes each): FF C0 / FF C0 / 80 40. XOR with the row above: FF C0 / 00 00 / 7F 80.
    Column-major bytes: FF 00 7F, then C0 00 80."""
    m = np.zeros((5, 12), bool)
    m[2:4, 1:11] = True
    m[4, 1] = m[4, 10] = True
    bits, box = pack_mask_delta(m)
    assert box == (1, 2, 10, 3) and delta_nbytes(10, 3) == 6
    assert bits.tolist() == [0xFF, 0x00, 0x7F, 0xC0, 0x00, 0x80]
    assert np.array_equal(unpack_mask_delta(bits, box, 5, 12), m)


def test_delta_packing_edge_cases():
    """Empty -> no bytes and box zeros; one pixel -> one byte 0x80; the full 5x12 image -> rows FF F0, so
    after the XOR only row 0 is non-zero: column-major FF 00 00 00 00 F0 00 00 00 00."""
    empty = np.zeros((5, 12), bool)
    bits, box = pack_mask_delta(empty)
    assert bits.size == 0 and box == (0, 0, 0, 0) and not unpack_mask_delta(bits, box, 5, 12).any()
    pixel = empty.copy()
    pixel[4, 11] = True
    bits, box = pack_mask_delta(pixel)
    assert bits.tolist() == [0x80] and box == (11, 4, 1, 1)
    assert np.array_equal(unpack_mask_delta(bits, box, 5, 12), pixel)
    bits, box = pack_mask_delta(np.ones((5, 12), bool))
    assert box == (0, 0, 12, 5) and bits.tolist() == [0xFF, 0, 0, 0, 0, 0xF0, 0, 0, 0, 0]
    assert unpack_mask_delta(bits, box, 5, 12).all()


@pytest.mark.parametrize("w", [1, 7, 8, 9, 63, 64, 65, 130])
def test_delta_packing_round_trip_across_word_widths(w):
    """Random and smooth crops whose byte rows are shorter than, equal to and longer than the decoder's
    8-byte words; out= keeps the pixels outside the box."""
    rng = np.random.default_rng(w)
    h = 11
    noisy = np.zeros((h + 2, w + 3), bool)
    noisy[1 : h + 1, 2 : w + 2] = rng.random((h, w)) > 0.5
    noisy[1, 2] = noisy[h, w + 1] = True
    yy, xx = np.mgrid[0 : h + 2, 0 : w + 3]
    disc = (yy - h / 2) ** 2 / (h / 2) ** 2 + (xx - w / 2) ** 2 / max(w / 2, 1) ** 2 < 0.8
    for m in (noisy, disc):
        bits, box = pack_mask_delta(m)
        assert bits.size == delta_nbytes(box[2], box[3])
        assert np.array_equal(unpack_mask_delta(bits, box, *m.shape), m)
        out = np.zeros(m.shape, bool)
        out[0, 0] = True  # outside both boxes
        unpack_mask_delta(bits, box, *m.shape, out=out)
        assert out[0, 0] and np.array_equal(out[1:, 1:], m[1:, 1:])


def test_unpack_delta_rejects_inconsistent_input():
    bits, box = pack_mask_delta(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="needs 4 packed bytes, got 3"):
        unpack_mask_delta(bits[:3], box, 4, 4)
    with pytest.raises(ValueError, match="outside"):
        unpack_mask_delta(bits, (2, 2, 4, 4), 4, 4)
    with pytest.raises(ValueError, match="out must be bool"):
        unpack_mask_delta(bits, box, 4, 4, out=np.zeros((4, 5), bool))


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
