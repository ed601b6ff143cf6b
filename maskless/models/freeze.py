"""Freezing a backbone for fine-tuning: BatchNorm statistics and affine parameters, and detectron2's FREEZE_AT
stages (used by SOLO's training and its EEC head's refresh)."""

from __future__ import annotations

import torch


def freeze_bn(module: torch.nn.Module) -> int:
    """Put every BatchNorm of `module` in eval mode with frozen affine parameters; returns how many."""
    n = 0
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            n += 1
    return n


def freeze_stages(backbone: torch.nn.Module, freeze_at: int) -> int:
    """Stop the gradient of the stem (freeze_at >= 1) and of res2.. res<freeze_at> (detectron2's FREEZE_AT);
    returns the number of parameters frozen. Their BatchNorm is frozen by freeze_bn in any case."""
    parts = [[backbone.conv1, backbone.bn1]] if freeze_at >= 1 else []
    parts += [[getattr(backbone, f"layer{i}")] for i in range(1, freeze_at)]
    n = 0
    for part in parts:
        for module in part:
            for p in module.parameters():
                p.requires_grad_(False)
                n += p.numel()
    return n
