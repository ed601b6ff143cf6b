"""FreeSOLO loss terms against values worked out by hand (METHODS.md "Self-supervised SOLO (FreeSOLO)").

Each test's docstring shows its arithmetic; sigma(x) = 1 / (1 + e^-x).
"""

from __future__ import annotations

import math

import pytest
import torch

from maskless.solo.losses import (TERMS, SoloLossWeights, box_masks_from_targets, dice_loss, embedding_loss,
                                  foreground_fraction, gather_positives, projection_losses, reduce_mask_terms,
                                  sigmoid_focal_loss, solo_losses)
from maskless.solo.pairwise import lab_at_mask_resolution, pairwise_affinity_loss, rgb_to_lab, warmup_factor
from maskless.solo.targets import SoloGeometry, assign_targets


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- dice and projections


def test_dice_on_tiny_vectors():
    """a = (1, 0), b = (1, 1): 1 - 2 * 1 / (1 + 2) = 1/3. a = b: 0. Batched over the leading dim."""
    out = dice_loss(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([[1.0, 1.0], [0.5, 0.5]]), eps=0.0)
    assert out.tolist() == pytest.approx([1 / 3, 0.0], abs=1e-7)
    assert dice_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(1.0)  # 1 - 0 / eps


def target_3x3() -> torch.Tensor:
    t = torch.zeros(1, 3, 3)
    t[0, 0, 0:2] = 1.0  # top row, first two columns
    return t


def test_projection_perfect_prediction_is_near_zero():
    """Only eps = 1e-5 separates it from 0: dice ~ eps / (2 sum t^2), largest for the mean over rows
    (2 * 2/9 -> 2.3e-5); so below 1e-4."""
    t = target_3x3()
    out = projection_losses((t * 2 - 1) * 50.0, t)
    assert out["loss_max"].item() < 1e-4 and out["loss_avg"].item() < 1e-4


def test_projection_partial_case_by_hand():
    """Logits 0 -> p = 0.5 everywhere; sum(p^2) over 3 entries = 0.75; eps = 1e-5 in each denominator.
    max over rows (per column): p (.5,.5,.5), t (1,1,0): 1 - 2 * 1 / (0.75 + 2) = 0.272727
    max over cols (per row):    p (.5,.5,.5), t (1,0,0): 1 - 2 * 0.5 / (0.75 + 1) = 0.428571 -> L_max 0.701299
    mean over rows: t (1/3,1/3,0): 1 - 2 * (1/3) / (0.75 + 2/9) = 0.314286
    mean over cols: t (2/3,0,0):   1 - 2 * (1/3) / (0.75 + 4/9) = 0.441860 -> L_avg 0.756146 (+1.2e-5 from eps)"""
    eps = 1e-5
    out = projection_losses(torch.zeros(1, 3, 3), target_3x3())
    l_max = (1 - 2 / (0.75 + 2 + eps)) + (1 - 1 / (0.75 + 1 + eps))
    l_avg = (1 - (2 / 3) / (0.75 + 2 / 9 + eps)) + (1 - (2 / 3) / (0.75 + 4 / 9 + eps))
    assert out["loss_max"].item() == pytest.approx(l_max, abs=1e-6)
    assert out["loss_avg"].item() == pytest.approx(l_avg, abs=1e-6)
    assert (l_max, l_avg) == pytest.approx((0.701299, 0.756146), abs=2e-5)


def test_projection_no_instances_is_zero_with_graph():
    logits = torch.zeros(0, 4, 4, requires_grad=True)
    out = projection_losses(logits, torch.zeros(0, 4, 4))
    assert out["loss_max"].item() == 0.0 and out["loss_max"].grad_fn is not None


