"""DenseCL pieces: correspondence, InfoNCE, momentum update, queues, the full forward and its parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import maskless.pretrain.densecl as densecl
from maskless.pretrain.densecl import (DenseCL, DenseCLParams, dense_correspondence, info_nce,
                                       momentum_update_)


def _tiny(**kw) -> DenseCL:
    torch.manual_seed(0)
    args = dict(arch="resnet18", feat_dim=8, hidden_dim=16, queue_size=8, temperature=0.2, key_momentum=0.99)
    return DenseCL(**{**args, **kw}).train()


def _views(b: int = 2, size: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g), torch.randn(b, 3, size, size, generator=g)


# --- dense_correspondence -------------------------------------------------------------------------------

def test_correspondence_recovers_a_permutation():
    """feat_k cell j = 3 x feat_q cell perm[j] (cosine ignores the scale), so query cell i matches the key
    cell j with perm[j] = i: the inverse permutation."""
    g = torch.Generator().manual_seed(0)
    feat_q = torch.randn(2, 16, 3, 3, generator=g)
    perm = torch.randperm(9, generator=g)
    feat_k = 3 * feat_q.flatten(2)[:, :, perm].reshape(2, 16, 3, 3)
    match = dense_correspondence(feat_q, feat_k)
    assert match.dtype == torch.long and match.shape == (2, 9)
    assert torch.equal(match, torch.argsort(perm).expand(2, 9))


def test_correspondence_different_grids_and_ties():
    """Query 1x2 grid with cells e1 and e2; key 1x3 grid [e2, e1, e1]: e1 matches key 1 (first of the tie),
    e2 matches key 0."""
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    feat_q = torch.stack([e1, e2], dim=1).view(1, 2, 1, 2)
    feat_k = torch.stack([e2, e1, e1], dim=1).view(1, 2, 1, 3)
    assert dense_correspondence(feat_q, feat_k).tolist() == [[1, 0]]


def test_correspondence_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="dense_correspondence"):
        dense_correspondence(torch.zeros(1, 4, 2, 2), torch.zeros(2, 4, 2, 2))


# --- info_nce -------------------------------------------------------------------------------------------

def test_info_nce_by_hand():
    """q = (1, 0), k = (0.6, 0.8), queue = {(0, 1), (-1, 0)}, T = 0.5: logits [0.6, 0, -1] / 0.5 =
    [1.2, 0, -2], loss = log(1 + e^-1.2 + e^-3.2) = 0.294128...; second row q = k = (0, 1): logits
    [1, 1, 0] / 0.5, loss = log(1 + 1 + e^-2). The function returns the mean of both rows."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    row1 = math.log(1 + math.exp(-1.2) + math.exp(-3.2))
    row2 = math.log(2 + math.exp(-2.0))
    assert abs(row1 - 0.294128) < 1e-6
    assert info_nce(q, k, queue, 0.5).item() == pytest.approx((row1 + row2) / 2, abs=1e-6)


def test_info_nce_empty_queue_and_nan():
    """No negatives: the positive is the only logit, loss = -log 1 = 0. NaN input is not hidden."""
    q = torch.tensor([[1.0, 0.0]])
    assert info_nce(q, q, torch.zeros(0, 2), 0.2).item() == 0.0
    assert torch.isnan(info_nce(q, torch.tensor([[float("nan"), 0.0]]), torch.eye(2), 0.2))


def test_info_nce_shape_error():
    with pytest.raises(ValueError, match="info_nce shapes"):
        info_nce(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4, 2), 0.2)


# --- momentum update, queues ----------------------------------------------------------------------------

def test_momentum_update_arithmetic():
    """key 1, query 3, m = 0.9: 0.9 * 1 + 0.1 * 3 = 1.2 for every parameter; buffers untouched."""
    key, query = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    for p in key.parameters():
        p.data.fill_(1.0)
    for p in query.parameters():
        p.data.fill_(3.0)
    query.running_mean.fill_(5.0)
    momentum_update_(key, query, 0.9)
    assert all(torch.allclose(p, torch.full_like(p, 1.2)) for p in key.parameters())
    assert torch.equal(key.running_mean, torch.zeros(2))


