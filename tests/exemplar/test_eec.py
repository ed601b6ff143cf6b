"""The exemplar embedding contrastive loss: mask-guided pooling and the InfoNCE value by hand, the empty
positive / negative sets, gradients to the EEC head, pool embeddings, params."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskless.solo.eec import (EECHead, EECParams, center_embeddings, eec_loss, eec_term, mask_pooled_embeddings,
                                   pool_embeddings)
from maskless.models.resnet import normalize

KW = dict(alpha=0.5, beta=0.1, temperature=0.5)


def _map() -> torch.Tensor:
    """(2, 2, 2, 2): image 0 has (1, 0) in its left column and (0, 1) in its right one; image 1 is (3, 4)."""
    emb = torch.zeros(2, 2, 2, 2)
    emb[0, 0, :, 0] = 1.0
    emb[0, 1, :, 1] = 1.0
    emb[1, 0], emb[1, 1] = 3.0, 4.0
    return emb


def test_mask_pooling_by_hand():
    """m0 = [[1, .5], [0, 0]] on image 0: (1 (1, 0) + .5 (0, 1)) / 1.5 = (2/3, 1/3) -> (2, 1) / sqrt 5.
    m1 = 0 on image 1: zero row, invalid. m2 = .25 everywhere on image 1: (3, 4) -> (.6, .8)."""
    masks = torch.tensor([[[1.0, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.25, 0.25], [0.25, 0.25]]])
    emb, valid = mask_pooled_embeddings(_map(), masks, torch.tensor([0, 1, 1]))
    want = torch.tensor([[2 / math.sqrt(5), 1 / math.sqrt(5)], [0.0, 0.0], [0.6, 0.8]])
    assert torch.allclose(emb, want, atol=1e-6) and valid.tolist() == [True, False, True]


def test_mask_pooling_resizes_masks():
    """A 4x4 mask whose top-left 2x2 block is 1, area-shrunk to the 2x2 map: [[1, 0], [0, 0]] -> (1, 0).
    A 1x1 mask 0.5, bilinearly enlarged: 0.5 everywhere -> the map's mean (.5, .5) -> (1, 1) / sqrt 2."""
    big = torch.zeros(1, 4, 4)
    big[0, :2, :2] = 1.0
    emb, _ = mask_pooled_embeddings(_map(), big, torch.tensor([0]))
    assert torch.allclose(emb, torch.tensor([[1.0, 0.0]]), atol=1e-6)
    emb, _ = mask_pooled_embeddings(_map(), torch.full((1, 1, 1), 0.5), torch.tensor([0]))
    assert torch.allclose(emb, torch.tensor([[1.0, 1.0]]) / math.sqrt(2), atol=1e-6)


def test_mask_pooling_bad_input():
    masks = torch.ones(1, 2, 2)
    for bad_masks, idx, match in [(masks * 1.5, [0], r"\[0, 1\]"), (masks * float("nan"), [0], "NaN"),
                                  (masks, [2], "batch_index"), (masks, [0, 1], "batch_index")]:
        with pytest.raises(ValueError, match=match):
            mask_pooled_embeddings(_map(), bad_masks, torch.tensor(idx))
    emb, valid = mask_pooled_embeddings(_map(), torch.zeros(0, 2, 2), torch.zeros(0, dtype=torch.long))
    assert emb.shape == (0, 2) and valid.shape == (0,)


def _crafted():
    """Instances a = (1, 0), b = (0, 1); pool p1 = (1, 0), p2 = (.6, .8), p3 = (-1, 0).
    s(a) = [1, .6, -1], s(b) = [0, .8, 0]."""
    inst = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    pool = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    return inst, pool


def test_centring_by_hand():
    """Pool (1, 0), (0, 1): mu (0.5, 0.5), centred pool (1, -1)/sqrt 2 and (-1, 1)/sqrt 2. Instance (1, 0):
    raw cosines 1 and 0, centred 1 and -1. An invalid (zero) row stays zero."""
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    emb = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    e, p = center_embeddings(emb, torch.tensor([True, False]), pool)
    r = 2 ** -0.5
    assert torch.allclose(p, torch.tensor([[r, -r], [-r, r]]))
    assert torch.allclose(e @ p.T, torch.tensor([[1.0, -1.0], [0.0, 0.0]]), atol=1e-6)


