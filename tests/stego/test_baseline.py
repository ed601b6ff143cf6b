"""k-means baseline on raw features: recovers separable groups, deterministic, errors; the chunked
assignment and the sampled fit equal the all-at-once computations they replaced (issue 17)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskless.eval.semantic import semantic_results
from maskless.ops import kmeans
from maskless.ops.kmeans import KMeansParams, assign_maps, fit_kmeans, pixel_vectors
from maskless.stego.baseline import kmeans_baseline


def _three_groups():
    """2 images of 4x4 features: 3 regions whose vectors point along three axes (+ small noise, + a scale
    factor that normalisation removes)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(2, 4, 4, dtype=torch.int64)
    labels[:, :, 2:] = 1
    labels[1, 2:, :] = 2
    feats = torch.eye(3)[labels].permute(0, 3, 1, 2) * torch.rand(2, 1, 4, 4, generator=g).add(0.5)
    return feats + 0.05 * torch.randn(feats.shape, generator=g), labels


def test_kmeans_recovers_groups_up_to_permutation():
    feats, labels = _three_groups()
    maps = kmeans_baseline(feats, (4, 4), KMeansParams(n_clusters=3, seed=1))
    assert maps.shape == (2, 4, 4) and maps.dtype == torch.int64
    res = semantic_results(list(maps.numpy()), list(labels.numpy()), num_pred=3, num_classes=3)
    assert res["semantic"]["mIoU"] == 100.0
    up = kmeans_baseline(feats, (8, 8), KMeansParams(n_clusters=3, seed=1))
    assert up.shape == (2, 8, 8)


def test_deterministic_by_seed_and_subsampling():
    feats, _ = _three_groups()
    a = fit_kmeans(feats, KMeansParams(n_clusters=3, seed=2, max_points=20))
    b = fit_kmeans(feats, KMeansParams(n_clusters=3, seed=2, max_points=20))
    assert torch.equal(a, b)


def test_pixel_vectors_and_errors():
    x = pixel_vectors(torch.tensor([[[[3.0]], [[4.0]]]]))  # (1, 2, 1, 1)
    torch.testing.assert_close(x, torch.tensor([[0.6, 0.8]]))
    with pytest.raises(ValueError, match="at least that many pixels"):
        fit_kmeans(torch.randn(1, 2, 1, 2), KMeansParams(n_clusters=3))
    with pytest.raises(ValueError, match="NaN"):
        pixel_vectors(torch.full((1, 2, 1, 1), float("nan")))
    with pytest.raises(ValueError, match="n_clusters"):
        KMeansParams(n_clusters=0)


def _all_at_once(features, centres, size):
    """The assignment before issue 17: every image upsampled at once (the reference the chunks must equal)."""
    up = F.normalize(F.interpolate(features.float(), size=size, mode="bilinear", align_corners=False), dim=1)
    return torch.einsum("nchw,kc->nkhw", up, F.normalize(centres, dim=1)).argmax(1)


@pytest.mark.parametrize("chunk_bytes, per_chunk", [(1, 1), (3 * 16 * 12 * 12 * 4, 3), (1 << 30, 7)])
def test_assign_maps_in_chunks_equals_all_at_once(monkeypatch, chunk_bytes, per_chunk):
    """7 images of (16, 5, 6) features upsampled to 12 x 12, one, three (7 = 3 + 3 + 1) or all per chunk."""
    g = torch.Generator().manual_seed(3)
    feats, centres = torch.randn(7, 16, 5, 6, generator=g), torch.randn(4, 16, generator=g)
    monkeypatch.setattr(kmeans, "ASSIGN_CHUNK_BYTES", chunk_bytes)
    assert min(kmeans._chunk(16 * 12 * 12 * 4), 7) == per_chunk
    got = assign_maps(feats, centres, (12, 12))
    assert got.dtype == torch.int64 and torch.equal(got, _all_at_once(feats, centres, (12, 12)))


def test_fit_on_sampled_pixels_equals_fit_on_all_vectors():
    """fit_kmeans draws max_points pixels without building every normalised vector; the draw and the
    centroids equal those of the old way (normalise all, then index with the same permutation)."""
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(6, 8, 5, 7, generator=g) * torch.rand(6, 1, 5, 7, generator=g).add(0.1)
    rows = torch.randperm(6 * 5 * 7, generator=g)[:50]
    assert torch.equal(kmeans._sampled_vectors(feats, rows), pixel_vectors(feats)[rows])
    params = KMeansParams(n_clusters=3, seed=5, max_points=50)
    gen = torch.Generator().manual_seed(params.seed)
    x = pixel_vectors(feats)[torch.randperm(6 * 5 * 7, generator=gen)[:50]]
    want = _lloyd_reference(x, params, gen)
    assert torch.equal(fit_kmeans(feats, params), want)


def _lloyd_reference(x, params, gen):
    """The fit before issue 17, from the sampled vectors on (seeding and Lloyd steps are unchanged code)."""
    centres = kmeans._kmeans_pp(x, params.n_clusters, gen)
    for _ in range(params.iterations):
        assign = (x @ F.normalize(centres, dim=1).T).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=params.n_clusters).to(x.dtype)[:, None]
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        if torch.equal(new, centres):
            break
        centres = new
    return centres


def test_nan_found_in_any_chunk(monkeypatch):
    monkeypatch.setattr(kmeans, "ASSIGN_CHUNK_BYTES", 1)  # one image per chunk
    feats = torch.randn(4, 3, 2, 2)
    feats[3, 1, 1, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_kmeans(feats, KMeansParams(n_clusters=2))
