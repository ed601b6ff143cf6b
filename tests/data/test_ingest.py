"""ingest: manifest and clean GT from synthetic, folder and COCO data; every bad input named in the error."""

from __future__ import annotations

import copy
import json
import logging
import shutil

import cv2
import numpy as np
import pytest

from maskless.data.coco_json import IngestError
from maskless.data.images import sha256_file
from maskless.data.ingest import ingest
from maskless.data.manifest import read_manifest
from maskless.data.synthetic import SyntheticParams, generate


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    generate(str(out), SyntheticParams(num_images=6, height=48, width=48, objects_per_image=(2, 3), seed=1))
    return out


def _coco(synthetic) -> dict:
    return json.loads((synthetic / "instances.json").read_text())


def _run(tmp_path, images, coco: dict | None = None, **kw) -> dict:
    """ingest with `coco` written to tmp_path; manifest and GT land in tmp_path."""
    ann = None
    if coco is not None:
        ann = tmp_path / "ann.json"
        ann.write_text(json.dumps(coco))
    args = dict(kind="coco", images=str(images), annotations=None if ann is None else str(ann),
                manifest_out=str(tmp_path / "m.parquet"), gt_out=None if ann is None else str(tmp_path / "gt.json"))
    return ingest(**{**args, **kw})


def test_synthetic_ids_sizes_hashes(synthetic, tmp_path):
    summary = ingest(kind="synthetic", images=str(synthetic / "images"), annotations=str(synthetic / "instances.json"),
                     manifest_out=str(tmp_path / "m.parquet"), gt_out=str(tmp_path / "gt.json"), split="val")
    coco = _coco(synthetic)
    assert summary == {"images": 6, "skipped": 0, "annotations": len(coco["annotations"]), "fixed_area": 0,
                       "fixed_iscrowd": 0, "clipped_boxes": 0,
                       "conversions": {"grayscale": 0, "16-bit": 0, "alpha": 0, "exif_orientation": 0}}
    rows = read_manifest(tmp_path / "m.parquet")
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        path = synthetic / "images" / f"{r['id']:06d}.png"
        assert r["file_name"] == path.name and r["path"] == str(path.resolve())
        assert (r["width"], r["height"], r["split"]) == (48, 48, "val")
        assert r["hash"] == sha256_file(path)
    assert json.loads((tmp_path / "gt.json").read_text()) == coco  # already clean: unchanged


def test_folder_recursive_sorted_case_insensitive(tmp_path):
    root = tmp_path / "imgs"
    (root / "b").mkdir(parents=True)
    for name, size in [("e.Jpeg", (10, 20)), ("b/c.jpg", (12, 8)), ("A.PNG", (5, 6))]:
        ok, buf = cv2.imencode(".jpg" if "j" in name.lower() else ".png", np.zeros((*size, 3), np.uint8))
        (root / name).write_bytes(buf.tobytes())
    (root / "notes.txt").write_text("not an image")
    summary = ingest(kind="folder", images=str(root), annotations=None, manifest_out=str(tmp_path / "m.parquet"),
                     gt_out=None)
    assert summary["images"] == 3 and summary["annotations"] == 0
    rows = read_manifest(tmp_path / "m.parquet")
    # sorted by relative path: 'A.PNG' < 'b/c.jpg' < 'e.Jpeg' (upper case sorts first)
    assert [(r["id"], r["file_name"], r["width"], r["height"]) for r in rows] == [
        (1, "A.PNG", 6, 5), (2, "b/c.jpg", 8, 12), (3, "e.Jpeg", 20, 10)]
    ingest(kind="folder", images=str(root), annotations=None, manifest_out=str(tmp_path / "m2.parquet"),
           gt_out=None, max_images=2)
    assert [r["file_name"] for r in read_manifest(tmp_path / "m2.parquet")] == ["A.PNG", "b/c.jpg"]


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        ingest(kind="folder", images=str(tmp_path), annotations=None, manifest_out=str(tmp_path / "m.parquet"))


