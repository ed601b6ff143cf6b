"""Contextrast CCL anchors, InfoNCE, pixel-anchor loss and BANE negatives, worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskless.pct.contextrast import (ContextrastParams, anchor_info_nce, bane_negatives, class_anchors,
                                      contextrast_losses, downsample_labels, pixel_anchor_loss, update_anchors)


def test_class_anchors_are_centroids():
    """Pixels (1,0), (0,1) labelled 0, (0,1) labelled 2, one ignored: A_0 = (0.5, 0.5), A_2 = (0, 1), no class 1."""
    emb = torch.tensor([[1.0, 0.0, 0.0, 5.0], [0.0, 1.0, 1.0, 5.0]]).view(1, 2, 1, 4)
    labels = torch.tensor([[[0, 0, 2, 255]]])
    anchors, has = class_anchors(emb, labels, 3)
    assert anchors.tolist() == [[0.5, 0.5], [0.0, 0.0], [0.0, 1.0]] and has.tolist() == [True, False, True]


def test_anchor_update_arithmetic():
    """Lower layer A = ((1, 0), (0, 1)), top A_I = ((0, 1), (1, 0)) with class 1 absent at the top.
    w_l = 0.25, w_h = 0.75: class 0 -> 0.25 (1, 0) + 0.75 (0, 1) = (0.25, 0.75) / |.| = (0.316228, 0.948683);
    class 1 keeps (0, 1) (the top lost it). The top layer is only normalised. A_I enters detached."""
    low = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    top = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    out = update_anchors([low, top], [torch.tensor([True, True]), torch.tensor([True, False])],
                         w_low=0.25, w_high=0.75)
    n = math.sqrt(0.25**2 + 0.75**2)
    assert out[0].flatten().tolist() == pytest.approx([0.25 / n, 0.75 / n, 0.0, 1.0])
    assert out[0][0].tolist() == pytest.approx([0.316228, 0.948683], abs=1e-6)
    assert out[1].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    out[0].sum().backward()
    assert top.grad is None and low.grad.abs().sum() > 0


def test_info_nce_and_pixel_anchor_by_hand():
    """z = (1, 0), class 0, anchors ((1, 0), (0, 1)), tau 1: -log(e / (e + 1)) = log(1 + e^-1) = 0.313262.
    A BANE negative (1, 0) of class 0 adds e: log((2e + 1) / e) = log(2 + e^-1) = 0.861995; one of class 1
    changes nothing. Pixel-anchor with anchors ((.6, .8), (.8, .6)), margin 0: pull 1 - .6 + push .8 = 1.2."""
    z, y = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    anchors, has = torch.eye(2), torch.tensor([True, True])
    assert anchor_info_nce(z, y, anchors, has, temperature=1.0).item() == pytest.approx(0.313262, abs=1e-6)
    neg = torch.tensor([[1.0, 0.0]])
    with_neg = anchor_info_nce(z, y, anchors, has, temperature=1.0, negatives=neg, negative_of=torch.tensor([0]))
    assert with_neg.item() == pytest.approx(0.861995, abs=1e-6)
    other = anchor_info_nce(z, y, anchors, has, temperature=1.0, negatives=neg, negative_of=torch.tensor([1]))
    assert other.item() == pytest.approx(0.313262, abs=1e-6)
    pa = pixel_anchor_loss(z, y, torch.tensor([[0.6, 0.8], [0.8, 0.6]]), has, margin=0.0)
    assert pa.item() == pytest.approx(1.2, abs=1e-6)
    # Only one class in the batch: InfoNCE is -log 1 = 0, nothing to push.
    assert anchor_info_nce(z, y, anchors, torch.tensor([True, False]), temperature=0.1).item() == pytest.approx(0.0)


def _index_embeddings(h: int, w: int) -> torch.Tensor:
    """(1, 2, h, w) embeddings whose first channel is the pixel's flat index, so a negative names its pixel."""
    idx = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    return torch.cat([idx, torch.zeros_like(idx)], dim=1)


