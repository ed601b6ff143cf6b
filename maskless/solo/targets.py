"""SOLOv2 target assignment for one image (METHODS.md "Self-supervised SOLO (FreeSOLO)").

Written from the SOLOv2 paper (Wang et al. 2020, Sec. 3.1 and 3.2 of SOLO, Wang et al. 2019, "centre
sampling"): an instance goes to every pyramid level whose scale range holds sqrt(box_w * box_h); on that
level's S x S grid the cells of its "centre region" (centre of mass +- sigma * half the box, limited to the
3x3 cells around the centre cell) become positives that predict its mask. The targets here are label-free
coarse masks (Free Mask or a previous round's predictions), so there is one class: foreground.

Conventions (documented choices, not in the papers):
- Coordinates are continuous pixel coordinates: pixel (row r, col c) covers [r, r + 1) x [c, c + 1), so its
  centre is (r + 0.5, c + 0.5). A cell index is floor(coordinate / H * S).
- Box sizes count pixels (a one-pixel mask has w = h = 1, as maskless.ops.masks.boxes_xywh).
- Conflicts: instances are written in DESCENDING mask area (ties by input order), so a smaller instance
  overwrites a larger one on a shared cell: the small object keeps its only cells, the big one has others.
- Mask targets are at the mask-feature resolution Hf = ceil(H / mask_stride): each stride x stride block
  (zero-padded at the bottom/right) is foreground when at least half its pixels are (area pooling, >= 0.5).
  A non-empty instance smaller than that would vanish and give a target with no foreground (no dice signal),
  so such an instance falls back to "any pixel in the block" (max pooling).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

__all__ = ["SoloGeometry", "SoloTargets", "assign_targets", "downsample_masks"]


@dataclass
class SoloGeometry:
    """Grid layout of the SOLO head and the assignment hyperparameters.

    Defaults are the SOLOv2 R-FPN values FreeSOLO uses (METHODS.md), levels p2..p6. `small()` is the
    layout for the small images of the synthetic data and coco-tiny (~160-320 px), matching
    maskless.solo.model.SoloModelParams' default grids (24, 16, 12) on p3..p5. strides are recorded for
    checks and documentation; assignment needs only the grids, ranges, sigma and mask_stride.
    """

    grids: tuple[int, ...] = (40, 36, 24, 16, 12)
    strides: tuple[int, ...] = (8, 8, 16, 32, 32)
    scale_ranges: tuple[tuple[float, float], ...] = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
    sigma: float = 0.2
    mask_stride: int = 4

    def __post_init__(self) -> None:
        # Config files give lists; tuples keep the dataclass comparable and hashable.
        self.grids = tuple(int(s) for s in self.grids)
        self.strides = tuple(int(s) for s in self.strides)
        self.scale_ranges = tuple((float(lo), float(hi)) for lo, hi in self.scale_ranges)
        name = "SoloGeometry"
        n = len(self.grids)
        if n == 0:
            raise ValueError(f"{name}.grids must name at least one level")
        if len(self.strides) != n or len(self.scale_ranges) != n:
            raise ValueError(f"{name}: grids ({n} levels), strides ({len(self.strides)}) and scale_ranges "
                             f"({len(self.scale_ranges)}) must have one entry per level")
        if any(s < 1 for s in self.grids) or any(s < 1 for s in self.strides):
            raise ValueError(f"{name}: grids {self.grids} and strides {self.strides} must be positive")
        for lo, hi in self.scale_ranges:
            if not 0 <= lo <= hi:
                raise ValueError(f"{name}.scale_ranges entry {(lo, hi)} must satisfy 0 <= lower <= upper")
        if not self.sigma > 0:
            raise ValueError(f"{name}.sigma must be positive, got {self.sigma}")
        if not isinstance(self.mask_stride, int) or self.mask_stride < 1:
            raise ValueError(f"{name}.mask_stride must be a positive integer, got {self.mask_stride!r}")

    @classmethod
    def reference(cls) -> SoloGeometry:
        """SOLOv2 R-FPN at COCO scale (images ~800 x 1333)."""
        return cls()

    @classmethod
    def small(cls) -> SoloGeometry:
        """Three levels (p3, p4, p5) for images of ~160-320 px: the reference ranges halved, roughly, and
        the last level open-ended so a whole-image instance still has a level."""
        return cls(grids=(24, 16, 12), strides=(8, 16, 32), scale_ranges=((1, 48), (24, 96), (48, 2048)))

    @property
    def num_levels(self) -> int:
        return len(self.grids)


@dataclass
class SoloTargets:
    """Targets of one image.

    labels[l]: (S_l * S_l,) float, 1 on positive cells, row-major (cell = row * S_l + col).
    instance[l]: (S_l * S_l,) long, index into mask_targets of the cell's instance, -1 on negatives.
    mask_targets: (N, Hf, Wf) float in {0, 1}; N counts every input mask, empty ones included (all zero,
    never referenced). embeddings: (N, E) or None. image_hw: the padded input size (H, W); valid_hw: the
    real image inside it at mask resolution (rows, cols). num_empty / num_unassigned: masks skipped because
    they were empty / their scale fell in no level's range.
    """

    labels: list[Tensor]
    instance: list[Tensor]
    mask_targets: Tensor
    embeddings: Tensor | None
    image_hw: tuple[int, int]
    valid_hw: tuple[int, int]
    mask_stride: int
    num_empty: int = 0
    num_unassigned: int = 0

    @property
    def num_pos(self) -> int:
        return int(sum(int((ins >= 0).sum()) for ins in self.instance))

    def to(self, device: torch.device | str) -> SoloTargets:
        """A copy with every tensor on `device`."""
        emb = None if self.embeddings is None else self.embeddings.to(device)
        return SoloTargets([t.to(device) for t in self.labels], [t.to(device) for t in self.instance],
                           self.mask_targets.to(device), emb, self.image_hw, self.valid_hw, self.mask_stride,
                           self.num_empty, self.num_unassigned)


def downsample_masks(masks: Tensor, stride: int) -> Tensor:
    """(N, H, W) bool -> (N, ceil(H / stride), ceil(W / stride)) float in {0, 1}.

    Area pooling then >= 0.5; masks that would come out empty although non-empty use max pooling instead
    (module docstring).
    """
    n, h, w = masks.shape
    hf, wf = math.ceil(h / stride), math.ceil(w / stride)
    padded = torch.zeros(n, hf * stride, wf * stride, dtype=torch.uint8, device=masks.device)
    padded[:, :h, :w] = masks
    # Counts per cell: along each row's contiguous stride first, then over the stride rows, in a small integer
    # type (exact; 6x faster than one int64 sum over the strided 5-d view at 800 px, BENCHMARKS.md "SOLO
    # batch building").
    small = torch.int16 if 2 * stride * stride < 2**15 else torch.int64
    per_row = padded.view(n, hf * stride, wf, stride).sum(-1, dtype=small)  # (N, Hf * stride, Wf)
    counts = per_row.view(n, hf, stride, wf).sum(2, dtype=small)  # (N, Hf, Wf)
    out = counts * 2 >= stride * stride  # (N, Hf, Wf)
    vanished = ~out.flatten(1).any(1) & (counts.flatten(1) > 0).any(1)  # (N,): non-empty masks (from the counts)
    out[vanished] = counts[vanished] > 0
    return out.float()


def _as_bool_masks(masks) -> Tensor:
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(masks)
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        raise ValueError(f"assign_targets: masks must be an (N, H, W) tensor, got "
                         f"{type(masks).__name__} {tuple(getattr(masks, 'shape', ()))}")
    if masks.dtype.is_floating_point or masks.dtype.is_complex:
        raise ValueError(f"assign_targets: masks must be bool (or integer 0/1), got {masks.dtype}")
    return masks if masks.dtype == torch.bool else masks != 0


def _instance_stats(masks: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per mask: area (N,), centre of mass (N, 2) as (y, x), box size (N, 2) as (h, w), scale (N,).

    Float64 so the floor() to a cell index is not moved by rounding on large images.
    """
    h, w = masks.shape[1:]
    rows = masks.sum(dim=2, dtype=torch.int32).double()  # (N, H): exact counts (2x faster than a float64 sum)
    cols = masks.sum(dim=1, dtype=torch.int32).double()  # (N, W)
    area = rows.sum(1)  # (N,)
    ys = torch.arange(h, dtype=torch.float64, device=masks.device) + 0.5
    xs = torch.arange(w, dtype=torch.float64, device=masks.device) + 0.5
    safe = area.clamp(min=1.0)
    centre = torch.stack([(rows * ys).sum(1) / safe, (cols * xs).sum(1) / safe], dim=1)  # (N, 2)
    box = torch.stack([_extent(rows > 0), _extent(cols > 0)], dim=1)  # (N, 2)
    return area, centre, box, (box[:, 0] * box[:, 1]).sqrt()