def test_coco_tiny_counts_survive(coco_tiny, tmp_path):
    summary = ingest(kind="coco", images=str(coco_tiny / "images"), annotations=str(coco_tiny / "instances.json"),
                     manifest_out=str(tmp_path / "m.parquet"), gt_out=str(tmp_path / "gt.json"))
    assert (summary["images"], summary["annotations"], summary["skipped"]) == (50, 470, 0)
    original = json.loads((coco_tiny / "instances.json").read_text())
    gt = json.loads((tmp_path / "gt.json").read_text())
    assert sorted(a["id"] for a in gt["annotations"]) == sorted(a["id"] for a in original["annotations"])
    assert len(gt["categories"]) == 80 and sum(a["iscrowd"] for a in gt["annotations"]) == 5
    sizes = {im["id"]: (im["width"], im["height"]) for im in original["images"]}
    assert {r["id"]: (r["width"], r["height"]) for r in read_manifest(tmp_path / "m.parquet")} == sizes


def test_max_images_keeps_first_ids_and_their_annotations(synthetic, tmp_path):
    coco = _coco(synthetic)
    summary = _run(tmp_path, synthetic / "images", coco, max_images=2)
    gt = json.loads((tmp_path / "gt.json").read_text())
    assert [im["id"] for im in gt["images"]] == [1, 2] and summary["images"] == 2
    assert summary["annotations"] == sum(a["image_id"] in (1, 2) for a in coco["annotations"])
    assert {a["image_id"] for a in gt["annotations"]} == {1, 2}


