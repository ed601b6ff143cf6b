"""SOLOv2 with a FreeSOLO semantic-embedding branch (METHODS.md "Self-supervised SOLO (FreeSOLO)").

Written from the SOLOv2 paper (Wang et al. 2020, "SOLOv2: Dynamic and Fast Instance Segmentation", Sec. 3)
and FreeSOLO (Wang et al. 2022, Sec. 3.2). A ResNet + FPN feeds two parts:

- a head shared by every pyramid level: the level's map is resized (bilinear) to an S x S grid; a category
  tower predicts one fg/bg logit per cell (class-agnostic, the self-supervised setting) and, from the same
  tower, a parallel conv predicts the cell's semantic embedding (E = 128, the Free Mask embedding dim); a
  kernel tower, whose input carries two normalised coordinate channels (CoordConv, SOLOv2 Sec. 3.2.1),
  predicts a D-dim dynamic 1x1 kernel per cell;
- a unified mask-feature branch (SOLOv2 Sec. 3.2.2): p2..p5 are each brought to stride 4 with
  conv-GN-ReLU + bilinear x2 steps and summed (CoordConv on the coarsest level's input), then a 1x1
  conv-GN-ReLU gives D channels. The mask logits of a cell are sum_d kernel[d] * mask_feat[d].

Output contract (shared with maskless/solo/targets.py and losses.py), for images padded to a multiple of 32:
"cate": [(B, 1, S_l, S_l)], "emb": [(B, E, S_l, S_l)], "kernel": [(B, D, S_l, S_l)] over levels, and
"mask_feat": (B, D, H/4, W/4).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskless.models.fpn import FPN
from maskless.models.resnet import ARCHS, NORMS, ResNet, build_resnet
from maskless.models.weights import load_backbone

log = logging.getLogger(__name__)

FPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")
MASK_LEVELS = ("p2", "p3", "p4", "p5")  # the unified mask branch always reads these (SOLOv2 Sec. 3.2.2)
SIZE_DIVISOR = 32  # res5 stride: inputs padded to it give exact H/4 mask features


@dataclass
class SoloModelParams:
    """Architecture of the SOLOv2 model. Defaults are a small CPU-friendly config for small images.

    Reference values (SOLOv2 R50-FPN as used by FreeSOLO; `SoloModelParams.reference()`): arch resnet50,
    fpn_channels 256, head_convs 4, head_channels 512, kernel_dim 256, mask_branch_channels 128, emb_dim 128,
    grids (40, 36, 24, 16, 12) on levels (p2, p3, p4, p5, p6). The defaults keep three levels (p3..p5) with
    grids (24, 16, 12) for images of a few hundred pixels and narrow the heads to 128 / 64 channels.
    kernel_dim (D) is also the number of mask-feature channels, so a kernel is a 1x1 conv over them.
    """

    arch: str = "resnet18"
    backbone_norm: str = "bn"  # must match a loaded checkpoint's norm (load_backbone checks the keys)
    fpn_channels: int = 128
    head_convs: int = 4
    head_channels: int = 128
    kernel_dim: int = 64
    mask_branch_channels: int = 64  # width inside the mask-feature branch before the final 1x1 to D
    emb_dim: int = 128
    grids: tuple[int, ...] = (24, 16, 12)
    levels: tuple[str, ...] = ("p3", "p4", "p5")  # FPN level feeding each grid
    gn_groups: int = 32  # GroupNorm(32) in the heads (SOLOv2)
    prior_prob: float = 0.01  # focal-loss prior for the cate bias (Lin et al. 2017, Sec. 4.1)

    def __post_init__(self) -> None:
        # Config files give lists; the dataclass keeps tuples so params compare and hash reliably.
        self.grids = tuple(self.grids)
        self.levels = tuple(self.levels)
        name = "SoloModelParams"
        if self.arch not in ARCHS:
            raise ValueError(f"{name}.arch {self.arch!r} unknown; choices: {sorted(ARCHS)}")
        if self.backbone_norm not in NORMS:
            raise ValueError(f"{name}.backbone_norm {self.backbone_norm!r} unknown; choices: {list(NORMS)}")
        if not self.grids or any(not isinstance(s, int) or s < 1 for s in self.grids):
            raise ValueError(f"{name}.grids must be positive integers, got {self.grids}")
        if len(self.levels) != len(self.grids):
            raise ValueError(f"{name}.levels {self.levels} must name one FPN level per grid {self.grids}")
        bad = [lv for lv in self.levels if lv not in FPN_LEVELS]
        if bad:
            raise ValueError(f"{name}.levels {bad} unknown; choices: {list(FPN_LEVELS)}")
        for key in ("fpn_channels", "head_convs", "head_channels", "kernel_dim", "mask_branch_channels",
                    "emb_dim", "gn_groups"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {getattr(self, key)!r}")
        for key in ("head_channels", "kernel_dim", "mask_branch_channels"):
            if getattr(self, key) % self.gn_groups:
                raise ValueError(f"{name}.{key} = {getattr(self, key)} is not divisible by "
                                 f"gn_groups = {self.gn_groups} (GroupNorm)")
        if not 0.0 < self.prior_prob < 1.0:
            raise ValueError(f"{name}.prior_prob must lie in (0, 1), got {self.prior_prob}")

    @classmethod
    def reference(cls, arch: str = "resnet50") -> SoloModelParams:
        """The SOLOv2 R-FPN values FreeSOLO trains with (METHODS.md)."""
        return cls(arch=arch, fpn_channels=256, head_convs=4, head_channels=512, kernel_dim=256,
                   mask_branch_channels=128, emb_dim=128, grids=(40, 36, 24, 16, 12),
                   levels=("p2", "p3", "p4", "p5", "p6"))

    def to_dict(self) -> dict:
        """JSON-like values (lists for tuples), for checkpoints and params files."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def pad_to_multiple(images: Tensor, multiple: int = SIZE_DIVISOR) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad normalised images at the bottom and right: (B, 3, H, W) -> ((B, 3, H', W'), (H, W)).

    Zero is the mean colour after ImageNet normalisation; the padding sits where predict() crops it off.
    """
    if images.ndim != 4:
        raise ValueError(f"pad_to_multiple expects (B, C, H, W) images, got shape {tuple(images.shape)}")
    if multiple < 1:
        raise ValueError(f"pad_to_multiple: multiple must be >= 1, got {multiple}")
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph), value=0.0)  # (B, C, H', W')
    return images, (h, w)


def coord_channels(x: Tensor) -> Tensor:
    """CoordConv channels for a (B, C, H, W) map: (B, 2, H, W), x then y, each linear in [-1, 1]."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    return torch.stack([xx, yy]).expand(b, 2, h, w)


