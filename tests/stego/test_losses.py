"""STEGO correlation loss: correlation and spatial centring by hand, the loss sign, gradients, params."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskless.stego.losses import (PRESETS, StegoLossParams, centre, corr_loss, correlation, random_coords,
                                   random_derangement, sample_points, stego_losses)

R2 = 1 / math.sqrt(2)


def _points(*vectors) -> torch.Tensor:
    """(1, C, 1, n) points from n C-vectors."""
    return torch.tensor(vectors, dtype=torch.float64).T[None, :, None, :]


def test_correlation_and_centring_by_hand():
    """a = (1,0), (0,1); b = (1,0), (1,1) (unnormalised). Cosines: a1b1 1, a1b2 1/sqrt2, a2b1 0, a2b2
    1/sqrt2. Means over the partner's points: a1 (1 + 0.7071)/2 = 0.85355, a2 0.35355; global mean 0.60355.
    Centred: 1 - 0.85355 + 0.60355 = 0.75; 0.7071 - 0.85355 + 0.60355 = 0.45711; 0.25; 0.95711."""
    a, b = _points((1, 0), (0, 1)), _points((1, 0), (1, 1))
    f = correlation(a, b)
    assert f.shape == (1, 1, 2, 1, 2)
    np.testing.assert_allclose(f.flatten().numpy(), [1, R2, 0, R2], atol=1e-12)
    np.testing.assert_allclose(centre(f).flatten().numpy(), [0.75, R2 - 0.25, 0.25, R2 + 0.25], atol=1e-12)
    # Codes equal to the features: S = raw cosines. loss(shift 0.1) = -(1 x 0.65 + 0.7071 x 0.35711 + 0 x 0.15
    # + 0.7071 x 0.85711) / 4 = -0.377145
    assert float(corr_loss(a, b, a, b, shift=0.1)) == pytest.approx(-0.3771447, abs=1e-6)


def test_zero_clamp_ignores_negative_code_cosines():
    """S = -1 (opposite codes) is clamped to 0: loss 0 and no gradient, whatever F and the shift."""
    codes_a, codes_b = _points((1.0, 0.0)).requires_grad_(), _points((-1.0, 0.0))
    loss = corr_loss(_points((1, 0)), _points((1, 0)), codes_a, codes_b, shift=0.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(codes_a.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("feature_cos,shift,pulled", [(1.0, 0.5, True), (0.6, 0.3, True), (0.2, 0.5, False),
                                                      (0.0, 0.1, False)])
def test_loss_sign_pulls_codes_together_above_the_shift(feature_cos, shift, pulled):
    """One point per image (centring is then the identity): F = feature_cos. A gradient step on the codes
    (cosine 0.5 at the start) raises their cosine when F > shift and lowers it when F < shift."""
    angle = math.acos(feature_cos)
    fa, fb = _points((1, 0)), _points((math.cos(angle), math.sin(angle)))
    sa = _points((1.0, 0.0)).requires_grad_()
    sb = _points((0.5, math.sqrt(3) / 2)).requires_grad_()
    corr_loss(fa, fb, sa, sb, shift=shift).backward()
    with torch.no_grad():
        before = float(correlation(sa, sb))
        after = float(correlation(sa - 0.1 * sa.grad, sb - 0.1 * sb.grad))
    assert before == pytest.approx(0.5)
    assert (after > before) == pulled and after != before


def _pair(b=2, c=6, d=4, p=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, p, p, generator=g), torch.randn(b, d, p, p, generator=g, requires_grad=True)


def test_every_pair_term_has_a_gradient_and_total_is_weighted_sum():
    anchor, knn = _pair(seed=0), _pair(seed=1)
    rand = [_pair(seed=2), _pair(seed=3)]
    params = StegoLossParams(weight_self=0.5, weight_knn=2.0, weight_rand=3.0)
    out = stego_losses(anchor, knn, rand, **params.to_dict())
    assert set(out) == {"corr_self", "corr_knn", "corr_rand", "corr"}
    assert float(out["corr"].detach()) == pytest.approx(
        sum(w * float(out[f"corr_{p}"].detach()) for w, p in zip((0.5, 2.0, 3.0), ("self", "knn", "rand"))),
        rel=1e-5)
    for term, partners in (("corr_self", []), ("corr_knn", [knn]), ("corr_rand", rand)):
        for t in (anchor, knn, *rand):
            t[1].grad = None
        stego_losses(anchor, knn, rand, **params.to_dict())[term].backward()
        assert float(anchor[1].grad.abs().sum()) > 0, term
        assert all(float(p[1].grad.abs().sum()) > 0 for p in partners), term


def test_self_term_is_the_anchor_against_itself_at_the_same_points():
    """The reference's pos_intra pair: helper(feats, feats, code, code). With codes equal to the features,
    S = F before centring, so S is 1 on the diagonal p = q; the term equals corr_loss(anchor, anchor)."""
    feats, codes = _pair(b=2, c=6, d=4, p=3, seed=4)
    out = stego_losses((feats, codes), _pair(seed=5), [_pair(seed=6)], **StegoLossParams().to_dict())
    assert float(out["corr_self"].detach()) == pytest.approx(
        float(corr_loss(feats, feats, codes, codes, shift=StegoLossParams().shift_self).detach()), rel=1e-6)
    s = correlation(codes, codes).reshape(2, 9, 9).detach()  # (B, P*P, P*P)
    np.testing.assert_allclose(torch.diagonal(s, dim1=1, dim2=2).numpy(), 1.0, atol=1e-6)


def test_random_term_is_the_mean_over_the_random_partners():
    """Two partners: corr_rand = (loss(partner 1) + loss(partner 2)) / 2, the mean of the reference's
    concatenated neg_samples loss tensors (equal sizes)."""
    anchor, rand = _pair(seed=0), [_pair(seed=1), _pair(seed=2)]
    shift = 0.3
    out = stego_losses(anchor, _pair(seed=3), rand, weight_self=1, weight_knn=1, weight_rand=1, shift_self=0,
                       shift_knn=0, shift_rand=shift)
    each = [float(corr_loss(anchor[0], f, anchor[1], c, shift=shift).detach()) for f, c in rand]
    assert float(out["corr_rand"].detach()) == pytest.approx(sum(each) / 2, rel=1e-6)
    assert each[0] != pytest.approx(each[1])  # a mean of two different values, not a copy of one
    with pytest.raises(ValueError, match="no random partner"):
        stego_losses(anchor, _pair(seed=3), [], **StegoLossParams().to_dict())


def test_pair_terms_equal_corr_loss_bit_for_bit():
    """stego_losses normalises each feature tensor once and shares it between the pairs; every term, and
    every code gradient, is the same tensor as corr_loss of that pair computed on its own."""
    anchor, knn, rand = _pair(b=3, c=8, d=5, p=4, seed=7), _pair(b=3, c=8, d=5, p=4, seed=8), [
        _pair(b=3, c=8, d=5, p=4, seed=9), _pair(b=3, c=8, d=5, p=4, seed=10)]
    params = StegoLossParams()
    out = stego_losses(anchor, knn, rand, **params.to_dict())
    assert torch.equal(out["corr_self"], corr_loss(anchor[0], anchor[0], anchor[1], anchor[1], shift=params.shift_self))
    assert torch.equal(out["corr_knn"], corr_loss(anchor[0], knn[0], anchor[1], knn[1], shift=params.shift_knn))
    each = torch.stack([corr_loss(anchor[0], f, anchor[1], c, shift=params.shift_rand) for f, c in rand])
    assert torch.equal(out["corr_rand"], each.mean())
    grads = torch.autograd.grad(out["corr_rand"], [anchor[1], rand[0][1]])
    assert all(torch.equal(g, h) for g, h in zip(grads, torch.autograd.grad(each.mean(), [anchor[1], rand[0][1]])))


@pytest.mark.parametrize("n", [2, 3, 7, 16])
def test_random_derangement_has_no_fixed_point_and_covers_every_image(n):
    rng = np.random.default_rng(0)
    perms = [random_derangement(rng, n) for _ in range(50)]
    for perm in perms:
        assert sorted(perm.tolist()) == list(range(n)) and (perm != np.arange(n)).all()
    if n == 2:
        assert all(p.tolist() == [1, 0] for p in perms)  # the only derangement of two
    if n >= 3:  # not always one cycle: a uniform derangement of 3+ images varies
        assert len({tuple(p.tolist()) for p in perms}) > 1
    with pytest.raises(ValueError, match="n >= 2"):
        random_derangement(rng, 1)


def test_feature_correlation_carries_no_gradient():
    fa = torch.randn(1, 3, 2, 2, requires_grad=True)
    corr_loss(fa, torch.randn(1, 3, 2, 2), torch.randn(1, 4, 2, 2, requires_grad=True), torch.randn(1, 4, 2, 2),
              shift=0.1).backward()
    assert fa.grad is None


def test_sample_points_hits_cell_centres_at_the_corners():
    """align_corners=True: (-1, -1) is cell (0, 0), (1, -1) is cell (row 0, last column)."""
    x = torch.arange(12.0).view(1, 1, 3, 4)
    coords = torch.tensor([[[[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]]])  # (1, 1, 4, 2)
    np.testing.assert_allclose(sample_points(x, coords).flatten().numpy(), [0, 3, 8, 11])
    c = random_coords(np.random.default_rng(0), 2, 5)
    assert c.shape == (2, 5, 5, 2) and c.abs().max() <= 1


def test_params_presets_and_validation():
    assert PRESETS["cocostuff"]() == StegoLossParams(0.67, 0.25, 0.63, 0.08, 0.02, 0.66)
    assert PRESETS["synthetic"]() == StegoLossParams()
    with pytest.raises(ValueError, match="weight_knn"):
        StegoLossParams(weight_knn=-1)
    with pytest.raises(ValueError, match="shift_rand"):
        StegoLossParams(shift_rand=float("nan"))