def _extent(occupied: Tensor) -> Tensor:
    """(N, L) bool -> (N,) float64: last True index - first True index + 1, or 0 when none."""
    length = occupied.shape[1]
    idx = torch.arange(length, device=occupied.device)
    first = torch.where(occupied, idx, length).amin(1)
    last = torch.where(occupied, idx, -1).amax(1)
    return (last - first + 1).clamp(min=0).double()


def _centre_regions(centre: Tensor, box: Tensor, hw: tuple[int, int], grid: int, sigma: float) -> Tensor:
    """(K, 4) long cell rectangles (top, bottom, left, right), inclusive, on an S x S grid.

    The sigma-scaled half box around the centre, in cells, limited to the centre cell +- 1 (SOLOv2).
    """
    size = torch.tensor(hw, dtype=torch.float64, device=centre.device)  # (2,) as (H, W)

    def cell(coord: Tensor) -> Tensor:  # (K, 2) pixel coordinates -> (K, 2) cell indices
        return (coord / size * grid).floor().long().clamp(0, grid - 1)

    half = 0.5 * sigma * box  # (K, 2)
    mid, lo, hi = cell(centre), cell(centre - half), cell(centre + half)
    lo = torch.maximum(lo, mid - 1)
    hi = torch.minimum(hi, mid + 1)
    return torch.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], dim=1)


