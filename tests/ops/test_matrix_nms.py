"""Matrix NMS against numbers worked out by hand (METHODS.md "Matrix NMS").

The example: three 1x8 strips m0 = cols 0-3 (score 0.9), m1 = cols 1-4 (0.8), m2 = cols 2-5 (0.7).
Intersections/unions: m0&m1 = 3/5, m0&m2 = 2/6, m1&m2 = 3/5, so IoU01 = 0.6, IoU02 = 1/3, IoU12 = 0.6 and
comp = (0, max(IoU01) = 0.6, max(IoU02, IoU12) = 0.6).
Gaussian, sigma 2, decay_j = min_i exp(-2 IoU_ij^2) / exp(-2 comp_i^2):
  decay0 = 1 (every term is exp(+2 comp_i^2) >= 1 or exactly 1)
  decay1 = min(exp(-2 * 0.36), exp(+0.72), exp(+0.72)) = exp(-0.72) = 0.486752 -> 0.8 * 0.486752 = 0.389401
  decay2 = min(exp(-2/9), exp(-0.72 + 0.72), exp(+0.72)) = exp(-2/9) = 0.800737 -> 0.7 * 0.800737 = 0.560516
Linear, decay_j = min_i (1 - IoU_ij) / (1 - comp_i):
  decay1 = min(0.4 / 1, 1 / 0.4, 1 / 0.4) = 0.4 -> 0.32
  decay2 = min((2/3) / 1, 0.4 / 0.4, 1 / 0.4) = 2/3 -> 0.466667
"""

from __future__ import annotations

import math

import pytest
import torch

from maskless.ops.matrix_nms import matrix_nms, matrix_nms_top_k


def strips() -> torch.Tensor:
    m = torch.zeros(3, 1, 8, dtype=torch.bool)
    m[0, 0, 0:4] = True
    m[1, 0, 1:5] = True
    m[2, 0, 2:6] = True
    return m


def shuffled():
    """Inputs in the order (m2, m0, m1), so the result must be un-sorted back to that order."""
    m = strips()
    return m[[2, 0, 1]], torch.tensor([0.7, 0.9, 0.8])


def test_gaussian_worked_example_in_input_order():
    masks, scores = shuffled()
    out = matrix_nms(masks, scores, kernel="gaussian", sigma=2.0)
    expected = [0.7 * math.exp(-2 / 9), 0.9, 0.8 * math.exp(-0.72)]
    assert out.tolist() == pytest.approx(expected, abs=1e-5)
    assert out.tolist() == pytest.approx([0.560516, 0.9, 0.389401], abs=1e-5)


def test_linear_worked_example():
    masks, scores = shuffled()
    out = matrix_nms(masks, scores, kernel="linear")
    assert out.tolist() == pytest.approx([0.7 * 2 / 3, 0.9, 0.32], abs=1e-5)


def test_float_masks_and_precomputed_areas_agree():
    masks, scores = shuffled()
    a = matrix_nms(masks.float(), scores, areas=masks.flatten(1).sum(1))
    b = matrix_nms(masks, scores)
    assert torch.allclose(a, b)


def test_different_labels_do_not_suppress():
    """Labels (0, 1, 1) for (m0, m1, m2): only IoU12 = 0.6 counts, comp = (0, 0, 0.6).
    decay1 = 1 -> 0.8; decay2 = exp(-2 * 0.36) / exp(0) = 0.486752 -> 0.340726."""
    m = strips()
    out = matrix_nms(m, torch.tensor([0.9, 0.8, 0.7]), labels=torch.tensor([0, 1, 1]))
    assert out.tolist() == pytest.approx([0.9, 0.8, 0.7 * math.exp(-0.72)], abs=1e-5)
    all_diff = matrix_nms(m, torch.tensor([0.9, 0.8, 0.7]), labels=torch.tensor([0, 1, 2]))
    assert all_diff.tolist() == pytest.approx([0.9, 0.8, 0.7], abs=1e-6)


def test_identical_masks_linear_is_finite_and_zero():
    """Three copies: comp1 = 1 would give 0/0 without the clamp; duplicates decay to 0 (1 - IoU = 0)."""
    m = strips()[:1].repeat(3, 1, 1)
    out = matrix_nms(m, torch.tensor([0.9, 0.8, 0.7]), kernel="linear")
    assert torch.isfinite(out).all()
    assert out.tolist() == pytest.approx([0.9, 0.0, 0.0], abs=1e-6)
    gauss = matrix_nms(m, torch.tensor([0.9, 0.8, 0.7]))  # exp(-2) for both copies
    assert gauss.tolist() == pytest.approx([0.9, 0.8 * math.exp(-2), 0.7 * math.exp(-2)], abs=1e-6)