def test_bane_picks_the_rim_of_a_wrong_region():
    """8 x 8 image, all background; the prediction says class 1 on the 4 x 4 square [2:6, 2:6]: 16 false
    positives of class 1. Distance transform: the 12 rim pixels are at 1, the 4 inner ones at 2. K = 75 %
    -> ceil(12) = 12 negatives = exactly the rim, all negatives of class 1."""
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    pred = labels.clone()
    pred[0, 2:6, 2:6] = 1
    neg, of = bane_negatives(_index_embeddings(8, 8), labels, pred, fraction=0.75, max_per_class=100)
    square = {r * 8 + c for r in range(2, 6) for c in range(2, 6)}
    inner = {r * 8 + c for r in range(3, 5) for c in range(3, 5)}
    assert set(neg[:, 0].long().tolist()) == square - inner and len(neg) == 12
    assert of.tolist() == [1] * 12
    few, _ = bane_negatives(_index_embeddings(8, 8), labels, pred, fraction=0.75, max_per_class=5)
    assert len(few) == 5 and set(few[:, 0].long().tolist()) <= square - inner


def test_bane_no_error_and_ignored_pixels():
    """A correct prediction, or one wrong only on ignored pixels, yields no negatives; the losses stay finite."""
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, :, 3:] = 1
    neg, of = bane_negatives(_index_embeddings(6, 6), labels, labels.clone(), fraction=0.1, max_per_class=8)
    assert neg.shape == (0, 2) and of.shape == (0,)
    ignored = labels.clone()
    ignored[0, :2] = 255
    pred = labels.clone()
    pred[0, :2] = 1
    assert bane_negatives(_index_embeddings(6, 6), ignored, pred, fraction=1.0, max_per_class=8)[0].shape[0] == 0
    emb = [F.normalize(torch.randn(1, 4, 6, 6), dim=1)]
    out = contextrast_losses(emb, labels, labels.clone(), 2, ContextrastParams())
    assert all(torch.isfinite(v) for v in out.values())


def test_bane_all_wrong_uses_the_border():
    """Every pixel of a 3 x 3 image predicted 1 but labelled 0: no correct pixel to measure from, so the
    border counts: the 8 border pixels are at 1, the centre at 2; K = 1/9 -> one negative, a border pixel."""
    neg, _ = bane_negatives(_index_embeddings(3, 3), torch.zeros(1, 3, 3, dtype=torch.long),
                            torch.ones(1, 3, 3, dtype=torch.long), fraction=1 / 9, max_per_class=10)
    assert len(neg) == 1 and int(neg[0, 0]) != 4


def test_downsample_labels_keeps_values():
    labels = torch.tensor([[[0, 0, 255, 255], [0, 0, 255, 255], [3, 3, 1, 1], [3, 3, 1, 1]]])
    assert downsample_labels(labels, (2, 2)).tolist() == [[[0, 255], [3, 1]]]


@pytest.mark.parametrize("term", ["ctr_nce", "ctr_pa"])
def test_contextrast_terms_have_gradient(term):
    """Two layers (4 x 4 and 2 x 2), three classes, a prediction with errors (BANE active)."""
    torch.manual_seed(0)
    raw = [torch.randn(2, 8, 4, 4, requires_grad=True), torch.randn(2, 8, 2, 2, requires_grad=True)]
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[0, 0] = 255
    pred = torch.randint(0, 3, (2, 8, 8))
    stats = {}
    out = contextrast_losses([F.normalize(r, dim=1) for r in raw], labels, pred, 3, ContextrastParams(),
                             stats=stats)
    out[term].backward()
    assert stats["bane_negatives"] > 0 and torch.isfinite(out[term])
    assert all(r.grad is not None and r.grad.abs().sum() > 0 for r in raw)


def test_contextrast_edge_cases():
    """All pixels ignored -> zero terms; labels out of range -> ValueError; bad params -> ValueError."""
    emb = [F.normalize(torch.randn(1, 4, 2, 2), dim=1).requires_grad_(True)]
    out = contextrast_losses(emb, torch.full((1, 4, 4), 255), None, 3, ContextrastParams())
    assert out["ctr_nce"].item() == 0.0 and out["ctr_pa"].item() == 0.0
    with pytest.raises(ValueError, match="outside"):
        contextrast_losses(emb, torch.full((1, 4, 4), 7), None, 3, ContextrastParams())
    with pytest.raises(ValueError, match="temperature"):
        ContextrastParams(temperature=0.0)
    with pytest.raises(ValueError, match="bane_fraction"):
        ContextrastParams(bane_fraction=0.0)
    assert np.isfinite(ContextrastParams().temperature)
