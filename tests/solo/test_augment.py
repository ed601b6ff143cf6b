"""Copy-paste as FreeSOLO does it (freesolo/engine/trainer.py copy_and_paste and run_step) and maskless's earlier
way, each a named value (maskless.solo.augment): the instance count, the source order, the view pasted onto,
pasted instances that do not occlude each other, occluded masks kept. Hand-made masks on tiny images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from maskless.solo.augment import Sample, SoloAugmentParams, batch_samples, copy_paste
from maskless.solo.data import make_batch
from maskless.solo.train import EARLIER_COPY_PASTE, SoloTrainParams

# Every copy_paste argument at FreeSOLO's value; a test overrides what it contrasts.
FREESOLO = dict(min_instances=0, max_instances=None, max_ioy=0.5, occlude_pasted=False, min_visible_px=1)
# Samples whose weak and strong views are their input pixels: no scale jitter, flip or photometric change.
PLAIN = dict(input_size=8, scale_jitter=(1.0, 1.0), p_flip=0.0, p_jitter=0.0, p_gray=0.0, p_blur=0.0,
             random_erasing=False)


def _square(h, w, top, left, size) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


def _paste(target, source, seed=0, **kw):
    return copy_paste(target, source, np.random.default_rng(seed), **{**FREESOLO, **kw})


def _item(value: int, top: int, left: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An 8x8 image filled with `value` whose one instance, a 2x2 square at (top, left), has embedding (value,)."""
    return np.full((8, 8, 3), value, np.uint8), _square(8, 8, top, left, 2)[None], np.array([[value]], np.float32)


def test_instance_count_is_uniform_in_min_to_n():
    """Source with n = 3 disjoint instances, an empty target (nothing to filter): FreeSOLO draws k uniform in
    0..3 (np.random.randint(n + 1)), so k is exactly the generator's first integers(0, 4) draw; capped at 2
    it is integers(0, 3); with min 1 (maskless before issue 15) integers(1, 4), never 0. k = 0 returns the
    target itself."""
    target = Sample(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8, 8), bool), None)
    source = Sample(np.full((8, 8, 3), 9, np.uint8), np.stack([_square(8, 8, 0, 0, 2), _square(8, 8, 0, 4, 2),
                                                               _square(8, 8, 4, 0, 2)]), None)
    for lo, cap, hi in ((0, None, 3), (0, 2, 2), (1, None, 3)):
        ks = [_paste(target, source, seed, min_instances=lo, max_instances=cap)[1] for seed in range(200)]
        assert ks == [int(np.random.default_rng(s).integers(lo, hi + 1)) for s in range(200)]
        assert sorted(set(ks)) == list(range(lo, hi + 1))
        assert all(60 / (hi + 1 - lo) < ks.count(k) < 340 / (hi + 1 - lo) for k in set(ks))  # about uniform
    seed = next(s for s in range(50) if np.random.default_rng(s).integers(0, 4) == 0)
    out, k = _paste(target, source, seed)
    assert k == 0 and out is target


def test_source_is_the_batch_in_reverse_order():
    """Four samples, sample i filled with value 10 (i + 1) and one 2x2 instance at (0, 2i): with "reverse"
    sample b receives sample 3 - b's instance (FreeSOLO's data_k[::-1]), its pixels and its embedding. A random
    source would give this permutation once in 3^4 = 81 batches."""
    items = [_item(10 * (i + 1), 0, 2 * i) for i in range(4)]
    params = SoloAugmentParams(**PLAIN, copy_paste_source="reverse", copy_paste_min=1, copy_paste_view="both")
    samples, pasted = batch_samples(items, np.random.default_rng(0), params)
    assert pasted == 4
    for b, s in enumerate(samples):
        src = 3 - b
        pasted_mask = _square(8, 8, 0, 2 * src, 2)
        np.testing.assert_array_equal(s.masks, [_square(8, 8, 0, 2 * b, 2), pasted_mask])
        np.testing.assert_array_equal(s.embeddings, [[10 * (b + 1)], [10 * (src + 1)]])
        assert (s.image[pasted_mask] == 10 * (src + 1)).all() and (s.image[~pasted_mask] == 10 * (b + 1)).all()