def test_box_masks_from_targets():
    t = torch.zeros(2, 4, 5)
    t[0, 1, 1] = t[0, 2, 3] = 1.0  # box rows 1..2, cols 1..3
    filled = torch.zeros(4, 5)
    filled[1:3, 1:4] = 1.0
    box = box_masks_from_targets(t, "filled")
    assert torch.equal(box[0], filled) and box[1].sum() == 0
    # FreeSOLO's box_target: rows {1, 2} x cols {1, 3}; column 2 holds no target pixel, so it is left out.
    outer = filled.clone()
    outer[:, 2] = 0.0
    box = box_masks_from_targets(t)
    assert torch.equal(box[0], outer) and box[1].sum() == 0
    with pytest.raises(ValueError, match="box mask mode"):
        box_masks_from_targets(t, "hull")


def test_reduce_mask_terms_per_level_by_hand():
    """Levels [0, 0, 1]: L_max (1 + 3) / 2 = 2 and 5 -> 3.5 (one mean over all: 3); pairwise num [1, 1, 4],
    den [1, 3, 2]: 2 / 4 = 0.5 and 4 / 2 = 2 -> 1.25 (over all: 6 / 6 = 1)."""
    l_max, l_avg = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0.0, 2.0, 2.0])
    num, den = torch.tensor([1.0, 1.0, 4.0]), torch.tensor([1.0, 3.0, 2.0])
    per_level = reduce_mask_terms(l_max, l_avg, num, den, torch.tensor([0, 0, 1]))
    assert [per_level[k].item() for k in ("loss_max", "loss_avg", "loss_pair")] == pytest.approx([3.5, 1.5, 1.25])
    pooled = reduce_mask_terms(l_max, l_avg, num, den, torch.zeros(3, dtype=torch.long))
    assert [pooled[k].item() for k in ("loss_max", "loss_avg", "loss_pair")] == pytest.approx([3.0, 4 / 3, 1.0])


# ---------------------------------------------------------------- colour and pairwise


def test_rgb_to_lab_known_values():
    """White (100, 0, 0); pure red (53.24, 80.09, 67.20); black (0, 0, 0); grey 128 has L 53.59 (standard
    sRGB/D65 tables). Float input in [0, 1] agrees with uint8."""
    rgb = torch.tensor([[255, 255, 255], [255, 0, 0], [0, 0, 0], [128, 128, 128]], dtype=torch.uint8)
    img = rgb.T.reshape(1, 3, 4, 1)
    lab = rgb_to_lab(img)[0, :, :, 0].T
    assert lab[0].tolist() == pytest.approx([100.0, 0.0, 0.0], abs=1e-3)
    assert lab[1].tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.01)
    assert lab[2].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-3)
    assert lab[3, 0].item() == pytest.approx(53.59, abs=0.01)
    assert torch.allclose(rgb_to_lab(img.float() / 255), rgb_to_lab(img), atol=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rgb_to_lab(img.float())


def test_lab_at_mask_resolution_pools_then_converts():
    """8x8, left half red, right half white, stride 4 -> 2x2 blocks of pure red / pure white; a 6x6 image
    gives ceil(6/4) = 2 blocks per side."""
    img = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    img[0, 1:, :, :4] = 0
    lab = lab_at_mask_resolution(img, 4)
    assert lab.shape == (1, 3, 2, 2)
    assert lab[0, :, 0, 0].tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.01)
    assert lab[0, :, 1, 1].tolist() == pytest.approx([100.0, 0.0, 0.0], abs=1e-3)
    assert lab_at_mask_resolution(img[..., :6, :6], 4).shape == (1, 3, 2, 2)


def pair_case(row0=(2.0, -1.0), row1=(0.0, 0.0)):
    """2x3 logits; with dilation 2 the only in-image edges join columns 0 and 2 of the same row, both
    directions: 4 directed edges. Column 1 is irrelevant (set to 7)."""
    logits = torch.tensor([[[row0[0], 7.0, row0[1]], [row1[0], 7.0, row1[1]]]])
    lab = torch.full((1, 3, 2, 3), 50.0)
    return logits, lab, torch.ones(1, 2, 3)