def _paint_level(regions: Tensor, ids: Tensor, grid: int) -> Tensor:
    """Instance index per cell (S*S,) long, -1 where none; later rows of `regions` win on overlaps."""
    cells = torch.arange(grid, device=regions.device)
    rows_in = (cells[None] >= regions[:, 0:1]) & (cells[None] <= regions[:, 1:2])  # (K, S)
    cols_in = (cells[None] >= regions[:, 2:3]) & (cells[None] <= regions[:, 3:4])  # (K, S)
    cover = rows_in[:, :, None] & cols_in[:, None, :]  # (K, S, S)
    order = torch.arange(1, len(ids) + 1, device=regions.device)[:, None, None]  # (K, 1, 1)
    winner = (cover * order).amax(0).flatten() if len(ids) else torch.zeros(grid * grid, dtype=torch.long,
                                                                              device=regions.device)
    lookup = torch.cat([ids.new_full((1,), -1), ids])  # 0 -> -1, k -> ids[k - 1]
    return lookup[winner]


def _check_embeddings(embeddings, n: int) -> Tensor | None:
    if embeddings is None:
        return None
    emb = torch.as_tensor(embeddings)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"assign_targets: embeddings must be (N={n}, E), got shape {tuple(emb.shape)}")
    return emb.float()


def assign_targets(masks: Tensor, geometry: SoloGeometry, *, embeddings: Tensor | None = None,
                   image_hw: tuple[int, int] | None = None) -> SoloTargets:
    """SOLOv2 targets of one image.

    masks: (N, H, W) bool at the padded input size (H, W) the network sees. embeddings: (N, E) Free Mask
    embeddings or None. image_hw: the real image size inside the padding (default: all of (H, W)); the
    pairwise loss ignores the padding. Returns SoloTargets (see its docstring); empty masks and masks
    outside every scale range are counted there and logged at debug level.
    """
    masks = _as_bool_masks(masks)
    n, h, w = masks.shape
    emb = _check_embeddings(embeddings, n)
    ih, iw = (h, w) if image_hw is None else (int(image_hw[0]), int(image_hw[1]))
    if not (0 < ih <= h and 0 < iw <= w):
        raise ValueError(f"assign_targets: image_hw {image_hw} must lie within the mask size {(h, w)}")
    area, centre, box, scale = _instance_stats(masks)
    nonempty = area > 0
    # Descending area, ties by input order (stable sort): smaller instances are painted last and win.
    order = torch.sort(-area, stable=True).indices
    order = order[nonempty[order]]
    labels, instance, assigned = [], [], torch.zeros(n, dtype=torch.bool, device=masks.device)
    for grid, (lo, hi) in zip(geometry.grids, geometry.scale_ranges):
        ids = order[(scale[order] >= lo) & (scale[order] <= hi)]  # (K,) in painting order
        assigned[ids] = True
        regions = _centre_regions(centre[ids], box[ids], (h, w), grid, geometry.sigma)  # (K, 4)
        ins = _paint_level(regions, ids, grid)  # (S*S,)
        instance.append(ins)
        labels.append((ins >= 0).float())
    num_empty = int((~nonempty).sum())
    num_unassigned = int((nonempty & ~assigned).sum())
    if num_empty or num_unassigned:
        log.debug("assign_targets: skipped %d empty masks and %d masks outside every scale range",
                  num_empty, num_unassigned)
    stride = geometry.mask_stride
    valid = (math.ceil(ih / stride), math.ceil(iw / stride))
    return SoloTargets(labels, instance, downsample_masks(masks, stride), emb, (h, w), valid, stride,
                       num_empty, num_unassigned)
