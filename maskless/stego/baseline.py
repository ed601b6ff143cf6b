"""The bar STEGO must clear: k-means on the raw frozen features (issue 5, "Measured").

Spherical k-means with k-means++ seeding on the L2-normalised pixel vectors (maskless.ops.kmeans: cosine
assignment, as the cluster probe assigns), every pixel then assigned at the output resolution with the
features upsampled bilinearly exactly as maskless.stego.predict upsamples codes. Deterministic by seed.
Memory: one chunk of upsampled features at a time, never the whole set (maskless.ops.kmeans).
"""

from __future__ import annotations

import torch

from maskless.ops.kmeans import KMeansParams, assign_maps, fit_kmeans

__all__ = ["KMeansParams", "kmeans_baseline"]


def kmeans_baseline(features: torch.Tensor, size: tuple[int, int], params: KMeansParams | None = None
                    ) -> torch.Tensor:
    """(N, H, W) int64 cluster maps of k-means on the raw features (N, C, h, w) at output size (H, W)."""
    params = params or KMeansParams()
    return assign_maps(features, fit_kmeans(features, params), size)
