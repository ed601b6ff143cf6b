"""Shared fixtures: the real-photo dataset in ../shared (skipped with a reason where it is absent) and a Gloo
process group of one (the data-parallel code path of the training loops, on CPU)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COCO_TINY = REPO.parent / "shared" / "data" / "coco-tiny"


@pytest.fixture
def coco_tiny() -> Path:
    if not (COCO_TINY / "instances.json").exists():
        pytest.skip(f"../shared/data/coco-tiny not found at {COCO_TINY} (present only on developer/CI machines)")
    return COCO_TINY


class _GroupOfOne:
    """A Gloo process group of world size 1 in this process; `paused()` leaves it for a plain comparison run."""

    def __init__(self, folder: Path):
        self.folder, self.n = folder, 0
        self._init()

    def _init(self) -> None:
        import torch.distributed as tdist

        self.n += 1
        tdist.init_process_group("gloo", init_method=f"file://{self.folder / f'pg_store{self.n}'}", rank=0,
                                 world_size=1)

    @contextlib.contextmanager
    def paused(self):
        import torch.distributed as tdist

        tdist.destroy_process_group()
        try:
            yield
        finally:
            self._init()


@pytest.fixture
def process_group_of_one(tmp_path):
    """A Gloo process group of world size 1 in this process: the training loops take their DDP path (wrapped
    networks, all-reduces, rank checks), which must give the single-process result bit for bit; run the
    single-process reference inside `with process_group_of_one.paused():`."""
    import torch.distributed as tdist

    group = _GroupOfOne(tmp_path)
    try:
        yield group
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (GPU-only test)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
