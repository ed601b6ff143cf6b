"""Segmentation network for PCT and Contextrast: ResNet backbone + DeepLabv3+ decoder (METHODS.md "PCT").

DeepLabv3+ (Chen et al. 2018, Sec. 3): the last backbone stage is dilated (stride 1, dilation 2) so the
encoder runs at output stride 16; ASPP on res5 (a 1x1 conv, three 3x3 atrous convs and image pooling,
Sec. 3.1 / DeepLabv3 Sec. 3.3), projected to `aspp_channels`; upsampled x4 and concatenated with a 1x1
projection of res2 (48 channels in the paper, `low_channels` here); two 3x3 convs; a 1x1 classifier to
num_classes (class 0 = background); bilinear upsampling to the input size.

Reference values (`SegNetParams.reference()`): resnet101, ASPP rates (6, 12, 18) at output stride 16,
256 ASPP / decoder channels, 48 low-level channels. The defaults are small for CPU runs on ~160 px images
(resnet18, rates (2, 4, 6), 64 channels): at output stride 16 a 160 px image gives a 10 x 10 map, on which
rate 18 would see only padding.

Contextrast embeddings (Contextrast Sec. 3.2): for each level in `embed_levels`, a projection head
(1x1 conv, BN, ReLU, 1x1 conv to embed_dim) on that encoder feature, L2-normalised per pixel; the last
level plays the role of the highest layer I whose anchors update the lower layers'.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskless.models.resnet import ARCHS, LEVELS, NORMS, ResNet, build_resnet
from maskless.models.weights import load_backbone

log = logging.getLogger(__name__)

__all__ = ["SegNetParams", "SegNet", "ASPP", "build_segnet", "load_segnet"]


@dataclass
class SegNetParams:
    """Architecture; `num_classes` counts the background (class 0)."""

    num_classes: int = 5
    arch: str = "resnet18"
    backbone_norm: str = "bn"  # must match a loaded checkpoint's norm (load_backbone checks the keys)
    output_stride: int = 16  # 16: res5 dilated (DeepLabv3+); 32: plain backbone
    aspp_rates: tuple[int, int, int] = (2, 4, 6)  # reference (6, 12, 18)
    aspp_channels: int = 64  # reference 256
    low_channels: int = 32  # reference 48
    decoder_channels: int = 64  # reference 256
    dropout: float = 0.1  # after the ASPP projection (reference 0.5 in DeepLabv3's code; tunable)
    embed_dim: int = 32
    embed_levels: tuple[str, ...] = ("res3", "res4", "res5")  # last = highest layer I (Contextrast)

    def __post_init__(self) -> None:
        self.aspp_rates = tuple(self.aspp_rates)
        self.embed_levels = tuple(self.embed_levels)
        name = "SegNetParams"
        if not isinstance(self.num_classes, int) or not 2 <= self.num_classes <= 255:
            raise ValueError(f"{name}.num_classes must be an integer in [2, 255] (background included; 255 "
                             f"is the ignore label), got {self.num_classes!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"{name}.arch {self.arch!r} unknown; choices: {sorted(ARCHS)}")
        if self.backbone_norm not in NORMS:
            raise ValueError(f"{name}.backbone_norm {self.backbone_norm!r} unknown; choices: {list(NORMS)}")
        if self.output_stride not in (16, 32):
            raise ValueError(f"{name}.output_stride must be 16 or 32, got {self.output_stride!r}")
        if len(self.aspp_rates) != 3 or any(not isinstance(r, int) or r < 1 for r in self.aspp_rates):
            raise ValueError(f"{name}.aspp_rates must be three positive integers, got {self.aspp_rates}")
        for key in ("aspp_channels", "low_channels", "decoder_channels", "embed_dim"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {getattr(self, key)!r}")
        if not (math.isfinite(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"{name}.dropout must lie in [0, 1), got {self.dropout!r}")
        bad = [lv for lv in self.embed_levels if lv not in LEVELS]
        if bad or len(set(self.embed_levels)) != len(self.embed_levels):
            raise ValueError(f"{name}.embed_levels must be distinct levels of {list(LEVELS)}, "
                             f"got {list(self.embed_levels)}")

    @classmethod
    def reference(cls, num_classes: int = 21, arch: str = "resnet101") -> SegNetParams:
        """DeepLabv3+ as in the paper (output stride 16)."""
        return cls(num_classes=num_classes, arch=arch, aspp_rates=(6, 12, 18), aspp_channels=256,
                   low_channels=48, decoder_channels=256, dropout=0.5, embed_dim=128)

    def to_dict(self) -> dict:
        """JSON-like values (lists for tuples), for checkpoints and params files."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3 Sec. 3.3): five branches, concatenated, 1x1 projection."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], dropout: float):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(cin, cout, 1)]
                                      + [_conv_bn_relu(cin, cout, 3, r) for r in rates])
        # Image pooling without BatchNorm: its input is 1 x 1, so BN would fail on a batch of one in training.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(_conv_bn_relu(cout * (len(rates) + 2), cout, 1), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, Cin, h, w) -> (B, Cout, h, w)."""
        outs = [b(x) for b in self.branches]  # each (B, Cout, h, w)
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])  # (B, Cout, h, w)
        return self.project(torch.cat([*outs, pooled], dim=1))