# -log(p_i p_j + (1 - p_i)(1 - p_j)) for the two rows of pair_case():
# row 0: sigma(2) = 0.880797, sigma(-1) = 0.268941 -> 0.236883 + 0.087144 = 0.324027 -> 1.126928
# row 1: p = 0.5, 0.5 -> 0.5 -> 0.693147
ROW0 = -math.log(sig(2) * sig(-1) + (1 - sig(2)) * (1 - sig(-1)))
ROW1 = math.log(2.0)


def test_pairwise_2x3_by_hand():
    """4 edges of weight 1: (2 * 1.126928 + 2 * 0.693147) / 4 = 0.910038."""
    assert ROW0 == pytest.approx(1.126928, abs=1e-6)
    logits, lab, box = pair_case()
    out = pairwise_affinity_loss(logits, lab, box, kernel=3, dilation=2)
    assert out.item() == pytest.approx((ROW0 + ROW1) / 2, abs=1e-6)
    assert out.item() == pytest.approx(0.910038, abs=1e-5)


def test_pairwise_colour_threshold_box_and_bottom_rows():
    """Moving pixel (1, 2) by 3 Lab units gives S = exp(-1.5) = 0.223 < 0.3: row 1's edges drop, loss = ROW0.
    By 2 units S = exp(-1) = 0.368 >= 0.3: kept. Box only on column 0: the two edges leaving column 0,
    (ROW0 + ROW1) / 2. ignore_bottom = 1 drops row 1 (both its edges point into row 1): ROW0.
    valid_hw = (2, 2) makes column 2 padding. Only the neighbour decides (BoxInst), so the two edges INTO
    column 2 drop and the two FROM column 2 into column 0 stay (the box covers column 2 here): (ROW0 + ROW1)
    / 2. With the box zero in the padding, as real targets are, no edge is left: loss 0."""
    logits, lab, box = pair_case()
    far, near = lab.clone(), lab.clone()
    far[0, 1, 1, 2] += 3.0
    near[0, 1, 1, 2] += 2.0
    assert pairwise_affinity_loss(logits, far, box).item() == pytest.approx(ROW0, abs=1e-6)
    assert pairwise_affinity_loss(logits, near, box).item() == pytest.approx((ROW0 + ROW1) / 2, abs=1e-6)
    col0 = torch.zeros_like(box)
    col0[..., 0] = 1.0
    assert pairwise_affinity_loss(logits, lab, col0).item() == pytest.approx((ROW0 + ROW1) / 2, abs=1e-6)
    assert pairwise_affinity_loss(logits, lab, box, ignore_bottom=1).item() == pytest.approx(ROW0, abs=1e-6)
    assert pairwise_affinity_loss(logits, lab, box, valid_hw=(2, 2)).item() == pytest.approx((ROW0 + ROW1) / 2,
                                                                                            abs=1e-6)
    box_in_image = box.clone()
    box_in_image[..., 2] = 0.0
    assert pairwise_affinity_loss(logits, lab, box_in_image, valid_hw=(2, 2)).item() == 0.0


