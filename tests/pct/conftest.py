"""PCT test fixtures: one torch thread per test (tiny tensors: more threads only contend on a shared CPU;
restored after) and the tiny in-memory training data (`data`, shared per module; `make_pct_data`, fresh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_pct_data() -> dict:
    """Six 40 x 40 images: a bright square of class 1 (even images) or 2 (odd) on dark noise; images 0 and 1
    are strong (label maps), 2..5 weak (tags only)."""
    rng = np.random.default_rng(0)
    images, labels, tags = [], [], []
    for i in range(6):
        c = 1 + i % 2
        img = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
        lab = np.zeros((40, 40), np.uint8)
        lab[8 + i : 28 + i, 10:30] = c
        img[lab == c] = (200, 80 * c, 40)
        images.append(img)
        labels.append(lab if i < 2 else None)
        tags.append([c])
    return dict(images=images, labels=labels, tags=tags)


@pytest.fixture(scope="module")
def data() -> dict:
    return _tiny_pct_data()


@pytest.fixture
def make_pct_data():
    """The builder of `data`: a fresh copy per call, for tests that change it."""
    return _tiny_pct_data