def _conv_gn_relu(cin: int, cout: int, kernel: int, groups: int) -> nn.Sequential:
    # No conv bias: GroupNorm's shift replaces it.
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.GroupNorm(groups, cout), nn.ReLU(inplace=True))


class SoloHead(nn.Module):
    """Category (+ embedding) and kernel branches, shared across pyramid levels."""

    def __init__(self, p: SoloModelParams):
        super().__init__()
        c, g = p.head_channels, p.gn_groups
        self.cate_tower = nn.Sequential(*[_conv_gn_relu(p.fpn_channels if i == 0 else c, c, 3, g)
                                          for i in range(p.head_convs)])
        # +2: CoordConv on the kernel branch input, so kernels can encode where their instance lies.
        self.kernel_tower = nn.Sequential(*[_conv_gn_relu(p.fpn_channels + 2 if i == 0 else c, c, 3, g)
                                            for i in range(p.head_convs)])
        self.cate_out = nn.Conv2d(c, 1, 3, padding=1)
        self.emb_out = nn.Conv2d(c, p.emb_dim, 3, padding=1)  # FreeSOLO's parallel embedding conv
        self.kernel_out = nn.Conv2d(c, p.kernel_dim, 3, padding=1)

    def forward(self, feat: Tensor, grid: int) -> tuple[Tensor, Tensor, Tensor]:
        """feat: (B, C, h, w) one FPN level -> cate (B, 1, S, S), emb (B, E, S, S), kernel (B, D, S, S)."""
        x = F.interpolate(feat, size=(grid, grid), mode="bilinear", align_corners=False)  # (B, C, S, S)
        cate_feat = self.cate_tower(x)  # (B, Ch, S, S)
        kernel_feat = self.kernel_tower(torch.cat([x, coord_channels(x)], dim=1))  # (B, Ch, S, S)
        return self.cate_out(cate_feat), self.emb_out(cate_feat), self.kernel_out(kernel_feat)