def test_pairwise_bottom_rows_drop_by_neighbour_only():
    """BoxInst's rule (AdelaiDet condinst.get_images_color_similarity: similarity x the unfolded image mask):
    an edge i -> j is dropped when its NEIGHBOUR j is ignored, whatever i is.

    3x1 column, logits (3, 3, -3), constant colour, box all ones, kernel 3, dilation 1, bottom row ignored.
    Directed edges: 0->1, 1->0, 1->2, 2->1. 1->2 drops (j = 2 is ignored); 2->1 stays (only its centre is
    ignored). sigma(3) = 0.952574, sigma(-3) = 0.047426:
      0->1, 1->0: P(same) = 0.952574^2 + 0.047426^2 = 0.907397 + 0.002249 = 0.909647, -log = 0.094699 (each)
      2->1:       P(same) = 2 * 0.952574 * 0.047426 = 0.090353,                       -log = 2.404028
    loss = (2 * 0.094699 + 2.404028) / 3 = 2.593426 / 3 = 0.864475. Dropping by the centre as well (the old
    rule) would leave only 0->1 and 1->0: 0.094699.
    """
    same = -math.log(sig(3) ** 2 + sig(-3) ** 2)
    cross = -math.log(2 * sig(3) * sig(-3))
    assert (same, cross) == pytest.approx((0.094699, 2.404028), abs=1e-6)
    logits = torch.tensor([[[3.0], [3.0], [-3.0]]])  # (1, 3, 1)
    lab = torch.full((1, 3, 3, 1), 50.0)
    box = torch.ones(1, 3, 1)
    out = pairwise_affinity_loss(logits, lab, box, kernel=3, dilation=1, ignore_bottom=1)
    assert out.item() == pytest.approx((2 * same + cross) / 3, abs=1e-6)
    assert out.item() == pytest.approx(0.8645, abs=1e-4)
    # Nothing ignored: 1->2 comes back, another cross edge: (2 * same + 2 * cross) / 4 = 1.249363.
    full = pairwise_affinity_loss(logits, lab, box, kernel=3, dilation=1)
    assert full.item() == pytest.approx((same + cross) / 2, abs=1e-6)


@pytest.mark.parametrize("big", [50.0, 200.0])
def test_pairwise_log_space_is_finite_for_saturated_logits(big):
    """Logits +-big on an edge: p_i p_j + (1-p_i)(1-p_j) ~ 2 e^-big, so -log ~ big - log 2 (49.307 / 199.307).
    At 200 the plain float32 product underflows to 0 and would give inf; log space does not."""
    logits, lab, box = pair_case(row0=(big, -big))
    logits.requires_grad_(True)
    out = pairwise_affinity_loss(logits, lab, box)
    assert out.item() == pytest.approx((big - math.log(2) + ROW1) / 2, rel=1e-4)
    out.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_pairwise_shape_error():
    logits, lab, box = pair_case()
    with pytest.raises(ValueError, match="image_lab"):
        pairwise_affinity_loss(logits, lab[..., :2], box)


def test_warmup_factor():
    assert [warmup_factor(s, 1000) for s in (0, 500, 1000, 5000)] == [0.0, 0.5, 1.0, 1.0]
    assert warmup_factor(3, 0) == 1.0


# ---------------------------------------------------------------- category terms


def test_focal_loss_by_hand():
    """Logit 0, target 1: 0.25 * 0.5^2 * ln 2 = 0.0433217; logit 0, target 0: 0.75 * 0.5^2 * ln 2 = 0.1299651;
    sum / (num_pos 1 + 1) = 0.0866434. Logits +-1000, both wrong: p_t = 0, ce = 1000, so
    (0.75 * 1000 + 0.25 * 1000) / 2 = 500, finite."""
    out = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    assert out.item() == pytest.approx((0.25 + 0.75) * 0.25 * math.log(2) / 2, abs=1e-7)
    assert out.item() == pytest.approx(0.0866434, abs=1e-6)
    extreme = sigmoid_focal_loss(torch.tensor([1000.0, -1000.0]), torch.tensor([0.0, 1.0]))
    assert torch.isfinite(extreme) and extreme.item() == pytest.approx(500.0, rel=1e-4)


