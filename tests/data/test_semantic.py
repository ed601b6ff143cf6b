"""Ground-truth label maps: synthetic semantic PNGs, COCO instances, user PNGs; resizing and range checks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from maskless.data.semantic import (category_index, coco_labels, num_classes, png_labels, read_label_png,
                                    resize_labels, square_crop_geometry, square_labels, stack_labels,
                                    synthetic_labels)
from maskless.data.synthetic import SyntheticParams, generate


def test_synthetic_labels_equal_the_generator_pngs(tmp_path):
    """Ids 1..4 of the generator are already contiguous, so the maps equal the PNG pixels exactly."""
    generate(str(tmp_path), SyntheticParams(num_images=2, height=32, width=40, seed=3))
    names = ["000001.png", "000002.png"]
    labels = synthetic_labels(tmp_path, names)
    for name, lab in zip(names, labels):
        raw = cv2.imread(str(tmp_path / "semantic" / name), cv2.IMREAD_UNCHANGED)
        assert lab.dtype == np.int64 and lab.shape == (32, 40)
        np.testing.assert_array_equal(lab, raw)
    assert num_classes(tmp_path / "instances.json") == 5
    small = synthetic_labels(tmp_path, names, size=(16, 20))
    np.testing.assert_array_equal(small[0], labels[0][::2, ::2])  # nearest at exact factor 2 picks even pixels


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_png_labels_range_and_ignore(tmp_path):
    good = np.array([[0, 1], [2, 255]], np.uint8)
    _write_png(tmp_path / "m" / "a.png", good)
    _write_png(tmp_path / "m" / "b.png", np.array([[0, 3]], np.uint8))
    (lab,) = png_labels(tmp_path / "m", ["a.jpg"], n_classes=3)  # mask found by the image's stem
    np.testing.assert_array_equal(lab, good)
    with pytest.raises(ValueError, match=r"b\.png.*\[3\]"):
        png_labels(tmp_path / "m", ["b.jpg"], n_classes=3)
    with pytest.raises(ValueError, match="c.png not found"):
        png_labels(tmp_path / "m", ["c.jpg"], n_classes=3)


def test_colour_png_is_rejected(tmp_path):
    _write_png(tmp_path / "c.png", np.array([[[0, 0, 255]]], np.uint8))
    with pytest.raises(ValueError, match="different channels"):
        read_label_png(tmp_path / "c.png", n_classes=3)


def test_id_map_rejects_unknown_ids(tmp_path):
    _write_png(tmp_path / "s.png", np.array([[0, 7, 9]], np.uint8))
    np.testing.assert_array_equal(read_label_png(tmp_path / "s.png", n_classes=3, id_map={7: 1, 9: 2}), [[0, 1, 2]])
    with pytest.raises(ValueError, match=r"ids \[9\]"):
        read_label_png(tmp_path / "s.png", n_classes=3, id_map={7: 1})


def _coco(tmp_path):
    """One 10x10 image. Category ids 3 and 7 -> classes 1 and 2. A large polygon square of category 3 over
    rows/cols 0..5 (area 36), a smaller RLE square of category 7 over rows/cols 4..7 (area 16), listed FIRST
    (so "smaller wins" is not just "later wins"), and a crowd RLE over rows 8..9, cols 0..1, which also
    covers nothing else. Pixel (9, 9) is background."""
    small = np.zeros((10, 10), np.uint8)
    small[4:8, 4:8] = 1
    crowd = np.zeros((10, 10), np.uint8)
    crowd[8:10, 0:2] = 1
    crowd[5, 5] = 1  # a crowd pixel inside both instances: ignored
    rle = mask_utils.encode(np.asfortranarray(small))
    rle["counts"] = rle["counts"].decode()
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    crowd_rle["counts"] = crowd_rle["counts"].decode()
    data = {"images": [{"id": 5, "width": 10, "height": 10, "file_name": "x.jpg"}],
            "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
            "annotations": [
                {"id": 1, "image_id": 5, "category_id": 7, "segmentation": rle, "area": 16, "iscrowd": 0},
                {"id": 2, "image_id": 5, "category_id": 3, "area": 36, "iscrowd": 0,
                 "segmentation": [[0, 0, 6, 0, 6, 6, 0, 6]]},
                {"id": 3, "image_id": 5, "category_id": 3, "segmentation": crowd_rle, "area": 5, "iscrowd": 1}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_labels_by_hand(tmp_path):
    path = _coco(tmp_path)
    assert category_index(json.loads(path.read_text())["categories"]) == {3: 1, 7: 2}
    assert num_classes(path) == 3
    (lab,) = coco_labels(path, [5])
    assert lab[0, 0] == 1 and lab[2, 2] == 1  # large square only
    assert lab[4, 4] == 2 and lab[6, 6] == 2  # overlap and small-only pixels: the smaller instance
    assert lab[5, 5] == 255  # crowd wins over both instances
    assert (lab[8:10, 0:2] == 255).all()
    assert lab[9, 9] == 0 and lab[0, 9] == 0
    (small,) = coco_labels(path, [5], size=(5, 5))
    assert small.shape == (5, 5)


def test_coco_errors(tmp_path):
    path = _coco(tmp_path)
    with pytest.raises(ValueError, match="image id 6 not found"):
        coco_labels(path, [6])
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    with pytest.raises(ValueError, match="annotation 1 of image 5 has category_id 99"):
        coco_labels(data, [5])


def test_coco_tiny_labels(coco_tiny):
    """Real annotations: every map has the image's size, ids in [0, 81) or 255."""
    data = json.loads((coco_tiny / "instances.json").read_text())
    ids = [im["id"] for im in data["images"][:10]]
    labels = coco_labels(data, ids)
    n = num_classes(data)
    assert n == 81
    for im, lab in zip(data["images"][:10], labels):
        assert lab.shape == (im["height"], im["width"])
        assert ((lab >= 0) & (lab < n) | (lab == 255)).all()


