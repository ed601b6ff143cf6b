"""STEGO head and probes (METHODS.md "STEGO"; Hamilton et al. 2022, Sec. 3.3).

- StegoHead: codes s = linear(drop(f)) + nonlinear(drop'(f)), a 1x1 conv plus a residual 1x1-ReLU-1x1
  branch, with Dropout2d(0.1) on the frozen input features; each branch draws its own dropout mask, as the
  reference does (mhamilton723/STEGO src/modules.py, DinoFeaturizer.forward: cluster1(self.dropout(feat)) +
  cluster2(self.dropout(feat)), two calls of one Dropout2d), and every forward draws new masks.
- ClusterProbe: K centroids; cosine of normalised codes to normalised centroids; hard assignment; loss
  -mean(max_k cos), a gradient form of spherical k-means. It always sees DETACHED codes: the clusters
  follow the head, never shape it.
- LinearProbe: a 1x1 conv to class logits trained with cross entropy on detached codes, for evaluation
  only (it measures how linearly separable the codes are; it never trains the head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskless.data.semantic import IGNORE  # noqa: F401  (the one ignore label, re-exported)


class StegoHead(nn.Module):
    """(B, C, h, w) features -> (B, code_dim, h, w) codes."""

    def __init__(self, in_channels: int, code_dim: int = 70, dropout: float = 0.1):
        super().__init__()
        if in_channels < 1 or code_dim < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"StegoHead needs in_channels >= 1, code_dim >= 1 and dropout in [0, 1), got "
                             f"{in_channels}, {code_dim}, {dropout}")
        self.dropout = nn.Dropout2d(dropout)
        self.linear = nn.Conv2d(in_channels, code_dim, kernel_size=1)
        self.nonlinear = nn.Sequential(nn.Conv2d(in_channels, in_channels, kernel_size=1), nn.ReLU(),
                                       nn.Conv2d(in_channels, code_dim, kernel_size=1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # Two calls of the dropout: two independent channel masks, one per branch (reference).
        return self.linear(self.dropout(feats)) + self.nonlinear(self.dropout(feats))  # (B, D, h, w)


class ClusterProbe(nn.Module):
    """K centroids in code space; forward gives cosine similarities (B, K, h, w)."""

    def __init__(self, code_dim: int, n_clusters: int):
        super().__init__()
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        self.centroids = nn.Parameter(torch.randn(n_clusters, code_dim))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        s = F.normalize(codes, dim=1)  # (B, D, h, w)
        c = F.normalize(self.centroids, dim=1)  # (K, D)
        return torch.einsum("bdhw,kd->bkhw", s, c)  # (B, K, h, w)

    def loss(self, codes: torch.Tensor) -> torch.Tensor:
        """-mean over pixels of the cosine to the nearest centroid, on detached codes (no head gradient)."""
        cos = self(codes.detach())  # (B, K, h, w)
        return -cos.max(dim=1).values.mean()

    def assign(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) int64 hard assignment: the most cosine-similar centroid."""
        return self(codes).argmax(dim=1)


class LinearProbe(nn.Module):
    """1x1 conv from codes to class logits (B, n_classes, h, w)."""

    def __init__(self, code_dim: int, n_classes: int):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.conv = nn.Conv2d(code_dim, n_classes, kernel_size=1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.conv(codes)  # (B, n_classes, h, w)

    def loss(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross entropy (ignore 255) of logits of DETACHED codes upsampled bilinearly to the labels' size.

        codes: (B, D, h, w); labels: (B, H, W) int64. A batch without any valid pixel gives 0 (with a graph,
        so the caller's backward still works) rather than the NaN of an empty mean.
        """
        logits = F.interpolate(self(codes.detach()), size=labels.shape[-2:], mode="bilinear",
                               align_corners=False)  # (B, n_classes, H, W)
        if not (labels != IGNORE).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)
