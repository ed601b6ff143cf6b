"""Shared fixtures: the real-photo dataset in ../shared (skipped with a reason where it is absent) and a Gloo
process group of one (the data-parallel code path of the training loops, on CPU)."""

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


@pytest.fixture
def process_group_of_one(tmp_path):
    """A Gloo process group of world size 1 in this process: the training loops take their DDP path (wrapped
    networks, all-reduces, rank checks), which must give the single-process result bit for bit."""
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg_store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        tdist.destroy_process_group()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (GPU-only test)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
