"""Ground-truth masks as a mask store (maskless.data.gt_masks): what the oracle SOLO variant trains on."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from maskless.data.gt_masks import write_gt_shard
from maskless.data.manifest import write_manifest
from maskless.store import build_index, MaskStore


def _setup(tmp_path, height=6):
    a = np.zeros((6, 8), np.uint8)
    a[1:3, 2:5] = 1
    b = np.zeros((6, 8), np.uint8)
    b[4:6, 0:2] = 1
    rle = lambda m: {k: (v.decode() if k == "counts" else v) for k, v in mask_utils.encode(np.asfortranarray(m)).items()}
    gt = {"images": [{"id": 1, "height": 6, "width": 8, "file_name": "1.png"},
                     {"id": 2, "height": 6, "width": 8, "file_name": "2.png"},
                     {"id": 3, "height": height, "width": 8, "file_name": "3.png"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle(a), "area": 6, "bbox": [2, 1, 3, 2], "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "segmentation": rle(b), "area": 4, "bbox": [0, 4, 2, 2], "iscrowd": 0},
                          {"id": 3, "image_id": 2, "category_id": 1, "segmentation": rle(b), "area": 4, "bbox": [0, 4, 2, 2], "iscrowd": 1}],
          "categories": [{"id": 1, "name": "object"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    write_manifest(tmp_path / "m.parquet", [dict(id=i, file_name=f"{i}.png", path=f"/x/{i}.png", width=8, height=6,
                                                 split="train", hash="h") for i in (1, 2, 3)])
    return a.astype(bool), b.astype(bool)


def test_gt_shards_hold_every_non_crowd_mask(tmp_path):
    a, b = _setup(tmp_path)
    for shard in (0, 1):  # shard size 2: images 1, 2 | 3
        out = write_gt_shard(manifest=str(tmp_path / "m.parquet"), gt=str(tmp_path / "gt.json"), shard=shard,
                             shard_size=2, out_store=str(tmp_path / f"{shard}.zarr"), embedding_dim=4)
        assert out["images"] == (2, 1)[shard] and out["masks"] == (2, 0)[shard]
    build_index([str(tmp_path / "0.zarr"), str(tmp_path / "1.zarr")], str(tmp_path / "index.parquet"))
    store = MaskStore(str(tmp_path / "index.parquet"))
    im = store.get(1)
    assert np.array_equal(im.masks, np.stack([a, b])) and np.array_equal(im.scores, [1.0, 1.0])
    assert len(store.get(2).masks) == 0  # the crowd annotation is not an object to train on
    assert not np.any(im.embeddings)  # no embedding target: SOLO's embedding loss skips zero rows


def test_size_mismatch_names_the_image_and_file(tmp_path):
    _setup(tmp_path, height=7)
    with pytest.raises(ValueError, match=r"gt.json: image 3 is 7x8 in the ground truth but 6x8 in the manifest"):
        write_gt_shard(manifest=str(tmp_path / "m.parquet"), gt=str(tmp_path / "gt.json"), shard=1, shard_size=2,
                       out_store=str(tmp_path / "1.zarr"), embedding_dim=4)
    assert not (tmp_path / "1.zarr").exists()
