"""The bar STEGO must clear: k-means on the raw frozen features (issue 5, "Measured").

Every pixel's feature vector is L2-normalised (so distances are cosine distances, as the cluster probe's),
then clustered by spherical k-means (Lloyd iterations, assignment by cosine to the normalised centroids, as
the cluster probe assigns) with k-means++ seeding (Arthur & Vassilvitskii 2007) on at most
max_points vectors drawn at random (fitting on all pixels of a large set is not needed: the centroids
settle long before); every pixel is then assigned at the output resolution, features upsampled bilinearly
exactly as maskless.stego.predict upsamples codes. Deterministic by seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


@dataclass
class KMeansParams:
    n_clusters: int = 5
    iterations: int = 50
    max_points: int = 200_000
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("n_clusters", "iterations", "max_points"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"KMeansParams.{key} must be a positive integer, got {value!r}")


def pixel_vectors(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N h w, C) L2-normalised per-pixel vectors."""
    if features.ndim != 4:
        raise ValueError(f"features must be (N, C, h, w), got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("features hold NaN or inf values")
    x = features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])  # (N h w, C)
    return F.normalize(x, dim=1)


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to squared distance."""
    centres = [x[torch.randint(len(x), (1,), generator=gen)]]
    d2 = ((x - centres[0]) ** 2).sum(1)  # (M,)
    for _ in range(1, k):
        if float(d2.sum()) <= 0:  # fewer distinct points than clusters: repeat a point
            i = torch.randint(len(x), (1,), generator=gen)
        else:
            i = torch.multinomial(d2 / d2.sum(), 1, generator=gen)
        centres.append(x[i])
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return torch.cat(centres)  # (k, C)


def fit_kmeans(features: torch.Tensor, params: KMeansParams) -> torch.Tensor:
    """(K, C) centroids of the normalised pixel vectors of features (N, C, h, w)."""
    x = pixel_vectors(features)  # (M, C)
    if len(x) < params.n_clusters:
        raise ValueError(f"k-means with {params.n_clusters} clusters needs at least that many pixels, got {len(x)}")
    gen = torch.Generator().manual_seed(params.seed)
    if len(x) > params.max_points:
        x = x[torch.randperm(len(x), generator=gen)[: params.max_points]]
    centres = _kmeans_pp(x, params.n_clusters, gen)
    for it in range(params.iterations):
        assign = (x @ F.normalize(centres, dim=1).T).argmax(1)  # (M,) nearest by cosine, as assign_maps
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=params.n_clusters).to(x.dtype)[:, None]
        # An emptied cluster keeps its centre (no silent re-seeding that would move the others).
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        if torch.equal(new, centres):
            log.info("k-means converged after %d iterations", it + 1)
            break
        centres = new
    return centres


@torch.no_grad()
def assign_maps(features: torch.Tensor, centres: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) int64: nearest centroid (cosine) of every pixel of features upsampled to size (H, W)."""
    up = F.interpolate(features.float(), size=tuple(size), mode="bilinear", align_corners=False)  # (N, C, H, W)
    up = F.normalize(up, dim=1)
    c = F.normalize(centres, dim=1)  # (K, C)
    return torch.einsum("nchw,kc->nkhw", up, c).argmax(1)


def kmeans_baseline(features: torch.Tensor, size: tuple[int, int], params: KMeansParams | None = None
                    ) -> torch.Tensor:
    """(N, H, W) int64 cluster maps of k-means on the raw features (N, C, h, w) at output size (H, W)."""
    params = params or KMeansParams()
    return assign_maps(features, fit_kmeans(features, params), size)