def test_eec_loss_by_hand():
    """alpha .5, beta .1, t .5. a: positives {1, .6}, negative {-1}:
    l_a = -log((e^2 + e^1.2) / (e^2 + e^1.2 + e^-2)); b: positive {.8}, negatives {0, 0}:
    l_b = -log(e^1.6 / (e^1.6 + 2)); loss = (l_a + l_b) / 2; 3 positive and 3 negative pairs, 2 valid.
    With alpha .9, b has no positive (.8 < .9): only a, positive {1}, negative {-1}: log(1 + e^-4)."""
    inst, pool = _crafted()
    loss, stats = eec_loss(inst, pool, **KW)
    la = -math.log((math.e**2 + math.e**1.2) / (math.e**2 + math.e**1.2 + math.e**-2))
    lb = -math.log(math.e**1.6 / (math.e**1.6 + 2))
    assert loss.item() == pytest.approx((la + lb) / 2, abs=1e-6)
    assert {k: v.item() for k, v in stats.items()} == {"num_pos": 3.0, "num_neg": 3.0, "num_valid": 2.0}
    loss, stats = eec_loss(inst, pool, alpha=0.9, beta=0.1, temperature=0.5)
    # abs tolerance: the loss is a difference of two float32 log-sum-exps near 2
    assert loss.item() == pytest.approx(math.log(1 + math.e**-4), abs=1e-6) and stats["num_valid"].item() == 1.0


@pytest.mark.parametrize("alpha, beta, empty", [(1.0, 0.1, "num_pos"), (0.5, -1.0, "num_neg")])
def test_empty_positive_or_negative_set_is_a_zero_with_a_graph(alpha, beta, empty):
    """alpha 1: no s > 1, no positive anywhere; beta -1: no s < -1, no negative. Either way an exact 0 that
    still backpropagates (zero, finite gradients), never NaN."""
    inst, pool = _crafted()
    loss, stats = eec_loss(inst, pool, alpha=alpha, beta=beta, temperature=0.5)
    assert loss.item() == 0.0 and loss.grad_fn is not None and stats[empty].item() == 0.0
    assert stats["num_valid"].item() == 0.0
    loss.backward()
    assert torch.isfinite(inst.grad).all() and (inst.grad == 0).all()


def test_valid_rows_and_bad_input():
    """A zero row (s = 0 < beta with every exemplar) would count as 3 negatives; valid=False leaves it out."""
    inst, pool = _crafted()
    rows = torch.cat([inst, torch.zeros(1, 2)])
    loss, stats = eec_loss(rows, pool, **KW, valid=torch.tensor([True, True, False]))
    assert stats["num_neg"].item() == 3.0 and stats["num_valid"].item() == 2.0
    assert loss.item() == pytest.approx(eec_loss(inst, pool, **KW)[0].item())
    with pytest.raises(ValueError, match="NaN"):
        eec_loss(inst.detach() * float("nan"), pool, **KW)
    with pytest.raises(ValueError, match=r"\(N, E\)"):
        eec_loss(inst, pool[:, :1], **KW)
    loss, stats = eec_loss(torch.zeros(0, 2, requires_grad=True), pool, **KW)
    assert loss.item() == 0.0 and stats["num_valid"].item() == 0.0


def _head_and_pool():
    torch.manual_seed(0)
    head = EECHead(16, dim=8, hidden=16, gn_groups=8, upsample=2)
    feat = torch.randn(2, 16, 6, 6)
    masks = torch.rand(3, 6, 6)
    idx = torch.tensor([0, 0, 1])
    with torch.no_grad():
        e, _ = mask_pooled_embeddings(head(feat), masks, idx)
    pool = torch.stack([e[0], -e[0], e[2]])  # instance 0: s = 1 with the first, -1 with the second
    return head, feat, masks, idx, pool


