"""ingest's guards on its inputs (issue 17): conversion counts, file names inside the images folder, the
image-count check before anything is written, and the fingerprint that makes a changed dataset rerun."""

from __future__ import annotations

import json
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from maskless.config import ConfigError, check_image_count, image_count_checks, validate_config
from maskless.data.coco_json import IngestError
from maskless.data.ingest import ingest, input_fingerprint


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", array)
    assert ok
    path.write_bytes(buf.tobytes())


def _png_with_orientation(path, array, orientation):
    """A PNG with an eXIf chunk (big-endian TIFF, IFD0 holding only tag 0x0112) after IHDR."""
    ok, buf = cv2.imencode(".png", array)
    png = buf.tobytes()
    tiff = (b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    path.write_bytes(png[:33] + chunk + png[33:])


def test_conversions_are_counted_logged_and_written(tmp_path, caplog):
    imgs = tmp_path / "imgs"
    _png(imgs / "a_rgb.png", np.zeros((6, 8, 3), np.uint8))
    _png(imgs / "b_gray.png", np.zeros((6, 8), np.uint8))
    _png(imgs / "c_gray16.png", np.zeros((6, 8), np.uint16))  # grayscale and 16-bit
    _png(imgs / "d_rgba.png", np.zeros((6, 8, 4), np.uint8))
    _png_with_orientation(imgs / "e_rot.png", np.zeros((6, 8, 3), np.uint8), 6)
    caplog.set_level("INFO", logger="maskless.ingest")
    summary = ingest(kind="folder", images=str(imgs), annotations=None, manifest_out=str(tmp_path / "m.parquet"),
                     summary_out=str(tmp_path / "summary.json"))
    want = {"grayscale": 2, "16-bit": 1, "alpha": 1, "exif_orientation": 1}
    assert summary["conversions"] == want
    assert json.loads((tmp_path / "summary.json").read_text())["conversions"] == want
    assert "2 of 5 images: grayscale" in caplog.text and "1 of 5 images: exif_orientation" in caplog.text


@pytest.mark.parametrize("name", ["../outside.png", "sub/../../outside.png", "/abs/outside.png"])
def test_file_name_outside_the_images_folder_is_an_error(tmp_path, name):
    imgs = tmp_path / "imgs"
    _png(imgs / "in.png", np.zeros((6, 8, 3), np.uint8))
    _png(tmp_path / "outside.png", np.zeros((6, 8, 3), np.uint8))  # readable: it must still not be read
    coco = {"images": [{"id": 1, "file_name": "in.png", "width": 8, "height": 6},
                       {"id": 2, "file_name": name, "width": 8, "height": 6}],
            "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    with pytest.raises(IngestError, match="point outside the images folder") as e:
        ingest(kind="coco", images=str(imgs), annotations=str(tmp_path / "ann.json"),
               manifest_out=str(tmp_path / "m.parquet"), on_bad_image="skip")
    assert name in str(e.value)
    assert not (tmp_path / "m.parquet").exists()


def test_file_name_inside_a_subfolder_is_fine(tmp_path):
    imgs = tmp_path / "imgs"
    _png(imgs / "sub" / "in.png", np.zeros((6, 8, 3), np.uint8))
    coco = {"images": [{"id": 1, "file_name": "sub/./in.png", "width": 8, "height": 6}], "annotations": [],
            "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    assert ingest(kind="coco", images=str(imgs), annotations=str(tmp_path / "ann.json"),
                  manifest_out=str(tmp_path / "m.parquet"))["images"] == 1


def test_count_check_runs_before_anything_is_written(tmp_path):
    imgs = tmp_path / "imgs"
    for i in range(3):
        _png(imgs / f"{i}.png", np.zeros((6, 8, 3), np.uint8))
    cfg = validate_config({"dataset": {"kind": "folder", "images": str(imgs)}, "stego": {"knn_k": 3, "train": {"knn_top": 3}}})
    with pytest.raises(ConfigError, match=r"'stego.knn_k' \(3\) needs at least knn_k \+ 1 = 4 images.*has 3"):
        ingest(kind="folder", images=str(imgs), annotations=None, manifest_out=str(tmp_path / "m.parquet"),
               summary_out=str(tmp_path / "s.json"), check_count=lambda n: check_image_count(cfg, n, "imgs"))
    assert not (tmp_path / "m.parquet").exists() and not (tmp_path / "s.json").exists()


def test_image_count_checks_name_each_key():
    cfg = validate_config({"stego": {"knn_k": 7}, "exemplar": {"counts": [2, 8]}, "pct": {"counts": [2]}})
    errors, warnings = image_count_checks(cfg, 4)
    text = "\n".join(errors)
    assert "'stego.knn_k' (7)" in text
    assert "'exemplar.counts': 8 exemplars asked for but the dataset has 4 images" in text
    assert "2 exemplars" not in text
    # 4 images: 1 held out (round(0.25 * 4)), 3 to train; a count of 2 leaves a weak image.
    assert "pct.counts" not in text and not warnings
    errors, _ = image_count_checks(validate_config({"pct": {"counts": [3]}, "stego": {"enabled": False},
                                                    "freemask": {"enabled": False}}), 4)
    assert errors == ["config key 'pct.counts': 3 strong images of 3 training images (4 images less "
                      "pct.eval_fraction held out) leaves no weak image; PCT needs both"]
    off = validate_config({"stego": {"enabled": False}, "freemask": {"enabled": False}, "pct": {"enabled": False}})
    assert image_count_checks(off, 4) == ([], [])
    errors, warnings = image_count_checks(off, 1)
    assert errors == [] and "DenseCL" in warnings[0] and "pretrain.weights" in warnings[0]
    errors, _ = image_count_checks(validate_config({"stego": {"enabled": False}, "freemask": {"enabled": False}}), 2)
    assert errors[0].startswith("config key 'pct.enabled': PCT needs at least 3 images")


def test_fingerprint_follows_the_files_not_their_reading(tmp_path):
    imgs = tmp_path / "imgs"
    _png(imgs / "a.png", np.zeros((6, 8, 3), np.uint8))
    ann = tmp_path / "ann.json"
    ann.write_text('{"images": []}')
    first = input_fingerprint(str(imgs), str(ann))
    assert first["image_files"] == 1 and first == input_fingerprint(str(imgs), str(ann))
    os.utime(ann)  # touched, same bytes: the same dataset
    assert input_fingerprint(str(imgs), str(ann)) == first
    ann.write_text('{"images": [ ]}')
    assert input_fingerprint(str(imgs), str(ann))["annotations"] != first["annotations"]
    _png(imgs / "sub" / "b.png", np.zeros((6, 8, 3), np.uint8))
    second = input_fingerprint(str(imgs), str(ann))
    assert second["image_files"] == 2 and second["images"] != first["images"]
    _png(imgs / "a.png", np.ones((6, 8, 3), np.uint8))  # rewritten in place
    assert input_fingerprint(str(imgs), str(ann))["images"] != second["images"]
    assert input_fingerprint(str(tmp_path / "missing"), None) == {"images": None, "image_files": 0,
                                                                  "annotations": None}
