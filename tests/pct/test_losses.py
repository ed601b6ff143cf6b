"""PCT loss terms and dynamic evaluation against values worked out by hand (maskless.pct.losses)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from maskless.pct.losses import (DynamicEvaluation, cce, confusion_counts, h2p_loss, mlsm_loss, p2h_loss,
                                 restricted_argmax)


def test_cce_equals_cross_entropy_when_all_classes_present():
    """present all True: the restriction removes nothing, so CCE = F.cross_entropy (ignore 255, mean)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 5)
    target = torch.randint(0, 4, (2, 3, 5))
    target[0, 0, :2] = 255
    out = cce(logits, target, torch.ones(2, 4, dtype=torch.bool))
    assert out.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item(), abs=1e-6)


def test_cce_by_hand_and_zero_probability_on_absent_classes():
    """logits (1, 5, 2) at one pixel, present {2} (+ background forced): p_2 = e^2 / (e^1 + e^2), so
    nll = log(1 + e^-1) = 0.313262; class 1 (absent, largest logit) gets probability 0 and zero gradient."""
    logits = torch.tensor([1.0, 5.0, 2.0]).view(1, 3, 1, 1).requires_grad_(True)
    present = torch.tensor([[False, False, True]])
    loss = cce(logits, torch.tensor([[[2]]]), present)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    loss.backward()
    assert logits.grad[0, 1, 0, 0].item() == 0.0 and logits.grad[0, 2, 0, 0].item() != 0.0
    probs = F.softmax(logits.detach().masked_fill(~torch.tensor([True, False, True]).view(1, 3, 1, 1),
                                                  float("-inf")), dim=1)
    assert probs[0, 1].item() == 0.0


def test_cce_per_image_weight_and_ignore():
    """Two 1x2 images, uniform logits over 2 classes -> nll = log 2 per pixel; image 1 has one ignored pixel;
    weights (0.5, 2): (0.5 * 2 log2 + 2 * 1 log2) / 3 valid pixels = log 2."""
    logits = torch.zeros(2, 2, 1, 2)
    target = torch.tensor([[[0, 1]], [[1, 255]]])
    out = cce(logits, target, torch.ones(2, 2, dtype=torch.bool), weight=torch.tensor([0.5, 2.0]))
    assert out.item() == pytest.approx(math.log(2), abs=1e-6)
    per_pixel = cce(logits, target, torch.ones(2, 2, dtype=torch.bool), weight=torch.zeros(2, 1, 2))
    assert per_pixel.item() == 0.0


def test_cce_edge_cases():
    """All pixels ignored -> 0 (attached to the graph); empty batch -> 0; NaN logits, a target of an absent
    class, or a class id out of range -> ValueError."""
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    out = cce(logits, torch.full((1, 2, 2), 255), torch.ones(1, 3, dtype=torch.bool))
    out.backward()
    assert out.item() == 0.0 and logits.grad.abs().sum().item() == 0.0
    empty = cce(torch.zeros(0, 3, 2, 2), torch.zeros(0, 2, 2, dtype=torch.long), torch.zeros(0, 3, dtype=bool))
    assert empty.item() == 0
    with pytest.raises(ValueError, match="non-finite"):
        cce(torch.full((1, 3, 1, 1), float("nan")), torch.zeros(1, 1, 1, dtype=torch.long),
            torch.ones(1, 3, dtype=bool))
    with pytest.raises(ValueError, match="absent"):
        cce(torch.zeros(1, 3, 1, 1), torch.tensor([[[1]]]), torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="outside"):
        cce(torch.zeros(1, 3, 1, 1), torch.tensor([[[7]]]), torch.ones(1, 3, dtype=bool))


def test_mlsm_by_hand_and_valid_mask():
    """Foreground maxima: class 1 -> 2, class 2 -> -1; tags {1}: mean(log(1 + e^-2), log(1 + e^-1)) = 0.220095.
    Masking out the pixel holding class 1's max (2) leaves its max at 0: mean(log 2, log(1 + e^-1))."""
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 1, 0] = torch.tensor([2.0, 0.0])
    logits[0, 2, 0] = torch.tensor([-1.0, -3.0])
    tags = torch.tensor([[True, True, False]])
    assert mlsm_loss(logits, tags).item() == pytest.approx(0.220095, abs=1e-6)
    valid = torch.tensor([[[False, True]]])
    expected = (math.log(2) + math.log(1 + math.exp(-3))) / 2  # class 2 max is now -3
    assert mlsm_loss(logits, tags, valid=valid).item() == pytest.approx(expected, abs=1e-6)
    assert mlsm_loss(torch.zeros(0, 3, 1, 2), torch.zeros(0, 3, dtype=bool)).item() == 0.0
    with pytest.raises(ValueError, match="non-finite"):
        mlsm_loss(torch.full((1, 3, 1, 2), float("nan")), tags)
    with pytest.raises(ValueError, match="without any pixel"):
        mlsm_loss(logits, tags, valid=torch.zeros(1, 1, 2, dtype=torch.bool))


