"""Mean-field dense CRF: clean labellings kept, an isolated flip corrected, messages by hand, errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from maskless.stego.crf import CrfParams, bilateral_weights, crf_labels, dense_crf, spatial_message


def _probs(labels: torch.Tensor, k: int, p: float) -> torch.Tensor:
    """(K, H, W): probability p on the given label, the rest spread evenly."""
    out = torch.full((k, *labels.shape), (1 - p) / (k - 1))
    out.scatter_(0, labels[None], p)
    return out


def test_clean_labelling_of_a_piecewise_constant_image_is_unchanged():
    """Three blocks of distinct colours, each labelled confidently (0.8) with its own label."""
    labels = torch.zeros(12, 15, dtype=torch.int64)
    labels[:, 5:10], labels[:, 10:] = 1, 2
    colours = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=torch.uint8)
    image = colours[labels].permute(2, 0, 1)  # (3, H, W)
    q = dense_crf(image, _probs(labels, 3, 0.8))
    assert torch.equal(q.argmax(0), labels)
    torch.testing.assert_close(q.sum(0), torch.ones(12, 15))


def test_single_flipped_pixel_in_a_uniform_region_is_corrected():
    image = torch.full((9, 9, 3), 120, dtype=torch.uint8)  # (H, W, 3) is accepted too
    labels = torch.zeros(9, 9, dtype=torch.int64)
    labels[4, 4] = 1
    out = crf_labels(image, _probs(labels, 2, 0.8))
    assert (out == 0).all()


def test_zero_iterations_return_the_input_distribution():
    probs = torch.softmax(torch.randn(3, 4, 5), 0)
    torch.testing.assert_close(dense_crf(torch.zeros(3, 4, 5), probs, CrfParams(iterations=0)), probs)


def test_spatial_message_by_hand():
    """theta_gamma 1: 1-D kernel g = exp(-d^2/2), d = -3..3, sum s = 2.5066. For uniform Q = 1 far from the
    border, the message is (s^2 - 1) / s^2 (the pixel itself left out of the sum, kept in the normaliser)."""
    s = sum(math.exp(-d * d / 2) for d in range(-3, 4))
    m = spatial_message(torch.ones(1, 9, 9), 1.0)
    assert float(m[0, 4, 4]) == pytest.approx((s * s - 1) / (s * s), rel=1e-6)
    assert float(m[0, 0, 0]) < float(m[0, 4, 4])  # fewer partners at the corner


def test_bilateral_weights_by_hand():
    """radius 1, stride 1: 8 offsets. Two pixels of colour difference 3 (= theta_beta) at distance 1:
    k = exp(-1 / (2 x 67^2)) exp(-9 / 18); partners outside the image have weight 0."""
    image = torch.tensor([[[0.0, 3.0]]]).repeat(3, 1, 1)  # (3, 1, 2): colour step of 3 in every channel
    image[1:] = 0.0
    offsets, w, norm = bilateral_weights(image, theta_alpha=67.0, theta_beta=3.0, radius=1, stride=1)
    assert len(offsets) == 8
    right = offsets.index((0, 1))
    expected = math.exp(-1 / (2 * 67**2)) * math.exp(-0.5)
    assert float(w[right, 0, 0]) == pytest.approx(expected, rel=1e-6)
    assert float(w[right, 0, 1]) == 0.0  # right of the last column is outside
    assert float(norm[0, 0]) == pytest.approx(1 + expected, rel=1e-6)


def test_errors():
    probs = torch.softmax(torch.randn(2, 4, 4), 0)
    with pytest.raises(ValueError, match="must match"):
        dense_crf(torch.zeros(3, 5, 4), probs)
    with pytest.raises(ValueError, match="finite"):
        dense_crf(torch.zeros(3, 4, 4), torch.full((2, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        dense_crf(torch.full((3, 4, 4), float("nan")), probs)
    with pytest.raises(ValueError, match="theta_beta"):
        CrfParams(theta_beta=0.0)
    with pytest.raises(ValueError, match="stride"):
        CrfParams(stride=0)


def test_one_pixel_image():
    out = dense_crf(np.zeros((1, 1, 3), np.uint8), torch.tensor([[[0.3]], [[0.7]]]))
    assert out.shape == (2, 1, 1) and int(out.argmax()) == 1


def test_a_prepared_image_gives_the_same_refinement_bit_for_bit():
    """prepare_image computes the bilateral kernel once (STEGO's two probes share it): dense_crf on the
    CrfImage equals dense_crf on the raw image exactly; a CrfImage made for other params or another size is
    refused."""
    from maskless.stego.crf import CrfParams, dense_crf, prepare_image

    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 24, 20, generator=g) * 255
    params = CrfParams(iterations=3, radius=6, stride=2)
    prepared = prepare_image(image, params, (24, 20))
    for k in (2, 5):
        probs = torch.softmax(torch.randn(k, 24, 20, generator=g), 0)
        assert torch.equal(dense_crf(image, probs, params), dense_crf(prepared, probs, params))
    with pytest.raises(ValueError, match="CrfImage was made for"):
        dense_crf(prepared, probs, CrfParams(iterations=3, radius=6, stride=3))
    with pytest.raises(ValueError, match="CrfImage was made for"):
        dense_crf(prepared, torch.softmax(torch.randn(2, 20, 24, generator=g), 0), params)


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU has no flush-to-zero (DAZ) mode")
def test_flushing_subnormals_leaves_the_crf_bit_for_bit():
    """Colours 31-43 apart (of 255) give bilateral weights below float32's smallest normal; the stego_eval
    stage flushes them (maskless.io.flush_denormals, 2.3x on its CRF): the refined probabilities must not
    move. One thread in a fresh process, so that turning flush-to-zero on reaches all of the work."""
    code = """
import torch
torch.set_num_threads(1)
from maskless.io import flush_denormals
from maskless.stego.crf import CrfParams, dense_crf, prepare_image
g = torch.Generator().manual_seed(0)
image = torch.rand(3, 40, 48, generator=g) * 60  # neighbours ~35 apart: many weights in the subnormal band
probs = torch.softmax(torch.randn(4, 40, 48, generator=g) * 3, 0)
params = CrfParams(iterations=3)
tiny = torch.finfo(torch.float32).tiny
before = prepare_image(image, params, (40, 48))
sub = int(((before.weights > 0) & (before.weights < tiny)).sum())
q0 = dense_crf(before, probs, params)
assert flush_denormals()
after = prepare_image(image, params, (40, 48))
flushed = int(((after.weights > 0) & (after.weights < tiny)).sum())
print(sub, flushed, torch.equal(dense_crf(after, probs, params), q0), torch.equal(dense_crf(image, probs, params), q0))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 100 and int(out[1]) == 0, out  # subnormals present, then flushed
    assert out[2:] == ["True", "True"]