def _dilate_last_stage(backbone: ResNet) -> None:
    """Output stride 32 -> 16 without changing any weight shape (so checkpoints still load): the strided
    conv of layer4's first block and its shortcut get stride 1; every other 3x3 conv of layer4 gets
    dilation 2 (DeepLabv3 Sec. 3.2, "multi-grid" off)."""
    for i, block in enumerate(backbone.layer4):
        strided = _strided_conv(block)
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)):
            if i == 0 and conv is strided:
                conv.stride = (1, 1)
            else:
                conv.dilation, conv.padding = (2, 2), (2, 2)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
    backbone.strides["res5"] = 16


def _strided_conv(block: nn.Module) -> nn.Conv2d:
    """The 3x3 conv of a block that carries the stride (conv1 in BasicBlock, conv2 in Bottleneck)."""
    return block.conv2 if hasattr(block, "conv3") else block.conv1


class SegNet(nn.Module):
    """forward(x) -> {"logits": (B, num_classes, H, W), "embeddings": [(B, D, h_l, w_l)] (when asked)}."""

    def __init__(self, params: SegNetParams, backbone: ResNet | None = None):
        super().__init__()
        self.params = params
        self.backbone = backbone if backbone is not None else build_resnet(params.arch, norm=params.backbone_norm)
        if params.output_stride == 16:
            _dilate_last_stage(self.backbone)
        ch = self.backbone.out_channels
        self.aspp = ASPP(ch["res5"], params.aspp_channels, params.aspp_rates, params.dropout)
        self.low = _conv_bn_relu(ch["res2"], params.low_channels, 1)
        self.fuse = nn.Sequential(_conv_bn_relu(params.aspp_channels + params.low_channels,
                                                params.decoder_channels, 3),
                                  _conv_bn_relu(params.decoder_channels, params.decoder_channels, 3))
        self.classifier = nn.Conv2d(params.decoder_channels, params.num_classes, 1)
        self.embed = nn.ModuleDict({
            lv: nn.Sequential(_conv_bn_relu(ch[lv], params.embed_dim, 1), nn.Conv2d(params.embed_dim,
                                                                                   params.embed_dim, 1))
            for lv in params.embed_levels})

    @classmethod
    def from_backbone_weights(cls, path: str, params: SegNetParams) -> SegNet:
        """Backbone from a pretrain-stage (or torchvision/MoCo/DenseCL) checkpoint; decoder random."""

        backbone = load_backbone(str(path), params.arch, norm=params.backbone_norm)
        log.info("SegNet: backbone %s initialised from %s; decoder randomly initialised", params.arch, path)
        return cls(params, backbone=backbone)

    def forward(self, images: Tensor, *, embeddings: bool = False) -> dict[str, Tensor | list[Tensor]]:
        """images: (B, 3, H, W) normalised (maskless.models.resnet.normalize); any H, W >= 16."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"SegNet expects (B, 3, H, W) images, got shape {tuple(images.shape)}")
        feats = self.backbone(images)  # {"res2": (B, C2, H/4, W/4), ..., "res5": (B, C5, H/16, W/16)}
        x = self.aspp(feats["res5"])  # (B, A, H/16, W/16)
        low = self.low(feats["res2"])  # (B, L, H/4, W/4)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)  # (B, A, H/4, W/4)
        x = self.fuse(torch.cat([x, low], dim=1))  # (B, D, H/4, W/4)
        logits = F.interpolate(self.classifier(x), size=images.shape[-2:], mode="bilinear",
                               align_corners=False)  # (B, K, H, W)
        out: dict[str, Tensor | list[Tensor]] = {"logits": logits}
        if embeddings:
            out["embeddings"] = [F.normalize(self.embed[lv](feats[lv]), dim=1)  # (B, E, h_l, w_l)
                                 for lv in self.params.embed_levels]
        return out


def build_segnet(params: SegNetParams, backbone: str | None = None) -> SegNet:
    """A SegNet with the backbone from checkpoint `backbone` (None: random He initialisation)."""
    if backbone is None:
        return SegNet(params)
    return SegNet.from_backbone_weights(backbone, params)


def load_segnet(path: str, which: str | None = None) -> SegNet:
    """A trained SegNet (eval mode) from a checkpoint of maskless.pct.train.

    kind "segnet" (train_supervised) holds one network; kind "pct" (train_pct) holds both: `which` picks
    "hybrid" or "pseudo".
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in ("segnet", "pct"):
        raise ValueError(f"{path} is not a PCT/segmentation checkpoint (kind {ckpt.get('kind')!r})"
                         if isinstance(ckpt, dict) else f"{path} is not a PCT/segmentation checkpoint")
    state = ckpt["model"]
    if ckpt["kind"] == "pct":
        if which not in ("hybrid", "pseudo"):
            raise ValueError(f"{path} holds a PCT pair: pass which='hybrid' or which='pseudo', got {which!r}")
        prefix = which + "."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    elif which is not None:
        raise ValueError(f"{path} holds a single network; which must be None, got {which!r}")
    model = SegNet(SegNetParams(**ckpt["params"]["model"]))
    model.load_state_dict(state, strict=True)
    return model.eval()
