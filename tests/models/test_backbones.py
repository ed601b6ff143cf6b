"""The dict of named backbones and load_any_backbone: a randomly initialised ViT-S/16 in DINO's key layout
saved to disk (wrapped in DDP's "module." and DINO's multi-crop "backbone." prefixes, with a DINO head),
loaded by path and by name; DINO's training checkpoint; ResNet files handed to the ResNet loader; key and
shape errors naming the file."""

from __future__ import annotations

import pytest
import torch

from maskless.models.backbones import BACKBONES, LEVELS, load_any_backbone, require_level
from maskless.models.resnet import ResNet, build_resnet
from maskless.models.vit import LEVEL, ViT, build_vit
from maskless.models.weights import save_backbone

PREFIX = "module.backbone."  # DINO trained under DDP: teacher keys are module.backbone.* and module.head.*


def _dino_file(path, model: ViT, prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    state = {prefix + k: v for k, v in model.state_dict().items()}
    state[prefix.replace("backbone.", "") + "head.mlp.0.weight"] = torch.zeros(8, model.dim)  # DINOHead
    state[prefix.replace("backbone.", "") + "head.last_layer.weight_g"] = torch.ones(16, 1)
    torch.save(state, path)
    return model.state_dict()


@pytest.fixture(scope="module")
def vit_s16_file(tmp_path_factory):
    """One ViT-S/16 (22M parameters, about 87 MB) for the module's tests."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "dino_vits16.pth"
    return path, _dino_file(path, build_vit("vit_s16"))


def test_the_dict_names_levels_and_strides():
    assert sorted(BACKBONES) == sorted(["resnet18", "resnet34", "resnet50", "resnet101", "vit_s16", "vit_s8",
                                        "vit_b16", "vit_b8"])
    assert BACKBONES["resnet50"].levels == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert BACKBONES["vit_s8"].levels == {LEVEL: 8} and BACKBONES["vit_b16"].levels == {LEVEL: 16}
    assert set(LEVELS) == {"res2", "res3", "res4", "res5", LEVEL}
    for name, entry in BACKBONES.items():
        with torch.device("meta"):
            model = entry.build()
        assert model.strides == entry.levels, name  # what the built model says matches the dict
        assert isinstance(model, ResNet if entry.family == "resnet" else ViT), name


def test_vit_loads_by_path_and_by_name(vit_s16_file):
    path, state = vit_s16_file
    for arch in (None, "vit_s16"):
        model = load_any_backbone(str(path), arch).eval()
        assert isinstance(model, ViT) and (model.patch_size, model.dim, model.depth) == (16, 384, 12)
        for key, value in state.items():
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
        feats = model(torch.randn(1, 3, 32, 48))  # a non-square input: interpolated positions
        assert feats[LEVEL].shape == (1, 384, 2, 3) and model.strides == {LEVEL: 16}
    require_level(model, LEVEL, "stego.layer", str(path))
    with pytest.raises(ValueError, match=r"config key 'stego.layer' is 'res3'.*dino_vits16.pth.*'tokens'"):
        require_level(model, "res3", "stego.layer", str(path))


def test_wrong_name_and_missing_key_errors_name_the_file(vit_s16_file, tmp_path):
    path, _ = vit_s16_file
    with pytest.raises(ValueError, match=r"checkpoint .*dino_vits16.pth does not fit.*shape mismatches"):
        load_any_backbone(str(path), "vit_s8")  # patch 8: patch conv and position grid differ
    with pytest.raises(ValueError, match="unknown backbone 'vit_l16'"):
        load_any_backbone(str(path), "vit_l16")
    small = build_vit(patch_size=8, dim=32, depth=2, pos_grid=4)
    state = {k: v for k, v in small.state_dict().items() if k != "blocks.1.attn.qkv.bias"}
    state["blocks.1.attn.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken.pth does not fit.*missing keys 1: blocks.1.attn.qkv.bias; "
                                         r"unexpected keys 1: blocks.1.attn.extra"):
        load_any_backbone(str(tmp_path / "broken.pth"))
    torch.save({"pos_embed": torch.zeros(1, 11, 32), "patch_embed.proj.weight": torch.zeros(32, 3, 8, 8),
                "blocks.0.mlp.fc1.weight": torch.zeros(128, 32)}, tmp_path / "grid.pth")
    with pytest.raises(ValueError, match=r"grid.pth: pos_embed \(1, 11, 32\) is not 1 \+ a square"):
        load_any_backbone(str(tmp_path / "grid.pth"))


def test_dino_training_checkpoint_and_inferred_shape(tmp_path):
    """DINO's own checkpoint {"student", "teacher", ...}: the teacher is read, its "backbone." prefix
    stripped and its head dropped; a shape outside the dict (patch 8, width 32, depth 2) is inferred."""
    torch.manual_seed(1)
    small = build_vit(patch_size=8, dim=32, depth=2, pos_grid=3)
    teacher = {"backbone." + k: v for k, v in small.state_dict().items()} | {"head.mlp.0.weight": torch.zeros(4, 32)}
    student = {k: torch.zeros_like(v) for k, v in teacher.items()}
    torch.save({"student": student, "teacher": teacher, "epoch": 3}, tmp_path / "checkpoint.pth")
    model = load_any_backbone(str(tmp_path / "checkpoint.pth"))
    assert (model.patch_size, model.dim, model.depth, model.num_heads) == (8, 32, 2, 1)
    torch.testing.assert_close(model.pos_embed, small.pos_embed, rtol=0, atol=0)
    assert model(torch.randn(1, 3, 24, 24))[LEVEL].shape == (1, 32, 3, 3)


def test_resnet_files_go_to_the_resnet_loader(tmp_path):
    torch.manual_seed(0)
    net = build_resnet("resnet18")
    save_backbone(str(tmp_path / "r18.pt"), net, "resnet18", {})
    for arch in (None, "resnet18"):
        model = load_any_backbone(str(tmp_path / "r18.pt"), arch)
        assert isinstance(model, ResNet)
        key = "layer4.1.conv2.weight"
        torch.testing.assert_close(model.state_dict()[key], net.state_dict()[key])
    with pytest.raises(ValueError, match=r"r18.pt holds no ViT .* but vit_b8 was requested"):
        load_any_backbone(str(tmp_path / "r18.pt"), "vit_b8")
    with pytest.raises(ValueError, match=r"config key 'freemask.feature_level' is 'tokens'"):
        require_level(model, LEVEL, "freemask.feature_level", str(tmp_path / "r18.pt"))


def test_every_registry_arch_is_a_backbone_name():
    from maskless.models.backbones import BACKBONES
    from maskless.models.registry import REGISTRY

    archs = {name: entry.get("arch") for name, entry in REGISTRY.items()}
    assert {name: a for name, a in archs.items() if a is not None and a not in BACKBONES} == {}
    assert archs["dino_vitb8"] == "vit_b8"
