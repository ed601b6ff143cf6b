"""STEGO's training stage on a DINO-layout ViT checkpoint (stego.backbone set to a file): features of the
last block's patch tokens, a few training steps on a handful of tiny images, the k-means baseline on the same
features; a layer the backbone lacks is an error naming stego.layer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from maskless.data.manifest import write_manifest
from maskless.models.vit import LEVEL, build_vit
from maskless.stego.baseline import KMeansParams, kmeans_baseline
from maskless.stego.features import extract_all
from maskless.stego.predict import load_stego, predict
from maskless.stego.stage import StegoStageParams, load_frozen, run_stego_train
from maskless.stego.train import StegoTrainParams


@pytest.fixture
def vit_setup(tmp_path):
    """Six 32 px images (a bright square on dark, placed per image) and a tiny ViT (patch 8, width 32, depth
    2) saved as DINO's DDP-wrapped teacher keys with a head."""
    torch.manual_seed(0)
    vit = build_vit(patch_size=8, dim=32, depth=2, pos_grid=4)
    state = {"module.backbone." + k: v for k, v in vit.state_dict().items()}
    state["module.head.last_layer.weight_g"] = torch.ones(4, 1)
    torch.save(state, tmp_path / "vit.pth")
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        img = np.full((32, 40, 3), 30, np.uint8)
        y, x = rng.integers(0, 16, 2)
        img[y : y + 14, x : x + 14] = rng.integers(120, 255, 3)
        cv2.imwrite(str(tmp_path / f"im{i}.png"), img)
        records.append({"id": i + 1, "file_name": f"im{i}.png", "path": str(tmp_path / f"im{i}.png"), "width": 40,
                        "height": 32, "split": "train", "hash": ""})
    write_manifest(tmp_path / "manifest.parquet", records)
    return tmp_path


def test_stego_trains_on_vit_tokens(vit_setup):
    tmp = vit_setup
    params = StegoStageParams(layer=LEVEL, input_size=32, knn_k=3, batch_size=4)
    train = StegoTrainParams(steps=3, batch_size=4, code_dim=6, n_clusters=3, points=3, knn_top=2,
                             checkpoint_every=2)
    summary = run_stego_train(manifest=str(tmp / "manifest.parquet"), backbone=str(tmp / "vit.pth"),
                              out_model=str(tmp / "model.pt"), out_knn=str(tmp / "knn.npy"),
                              state_dir=str(tmp / "state"), params=params, train_params=train,
                              loss_log=str(tmp / "loss.csv"), device="cpu", threads=1)
    assert summary["steps_done"] == 3
    stego = load_stego(str(tmp / "model.pt"))
    p = stego["params"]
    assert p["in_channels"] == 32 and p["feature_hw"] == [4, 4]  # 32 px / patch 8, ViT width 32
    assert p["features"]["layer"] == LEVEL and p["features"]["backbone"].endswith("vit.pth")
    rows = (tmp / "loss.csv").read_text().splitlines()
    assert len(rows) == 4 and all(np.isfinite(float(v)) for r in rows[1:] for v in r.split(","))
    # prediction and the k-means baseline (stego_eval) read the same backbone and layer
    net = load_frozen(str(tmp / "vit.pth"), "cpu", LEVEL)
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    assert predict(net, stego, images, layer=LEVEL, flip=True)["cluster"].shape == (2, 32, 32)
    feats = extract_all(net, list(images.permute(0, 2, 3, 1).numpy()), layer=LEVEL)  # (2, 32, 4, 4)
    assert kmeans_baseline(feats, (32, 32), KMeansParams(n_clusters=2, seed=0)).shape == (2, 32, 32)


def test_a_layer_the_backbone_lacks_names_the_config_key(vit_setup):
    tmp = vit_setup
    with pytest.raises(ValueError, match=r"config key 'stego.layer' is 'res3'.*vit.pth.*\['tokens'\]"):
        run_stego_train(manifest=str(tmp / "manifest.parquet"), backbone=str(tmp / "vit.pth"),
                        out_model=str(tmp / "model.pt"), out_knn=str(tmp / "knn.npy"), state_dir=str(tmp / "s"),
                        params=StegoStageParams(layer="res3", input_size=32, knn_k=3),
                        train_params=StegoTrainParams(steps=1, batch_size=2, knn_top=2), device="cpu")
    assert not (tmp / "model.pt").exists()