def test_embedding_loss_by_hand_and_masking():
    """pred (1, 0) vs target (1, 1): 1 - 1/sqrt(2) = 0.292893. A second row with a zero target is masked out:
    the mean stays 0.292893 over 1 valid row and its pred gets no gradient; the valid row's does."""
    pred = torch.tensor([[1.0, 0.0], [3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    loss, count = embedding_loss(pred, target)
    assert loss.item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6) and count.item() == 1.0
    loss.backward()
    assert pred.grad[0].abs().sum() > 0 and pred.grad[1].abs().sum() == 0


def test_embedding_loss_all_zero_targets_is_zero_with_graph():
    pred = torch.randn(3, 4, requires_grad=True)
    loss, count = embedding_loss(pred, torch.zeros(3, 4))
    assert loss.item() == 0.0 and count.item() == 0.0 and loss.grad_fn is not None
    empty, n = embedding_loss(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4))
    assert empty.item() == 0.0 and n.item() == 0.0


# ---------------------------------------------------------------- solo_losses on a fake batch

GEOM = SoloGeometry(grids=(8, 4), strides=(8, 16), scale_ranges=((1, 24), (12, 2048)))
HW, D, E = (64, 64), 6, 5


def fake_batch(seed: int = 0, with_instances=(True, False)):
    """B = 2 images of 64x64 (mask_feat 16x16); image 0 has a 12x12 and a 40x40 square with embeddings,
    image 1 none (or as chosen). A flat grey image keeps every pairwise edge."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for has in with_instances:
        masks = torch.zeros(2 if has else 0, *HW, dtype=torch.bool)
        if has:
            masks[0, 4:16, 4:16] = True
            masks[1, 20:60, 16:56] = True
        emb = torch.randn(len(masks), E, generator=gen)
        targets.append(assign_targets(masks, GEOM, embeddings=emb))
    b = len(with_instances)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_(True)

    outputs = {"cate": [leaf(b, 1, s, s) for s in GEOM.grids], "emb": [leaf(b, E, s, s) for s in GEOM.grids],
               "kernel": [leaf(b, D, s, s) for s in GEOM.grids], "mask_feat": leaf(b, D, 16, 16)}
    lab = lab_at_mask_resolution(torch.full((b, 3, *HW), 128, dtype=torch.uint8), GEOM.mask_stride)
    return outputs, targets, lab


def grad_norms(outputs) -> dict[str, float]:
    def norm(ts):
        return sum(0.0 if t.grad is None else t.grad.abs().sum().item() for t in ts)

    return {k: norm(outputs[k] if isinstance(outputs[k], list) else [outputs[k]]) for k in outputs}


def test_foreground_fraction_by_hand():
    """Pixels with logit > 0 over all pixels: image 1 [[1, -1], [0, 2]] has 2 of 4 (0 is not foreground),
    image 2's two 1x1 masks [3], [-3] 1 of 2: 3 / 6 = 0.5. No positives: 0."""
    logits = [torch.tensor([[[1.0, -1.0], [0.0, 2.0]]]), torch.tensor([[[3.0]], [[-3.0]]])]
    assert foreground_fraction(logits).item() == pytest.approx(0.5)
    assert foreground_fraction([torch.zeros(0, 4, 4)]).item() == 0.0


def test_solo_losses_finite_terms_and_counts():
    outputs, targets, lab = fake_batch()
    out = solo_losses(outputs, targets, lab, weights=SoloLossWeights(), step=1000)
    assert set(out) == {*TERMS, "loss", "num_pos", "num_emb", "mask_fg"}
    assert 0.0 <= out["mask_fg"].item() <= 1.0
    assert all(torch.isfinite(out[k]) for k in out)
    assert out["num_pos"].item() == targets[0].num_pos > 0 and out["num_emb"].item() == out["num_pos"].item()
    w = SoloLossWeights()
    assert out["loss"].item() == pytest.approx(sum(getattr(w, k) * out[k].item() for k in TERMS), rel=1e-6)
    assert all(out[k].item() > 0 for k in TERMS)


# which model output each term must train
TRAINS = {"loss_max": ("kernel", "mask_feat"), "loss_avg": ("kernel", "mask_feat"),
          "loss_pair": ("kernel", "mask_feat"), "loss_focal": ("cate",), "loss_emb": ("emb",)}


@pytest.mark.parametrize("term", TERMS)
def test_each_term_trains_its_outputs(term):
    """Backward through one term alone: non-zero gradient on the outputs it must train, none on the rest.
    The embedding term reaches only image 0's "emb" (image 1 has no positives)."""
    outputs, targets, lab = fake_batch()
    solo_losses(outputs, targets, lab, weights=SoloLossWeights(), step=1000)[term].backward()
    norms = grad_norms(outputs)
    for key, value in norms.items():
        assert (value > 0) == (key in TRAINS[term]), (term, key, value)
    if term == "loss_emb":
        assert all(e.grad[1].abs().sum() == 0 for e in outputs["emb"])


def test_gather_positives_picks_the_assigned_cells():
    """The gathered kernel rows are the kernel map's values at the positive cells, level by level."""
    outputs, targets, _ = fake_batch()
    pos = gather_positives(outputs, targets)
    expected = [outputs["kernel"][lv][0].flatten(1)[:, targets[0].instance[lv] >= 0].T for lv in range(2)]
    assert torch.equal(pos.kernels[0], torch.cat(expected)) and pos.kernels[1].shape == (0, D)
    assert pos.mask_targets[0].shape == (targets[0].num_pos, 16, 16)
    counts = [int((targets[0].instance[lv] >= 0).sum()) for lv in range(2)]
    assert pos.levels[0].tolist() == [0] * counts[0] + [1] * counts[1] and len(pos.levels[1]) == 0


def test_batch_without_instances_gives_only_focal():
    outputs, targets, lab = fake_batch(with_instances=(False, False))
    out = solo_losses(outputs, targets, lab, weights=SoloLossWeights(), step=1000)
    assert all(out[k].item() == 0.0 for k in TERMS if k != "loss_focal")
    assert out["loss_focal"].item() > 0 and out["num_pos"].item() == 0 and out["num_emb"].item() == 0
    out["loss"].backward()
    assert grad_norms(outputs)["cate"] > 0


def test_pairwise_warmup_and_missing_embeddings():
    """step 0 -> loss_pair 0; step 500 -> half of step 1000. Targets without embeddings: loss_emb 0, num_emb 0."""
    outputs, targets, lab = fake_batch()
    full = solo_losses(outputs, targets, lab, weights=SoloLossWeights(), step=1000)["loss_pair"].item()
    half = solo_losses(outputs, targets, lab, weights=SoloLossWeights(), step=500)["loss_pair"].item()
    assert half == pytest.approx(full / 2, rel=1e-6)
    assert solo_losses(outputs, targets, lab, weights=SoloLossWeights(), step=0)["loss_pair"].item() == 0.0
    for t in targets:
        t.embeddings = None
    out = solo_losses(outputs, targets, lab, weights=SoloLossWeights(), step=1000)
    assert out["loss_emb"].item() == 0.0 and out["num_emb"].item() == 0.0 and out["num_pos"].item() > 0


def test_nan_output_raises_naming_the_tensor():
    """NaN in the model output is detected on the weighted total and reported with the tensor's name."""
    outputs, targets, lab = fake_batch()
    with torch.no_grad():
        outputs["mask_feat"][0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="mask_feat"):
        solo_losses(outputs, targets, lab, weights=SoloLossWeights(), step=1000)


def test_mismatched_inputs_raise_clear_errors():
    outputs, targets, lab = fake_batch()
    wrong = assign_targets(torch.zeros(0, *HW, dtype=torch.bool), SoloGeometry.small())
    with pytest.raises(ValueError, match="grids"):
        solo_losses(outputs, [targets[0], wrong], lab, weights=SoloLossWeights(), step=0)
    with pytest.raises(ValueError, match="images_lab"):
        solo_losses(outputs, targets, lab[..., :8], weights=SoloLossWeights(), step=0)
    with pytest.raises(KeyError, match="mask_feat"):
        solo_losses({k: v for k, v in outputs.items() if k != "mask_feat"}, targets, lab,
                    weights=SoloLossWeights(), step=0)
    with pytest.raises(ValueError, match="loss_avg"):
        SoloLossWeights(loss_avg=-1.0)


def test_with_the_real_model_outputs():
    """The contract with maskless/solo/model.py: SOLOv2's default params with SoloGeometry.small() on a
    64x96 batch give finite losses and a gradient in the category, embedding and kernel convs."""
    from maskless.solo.model import SOLOv2, SoloModelParams

    torch.manual_seed(0)
    model = SOLOv2(SoloModelParams())
    img = torch.full((2, 3, 64, 96), 120, dtype=torch.uint8)
    masks = torch.zeros(2, 64, 96, dtype=torch.bool)
    masks[0, 8:40, 8:60] = True
    masks[1, 44:60, 70:90] = True
    geom = SoloGeometry.small()
    targets = [assign_targets(masks, geom, embeddings=torch.randn(2, 128)),
               assign_targets(masks[:0], geom, embeddings=torch.zeros(0, 128))]
    out = solo_losses(model((img.float() - 120) / 60), targets, lab_at_mask_resolution(img),
                      weights=SoloLossWeights(), step=1000)
    assert all(torch.isfinite(out[k]) for k in out)
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith("head") and g.abs().sum() > 0 for n, g in grads.items())
    assert any(n.startswith("mask_branch") and g.abs().sum() > 0 for n, g in grads.items())