def test_head_shapes_and_norms():
    head = EECHead(16, dim=8, hidden=16, gn_groups=8, upsample=2)
    out = head(torch.randn(2, 16, 5, 7))
    assert out.shape == (2, 8, 10, 14) and (out.norm(dim=1) <= 1 + 1e-5).all()
    flat = EECHead(16, dim=8, hidden=16, gn_groups=8, upsample=1)(torch.randn(2, 16, 5, 7))
    assert torch.allclose(flat.norm(dim=1), torch.ones(2, 5, 7), atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        EECHead(16, hidden=12, gn_groups=8)


def test_gradient_reaches_the_head_through_pooling():
    """Instance 0 has a positive (itself, s = 1) and a negative (its opposite, s = -1): its loss
    -log(e^2 / (e^2 + e^-2 + ...)) is > 0 and every head weight gets a non-zero gradient."""
    head, feat, masks, idx, pool = _head_and_pool()
    emb, valid = mask_pooled_embeddings(head(feat), masks, idx)
    loss, stats = eec_loss(emb, pool, **KW, valid=valid)
    assert loss.item() > 0 and stats["num_valid"].item() >= 1
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("detach", [True, False])
def test_eec_term_detaches_masks_on_request(detach):
    head, feat, _, idx, pool = _head_and_pool()
    torch.manual_seed(1)
    logits = torch.randn(3, 6, 6, requires_grad=True)
    out = eec_term(head(feat), logits.sigmoid(), idx, pool, EECParams(alpha=0.5, beta=0.1, detach_masks=detach))
    assert set(out) == {"loss_eec", "num_eec_pos", "num_eec_neg", "num_eec_valid", "num_eec_empty"}
    out["loss_eec"].backward()
    assert head.body[0].weight.grad.abs().sum() > 0
    assert (logits.grad is None) == detach


def test_pool_embeddings(make_solo):
    """(P, E) unit rows without grad; a 32x32 crop (no padding) equals the head run by hand in eval mode;
    BatchNorm statistics do not move and training modes come back; head None pools the normalised
    mask_feat (E = kernel_dim 16); padding path (40x40 crops); empty masks and an empty pool are errors."""
    model, (head, *_) = make_solo().train(), _head_and_pool()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((3, 32, 32), bool)
    masks[:, 8:24, 4:20] = True
    bn_before = model.backbone.bn1.running_mean.clone()
    emb = pool_embeddings(model, head, crops, masks, batch_size=2)
    assert emb.shape == (3, 8) and not emb.requires_grad and torch.allclose(emb.norm(dim=1), torch.ones(3))
    assert model.training and head.training and torch.equal(bn_before, model.backbone.bn1.running_mean)
    model.eval(), head.eval()
    with torch.no_grad():
        x = normalize(torch.from_numpy(crops).permute(0, 3, 1, 2))
        want, _ = mask_pooled_embeddings(head(model(x)["mask_feat"]), torch.from_numpy(masks).float(),
                                         torch.arange(3))
    assert torch.allclose(emb, want, atol=1e-5)
    assert pool_embeddings(model, None, crops, masks).shape == (3, 16)
    big = rng.integers(0, 255, (2, 40, 40, 3), dtype=np.uint8)
    assert pool_embeddings(model, head, big, np.ones((2, 40, 40), bool)).shape == (2, 8)
    masks[1] = False
    with pytest.raises(ValueError, match=r"exemplars \[1\] have empty masks"):
        pool_embeddings(model, head, crops, masks)
    with pytest.raises(ValueError, match="empty"):
        pool_embeddings(model, head, crops[:0], masks[:0])


@pytest.mark.parametrize("bad", [dict(beta=0.6), dict(alpha=1.1), dict(temperature=0.0), dict(weight=-1.0),
                                 dict(dim=0), dict(refresh_every=0), dict(alpha=float("nan"))])
def test_params_validation(bad):
    with pytest.raises(ValueError, match="EECParams"):
        EECParams(**bad)


def test_refresh_schedule():
    p = EECParams(refresh_every=3)
    assert [s for s in range(8) if p.refresh_due(s)] == [0, 3, 6]


def test_quantile_thresholds_by_hand():
    """One instance e = (1, 0) against a pool at cosines 0.9, 0.8, 0.7, 0.6 (all above the absolute
    alpha 0.5: no negative, loss 0). Quantiles 0.75 / 0.25 of [0.6, 0.7, 0.8, 0.9] (linear interpolation)
    are 0.825 and 0.675: positive 0.9, negative 0.6, and with t = 1
    loss = -log(e^0.9 / (e^0.9 + e^0.6)) = log(1 + e^-0.3)."""
    import math

    import torch

    from maskless.solo.eec import eec_loss

    cos = torch.tensor([0.9, 0.8, 0.7, 0.6])
    pool = torch.stack([cos, (1 - cos**2).sqrt()], dim=1)  # (4, 2) unit rows
    e = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss, stats = eec_loss(e, pool, alpha=0.5, beta=0.1, temperature=1.0)
    assert float(loss.detach()) == 0.0 and stats["num_neg"] == 0
    loss, stats = eec_loss(e, pool, alpha=0.5, beta=0.1, temperature=1.0, thresholds="quantile")
    assert (stats["num_pos"], stats["num_neg"], stats["num_valid"]) == (1, 1, 1)
    assert float(loss.detach()) == pytest.approx(math.log(1 + math.exp(-0.3)), abs=1e-6)
    loss.backward()
    assert e.grad.abs().sum() > 0


@pytest.mark.parametrize("thresholds", ["absolute", "quantile"])
def test_eec_term_without_instances_is_a_zero_that_reaches_the_head(thresholds):
    """A batch (or a data-parallel rank's share of one) with no positive cell: no mask to pool. The term is
    an exact 0 (no torch.quantile error on the empty input) whose graph still reaches every head weight
    (a zero gradient), so a DDP rank in that case still joins the head's gradient all-reduce."""
    head, feat, _, _, pool = _head_and_pool()
    out = eec_term(head(feat), torch.zeros(0, 6, 6), torch.zeros(0, dtype=torch.long), pool,
                   EECParams(alpha=0.5, beta=0.1, thresholds=thresholds))
    assert out["loss_eec"].item() == 0.0 and out["num_eec_valid"].item() == 0
    out["loss_eec"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() == 0, name