class MaskFeatureBranch(nn.Module):
    """Unified mask features at stride 4 from p2..p5 (SOLOv2 Sec. 3.2.2)."""

    def __init__(self, p: SoloModelParams):
        super().__init__()
        c, g = p.mask_branch_channels, p.gn_groups
        self.stages = nn.ModuleList()
        for i, _ in enumerate(MASK_LEVELS):
            # Level i needs max(i, 1) conv steps, the first i of them followed by a bilinear x2.
            cin = p.fpn_channels + (2 if i == len(MASK_LEVELS) - 1 else 0)  # CoordConv on the coarsest
            convs = [_conv_gn_relu(cin if j == 0 else c, c, 3, g) for j in range(max(i, 1))]
            self.stages.append(nn.ModuleList(convs))
        self.out = _conv_gn_relu(c, p.kernel_dim, 1, g)

    def forward(self, feats: dict[str, Tensor]) -> Tensor:
        """feats: {"p2": (B, C, H/4, W/4), ..., "p5": (B, C, H/32, W/32)} -> (B, D, H/4, W/4)."""
        sizes = [feats[lv].shape[-2:] for lv in MASK_LEVELS]
        total = None
        for i, (lv, convs) in enumerate(zip(MASK_LEVELS, self.stages)):
            x = feats[lv]
            if i == len(MASK_LEVELS) - 1:
                x = torch.cat([x, coord_channels(x)], dim=1)  # (B, C + 2, H/32, W/32)
            for j, conv in enumerate(convs):
                x = conv(x)
                if i > 0:
                    # Upsample to the next finer level's exact size (x2 for padded inputs).
                    x = F.interpolate(x, size=sizes[i - j - 1], mode="bilinear", align_corners=False)
            total = x if total is None else total + x  # (B, Cm, H/4, W/4)
        return self.out(total)


class SOLOv2(nn.Module):
    """ResNet + FPN + shared SOLO head + unified mask branch. forward(images) -> the contract dict."""

    def __init__(self, params: SoloModelParams, backbone: ResNet | None = None):
        super().__init__()
        self.params = params
        self.backbone = build_resnet(params.arch, norm=params.backbone_norm) if backbone is None else backbone
        # p6 (stride-2 subsample of p5) only when a grid uses it, as in the reference 5-level setup.
        self.fpn = FPN(self.backbone.out_channels, params.fpn_channels, p6="p6" in params.levels)
        self.head = SoloHead(params)
        self.mask_branch = MaskFeatureBranch(params)
        self._init_heads()

    def _init_heads(self) -> None:
        # SOLOv2 init: convs normal(0, 0.01) with zero bias; the cate bias starts every cell at the
        # foreground probability prior_prob so the focal loss is not swamped by background early on.
        for m in [*self.head.modules(), *self.mask_branch.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        p = self.params.prior_prob
        nn.init.constant_(self.head.cate_out.bias, -math.log((1.0 - p) / p))

    @classmethod
    def from_backbone_weights(cls, path: str, params: SoloModelParams) -> SOLOv2:
        """Backbone from a pretrain-stage (or torchvision/MoCo/DenseCL) checkpoint; FPN and heads random.

        load_backbone raises, naming `path`, when the checkpoint's arch or norm differs from params.
        """
        backbone = load_backbone(str(path), params.arch, norm=params.backbone_norm)
        log.info("SOLOv2: backbone %s initialised from %s; FPN and heads randomly initialised",
                 params.arch, path)
        return cls(params, backbone=backbone)

    def forward(self, images: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """images: (B, 3, H, W) normalised, H and W multiples of 32 (see pad_to_multiple) -> {
        "cate": [(B, 1, S, S)], "emb": [(B, E, S, S)], "kernel": [(B, D, S, S)], "mask_feat": (B, D, H/4, W/4)}.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"SOLOv2 expects (B, 3, H, W) images, got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % SIZE_DIVISOR or w % SIZE_DIVISOR:
            raise ValueError(f"SOLOv2 input size {h}x{w} is not a multiple of {SIZE_DIVISOR}; "
                             f"pad it with maskless.solo.model.pad_to_multiple")
        feats = self.fpn(self.backbone(images))  # {"pN": (B, C, H/2^N, W/2^N)}
        out: dict[str, list[Tensor]] = {"cate": [], "emb": [], "kernel": []}
        for level, grid in zip(self.params.levels, self.params.grids):
            cate, emb, kernel = self.head(feats[level], grid)
            out["cate"].append(cate)  # (B, 1, S, S)
            out["emb"].append(emb)  # (B, E, S, S)
            out["kernel"].append(kernel)  # (B, D, S, S)
        return {**out, "mask_feat": self.mask_branch(feats)}  # mask_feat (B, D, H/4, W/4)
