"""Spherical k-means on feature maps (N, C, h, w): every pixel's feature vector L2-normalised (distances are
cosine distances), Lloyd iterations with assignment by cosine to the normalised centroids, k-means++ seeding
(Arthur & Vassilvitskii 2007) on at most max_points vectors drawn at random (the centroids settle long
before all pixels of a large set would matter); assign_maps labels every pixel at an output resolution, the
features upsampled bilinearly. Deterministic by seed. Used by STEGO's baseline (maskless.stego.baseline) and
the exemplar selection (maskless.exemplar.select, maskless.solo.exemplar_pool).

Memory (issue 15, 17): beside its input features and output maps, it holds one chunk of upsampled features
(ASSIGN_CHUNK_BYTES) and the max_points sampled vectors, never the whole set upsampled nor a normalised copy
of every feature vector. Interpolation, normalisation and the einsum act on each image alone, so the chunked
result is the all-at-once result bit for bit (tests/stego/test_baseline.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

ASSIGN_CHUNK_BYTES = 1 << 26  # upsampled float32 features per assignment chunk (64 MiB; at least one image)


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


def _check_features(features: torch.Tensor) -> None:
    """(N, C, h, w) with finite values, checked a chunk of images at a time (no full-size mask)."""
    if features.ndim != 4:
        raise ValueError(f"features must be (N, C, h, w), got shape {tuple(features.shape)}")
    step = _chunk(features[0].numel() * 4)
    if not all(torch.isfinite(features[s : s + step]).all() for s in range(0, len(features), step)):
        raise ValueError("features hold NaN or inf values")


def _chunk(bytes_per_image: int) -> int:
    """Images per chunk of about ASSIGN_CHUNK_BYTES (at least one)."""
    return max(1, ASSIGN_CHUNK_BYTES // max(1, bytes_per_image))


def pixel_vectors(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N h w, C) L2-normalised per-pixel vectors."""
    _check_features(features)
    x = features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])  # (N h w, C)
    return F.normalize(x, dim=1)


def _sampled_vectors(features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """pixel_vectors(features)[rows] without building every vector: rows index the (N h w) pixels."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)  # (N, C, h w), a view of contiguous features
    x = flat[rows // (h * w), :, rows % (h * w)].float()  # (M, C)
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
    _check_features(features)
    n_pixels = features.shape[0] * features.shape[2] * features.shape[3]
    if n_pixels < params.n_clusters:
        raise ValueError(f"k-means with {params.n_clusters} clusters needs at least that many pixels, got {n_pixels}")
    gen = torch.Generator().manual_seed(params.seed)
    if n_pixels > params.max_points:  # the same draw as permuting pixel_vectors(features), without building it
        x = _sampled_vectors(features, torch.randperm(n_pixels, generator=gen)[: params.max_points])  # (M, C)
    else:
        x = pixel_vectors(features)  # (M, C)
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
    """(N, H, W) int64: nearest centroid (cosine) of every pixel of features upsampled to size (H, W).

    A chunk of images at a time (about ASSIGN_CHUNK_BYTES of upsampled features): each image is
    interpolated, normalised and scored alone, so the result equals the all-at-once computation."""
    n, c = features.shape[:2]
    h, w = (int(v) for v in size)
    cn = F.normalize(centres, dim=1)  # (K, C)
    out = torch.empty((n, h, w), dtype=torch.int64, device=features.device)
    step = _chunk(c * h * w * 4)
    for s in range(0, n, step):
        up = F.interpolate(features[s : s + step].float(), size=(h, w), mode="bilinear",
                           align_corners=False)  # (B, C, H, W)
        up = F.normalize(up, dim=1)
        out[s : s + step] = torch.einsum("nchw,kc->nkhw", up, cn).argmax(1)  # (B, H, W)
    return out