def test_reverse_source_of_an_odd_batch_pastes_the_middle_sample_onto_itself():
    """Three samples: the middle one is its own source. Its instance covers itself entirely (IoY 1), so the
    0.5 filter leaves it out: 2 instances pasted in all. Without the filter it is pasted too (3 in all) and
    hides the original, which, now empty, is dropped: one mask either way."""
    items = [_item(10 * (i + 1), 0, 2 * i) for i in range(3)]
    kw = dict(**PLAIN, copy_paste_source="reverse", copy_paste_min=1, copy_paste_view="both")
    filtered, n_filtered = batch_samples(items, np.random.default_rng(0), SoloAugmentParams(**kw))
    unfiltered, n_unfiltered = batch_samples(items, np.random.default_rng(0),
                                             SoloAugmentParams(**kw, copy_paste_max_ioy=None))
    assert (n_filtered, n_unfiltered) == (2, 3)
    for s in (filtered[1], unfiltered[1]):
        np.testing.assert_array_equal(s.masks, [_square(8, 8, 0, 2, 2)])
    assert len(filtered[0].masks) == len(filtered[2].masks) == 2


def test_weak_pixels_of_the_source_go_onto_the_strong_view():
    """Grayscale forced on the strong view (p_gray 1) of two coloured samples, one instance each. "strong"
    (FreeSOLO): the strong view is gray but for the pasted square, which holds the source's weak (coloured)
    pixels; the weak view keeps its image and its one mask, and the strong view's masks (strong_labels) add
    the pasted one. "both": the paste happens before the strong view, so the pasted square is gray too and
    the views share the two masks."""
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[..., 2] = 200
    items = [(red, _square(8, 8, 0, 0, 2)[None], None), (blue, _square(8, 8, 4, 4, 3)[None], None)]
    kw = dict(**{**PLAIN, "p_gray": 1.0}, copy_paste_min=1)
    onto_strong, _ = batch_samples(items, np.random.default_rng(0), SoloAugmentParams(**kw, copy_paste_view="strong"))
    s = onto_strong[0]
    blue_sq = _square(8, 8, 4, 4, 3)
    np.testing.assert_array_equal(s.strong[blue_sq], blue[blue_sq])  # the source's weak pixels, not gray
    gray = s.strong[~blue_sq]
    assert (gray[:, 0] == gray[:, 1]).all() and (gray[:, 1] == gray[:, 2]).all()
    np.testing.assert_array_equal(s.image, red)
    np.testing.assert_array_equal(s.masks, [_square(8, 8, 0, 0, 2)])
    image, masks, _ = s.view("strong")
    assert image is s.strong
    np.testing.assert_array_equal(masks, [_square(8, 8, 0, 0, 2), blue_sq])
    both, _ = batch_samples(items, np.random.default_rng(0), SoloAugmentParams(**kw, copy_paste_view="both"))
    t = both[0]
    assert t.strong_labels is None and (t.strong[..., 0] == t.strong[..., 2]).all()
    np.testing.assert_array_equal(t.image[blue_sq], blue[blue_sq])
    np.testing.assert_array_equal(t.view("strong")[1], masks)


def test_make_batch_gives_each_view_its_own_targets():
    """views "both" with copy-paste onto the strong view: the weak view's targets hold the image's own masks,
    the strong view's the pasted one too; with "both" paste the two views share one SoloTargets."""

    source = [_item(10 * (i + 1), 0, 4 * i) for i in range(2)]
    common = dict(batch_size=2, input_size=32, scale_jitter=(1.0, 1.0), views="both", copy_paste_min=1)
    params = SoloTrainParams(**common, copy_paste_view="strong")
    images, targets, pasted = make_batch(source, 0, params, params.solo_geometry())
    assert images.shape[0] == 4 and pasted == 2
    assert [len(t.mask_targets) for t in targets] == [1, 2, 1, 2]  # weak, strong of image 0, then of image 1
    params = SoloTrainParams(**common, copy_paste_view="both")
    _, targets, _ = make_batch(source, 0, params, params.solo_geometry())
    assert targets[0] is targets[1] and len(targets[0].mask_targets) == 2


def test_pasted_instances_do_not_occlude_each_other():
    """Source instances A, a 4x4 square at (0, 0), and B, a 4x4 square at (2, 2), overlap in a 2x2 square; both
    are pasted (min = max = 2) onto an empty target. FreeSOLO (occlude_pasted False): both masks whole, 16 px
    each, the image the source's over their union (28 px). Earlier (True): B, pasted after A, hides the
    overlap of A: 16 - 4 = 12 px. The target's mask, row 3, loses what A (cols 0..3) and B (cols 2..5) cover
    either way: 2 px stay."""
    a, b = _square(8, 8, 0, 0, 4), _square(8, 8, 2, 2, 4)
    row3 = np.zeros((8, 8), bool)
    row3[3] = True
    target = Sample(np.zeros((8, 8, 3), np.uint8), row3[None], None)
    source = Sample(np.full((8, 8, 3), 7, np.uint8), np.stack([a, b]), None)
    whole, k = _paste(target, source, min_instances=2, max_instances=2, max_ioy=None)
    assert k == 2
    np.testing.assert_array_equal(whole.masks, [row3 & ~(a | b), a, b])
    assert whole.masks[0].sum() == 2 and whole.masks[1].sum() == whole.masks[2].sum() == 16
    assert (whole.image[a | b] == 7).all() and (whole.image[~(a | b)] == 0).all() and (a | b).sum() == 28
    stacked, _ = _paste(target, source, min_instances=2, max_instances=2, max_ioy=None, occlude_pasted=True)
    np.testing.assert_array_equal(stacked.masks, [row3 & ~(a | b), a & ~b, b])
    assert stacked.masks[1].sum() == 12
    np.testing.assert_array_equal(stacked.image, whole.image)


