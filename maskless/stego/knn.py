"""Nearest neighbours of every image by its pooled global feature (METHODS.md "STEGO": x_knn is drawn from
the top neighbours, self excluded, of a precomputed top-k over pooled global features).

Global feature: mean of the dense features over space, L2-normalised; similarity: cosine. Ties are broken
by torch.topk (deterministic on CPU). Saved as .npy int64 (N, k), written atomically.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from maskless.io import atomic_path


def pool_features(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) dense features -> (N, C) spatial means, L2-normalised."""
    if features.ndim != 4:
        raise ValueError(f"features must be (N, C, h, w), got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("features hold NaN or inf values")
    return torch.nn.functional.normalize(features.float().mean(dim=(2, 3)), dim=1)  # (N, C)


def compute_knn(features_pooled: torch.Tensor, k: int, *, chunk: int = 4096) -> torch.Tensor:
    """(N, k) int64: indices of the k most cosine-similar other images of each image (most similar first).

    features_pooled: (N, C) (normalised here again, so any scale works). Rows are done `chunk` at a time so
    memory stays O(chunk x N).
    """
    if features_pooled.ndim != 2:
        raise ValueError(f"features_pooled must be (N, C), got shape {tuple(features_pooled.shape)}")
    n = features_pooled.shape[0]
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k >= n:
        raise ValueError(f"k = {k} neighbours need at least k + 1 = {k + 1} images (self excluded), got {n}")
    if not torch.isfinite(features_pooled).all():
        raise ValueError("features_pooled hold NaN or inf values")
    x = torch.nn.functional.normalize(features_pooled.float(), dim=1)  # (N, C)
    out = []
    for start in range(0, n, chunk):
        sim = x[start : start + chunk] @ x.T  # (n_chunk, N)
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = -float("inf")  # self excluded
        out.append(sim.topk(k, dim=1).indices)  # (n_chunk, k)
    return torch.cat(out).to(torch.int64)


def check_knn(knn: np.ndarray | torch.Tensor, n_images: int, where: str = "knn") -> torch.Tensor:
    """(N, k) int64 tensor after checking shape, range and that no image is its own neighbour."""
    knn = torch.as_tensor(np.asarray(knn))
    if knn.ndim != 2 or knn.shape[0] != n_images or knn.shape[1] < 1:
        raise ValueError(f"{where}: expected ({n_images}, k) neighbour indices, got shape {tuple(knn.shape)}")
    if knn.dtype != torch.int64:
        raise ValueError(f"{where}: expected int64 indices, got {knn.dtype}")
    if (knn < 0).any() or (knn >= n_images).any():
        raise ValueError(f"{where}: indices outside [0, {n_images})")
    if (knn == torch.arange(n_images)[:, None]).any():
        raise ValueError(f"{where}: an image is listed as its own neighbour")
    return knn


def save_knn(path: str | os.PathLike, knn: torch.Tensor) -> None:
    """Write (N, k) int64 indices to a .npy file, atomically."""
    arr = np.ascontiguousarray(torch.as_tensor(knn).cpu().numpy().astype(np.int64))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file handle: np.save would append ".npy" to a bare path
            np.save(f, arr, allow_pickle=False)


def load_knn(path: str | os.PathLike, n_images: int | None = None) -> torch.Tensor:
    """(N, k) int64 tensor from save_knn; checked against n_images when given."""
    arr = np.load(path, allow_pickle=False)
    return check_knn(arr, arr.shape[0] if n_images is None else n_images, where=str(path))