@pytest.fixture
def broken_images(synthetic, tmp_path):
    """A copy of the synthetic images with 000002.png truncated and 000005.png emptied."""
    images = tmp_path / "images"
    shutil.copytree(synthetic / "images", images)
    data = (images / "000002.png").read_bytes()
    (images / "000002.png").write_bytes(data[: len(data) // 2])
    (images / "000005.png").write_bytes(b"")
    return images


def test_bad_images_stop_lists_every_file(synthetic, broken_images, tmp_path):
    with pytest.raises(IngestError) as err:
        _run(tmp_path, broken_images, _coco(synthetic))
    message = str(err.value)
    assert "000002.png: truncated PNG" in message and "000005.png: empty file" in message
    assert "2 of 6 images" in message and len(err.value.problems) == 2
    assert not (tmp_path / "m.parquet").exists()


def test_bad_images_skip(synthetic, broken_images, tmp_path, caplog):
    coco = _coco(synthetic)
    with caplog.at_level(logging.WARNING, logger="maskless.ingest"):
        summary = _run(tmp_path, broken_images, coco, on_bad_image="skip")
    assert (summary["images"], summary["skipped"]) == (4, 2)
    assert "000002.png" in caplog.text and "000005.png" in caplog.text
    assert [r["id"] for r in read_manifest(tmp_path / "m.parquet")] == [1, 3, 4, 6]
    gt = json.loads((tmp_path / "gt.json").read_text())
    assert {a["image_id"] for a in gt["annotations"]} <= {1, 3, 4, 6}
    assert summary["annotations"] == sum(a["image_id"] not in (2, 5) for a in coco["annotations"])


def test_all_images_bad_with_skip(synthetic, tmp_path):
    coco = _coco(synthetic)
    coco["images"] = coco["images"][:1]
    coco["images"][0]["file_name"] = "absent.png"
    coco["annotations"] = []
    with pytest.raises(ValueError, match="no usable images"):
        _run(tmp_path, synthetic / "images", coco, on_bad_image="skip")


def test_size_mismatch_and_missing_file_are_image_problems(synthetic, tmp_path):
    coco = _coco(synthetic)
    coco["images"][0]["width"] = 50
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 1]  # keep RLE sizes consistent
    coco["images"][2]["file_name"] = "nope.png"
    with pytest.raises(IngestError) as err:
        _run(tmp_path, synthetic / "images", coco)
    assert "000001.png: size 48x48 (after EXIF orientation) does not match the annotations' 50x48" in str(err.value)
    assert "nope.png: file not found" in str(err.value)


def test_missing_annotation_field(synthetic, tmp_path):
    coco = _coco(synthetic)
    bad_id = coco["annotations"][3]["id"]
    del coco["annotations"][3]["bbox"]
    del coco["annotations"][5]["segmentation"]
    with pytest.raises(IngestError, match=rf"annotations\[3\] \(id {bad_id}\): missing \['bbox'\]") as err:
        _run(tmp_path, synthetic / "images", coco)
    assert "ann.json" in str(err.value) and "annotations[5]" in str(err.value)


def test_box_out_of_image(synthetic, tmp_path):
    """48x48 image: [40, 40, 20, 20] ends at 60 > 48 + 1 -> error; [-0.5, 0, 10, 10] is within 1 px -> clipped
    to x0 = 0, width = 9.5."""
    coco = _coco(synthetic)
    coco["annotations"][0]["bbox"] = [40, 40, 20, 20]
    with pytest.raises(IngestError, match=r"bbox \[40, 40, 20, 20\] lies outside the 48x48 image"):
        _run(tmp_path, synthetic / "images", coco)
    coco["annotations"][0]["bbox"] = [-0.5, 0, 10, 10]
    summary = _run(tmp_path, synthetic / "images", coco)
    assert summary["clipped_boxes"] == 1
    assert json.loads((tmp_path / "gt.json").read_text())["annotations"][0]["bbox"] == [0, 0, 9.5, 10]


def test_missing_area_and_iscrowd_are_filled(synthetic, tmp_path):
    """Polygon x 2..6, y 3..8: pycocotools fills pixels x 2..5, y 3..7 = 4 * 5 = 20. Uncompressed RLE
    [5, 3, 2299] of a 48x48 image: 3 pixels. Compressed RLE: its pixel count, the area the generator wrote."""
    coco = _coco(synthetic)
    anns = coco["annotations"]
    anns[0]["segmentation"] = [[2, 3, 6, 3, 6, 8, 2, 8]]
    anns[1]["segmentation"] = {"size": [48, 48], "counts": [5, 3, 48 * 48 - 8]}
    rle_area = anns[2]["area"]
    for a in anns[:3]:
        del a["area"]
    del anns[4]["iscrowd"]
    summary = _run(tmp_path, synthetic / "images", coco)
    assert (summary["fixed_area"], summary["fixed_iscrowd"]) == (3, 1)
    gt = {a["id"]: a for a in json.loads((tmp_path / "gt.json").read_text())["annotations"]}
    assert [gt[a["id"]]["area"] for a in anns[:3]] == [20, 3, rle_area]
    assert gt[anns[4]["id"]]["iscrowd"] == 0


@pytest.mark.parametrize("edit,pattern", [
    (lambda c: c["annotations"][1].update(id=c["annotations"][0]["id"]), "duplicate annotation id"),
    (lambda c: c["annotations"][0].update(image_id=999), r"image_id 999 is not in images"),
    (lambda c: c["annotations"][0].update(category_id=77), r"category_id 77 is not in categories"),
    (lambda c: c["images"].append(dict(c["images"][0])), "duplicate image id 1"),
    (lambda c: c["annotations"][0].update(segmentation=[]), "empty polygon list"),
    (lambda c: c["annotations"][0].update(segmentation=[[1, 2, 3]]), "polygon is not a list"),
    (lambda c: c["annotations"][0]["segmentation"].update(size=[10, 10]), "RLE size"),
    (lambda c: c.pop("categories"), r"missing top-level list\(s\) \['categories'\]"),
])
def test_json_problems(synthetic, tmp_path, edit, pattern):
    coco = copy.deepcopy(_coco(synthetic))
    edit(coco)
    with pytest.raises(ValueError, match=pattern):
        _run(tmp_path, synthetic / "images", coco)


def test_not_json(synthetic, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json is not valid JSON"):
        ingest(kind="coco", images=str(synthetic / "images"), annotations=str(tmp_path / "bad.json"),
               manifest_out=str(tmp_path / "m.parquet"), gt_out=None)


def test_argument_errors_name_the_config_key(synthetic, tmp_path):
    with pytest.raises(ValueError, match="dataset.on_bad_image"):
        _run(tmp_path, synthetic / "images", _coco(synthetic), on_bad_image="ignore")
    with pytest.raises(ValueError, match="dataset.kind"):
        _run(tmp_path, synthetic / "images", _coco(synthetic), kind="voc")
    with pytest.raises(ValueError, match="dataset.max_images"):
        _run(tmp_path, synthetic / "images", _coco(synthetic), max_images=0)
    with pytest.raises(ValueError, match="dataset.annotations is not set"):
        ingest(kind="folder", images=str(synthetic / "images"), annotations=None,
               manifest_out=str(tmp_path / "m.parquet"), gt_out=str(tmp_path / "gt.json"))
    with pytest.raises(ValueError, match="dataset.images"):
        _run(tmp_path, tmp_path / "absent", None, kind="folder")
