"""STEGO inference: checkpoint loading, upsampled cluster / linear maps, flip averaging, CRF path."""

from __future__ import annotations

import pytest
import torch

from maskless.io import torch_save_atomic
from maskless.models.resnet import build_resnet
from maskless.stego.crf import CrfParams
from maskless.stego.model import ClusterProbe, LinearProbe, StegoHead
from maskless.stego.predict import cluster_maps, codes_at, linear_maps, load_stego, predict


def _checkpoint(path, in_channels=64, linear=True):
    torch.manual_seed(0)
    head, cluster = StegoHead(in_channels, 4), ClusterProbe(4, 3)
    lin = LinearProbe(4, 2) if linear else None
    params = {"in_channels": in_channels, "code_dim": 4, "dropout": 0.1, "n_clusters": 3,
              "num_classes": 2 if linear else None}
    torch_save_atomic({"head": head.state_dict(), "cluster": cluster.state_dict(),
                       "linear": lin.state_dict() if lin else None, "params": params, "kind": "stego"}, path)
    return head, cluster, lin


def test_load_stego_roundtrip(tmp_path):
    head, cluster, _ = _checkpoint(tmp_path / "s.pt")
    m = load_stego(str(tmp_path / "s.pt"))
    assert not m["head"].training
    x = torch.randn(1, 64, 2, 2)
    torch.testing.assert_close(m["head"](x), head.eval()(x))
    torch.testing.assert_close(m["cluster"].centroids, cluster.centroids)
    _checkpoint(tmp_path / "n.pt", linear=False)
    assert load_stego(str(tmp_path / "n.pt"))["linear"] is None
    torch.save({"kind": "solov2"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a STEGO checkpoint"):
        load_stego(str(tmp_path / "bad.pt"))


def test_maps_by_hand_and_upsampling():
    """Codes (1, 0) on the left column and (0, 1) on the right, centroids (1, 0), (0, 1): upsampled 2 -> 4
    (bilinear, align_corners False) the left two output columns are nearer the left code."""
    probe = ClusterProbe(2, 2)
    with torch.no_grad():
        probe.centroids.copy_(torch.eye(2))
    codes = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])[None]  # (1, 2, 1, 2)
    up = torch.nn.functional.interpolate(codes, size=(3, 4), mode="bilinear", align_corners=False)
    assert cluster_maps(up, probe).tolist() == [[[0, 0, 1, 1]] * 3]
    linear = LinearProbe(2, 2)
    with torch.no_grad():
        linear.conv.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(2, 2, 1, 1))
        linear.conv.bias.zero_()
    assert linear_maps(up, linear).tolist() == [[[1, 1, 0, 0]] * 3]


def test_flip_averaging_of_symmetric_features_changes_nothing():
    torch.manual_seed(0)
    head = StegoHead(5, 3).train()
    f = torch.randn(1, 5, 3, 4)
    f = f + f.flip(-1)  # mirror-symmetric features: the flipped image's codes equal the original's
    plain = codes_at(head, f, (6, 8))
    torch.testing.assert_close(codes_at(head, f, (6, 8), feats_flipped=f.flip(-1)), plain)
    assert head.training  # mode restored


def test_predict_end_to_end_with_and_without_crf(tmp_path):
    _checkpoint(tmp_path / "s.pt", in_channels=128)
    model = load_stego(str(tmp_path / "s.pt"))
    backbone = build_resnet("resnet18")
    images = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8)
    out = predict(backbone, model, images, layer="res3", flip=True)
    assert out["cluster"].shape == (2, 16, 24) and out["linear"].shape == (2, 16, 24)
    assert out["cluster"].max() < 3 and out["linear"].max() < 2
    crf = predict(backbone, model, images, layer="res3", flip=False, crf=CrfParams(iterations=2, radius=3))
    assert crf["cluster"].shape == (2, 16, 24)
    with pytest.raises(ValueError, match="needs the images"):
        cluster_maps(torch.randn(1, 4, 2, 2), model["cluster"], crf=CrfParams())