def test_occluded_masks_are_kept_down_to_one_pixel():
    """Target: a 4x4 square T at (1, 1) (16 px, embedding 1) and a 2x2 square U at (6, 6) (embedding 2).
    Source instances: P, a 3x4 band on rows 1..3, cols 1..4 (12 px), and Q, a 3x3 square at (5, 5) (9 px)
    that hides U entirely; both pasted (min = max = 2, no overlap filter: P's IoY with T is 12/16). T keeps
    its row 4, 4 px: with min_visible_px 1 (FreeSOLO keeps every occluded mask; an empty one gives it no
    target) T stays and U, now empty, goes; with 5, T goes too. P and Q, 12 and 9 px, stay either way."""
    t, u = _square(8, 8, 1, 1, 4), _square(8, 8, 6, 6, 2)
    p = np.zeros((8, 8), bool)
    p[1:4, 1:5] = True
    q = _square(8, 8, 5, 5, 3)
    target = Sample(np.zeros((8, 8, 3), np.uint8), np.stack([t, u]), np.array([[1.0], [2.0]], np.float32))
    source = Sample(np.full((8, 8, 3), 5, np.uint8), np.stack([p, q]), np.array([[3.0], [4.0]], np.float32))
    kw = dict(min_instances=2, max_instances=2, max_ioy=None, min_visible_px=1)
    kept, k = _paste(target, source, **kw)
    assert k == 2
    np.testing.assert_array_equal(kept.masks, [t & ~p, p, q])
    assert kept.masks[0].sum() == 4 and kept.masks[0][4, 1:5].all()
    np.testing.assert_array_equal(kept.embeddings, [[1.0], [3.0], [4.0]])
    dropped, _ = _paste(target, source, **{**kw, "min_visible_px": 5})
    np.testing.assert_array_equal(dropped.masks, [p, q])
    np.testing.assert_array_equal(dropped.embeddings, [[3.0], [4.0]])


def test_params_check_and_pass_on_every_copy_paste_value():
    """SoloTrainParams hands each copy_paste_ value to SoloAugmentParams, whose defaults are the same
    (FreeSOLO's); impossible settings are refused by name."""
    train_defaults = SoloTrainParams()
    paste = [f for f in dataclasses.fields(SoloAugmentParams) if f.name.startswith("copy_paste_")]
    assert len(paste) == 8
    assert all(f.default == getattr(train_defaults, f.name) for f in paste)
    aug = SoloTrainParams(**EARLIER_COPY_PASTE).augment_params()
    assert {k: getattr(aug, k) for k in EARLIER_COPY_PASTE} == EARLIER_COPY_PASTE
    assert sorted(EARLIER_COPY_PASTE) == sorted(f.name for f in paste)
    for bad, match in ((dict(copy_paste_min=3, copy_paste_max=2), "copy_paste_max"),
                       (dict(copy_paste_min_visible_px=0), "copy_paste_min_visible_px"),
                       (dict(copy_paste_source="next"), "copy_paste_source"),
                       (dict(copy_paste_view="weak"), "copy_paste_view"),
                       (dict(views="weak"), "pasted instance")):
        with pytest.raises(ValueError, match=match):
            SoloTrainParams(**bad)
    SoloTrainParams(views="weak", copy_paste_prob=0.0)  # no copy-paste at all: allowed


def test_the_quick_tour_pins_the_earlier_copy_paste():
    """config.yaml (under every other config of the workflow) sets each copy_paste_ key of the schema to
    maskless's earlier value, so a schema default never moves the quick tour's or the claims run's figures."""
    from maskless.config import load_schema

    root = Path(__file__).resolve().parents[2]
    keys = sorted(k for k in load_schema()["properties"]["solo"]["properties"] if k.startswith("copy_paste_"))
    solo = yaml.safe_load((root / "config.yaml").read_text())["solo"]
    assert keys == sorted(EARLIER_COPY_PASTE)
    assert {k: solo.get(k, "missing") for k in keys} == EARLIER_COPY_PASTE
