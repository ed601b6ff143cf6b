"""ResNet backbones (torchvision key layout), the ImageNet normaliser and the FPN."""

from __future__ import annotations

import pytest
import torch

from maskless.models.fpn import FPN
from maskless.models.resnet import IMAGENET_MEAN, IMAGENET_STD, build_resnet, normalize


@pytest.mark.parametrize(
    "arch, n_params, n_keys",
    [
        # torchvision's published totals minus fc (512*1000+1000 = 513,000 for 18/34; 2048*1000+1000 =
        # 2,049,000 for 50/101): 11,689,512 / 21,797,672 / 25,557,032 / 44,549,160. Key counts are
        # torchvision's state_dict lengths (122 / 218 / 320 / 626) minus fc.weight and fc.bias.
        ("resnet18", 11_176_512, 120),
        ("resnet34", 21_284_672, 216),
        ("resnet50", 23_508_032, 318),
        ("resnet101", 42_500_160, 624),
    ],
)
def test_parameter_count_and_keys_match_torchvision(arch, n_params, n_keys):
    model = build_resnet(arch)
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert len(model.state_dict()) == n_keys


def test_known_torchvision_key_names():
    r18 = build_resnet("resnet18").state_dict()
    for key in ["conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.num_batches_tracked",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer4.1.conv2.weight"]:
        assert key in r18, key
    assert "layer1.0.downsample.0.weight" not in r18  # 64 -> 64 at stride 1: no projection in a BasicBlock
    assert not any(k.startswith("fc.") for k in r18)
    r50 = build_resnet("resnet50").state_dict()
    assert r50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert r50["layer3.5.conv3.weight"].shape == (1024, 256, 1, 1)
    assert r50["layer4.2.bn3.weight"].shape == (2048,)
    # ResNet v1.5: the stride-2 sits on the 3x3 conv of the first bottleneck of a stage.
    model = build_resnet("resnet50")
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)


def test_forward_levels_strides_channels():
    model = build_resnet("resnet18").eval()
    feats = model(torch.zeros(1, 3, 64, 96))
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    assert model.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert model.out_channels == {"res2": 64, "res3": 128, "res4": 256, "res5": 512}
    for name, f in feats.items():
        assert f.shape == (1, model.out_channels[name], 64 // model.strides[name], 96 // model.strides[name])


def test_one_pixel_input_gives_one_cell():
    feats = build_resnet("resnet18").eval()(torch.zeros(1, 3, 1, 1))
    assert all(f.shape[-2:] == (1, 1) for f in feats.values())


def test_groupnorm_variant_has_no_running_stats():
    state = build_resnet("resnet18", norm="gn").state_dict()
    assert "bn1.weight" in state and not any("running" in k for k in state)


def test_unknown_arch_and_norm_list_choices():
    with pytest.raises(ValueError, match="resnet18.*resnet50"):
        build_resnet("resnet19")
    with pytest.raises(ValueError, match="bn"):
        build_resnet("resnet18", norm="ln")


def test_normalize_uint8_and_float_agree():
    """A pixel equal to the mean maps to 0; 255 maps to (1 - mean) / std, worked out per channel."""
    mean_px = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, 2, 2)
    assert torch.allclose(normalize(mean_px), torch.zeros(3, 2, 2), atol=1e-7)
    white = normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8))
    want = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(white.flatten(), want)
    assert torch.allclose(normalize(torch.full((3, 1, 1), 1.0)).flatten(), want)


def test_normalize_rejects_wrong_layout():
    with pytest.raises(ValueError, match="3, H, W"):
        normalize(torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="dtype"):
        normalize(torch.zeros(3, 2, 2, dtype=torch.int32))


def test_fpn_shapes_with_p6_and_odd_sizes():
    backbone = build_resnet("resnet18").eval()
    fpn = FPN(backbone.out_channels, out_channels=16, p6=True)
    feats = backbone(torch.zeros(1, 3, 70, 100))  # odd sizes: res5 3x4, res4 5x7, res3 9x13, res2 18x25
    out = fpn(feats)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for level in ("2", "3", "4", "5"):
        assert out[f"p{level}"].shape == (1, 16, *feats[f"res{level}"].shape[-2:])
    assert out["p6"].shape == (1, 16, 2, 2)  # max-pool kernel 1 stride 2 of 3x4
    assert fpn.out_channels == {n: 16 for n in out}


def test_fpn_top_down_reaches_finest_level():
    """A change in res5 alone must reach p2 through the top-down path (and leave nothing else unchanged)."""
    fpn = FPN({"res2": 4, "res3": 4, "res4": 4, "res5": 4}, out_channels=4)
    feats = {f"res{i}": torch.zeros(1, 4, 2 ** (6 - i), 2 ** (6 - i)) for i in range(2, 6)}
    base = fpn(feats)
    feats["res5"] = torch.ones_like(feats["res5"])
    moved = fpn(feats)
    assert list(base) == ["p2", "p3", "p4", "p5"]
    assert all(not torch.equal(base[k], moved[k]) for k in base)


def test_fpn_missing_level_is_named():
    fpn = FPN({"res4": 8, "res5": 8}, out_channels=8)
    with pytest.raises(KeyError, match="res4"):
        fpn({"res5": torch.zeros(1, 8, 1, 1)})
