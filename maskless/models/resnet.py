"""ResNet-18/34/50/101 backbones returning the multi-scale features res2..res5.

Written from the ResNet paper (He et al. 2016, "Deep Residual Learning", Table 1) with the torchvision
layout: the same module names, so `state_dict()` keys are identical to torchvision's `resnet*` models
(conv1, bn1, layer1.0.conv1, ..., layerN.0.downsample.0/1) and their checkpoints (and MoCo/DenseCL ones,
after prefix stripping in maskless.models.weights) load without renaming. The classifier `fc` is omitted.
Like torchvision ("ResNet v1.5"), the stride of a bottleneck block sits on its 3x3 conv.
"""

from __future__ import annotations

import torch
from torch import nn

# ImageNet channel statistics (RGB, on images scaled to [0, 1]); every torchvision/MoCo/DenseCL checkpoint
# was trained on inputs normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NORMS = ("bn", "gn")


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise RGB images.

    images: (..., 3, H, W), uint8 in [0, 255] or float in [0, 1]. Returns float32 (same shape), or the
    input's float dtype when it is already floating point.
    """
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"normalize expects (..., 3, H, W) RGB images, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif not images.is_floating_point():
        raise ValueError(f"normalize expects uint8 or float images, got dtype {images.dtype}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - mean) / std


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        # 32 groups (Wu & He 2018); weight/bias keys match BatchNorm's, running stats do not exist.
        return nn.GroupNorm(32, channels)
    raise ValueError(f"unknown norm {norm!r}; choices: {list(NORMS)}")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None, norm: str):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = _norm_layer(norm, width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = _norm_layer(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4 (ResNet-50/101)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None, norm: str):
        super().__init__()
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = _norm_layer(norm, width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = _norm_layer(norm, width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = _norm_layer(norm, width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# arch -> (block, blocks per stage); He et al. 2016, Table 1.
ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}

LEVELS = ("res2", "res3", "res4", "res5")


class ResNet(nn.Module):
    """Backbone without the classifier. forward(x) -> {"res2": stride 4, ..., "res5": stride 32}."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, int, int, int], norm: str = "bn"):
        super().__init__()
        self.norm = norm
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = _norm_layer(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            layer, cin = self._make_layer(block, cin, width, n, stride, norm)
            setattr(self, f"layer{i + 1}", layer)
            self.out_channels[LEVELS[i]] = cin
            self.strides[LEVELS[i]] = 4 * 2**i
        self._init_weights()

    @staticmethod
    def _make_layer(block, cin: int, width: int, n: int, stride: int, norm: str) -> tuple[nn.Sequential, int]:
        cout = width * block.expansion
        downsample = None
        if stride != 1 or cin != cout:
            downsample = nn.Sequential(_conv1x1(cin, cout, stride), _norm_layer(norm, cout))
        blocks = [block(cin, width, stride, downsample, norm)]
        blocks += [block(cout, width, 1, None, norm) for _ in range(n - 1)]
        return nn.Sequential(*blocks), cout

    def _init_weights(self) -> None:
        # He initialisation for convs (He et al. 2015), unit scale / zero shift for the norms.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised images -> {"res2": (B, C2, H/4, W/4), ..., "res5": (B, C5, H/32, W/32)}."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        feats = {}
        for i, level in enumerate(LEVELS):
            x = getattr(self, f"layer{i + 1}")(x)  # (B, C_level, H/s, W/s)
            feats[level] = x
        return feats


def build_resnet(arch: str, *, norm: str = "bn") -> ResNet:
    """A randomly initialised backbone: arch in ARCHS, norm "bn" (BatchNorm) or "gn" (GroupNorm 32)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone arch {arch!r}; choices: {sorted(ARCHS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choices: {list(NORMS)}")
    block, layers = ARCHS[arch]
    return ResNet(block, layers, norm=norm)