# ---------------------------------------------------------------- supervised dice (loss.mask "dice")


def test_dice_mask_loss_by_hand_and_weighted_in_the_total():
    """SOLOv2's dice on one positive: logits [[0, 0], [ln 3, -ln 3]] -> p = [[.5, .5], [.75, .25]], target
    [[1, 0], [1, 0]]: sum(p t) = 1.25, sum(p^2) = .25 + .25 + .5625 + .0625 = 1.125, sum(t^2) = 2, so
    1 - 2.5 / (3.125 + 0.002) = 0.200512; the weak terms are zeros and loss = 3 * dice + focal + emb."""
    outputs, targets, lab = fake_batch()
    w = SoloLossWeights(mask="dice")
    out = solo_losses(outputs, targets, lab, weights=w, step=1000)
    assert {k: out[k].item() for k in ("loss_max", "loss_avg", "loss_pair")} == {
        "loss_max": 0.0, "loss_avg": 0.0, "loss_pair": 0.0}
    expected = out["loss_focal"].item() + out["loss_emb"].item() + 3.0 * out["loss_dice"].item()
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6) and out["loss_dice"].item() > 0
    # one mean over every positive of the batch (image 0's; image 1 has none), each against its own target
    pos = gather_positives(outputs, targets)
    feat = outputs["mask_feat"][0].detach()
    per = [dice_loss((k.detach() @ feat.flatten(1)).sigmoid(), t.flatten().float(), eps=0.002)
           for k, t in zip(pos.kernels[0], pos.mask_targets[0])]
    assert out["loss_dice"].item() == pytest.approx(torch.stack(per).mean().item(), rel=1e-5)

    x = torch.tensor([[0.0, 0.0, math.log(3.0), -math.log(3.0)]])
    t = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert dice_loss(x.sigmoid(), t, eps=0.002).item() == pytest.approx(1 - 2.5 / 3.127, abs=1e-6)


def test_dice_mask_loss_trains_the_kernels_and_mask_features():
    outputs, targets, lab = fake_batch()
    solo_losses(outputs, targets, lab, weights=SoloLossWeights(mask="dice"), step=1000)["loss_dice"].backward()
    norms = grad_norms(outputs)
    assert norms["kernel"] > 0 and norms["mask_feat"] > 0 and norms["cate"] == 0 and norms["emb"] == 0


def test_dice_mask_loss_without_positives_is_zero_and_unknown_mode_is_refused():
    outputs, targets, lab = fake_batch(with_instances=(False, False))
    out = solo_losses(outputs, targets, lab, weights=SoloLossWeights(mask="dice"), step=1000)
    assert out["loss_dice"].item() == 0.0 and out["loss_dice"].requires_grad
    with pytest.raises(ValueError, match="mask must be one of"):
        SoloLossWeights(mask="supervised")
