"""A tiny PASCAL VOC 2012 + SBD tree for tests (and for `snakemake -n` on configs/voc.yaml):

<root>/VOCdevkit/VOC2012/JPEGImages/<stem>.jpg
<root>/VOCdevkit/VOC2012/SegmentationClassAug/<stem>.png       grey index PNGs, or palette PNGs (palette=True)
<root>/VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt  stems
<root>/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt

Run as a script to write one: python tests/pct/fake_voc.py /tmp/fakevoc
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
HEIGHT, WIDTH = 40, 48

# stem -> (list, rectangles (class, y0, y1, x0, x1) painted in order, a 255 border around each, palette PNG)
DEFAULT_SPEC = {
    "2007_000032": ("train", [(1, 4, 20, 4, 30), (15, 22, 38, 10, 40)], False),
    "2007_000039": ("train", [(15, 10, 30, 10, 30)], True),
    "2007_000063": ("train", [], False),
    "2008_000002": ("train", [(7, 5, 35, 5, 25), (8, 5, 35, 30, 45)], False),
    "2008_000003": ("train", [(12, 8, 30, 8, 40)], False),
    "2009_000001": ("train", [(1, 2, 12, 2, 12), (15, 20, 36, 20, 44)], False),
    "2007_000033": ("val", [(1, 6, 34, 6, 42)], False),
    "2007_000042": ("val", [(15, 4, 36, 12, 36), (7, 30, 38, 2, 10)], True),
}


def voc_palette() -> np.ndarray:
    """(256, 3) uint8: the PASCAL VOC colour map (bit-interleaved index)."""
    out = np.zeros((256, 3), np.uint8)
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_palette_png(path, index: np.ndarray, palette: np.ndarray | None = None) -> None:
    """An 8-bit palette PNG (colour type 3) of an (H, W) uint8 index map, as VOC's SegmentationClass."""
    index = np.asarray(index, np.uint8)
    palette = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    h, w = index.shape
    raw = b"".join(b"\x00" + index[r].tobytes() for r in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + _chunk(b"PLTE", palette.reshape(-1).tobytes()) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))
    Path(path).write_bytes(data)


def label_map(rects) -> np.ndarray:
    lab = np.zeros((HEIGHT, WIDTH), np.uint8)
    for c, y0, y1, x0, x1 in rects:
        lab[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = 255  # VOC's ignored object border
        lab[y0:y1, x0:x1] = c
    return lab


def make_fake_voc(root, spec: dict | None = None, seed: int = 0) -> dict:
    """Write the tree; returns its paths (voc, images, labels, train_list, val_list) and the label maps."""
    spec = DEFAULT_SPEC if spec is None else spec
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    images, labels, sets = voc / "JPEGImages", voc / "SegmentationClassAug", voc / "ImageSets" / "Segmentation"
    for d in (images, labels, sets):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    maps, lists = {}, {"train": [], "val": []}
    for stem, (which, rects, palette) in spec.items():
        lab = label_map(rects)
        img = rng.integers(0, 80, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        for c, y0, y1, x0, x1 in rects:
            img[y0:y1, x0:x1] = (40 + 10 * c, 200 - 8 * c, 120)
        assert cv2.imwrite(str(images / f"{stem}.jpg"), img)
        if palette:
            write_palette_png(labels / f"{stem}.png", lab)
        else:
            assert cv2.imwrite(str(labels / f"{stem}.png"), lab)
        maps[stem] = lab
        lists[which].append(stem)
    (sets / "train_aug.txt").write_text("".join(f"{s}\n" for s in lists["train"]))
    (sets / "val.txt").write_text("".join(f"{s}\n" for s in lists["val"]))
    return {"voc": voc, "images": images, "labels": labels, "train_list": sets / "train_aug.txt",
            "val_list": sets / "val.txt", "maps": maps, "lists": lists}


if __name__ == "__main__":
    out = make_fake_voc(sys.argv[1])
    print(out["voc"])
