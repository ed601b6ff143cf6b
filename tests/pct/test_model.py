"""Segmentation network (ResNet + DeepLabv3+ decoder + Contextrast projection heads)."""

from __future__ import annotations

import pytest
import torch

from maskless.models.resnet import build_resnet
from maskless.models.weights import save_backbone
from maskless.pct.model import SegNet, SegNetParams, build_segnet

TINY = dict(num_classes=3, aspp_channels=8, low_channels=8, decoder_channels=8, embed_dim=8)


@pytest.fixture(scope="module")
def net() -> SegNet:
    torch.manual_seed(0)
    return SegNet(SegNetParams(**TINY))


def test_output_shapes_at_input_resolution(net):
    """Odd size 50 x 70: logits at 50 x 70; embeddings at res3 (stride 8 -> 7 x 9), res4 and dilated res5
    (both stride 16 -> 4 x 5), unit norm per pixel."""
    out = net.eval()(torch.randn(2, 3, 50, 70), embeddings=True)
    assert out["logits"].shape == (2, 3, 50, 70)
    assert [tuple(e.shape) for e in out["embeddings"]] == [(2, 8, 7, 9), (2, 8, 4, 5), (2, 8, 4, 5)]
    assert torch.allclose(out["embeddings"][0].norm(dim=1), torch.ones(2, 7, 9), atol=1e-5)
    assert "embeddings" not in net(torch.randn(1, 3, 32, 32))


def test_output_stride_32_and_dilation(net):
    """output_stride 16 dilates layer4 (stride 1, dilation 2 after its first conv); 32 leaves it plain."""
    x = torch.randn(1, 3, 64, 64)
    feats16 = net.eval().backbone(x)
    feats32 = SegNet(SegNetParams(**TINY, output_stride=32)).backbone.eval()(x)
    assert feats16["res5"].shape[-1] == 4 and feats32["res5"].shape[-1] == 2
    assert net.backbone.layer4[0].conv1.stride == (1, 1) and net.backbone.layer4[1].conv1.dilation == (2, 2)


def test_backbone_from_checkpoint(tmp_path):
    """The dilation keeps every weight shape, so a pretrain checkpoint loads; decoder stays random."""
    torch.manual_seed(1)
    backbone = build_resnet("resnet18")
    save_backbone(str(tmp_path / "b.pt"), backbone, "resnet18", {"method": "test"})
    net = build_segnet(SegNetParams(**TINY), str(tmp_path / "b.pt"))
    assert torch.equal(net.backbone.layer4[1].conv2.weight, backbone.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="resnet18"):
        build_segnet(SegNetParams(**TINY, arch="resnet34"), str(tmp_path / "b.pt"))


def test_every_parameter_trains(net):
    """Logits + embeddings reach every parameter. (With a batch of one, BatchNorm after the ASPP projection
    removes the image-pooling branch, a per-channel constant, so that branch needs B >= 2 to train.)"""
    net.zero_grad()
    out = net.train()(torch.randn(2, 3, 48, 48), embeddings=True)
    (out["logits"].square().mean() + sum(e.sum() for e in out["embeddings"])).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_params_validation(net):
    with pytest.raises(ValueError, match="num_classes"):
        SegNetParams(num_classes=1)
    with pytest.raises(ValueError, match="aspp_rates"):
        SegNetParams(aspp_rates=(1, 2))
    with pytest.raises(ValueError, match="embed_levels"):
        SegNetParams(embed_levels=("res9",))
    with pytest.raises(ValueError, match="output_stride"):
        SegNetParams(output_stride=8)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(3, 32, 32))
    assert SegNetParams.reference().aspp_rates == (6, 12, 18)
    assert SegNetParams(aspp_rates=[2, 4, 6]).to_dict()["aspp_rates"] == [2, 4, 6]
