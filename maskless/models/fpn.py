"""Feature Pyramid Network over res2..res5 (Lin et al. 2017, "Feature Pyramid Networks", Sec. 3).

Lateral 1x1 convs bring every level to `out_channels`; a top-down pass adds each coarser map, upsampled
(nearest) to the finer level's size, to that level's lateral; a 3x3 conv smooths each sum (the paper's
"to reduce the aliasing effect of upsampling"). The optional P6 is a stride-2 subsampling of P5 (the
"LastLevelMaxPool" of Mask R-CNN / SOLO setups), used by detectors that need a stride-64 level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _level_index(name: str) -> int:
    if not (name.startswith("res") and name[3:].isdigit()):
        raise ValueError(f"FPN input levels must be named res<N> (e.g. 'res2'), got {name!r}")
    return int(name[3:])


class FPN(nn.Module):
    """forward({"res2": ..., "res5": ...}) -> {"p2": ..., "p5": ...(, "p6")}, every map with out_channels."""

    def __init__(self, in_channels: dict[str, int], out_channels: int = 256, *, p6: bool = False):
        super().__init__()
        if not in_channels:
            raise ValueError("FPN needs at least one input level")
        # Finest first, so the top-down pass walks the list backwards.
        self.in_levels = sorted(in_channels, key=_level_index)
        self.out_levels = [f"p{_level_index(n)}" for n in self.in_levels]
        self.lateral = nn.ModuleDict({n: nn.Conv2d(in_channels[n], out_channels, 1) for n in self.in_levels})
        self.output = nn.ModuleDict(
            {n: nn.Conv2d(out_channels, out_channels, 3, padding=1) for n in self.in_levels}
        )
        self.p6 = p6
        if p6:
            self.out_levels.append(f"p{_level_index(self.in_levels[-1]) + 1}")
        self.out_channels = {n: out_channels for n in self.out_levels}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Xavier-style uniform fill with zero bias, the usual FPN initialisation.
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """feats: {"resN": (B, C_N, H_N, W_N)} -> {"pN": (B, out_channels, H_N, W_N)}."""
        missing = [n for n in self.in_levels if n not in feats]
        if missing:
            raise KeyError(f"FPN input lacks levels {missing}; got {sorted(feats)}")
        out: dict[str, torch.Tensor] = {}
        top = None
        for name in reversed(self.in_levels):
            lat = self.lateral[name](feats[name])  # (B, D, H_N, W_N)
            if top is not None:
                # Upsample to the exact size: odd input sizes make the strides not divide evenly.
                lat = lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
            top = lat
            out[f"p{_level_index(name)}"] = self.output[name](lat)  # (B, D, H_N, W_N)
        result = {n: out[n] for n in self.out_levels if n in out}
        if self.p6:
            last = self.out_levels[-2]
            result[self.out_levels[-1]] = F.max_pool2d(result[last], kernel_size=1, stride=2)  # (B, D, H/2, W/2)
        return result
