"""bench/mfu.py's FLOP counting and one workload at tiny sizes, so the benchmark cannot rot silently.
No timing is checked (timings belong to the benchmark, not to tests)."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from maskless.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mfu():
    spec = importlib.util.spec_from_file_location("bench_mfu", ROOT / "bench" / "mfu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_conv_flops_match_the_hand_count(mfu, stride, padding):
    b, cin, cout, k, size = 2, 3, 5, 3, 9
    x, w = torch.randn(b, cin, size, size), torch.randn(cout, cin, k, k)
    out = F.conv2d(x, w, stride=stride, padding=padding)
    h_out = (size + 2 * padding - k) // stride + 1
    assert out.shape[-1] == h_out
    expected = 2 * cin * cout * k * k * h_out * h_out * b
    assert mfu.conv_flops_by_hand(b, cin, cout, k, h_out, h_out) == expected
    assert mfu.count_flops(lambda: F.conv2d(x, w, stride=stride, padding=padding)) == expected


def test_backward_is_counted(mfu):
    """A training step's count includes the backward: grad input + grad weight, twice the forward."""
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    forward = mfu.conv_flops_by_hand(2, 4, 6, 3, 8, 8)
    assert mfu.count_flops(lambda: F.conv2d(x, w, padding=1).sum().backward()) == 3 * forward


def test_stego_workload_counts_and_reports(mfu, tmp_path):
    cfg = copy.deepcopy(load_config(str(ROOT / "config.yaml")))
    cfg["stego"].update(input_size=32, knn_k=2)
    cfg["stego"]["train"].update(batch_size=2, points=3, knn_top=2, neg_samples=1)
    setup = mfu.Setup(cfg, torch.device("cpu"), tmp_path, n_images=4, backbone=None)
    wl = mfu.stego(setup)
    r = mfu.measure(wl, torch.device("cpu"), steps=1, warmup=0)
    # Lower bound by hand: the head's three 1x1 convs on the batch and on its kNN partners, forward only
    # (res3 of resnet18 at 32 px: 128 channels on 4 x 4; code_dim 70).
    c, hw, d, b = 128, 4, cfg["stego"]["train"]["code_dim"], 2
    head_forward = 2 * (mfu.conv_flops_by_hand(b, c, d, 1, hw, hw) + mfu.conv_flops_by_hand(b, c, c, 1, hw, hw)
                        + mfu.conv_flops_by_hand(b, c, d, 1, hw, hw))
    assert r["flops"] > head_forward
    assert r["seconds"] >= r["data_seconds"] >= 0
    row = {"name": wl.name, "batch": wl.batch, "has_data": wl.has_data, "note": wl.note, **r,
           "conv_around": 100.0}
    text = mfu.table([row, {"name": "broken", "error": "ValueError: x"}], {"conv": 100.0, "matmul": 100.0})
    assert "| stego | 2 |" in text and "| broken |" in text and "failed: ValueError: x" in text
