"""SOLO inference over a manifest shard -> a mask store readable like Free Mask's."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch

from maskless.data.manifest import write_manifest
from maskless.solo.inference import SoloInferenceParams
from maskless.solo.model import SOLOv2, SoloModelParams
from maskless.solo.predict import load_solo, predict_shard
from maskless.store import ShardReader

TINY_MODEL = dict(fpn_channels=16, head_convs=1, head_channels=16, kernel_dim=16, mask_branch_channels=16,
                  emb_dim=8, gn_groups=8)


@pytest.fixture
def manifest(tmp_path) -> str:
    """Five PNGs of three sizes (50x70, 70x50, 64x64), ids 11..15."""
    rng = np.random.default_rng(0)
    records = []
    for i, (h, w) in enumerate([(50, 70), (70, 50), (64, 64), (50, 70), (64, 64)]):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), img)
        records.append(dict(id=11 + i, file_name=path.name, path=str(path), width=w, height=h, split="train",
                            hash=hashlib.sha256(path.read_bytes()).hexdigest()))
    write_manifest(tmp_path / "manifest.parquet", records)
    return str(tmp_path / "manifest.parquet")


def _checkpoint(path, *, cate_bias: float | None = None) -> str:
    """An untrained tiny SOLOv2 in train_solo's checkpoint format; cate_bias overrides the category bias."""
    torch.manual_seed(0)
    model = SOLOv2(SoloModelParams(**TINY_MODEL))
    if cate_bias is not None:
        torch.nn.init.constant_(model.head.cate_out.bias, cate_bias)
    torch.save({"model": model.state_dict(), "params": {"model": model.params.to_dict()}, "kind": "solov2"}, path)
    return str(path)


def test_predict_shard_writes_a_readable_store(tmp_path, manifest):
    """Shard 1 of size 3 holds ids 14 and 15. A category bias of +10 (sigmoid ~ 1 on every cell) passes a
    score threshold of 0.5, and mask_thresh 0 makes every mask the whole image (sigmoid > 0 everywhere), so
    each image gets at least one mask, all True at its original size (50x70, 64x64); embeddings have the
    model's dim 8, L2-normalised; scores lie in (0, 1]."""
    weights = _checkpoint(tmp_path / "solo.pt", cate_bias=10.0)
    params = SoloInferenceParams(score_thresh=0.5, update_thresh=0.0, mask_thresh=0.0, max_per_img=3)
    summary = predict_shard(manifest=manifest, weights=weights, shard=1, shard_size=3,
                            out_store=str(tmp_path / "pred.zarr"), params=params, input_size=40, device="cpu",
                            threads=1, batch_size=2)
    assert summary["shard"] == 1 and summary["images"] == 2
    reader = ShardReader(str(tmp_path / "pred.zarr"))
    assert reader.image_ids().tolist() == [14, 15]
    total = 0
    for image_id, hw in ((14, (50, 70)), (15, (64, 64))):
        im = reader.get(image_id)
        assert (im.height, im.width) == hw and im.masks.shape[1:] == hw
        total += len(im.scores)
        assert 1 <= len(im.scores) <= 3 and im.masks.all() and ((im.scores > 0) & (im.scores <= 1)).all()
        assert im.embeddings.shape == (len(im.scores), 8)
        np.testing.assert_allclose(np.linalg.norm(im.embeddings, axis=1), 1.0, rtol=1e-5)
    assert total == summary["masks"]


def test_untrained_model_with_high_threshold_predicts_nothing(tmp_path, manifest):
    """Untrained category bias sits at the prior 0.01 (< 0.9): every image gets zero masks, no error."""
    weights = _checkpoint(tmp_path / "solo.pt")
    summary = predict_shard(manifest=manifest, weights=weights, shard=0, shard_size=10,
                            out_store=str(tmp_path / "pred.zarr"), params=SoloInferenceParams(score_thresh=0.9),
                            input_size=32, device="cpu", threads=1)
    assert summary["masks"] == 0 and summary["empty"] == 5
    reader = ShardReader(str(tmp_path / "pred.zarr"))
    assert reader.image_ids().tolist() == [11, 12, 13, 14, 15]
    im = reader.get(12)
    assert im.masks.shape == (0, 70, 50) and im.scores.shape == (0,)


def test_bad_checkpoint_names_the_file(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        load_solo(str(tmp_path / "other.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_solo(str(tmp_path / "missing.pt"))