def test_resize_square_and_stack():
    lab = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(resize_labels(lab, (3, 4)), lab)
    assert square_crop_geometry(30, 60, 10) == ((10, 20), (0, 5))
    sq = square_labels(np.repeat(np.arange(6)[None], 3, 0), 3)  # (3, 6): keep the 3 middle columns
    np.testing.assert_array_equal(sq, [[1, 2, 3]] * 3)
    assert stack_labels([lab, lab]).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="differ in size"):
        stack_labels([lab, lab[:2]])
    with pytest.raises(ValueError, match="positive"):
        resize_labels(lab, (0, 4))


def _palette_png(path, index, n_entries):
    """An 8-bit palette PNG whose palette has n_entries colours (all the same red: colours carry no ids)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    h, w = index.shape
    raw = b"".join(b"\x00" + index[r].astype(np.uint8).tobytes() for r in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
                     + chunk(b"PLTE", bytes([200, 0, 0]) * n_entries) + chunk(b"tRNS", b"\x00")
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_palette_png_reads_as_its_indices(tmp_path):
    """VOC's SegmentationClass PNGs: the ids are palette indices. They are read exactly even when every colour
    is the same and the palette is shorter than the indices used (libpng alone would give black for 255)."""
    index = np.array([[0, 1, 15], [255, 20, 0]], np.uint8)
    for n in (256, 21):
        _palette_png(tmp_path / f"p{n}.png", index, n)
        np.testing.assert_array_equal(read_label_png(tmp_path / f"p{n}.png", n_classes=21), index)
    with pytest.raises(ValueError, match=r"p256\.png: class ids \[15, 20\] outside \[0, 3\)"):
        read_label_png(tmp_path / "p256.png", n_classes=3)
    assert cv2.imread(str(tmp_path / "p21.png"), cv2.IMREAD_UNCHANGED).ndim == 3  # what cv2 alone makes of it


def test_ignore_index_is_mapped_to_255(tmp_path):
    _write_png(tmp_path / "m" / "a.png", np.array([[0, 1], [2, 9]], np.uint8))
    (lab,) = png_labels(tmp_path / "m", ["a.jpg"], n_classes=3, ignore_index=9)
    np.testing.assert_array_equal(lab, [[0, 1], [2, 255]])
    _write_png(tmp_path / "m" / "b.png", np.array([[0, 255]], np.uint8))
    with pytest.raises(ValueError, match=r"b\.png: class ids \[255\] outside \[0, 3\) \(ignore = 9\)"):
        read_label_png(tmp_path / "m" / "b.png", n_classes=3, ignore_index=9)


def test_read_image_list(tmp_path):
    """Stems, file names and DeepLab's "<image> <label>" lines; comments and blanks skipped; a repeat is an
    error naming both lines."""
    from maskless.data.semantic import image_stem, read_image_list

    path = tmp_path / "train.txt"
    path.write_text("# VOC\n2007_000032\n\n/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n"
                    "a.b.JPEG\nx.y\n")
    assert read_image_list(path) == ["2007_000032", "2007_000039", "a.b", "x.y"]
    assert image_stem("dir\\2008_1.png") == "2008_1"
    path.write_text("a\nb\na.jpg\n")
    with pytest.raises(ValueError, match=r"train.txt line 3: image 'a' already listed on line 1"):
        read_image_list(path)
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="names no image"):
        read_image_list(path)
    with pytest.raises(ValueError, match="not found"):
        read_image_list(tmp_path / "none.txt")
