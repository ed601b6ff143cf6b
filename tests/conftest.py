"""Shared fixtures: the real-photo dataset in ../shared (skipped with a reason where it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COCO_TINY = REPO.parent / "shared" / "data" / "coco-tiny"


@pytest.fixture
def coco_tiny() -> Path:
    if not (COCO_TINY / "instances.json").exists():
        pytest.skip(f"../shared/data/coco-tiny not found at {COCO_TINY} (present only on developer/CI machines)")
    return COCO_TINY


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (GPU-only test)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
