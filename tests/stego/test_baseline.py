"""k-means baseline on raw features: recovers separable groups, deterministic, errors."""

from __future__ import annotations

import pytest
import torch

from maskless.eval.semantic import semantic_results
from maskless.stego.baseline import KMeansParams, fit_kmeans, kmeans_baseline, pixel_vectors


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
