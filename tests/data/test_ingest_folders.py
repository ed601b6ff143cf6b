"""ingest of several unlabeled folders as one dataset (dataset.images as a list, e.g. COCO train2017 +
unlabeled2017): names relative to the folders' common parent, ids over all of them, overlaps refused."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maskless.data.ingest import ingest
from maskless.data.manifest import read_manifest


def _image(path, h=6, w=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))
    path.write_bytes(buf.tobytes())


@pytest.fixture
def coco_like(tmp_path):
    root = tmp_path / "coco"
    _image(root / "train2017" / "000000000009.png")
    _image(root / "train2017" / "000000000025.png", h=10)
    _image(root / "unlabeled2017" / "000000000008.png", w=12)
    _image(root / "val2017" / "000000000139.png")  # a sibling folder that is not listed: never read
    return root


def test_two_folders_are_one_dataset(coco_like, tmp_path):
    folders = [str(coco_like / "unlabeled2017"), str(coco_like / "train2017")]  # order does not matter
    summary = ingest(kind="folder", images=folders, annotations=None, manifest_out=str(tmp_path / "m.parquet"))
    assert summary["images"] == 3
    rows = read_manifest(tmp_path / "m.parquet")
    assert [(r["id"], r["file_name"], r["width"], r["height"]) for r in rows] == [
        (1, "train2017/000000000009.png", 8, 6), (2, "train2017/000000000025.png", 8, 10),
        (3, "unlabeled2017/000000000008.png", 12, 6)]
    assert [r["path"] for r in rows] == [str((coco_like / r["file_name"]).resolve()) for r in rows]


def test_a_list_of_one_folder_is_that_folder(coco_like, tmp_path):
    ingest(kind="folder", images=[str(coco_like / "train2017")], annotations=None,
           manifest_out=str(tmp_path / "a.parquet"))
    ingest(kind="folder", images=str(coco_like / "train2017"), annotations=None,
           manifest_out=str(tmp_path / "b.parquet"))
    assert read_manifest(tmp_path / "a.parquet") == read_manifest(tmp_path / "b.parquet")
    assert read_manifest(tmp_path / "a.parquet")[0]["file_name"] == "000000000009.png"


def test_nested_or_repeated_folders_are_refused(coco_like, tmp_path):
    out = str(tmp_path / "m.parquet")
    with pytest.raises(ValueError, match="lies inside folder"):
        ingest(kind="folder", images=[str(coco_like), str(coco_like / "train2017")], annotations=None,
               manifest_out=out)
    with pytest.raises(ValueError, match="names one folder twice"):
        ingest(kind="folder", images=[str(coco_like / "train2017"), str(coco_like / "train2017" / ".")],
               annotations=None, manifest_out=out)
    with pytest.raises(ValueError, match=r"dataset.images: .*nope is not a folder"):
        ingest(kind="folder", images=[str(coco_like / "train2017"), str(coco_like / "nope")], annotations=None,
               manifest_out=out)


def test_a_list_needs_kind_folder(coco_like, tmp_path):
    with pytest.raises(ValueError, match="only dataset.kind 'folder' reads"):
        ingest(kind="coco", images=[str(coco_like / "train2017")], annotations=str(tmp_path / "x.json"),
               manifest_out=str(tmp_path / "m.parquet"))