def test_restricted_argmax_and_cross_terms():
    """H favours absent class 2 at both pixels; restricted to {1} its argmax is (1, 0). H2P trains P only,
    P2H trains H only; P2H with weight 0 is 0."""
    h = torch.tensor([[0.0, 1.0, 9.0], [2.0, 1.0, 9.0]]).t().reshape(1, 3, 1, 2).requires_grad_(True)
    p = torch.zeros(1, 3, 1, 2, requires_grad=True)
    present = torch.tensor([[True, True, False]])
    assert restricted_argmax(h, present).tolist() == [[[1, 0]]]
    h2p = h2p_loss(p, h, present)
    assert h2p.item() == pytest.approx(math.log(2), abs=1e-6)  # uniform over {0, 1}
    h2p.backward()
    assert h.grad is None and p.grad.abs().sum() > 0
    p2h = p2h_loss(h, p, present, torch.tensor([0.5]))
    p2h.backward()
    assert h.grad.abs().sum() > 0
    assert p2h_loss(h, p, present, torch.tensor([0.0])).item() == 0.0


def test_confusion_counts_by_hand():
    """target [[0,0,1],[1,2,2]], pred [[0,0,1],[2,2,2]] plus a column of ignored pixels (pred 2 and 0 there,
    not counted): TP (2, 1, 2), GT (2, 2, 2), Pred (2, 1, 3)."""
    target = torch.tensor([[[0, 0, 1, 255], [1, 2, 2, 255]]])
    pred = torch.tensor([[[0, 0, 1, 2], [2, 2, 2, 0]]])
    tp, gt, pr = confusion_counts(pred, target, 3)
    assert (tp.tolist(), gt.tolist(), pr.tolist()) == ([2, 1, 2], [2, 2, 2], [2, 1, 3])


def test_dynamic_evaluation_iou_and_weight_by_hand():
    """Update 1 (the confusion above), m = 0.99: counts x 0.01; IoU = TP / (GT + Pred - TP) = (1, 1/2, 2/3).
    Weights: tags {1} -> min(1, 1/2)^8 = 0.00390625; tags {2} -> (2/3)^8 = 0.0390184; no tags -> 1^8 = 1.
    Update 2, all six pixels class 1 and right: tp = 0.99 (.02, .01, .02) + .01 (0, 6, 0) = (.0198, .0699, .0198),
    gt = (.0198, .0798, .0198), pred = (.0198, .0699, .0297): IoU = (1, .0699 / .0798 = 0.875940, 2/3)."""
    dyn = DynamicEvaluation(3)
    dyn.update(torch.tensor([[[0, 0, 1], [2, 2, 2]]]), torch.tensor([[[0, 0, 1], [1, 2, 2]]]))
    assert dyn.iou().tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    present = torch.tensor([[False, True, False], [False, False, True], [False, False, False]])
    assert dyn.weights(present).tolist() == pytest.approx([0.5 ** 8, (2 / 3) ** 8, 1.0])
    dyn.update(torch.ones(1, 2, 3, dtype=torch.long), torch.ones(1, 2, 3, dtype=torch.long))
    assert dyn.tp.tolist() == pytest.approx([0.0198, 0.0699, 0.0198])
    assert dyn.pred.tolist() == pytest.approx([0.0198, 0.0699, 0.0297])
    assert dyn.iou().tolist() == pytest.approx([1.0, 0.0699 / 0.0798, 2 / 3])
    assert dyn.iou()[1].item() == pytest.approx(0.875940, abs=1e-6)
    assert int(dyn.updates) == 2


def test_dynamic_evaluation_before_statistics_and_unseen_classes():
    """No update yet: every IoU is unseen_iou (0 -> weight 0, 1 -> weight 1). After an update that never
    sees class 3, an image tagged 3 gets weight 0 while one tagged 1 does not."""
    present = torch.tensor([[True, True, False, False], [True, False, False, True]])
    assert DynamicEvaluation(4).weights(present).tolist() == [0.0, 0.0]
    assert DynamicEvaluation(4, unseen_iou=1.0).weights(present).tolist() == [1.0, 1.0]
    dyn = DynamicEvaluation(4)
    dyn.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    assert dyn.weights(present).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="momentum"):
        DynamicEvaluation(3, momentum=1.0)


@pytest.mark.parametrize("term", ["cce", "mlsm", "h2p", "p2h"])
def test_every_term_has_gradient(term):
    torch.manual_seed(1)
    h = torch.randn(2, 3, 4, 4, requires_grad=True)
    p = torch.randn(2, 3, 4, 4, requires_grad=True)
    present = torch.tensor([[True, True, False], [True, True, True]])
    target = restricted_argmax(torch.randn(2, 3, 4, 4), present)
    loss = {"cce": lambda: cce(h, target, present), "mlsm": lambda: mlsm_loss(h, present),
            "h2p": lambda: h2p_loss(p, h, present),
            "p2h": lambda: p2h_loss(h, p, present, torch.tensor([1.0, 0.5]))}[term]()
    loss.backward()
    grad = p.grad if term == "h2p" else h.grad
    assert torch.isfinite(loss) and grad.abs().sum() > 0
