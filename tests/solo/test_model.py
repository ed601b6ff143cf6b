"""SOLOv2 model: output contract shapes, CoordConv inputs, initialisation, backbone checkpoints, gradients."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from maskless.models.resnet import build_resnet
from maskless.models.weights import save_backbone
from maskless.solo.model import SOLOv2, SoloModelParams, coord_channels, pad_to_multiple

TINY = dict(fpn_channels=32, head_convs=2, head_channels=32, kernel_dim=32, mask_branch_channels=32,
            emb_dim=8, grids=(5, 3), levels=("p3", "p4"), gn_groups=8)


@pytest.fixture(scope="module")
def small_outputs():
    torch.manual_seed(0)
    model = SOLOv2(SoloModelParams()).eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, 64, 96))


def test_small_default_output_shapes(small_outputs):
    """Default: grids (24, 16, 12), D = 64, E = 128; mask_feat at stride 4 of 64x96 -> 16x24."""
    out = small_outputs
    assert set(out) == {"cate", "emb", "kernel", "mask_feat"}
    for key, ch in (("cate", 1), ("emb", 128), ("kernel", 64)):
        assert [tuple(t.shape) for t in out[key]] == [(2, ch, s, s) for s in (24, 16, 12)]
    assert tuple(out["mask_feat"].shape) == (2, 64, 16, 24)
    assert all(torch.isfinite(t).all() for key in ("cate", "emb", "kernel") for t in out[key])


def test_cate_bias_starts_at_the_prior(small_outputs):
    """bias = -log((1 - 0.01) / 0.01) = -log(99) = -4.595; with std-0.01 weights the logits stay near it,
    so the mean foreground probability is about prior_prob = 0.01."""
    model = SOLOv2(SoloModelParams())
    assert model.head.cate_out.bias.item() == pytest.approx(-math.log(99.0), abs=1e-6)
    probs = torch.cat([t.sigmoid().flatten() for t in small_outputs["cate"]])
    assert probs.mean().item() == pytest.approx(0.01, abs=0.003)


def test_reference_five_level_geometry_shapes():
    """Reference grids (40, 36, 24, 16, 12) on p2..p6 (p6 from the FPN), D = 256, E = 128, on a 128x128
    input. Only the geometry is under test: a resnet18 body and 64-channel towers keep it fast."""
    params = dataclasses.replace(SoloModelParams.reference(arch="resnet18"), fpn_channels=64,
                                 head_channels=64, mask_branch_channels=64)
    torch.manual_seed(0)
    model = SOLOv2(params).eval()
    assert model.fpn.out_levels == ["p2", "p3", "p4", "p5", "p6"]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))
    assert [tuple(t.shape) for t in out["kernel"]] == [(1, 256, s, s) for s in (40, 36, 24, 16, 12)]
    assert [tuple(t.shape) for t in out["emb"]] == [(1, 128, s, s) for s in (40, 36, 24, 16, 12)]
    assert tuple(out["mask_feat"].shape) == (1, 256, 32, 32)


def test_coordconv_channels_on_kernel_branch_and_coarsest_mask_level():
    p = SoloModelParams(**TINY)
    model = SOLOv2(p)
    assert model.head.kernel_tower[0][0].in_channels == p.fpn_channels + 2
    assert model.head.cate_tower[0][0].in_channels == p.fpn_channels  # no coordinates for the category
    firsts = [stage[0][0].in_channels for stage in model.mask_branch.stages]
    assert firsts == [32, 32, 32, 34]  # p2, p3, p4 plain; p5 (coarsest) with CoordConv
    assert [len(stage) for stage in model.mask_branch.stages] == [1, 1, 2, 3]


def test_coord_channels_by_hand():
    """2x3 map: x = linspace(-1, 1, 3) = (-1, 0, 1) along the width, y = (-1, 1) along the height."""
    c = coord_channels(torch.zeros(2, 5, 2, 3))
    assert c.shape == (2, 2, 2, 3)
    assert torch.equal(c[1, 0], torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]))
    assert torch.equal(c[1, 1], torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))


def test_forward_backward_every_head_parameter_gets_gradient():
    torch.manual_seed(0)
    model = SOLOv2(SoloModelParams(**TINY))
    out = model(torch.randn(2, 3, 64, 64))
    loss = sum(t.sum() for key in ("cate", "emb", "kernel") for t in out[key]) + out["mask_feat"].sum()
    loss.backward()
    parts = {"head": model.head, "mask_branch": model.mask_branch, "fpn": model.fpn}
    for part, module in parts.items():
        for name, param in module.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{part}.{name} got no gradient"
    assert model.head.emb_out.weight.grad.abs().sum() > 0  # the FreeSOLO embedding branch trains
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_backbone_weights_load_from_a_pretrain_checkpoint(tmp_path):
    torch.manual_seed(1)
    backbone = build_resnet("resnet18")
    path = tmp_path / "backbone.pt"
    save_backbone(str(path), backbone, "resnet18", {"stage": "pretrain"})
    model = SOLOv2.from_backbone_weights(str(path), SoloModelParams(**TINY))
    want = backbone.state_dict()
    got = model.backbone.state_dict()
    assert set(got) == set(want)
    assert torch.equal(got["layer3.1.conv2.weight"], want["layer3.1.conv2.weight"])
    assert torch.equal(got["bn1.running_var"], want["bn1.running_var"])
    # The whole model's backbone.* keys are the torchvision names under one prefix.
    assert {k[len("backbone."):] for k in model.state_dict() if k.startswith("backbone.")} == set(want)


def test_backbone_arch_or_norm_mismatch_names_the_file(tmp_path):
    path = tmp_path / "gn.pt"
    save_backbone(str(path), build_resnet("resnet18", norm="gn"), "resnet18", {})
    with pytest.raises(ValueError, match="gn.pt"):
        SOLOv2.from_backbone_weights(str(path), SoloModelParams(**TINY))  # params say bn
    model = SOLOv2.from_backbone_weights(str(path), SoloModelParams(**TINY, backbone_norm="gn"))
    assert model.backbone.norm == "gn"
    with pytest.raises(ValueError, match="resnet34"):
        SOLOv2.from_backbone_weights(str(path), SoloModelParams(**{**TINY, "arch": "resnet34"}))


def test_pad_to_multiple_by_hand():
    """33x64 -> 64x64: 31 zero rows at the bottom, no columns; the original pixels are untouched."""
    x = torch.randn(2, 3, 33, 64)
    padded, hw = pad_to_multiple(x, 32)
    assert hw == (33, 64) and padded.shape == (2, 3, 64, 64)
    assert torch.equal(padded[..., :33, :], x) and padded[..., 33:, :].abs().sum() == 0
    same, hw = pad_to_multiple(torch.ones(1, 3, 32, 96))
    assert hw == (32, 96) and same.shape == (1, 3, 32, 96)


def test_unpadded_input_and_bad_params_raise():
    model = SOLOv2(SoloModelParams(**TINY))
    with pytest.raises(ValueError, match="pad_to_multiple"):
        model(torch.zeros(1, 3, 40, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="levels"):
        SoloModelParams(grids=(24, 16), levels=("p3",))
    with pytest.raises(ValueError, match="levels"):
        SoloModelParams(grids=(24,), levels=("p7",))
    with pytest.raises(ValueError, match="head_channels"):
        SoloModelParams(head_channels=48)
    with pytest.raises(ValueError, match="grids"):
        SoloModelParams(grids=(24, 0, 12))
    with pytest.raises(ValueError, match="prior_prob"):
        SoloModelParams(prior_prob=1.0)
    with pytest.raises(ValueError, match="arch"):
        SoloModelParams(arch="vgg16")


def test_params_round_trip_through_plain_dict():
    p = SoloModelParams.reference()
    d = p.to_dict()
    assert d["grids"] == [40, 36, 24, 16, 12] and d["kernel_dim"] == 256
    assert SoloModelParams(**d) == p
