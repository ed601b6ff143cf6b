"""Shared fixtures: the real-photo dataset in ../shared (skipped with a reason where it is absent) and a Gloo
process group of one (the data-parallel code path of the training loops, on CPU)."""

from __future__ import annotations

import contextlib
import os
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


# cuBLAS reads this when it starts: with it, torch.use_deterministic_algorithms (the `device` fixture's CUDA
# case) makes matrix products reproducible too. Harmless without CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pytest_generate_tests(metafunc):
    """A test that takes `device` runs on the CPU and, marked gpu (skipped without CUDA), on CUDA."""
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])


class _Same:
    """Resume comparisons: bit for bit on the CPU; on CUDA, whose kernels (atomics in convolution backward)
    are not bitwise deterministic, equal to rtol 1e-3 / atol 1e-5 (a resume that lost the optimizer,
    scaler or step differs by far more after a step)."""

    def __init__(self, device: str):
        self.exact = device == "cpu"

    def tensors(self, a, b) -> bool:
        import torch

        if self.exact:
            return torch.equal(a, b)
        return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=1e-3, atol=1e-5)

    def state(self, a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(self.tensors(a[k], b[k]) for k in a)

    def csv(self, a, b) -> bool:
        """Two loss logs: identical text on the CPU; the same header and numbers to rtol 1e-3 on CUDA."""
        import math

        la, lb = Path(a).read_text().splitlines(), Path(b).read_text().splitlines()
        if self.exact:
            return la == lb
        if len(la) != len(lb) or la[:1] != lb[:1]:
            return False
        pairs = [(float(x), float(y)) for ra, rb in zip(la[1:], lb[1:])
                 for x, y in zip(ra.split(","), rb.split(","), strict=True)]
        return all(math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-5) for x, y in pairs)


@pytest.fixture
def same(device) -> _Same:
    return _Same(device)


@pytest.fixture(autouse=True)
def _deterministic_cuda(request):
    """On CUDA, deterministic kernels (an op without one warns; pytest's summary lists it): two runs of a
    training loop must then agree to rounding, so a resume that loses state shows."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("device") != "cuda":
        yield
        return
    import torch

    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]
