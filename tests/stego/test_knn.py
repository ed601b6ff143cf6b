"""kNN of pooled global features: by hand, self excluded, errors, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskless.stego.knn import check_knn, compute_knn, load_knn, pool_features, save_knn


def test_pool_and_knn_by_hand():
    """Pooled features (mean over 2x2): image 0 (1, 0), 1 (1, 0.1), 2 (0, 1), 3 (0.2, 1) after pooling.
    Cosines: 0-1 0.995, 0-3 0.196, 0-2 0; 2-3 0.981, 2-1 0.0995. Nearest other of 0 is 1, of 2 is 3."""
    pooled = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.2, 1.0]])
    feats = pooled[:, :, None, None].repeat(1, 1, 2, 2)
    feats[:, :, 0, 0] += 1.0  # a spatial deviation that averages out with -1 at (1, 1)
    feats[:, :, 1, 1] -= 1.0
    p = pool_features(feats)
    torch.testing.assert_close(p, torch.nn.functional.normalize(pooled, dim=1))
    knn = compute_knn(p, 2, chunk=3)  # chunking must not change the result
    assert knn.dtype == torch.int64
    assert knn.tolist() == [[1, 3], [0, 3], [3, 1], [2, 1]]


def test_identical_images_still_exclude_self():
    knn = compute_knn(torch.ones(3, 4), 2)
    assert all(i not in row for i, row in enumerate(knn.tolist()))


def test_errors():
    with pytest.raises(ValueError, match="k = 3 neighbours need at least k \\+ 1 = 4 images"):
        compute_knn(torch.randn(3, 4), 3)
    with pytest.raises(ValueError, match="NaN"):
        compute_knn(torch.tensor([[float("nan"), 1.0], [1.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="NaN"):
        pool_features(torch.full((2, 2, 1, 1), float("inf")))
    with pytest.raises(ValueError, match="own neighbour"):
        check_knn(torch.tensor([[1], [1]]), 2)
    with pytest.raises(ValueError, match="outside"):
        check_knn(torch.tensor([[2], [0]]), 2)


def test_save_load_roundtrip(tmp_path):
    knn = compute_knn(torch.randn(5, 3), 2)
    path = tmp_path / "k" / "knn.npy"
    save_knn(path, knn)
    assert [p.name for p in path.parent.iterdir()] == ["knn.npy"]  # no temp file left behind
    assert torch.equal(load_knn(path, 5), knn)
    with pytest.raises(ValueError, match="expected \\(6, k\\)"):
        load_knn(path, 6)
    np.save(tmp_path / "bad.npy", np.zeros((5, 2), np.int32))
    with pytest.raises(ValueError, match="int64"):
        load_knn(tmp_path / "bad.npy")
