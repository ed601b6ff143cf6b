"""Which images a training step sees: the same epoch-wise order for every trained model."""

from __future__ import annotations

import numpy as np


def batch_indices(step: int, *, n_images: int, batch_size: int, seed: int) -> np.ndarray:
    """Image indices of `step`: positions step*B .. step*B+B-1 of a sequence of per-epoch permutations,
    each permutation drawn from (seed, epoch), so every image is seen once per epoch."""
    pos = np.arange(step * batch_size, (step + 1) * batch_size)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(pos // n_images):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n_images)
        sel = pos // n_images == epoch
        out[sel] = perm[pos[sel] % n_images]
    return out