def test_empty_single_and_empty_masks():
    assert matrix_nms(torch.zeros(0, 4, 4), torch.zeros(0)).shape == (0,)
    assert matrix_nms(torch.ones(1, 2, 2), torch.tensor([0.3])).tolist() == pytest.approx([0.3])
    # all-empty masks: union 0 -> IoU 0 (no NaN), nothing suppressed
    out = matrix_nms(torch.zeros(2, 3, 3), torch.tensor([0.5, 0.4]))
    assert out.tolist() == pytest.approx([0.5, 0.4])


def test_bad_input_raises():
    m = strips()
    with pytest.raises(ValueError, match="NaN"):
        matrix_nms(m, torch.tensor([0.9, float("nan"), 0.7]))
    with pytest.raises(ValueError, match="kernel"):
        matrix_nms(m, torch.tensor([0.9, 0.8, 0.7]), kernel="box")
    with pytest.raises(ValueError, match="scores"):
        matrix_nms(m, torch.tensor([0.9, 0.8]))


# ---------------------------------------------------------------- matrix_nms_top_k (Free Mask's top-k)


def test_top_k_worked_example():
    """The strips above in the order (m2, m0, m1): decayed (0.7 x 0.80074, 0.9, 0.8 x 0.48675) = (0.5605, 0.9,
    0.3894): the top 2 are m0 (input 1) then m2 (input 0; its compensation lifts it over m1), whatever the
    block size."""
    masks, scores = shuffled()
    for block in (1, 2, 3, 128):
        idx, dec = matrix_nms_top_k(masks, scores, 2, block=block)
        assert idx.tolist() == [1, 0]
        assert dec.tolist() == pytest.approx([0.9, 0.7 * math.exp(-2 / 9)], abs=1e-5)


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_top_k_equals_full_matrix_nms_bit_for_bit(kernel, device):
    """Random overlapping blobs (many near-duplicates, tied scores): the same indices in the same order and
    the same float32 scores as the full matrix_nms and a stable sort, for every block size and k (on the
    CPU and on CUDA)."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = int(torch.randint(1, 300, (1,), generator=gen))
        base = torch.rand(max(1, n // 5), 10, 12, generator=gen)
        pick = torch.randint(0, base.shape[0], (n,), generator=gen)
        masks = ((base[pick] + 0.3 * torch.rand(n, 10, 12, generator=gen)) > 0.8).to(device)
        scores = torch.rand(n, generator=gen)
        if trial % 2:
            scores = (scores * 10).round() / 10  # ties
        scores = scores.to(device)
        areas = masks.flatten(1).sum(1)
        full = matrix_nms(masks, scores, kernel=kernel, areas=areas)
        for k in (1, 5, 20, n + 3):
            block = int(torch.randint(1, 70, (1,), generator=gen))
            idx, dec = matrix_nms_top_k(masks, scores, k, kernel=kernel, areas=areas, block=block)
            want = torch.argsort(full, descending=True, stable=True)[:k]
            assert torch.equal(idx, want) and torch.equal(dec, full[want]), (trial, k, block)


def test_top_k_stops_early_when_nothing_below_can_enter():
    """Disjoint masks decay nothing: with k = 2 the k-th score (0.8) beats the next raw score (0.7) after the
    first block of 2, so the masks below are never compared; the result is still the full one's."""
    masks = torch.zeros(6, 1, 6, dtype=torch.bool)
    for i in range(6):
        masks[i, 0, i] = True
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    calls = []
    real_triu = torch.Tensor.triu

    def counting_triu(self, diagonal=0):
        calls.append(self.shape)
        return real_triu(self, diagonal)

    torch.Tensor.triu = counting_triu
    try:
        idx, dec = matrix_nms_top_k(masks, scores, 2, block=2)
    finally:
        torch.Tensor.triu = real_triu
    assert idx.tolist() == [0, 1] and dec.tolist() == pytest.approx([0.9, 0.8])
    assert calls == [(2, 2)]  # one block, never the 6 x 6 product


def test_top_k_empty_and_bad_input():
    idx, dec = matrix_nms_top_k(torch.zeros(0, 2, 2, dtype=torch.bool), torch.zeros(0), 5)
    assert idx.numel() == 0 and dec.numel() == 0
    with pytest.raises(ValueError, match="kernel"):
        matrix_nms_top_k(torch.ones(1, 2, 2, dtype=torch.bool), torch.ones(1), 1, kernel="hard")
    with pytest.raises(ValueError, match="NaN"):
        matrix_nms_top_k(torch.ones(1, 2, 2, dtype=torch.bool), torch.tensor([math.nan]), 1)
