"""Binary mask utilities: COCO xywh boxes, bit packing of box crops, and COCO RLE.

The mask store's bit packing of the box crop is pack_mask_delta: rows XORed with the row above, stored byte
column by byte column (see its docstring; plain np.packbits was about 40% larger after zstd).

Conventions (DESIGN.md "Contracts between stages"): masks are numpy bool arrays (N, H, W) or (H, W); boxes are
COCO xywh in pixels, x = first column, y = first row, w and h count pixels (a one-pixel mask has w = h = 1).
An empty mask has the box (0, 0, 0, 0).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["boxes_xywh", "pack_mask_delta", "unpack_mask_delta", "delta_nbytes",
           "encode_rle", "encode_rles", "decode_rle", "mask_areas"]


def _as_bool_stack(masks: np.ndarray, name: str = "masks") -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W), got shape {masks.shape}")
    return masks.astype(bool, copy=False)


def boxes_xywh(masks: np.ndarray) -> np.ndarray:
    """COCO boxes of binary masks.

    masks: (N, H, W) bool. Returns float32 (N, 4) as (x, y, w, h) with x = min column, y = min row,
    w = max column - min column + 1, h = max row - min row + 1; an empty mask gives zeros.
    """
    masks = _as_bool_stack(masks)
    n = masks.shape[0]
    cols = masks.any(axis=1)  # (N, W)
    rows = masks.any(axis=2)  # (N, H)
    nonempty = cols.any(axis=1)  # (N,)
    # argmax finds the first True; on the reversed array it finds the last one.
    x0 = cols.argmax(axis=1)
    x1 = cols.shape[1] - 1 - cols[:, ::-1].argmax(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = rows.shape[1] - 1 - rows[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1).astype(np.float32)  # (N, 4)
    boxes[~nonempty] = 0.0
    return boxes.reshape(n, 4)


def mask_areas(masks: np.ndarray) -> np.ndarray:
    """Pixel counts (N,) int64 of (N, H, W) masks."""
    return _as_bool_stack(masks).sum(axis=(1, 2), dtype=np.int64)


def delta_nbytes(w: int, h: int) -> int:
    """Bytes of pack_mask_delta's output for a w x h crop: h rows of ceil(w / 8) bytes."""
    return int(h) * ((int(w) + 7) // 8)


def pack_mask_delta(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Bit-pack the box-cropped mask with each row XORed with the row above, bytes in column-major order.

    mask: (H, W) bool. Returns (bits, box): bits is uint8 1-D of delta_nbytes(w, h) bytes, box is (x, y, w, h)
    ints; an empty mask gives (empty bits, (0, 0, 0, 0)). Each crop row is packed on its own (padded to whole
    bytes), row r > 0 is replaced by row r XOR row r - 1, and the (h, ceil(w / 8)) byte matrix is written
    column by column. Why: coarse masks are smooth blobs, so consecutive rows are nearly equal and the XOR is
    zero except where the outline moves; column-major order puts those zeros in long runs, and zstd over a
    chunk of such crops stores smooth masks about half as big as plain packbits (measured in bench/store.py).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    box = boxes_xywh(mask[None])[0].astype(np.int64)
    x, y, w, h = (int(v) for v in box)
    if w == 0:
        return np.zeros(0, dtype=np.uint8), (0, 0, 0, 0)
    rows = np.packbits(mask[y : y + h, x : x + w].astype(bool), axis=1)  # (h, ceil(w/8))
    rows[1:] ^= rows[:-1].copy()
    return np.ascontiguousarray(rows.T).reshape(-1), (x, y, w, h)


def unpack_mask_delta(bits: np.ndarray, box, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of pack_mask_delta: (H, W) bool with the crop placed at its box.

    out: an (H, W) bool array to write the crop into (its pixels outside the box are left as they are);
    a new zero array when None. Returns out.
    """
    x, y, w, h = (int(round(float(v))) for v in box)
    if out is None:
        out = np.zeros((int(height), int(width)), dtype=bool)
    elif out.shape != (int(height), int(width)) or out.dtype != bool:
        raise ValueError(f"out must be bool ({height}, {width}), got {out.dtype} {out.shape}")
    if w == 0 or h == 0:
        return out
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"box {(x, y, w, h)} lies outside an image of {height}x{width}")
    bits = np.asarray(bits, dtype=np.uint8)
    if bits.size != delta_nbytes(w, h):
        raise ValueError(f"box {(x, y, w, h)} needs {delta_nbytes(w, h)} packed bytes, got {bits.size}")
    wb = (w + 7) // 8
    # Rows padded to whole 8-byte words, so the running XOR down the rows (undoing the row XOR) runs on
    # uint64 lanes: XOR acts on each byte alone, so it is the same result, ~2x faster than on bytes.
    rows = np.zeros((h, -(-wb // 8) * 8), dtype=np.uint8)  # (h, ceil(wb/8)*8)
    rows[:, :wb] = bits.reshape(wb, h).T
    lanes = rows.view(np.uint64)  # (h, ceil(wb/8))
    np.bitwise_xor.accumulate(lanes, axis=0, out=lanes)
    out[y : y + h, x : x + w] = np.unpackbits(rows, axis=1, count=w).view(bool)
    return out


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of an (H, W) mask, counts decoded to str so the dict is JSON-ready.

    pycocotools needs a Fortran-ordered uint8 array and returns counts as bytes (DESIGN.md, known traps).
    """
    from pycocotools import mask as mask_util

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = rle["counts"]
    counts = counts.decode("ascii") if isinstance(counts, bytes) else counts
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


def encode_rles(masks: np.ndarray) -> list[dict]:
    """encode_rle of each (H, W) slice of (N, H, W) masks, in one pycocotools call."""
    from pycocotools import mask as mask_util

    masks = _as_bool_stack(masks)
    if masks.shape[0] == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))  # (H, W, N)
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def decode_rle(rle: dict) -> np.ndarray:
    """(H, W) bool from a COCO RLE dict (counts as str or bytes)."""
    from pycocotools import mask as mask_util

    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE, as in some COCO ground truth
        h, w = rle["size"]
        rle = mask_util.frPyObjects(rle, h, w)
    else:
        rle = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_util.decode(rle).astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every mask of a (N, H, W) with every mask of b (M, H, W) -> (N, M) float64 (0 where both empty)."""
    fa = a.reshape(a.shape[0], -1).astype(np.float32)  # (N, HW)
    fb = b.reshape(b.shape[0], -1).astype(np.float32)  # (M, HW)
    # Pixel counts are exact in float32 below 2^24 pixels; the ratio is taken in float64.
    inter = (fa @ fb.T).astype(np.float64)  # (N, M)
    union = fa.sum(1, dtype=np.float64)[:, None] + fb.sum(1, dtype=np.float64)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def components(mask: np.ndarray) -> int:
    """8-connected components of a (H, W) bool mask (0 for an empty one)."""
    n, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return int(n) - 1


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a (H, W) bool mask (ties: the lowest label, i.e. the first in
    raster order); an empty mask stays empty."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask.astype(bool, copy=True)
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == keep