def test_queues_hold_pooled_normalised_keys_and_wrap():
    model = _tiny(queue_size=3)
    view_q, view_k = _views(b=2)
    model(view_q, view_k)
    with torch.no_grad():
        feat_k = model.encoder_k(view_k)["res5"]  # train mode: batch statistics, so the same keys again
        pooled = F.normalize(model.dense_k(feat_k).mean(dim=(2, 3)), dim=1)
        k = F.normalize(model.global_k(feat_k), dim=1)
    assert torch.allclose(model.queue_dense[:2], pooled, atol=1e-5)
    assert torch.allclose(model.queue_global[:2], k, atol=1e-5)
    assert torch.allclose(model.queue_dense.norm(dim=1), torch.ones(3))
    assert model.queue_ptr.item() == 2
    model._enqueue(torch.eye(8)[:2], torch.eye(8)[2:4])  # wraps: rows 2 then 0
    assert model.queue_ptr.item() == 1
    assert torch.equal(model.queue_global[2], torch.eye(8)[0]) and torch.equal(model.queue_global[0], torch.eye(8)[1])
    assert torch.equal(model.queue_dense[0], torch.eye(8)[3])


def test_key_encoder_starts_as_copy_and_gets_no_grad():
    model = _tiny()
    for pq, pk in zip(model.encoder_q.parameters(), model.encoder_k.parameters()):
        assert torch.equal(pq, pk) and not pk.requires_grad


# --- full forward ---------------------------------------------------------------------------------------

def test_forward_losses_combine_and_use_the_queue_before_enqueue():
    """loss_global equals info_nce(q, k, queue as it was before this batch); loss = 0.75 g + 0.25 d."""
    model = _tiny(dense_weight=0.25, key_momentum=1.0)  # m = 1: the key encoder stays the initial copy
    old_queue = model.queue_global.clone()
    view_q, view_k = _views(b=2)
    out = model(view_q, view_k)
    with torch.no_grad():
        q = F.normalize(model.global_q(model.encoder_q(view_q)["res5"]), dim=1)
        k = F.normalize(model.global_k(model.encoder_k(view_k)["res5"]), dim=1)
    assert out["loss_global"].item() == pytest.approx(info_nce(q, k, old_queue, 0.2).item(), abs=1e-5)
    want = 0.75 * out["loss_global"] + 0.25 * out["loss_dense"]
    assert torch.allclose(out["loss"], want)


def test_correspondence_is_taken_on_backbone_features(monkeypatch):
    seen = []

    def spy(feat_q, feat_k):
        seen.append((feat_q.shape, feat_k.shape))
        return dense_correspondence(feat_q, feat_k)

    monkeypatch.setattr(densecl, "dense_correspondence", spy)
    _tiny()(*_views(b=2))
    assert seen == [(torch.Size([2, 512, 2, 2]), torch.Size([2, 512, 2, 2]))]  # res5 (512 ch), not the 8-d head


def test_backward_reaches_both_heads_and_backbone():
    model = _tiny()
    out = model(*_views(b=2))
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    for name, module in [("global_q", model.global_q), ("dense_q", model.dense_q), ("encoder_q", model.encoder_q)]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert all(p.grad is None for p in model.encoder_k.parameters())


# --- parameters -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "change, field",
    [({"batch_size": 1}, "batch_size"), ({"queue_size": 4, "batch_size": 8}, "queue_size"),
     ({"arch": "vgg16"}, "arch"), ({"lr": 0.0}, "lr"), ({"steps": "3"}, "steps"), ({"amp": 1}, "amp"),
     ({"dense_weight": 1.5}, "dense_weight"), ({"crop_size": 16}, "crop_size"),
     ({"temperature": float("nan")}, "temperature"),
     ({"warmup_steps": 300}, "warmup_steps")],
)
def test_params_errors_name_the_field(change, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        DenseCLParams(**change)


def test_params_from_dict():
    assert DenseCLParams.from_dict({"steps": 3}).steps == 3
    with pytest.raises(ValueError, match="stepz"):
        DenseCLParams.from_dict({"stepz": 3})
    assert DenseCLParams().to_dict()["queue_size"] == 4096
