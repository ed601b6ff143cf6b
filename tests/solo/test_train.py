"""Self-supervised SOLO training loop (smoke, exact resume, NaN naming, images without masks, params) and the
augmentation it feeds on (flip, copy-paste occlusion, strong view, resizing)."""

from __future__ import annotations

import hashlib
import logging
import math

import cv2
import numpy as np
import pytest
import torch

from maskless.data.manifest import write_manifest
from maskless.models.resnet import build_resnet
from maskless.models.weights import save_backbone
from maskless.solo import train as train_mod
from maskless.solo.augment import (Sample, SoloAugmentParams, batch_samples, copy_paste, random_erasing,
                                   resize_masks, resize_sample, strong_view, weak_sample)
from maskless.solo.losses import TERMS
from maskless.solo.model import SoloModelParams
from maskless.solo.train import LOSS_COLUMNS, SoloTrainParams, lr_at, train_solo
from maskless.store import ImageMasks, build_index
from maskless.store_writer import write_shard

TINY_MODEL = dict(fpn_channels=16, head_convs=1, head_channels=16, kernel_dim=16, mask_branch_channels=16,
                  emb_dim=8, gn_groups=8)
TINY = dict(batch_size=2, input_size=64, lr=0.01, warmup_steps=2, amp=False, model=SoloModelParams(**TINY_MODEL))


# copy_paste as maskless did it before issue 15 (config.yaml pins it); a test overrides what it checks.
EARLIER_PASTE = dict(min_instances=1, max_instances=3, max_ioy=None, occlude_pasted=True, min_visible_px=16)


def _paste(target, source, seed=0, **kw):
    return copy_paste(target, source, np.random.default_rng(seed), **{**EARLIER_PASTE, **kw})


def _square(h, w, top, left, size) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


@pytest.fixture
def data(tmp_path) -> dict:
    """Four PNGs (bright squares on dark noise, 64x80 / 80x64) with square coarse masks and 8-d embeddings;
    image 4 has zero masks and image 5 is not in the index. A random resnet18 backbone checkpoint."""
    rng = np.random.default_rng(0)
    records, stored = [], []
    for i in range(1, 6):
        h, w = (64, 80) if i % 2 else (80, 64)
        img = rng.integers(0, 50, (h, w, 3), dtype=np.uint8)
        masks = [_square(h, w, 8 + i, 10, 24), _square(h, w, 40, 30 + i, 16)] if i < 4 else []
        for m in masks:
            img[m] = rng.integers(120, 255, 3)
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), img[..., ::-1])
        records.append(dict(id=i, file_name=path.name, path=str(path), width=w, height=h, split="train",
                            hash=hashlib.sha256(path.read_bytes()).hexdigest()))
        if i < 5:
            emb = rng.normal(size=(len(masks), 8)).astype(np.float32)
            stored.append(ImageMasks(i, h, w, np.array(masks).reshape(-1, h, w), np.ones(len(masks)), emb))
    write_manifest(tmp_path / "manifest.parquet", records)
    write_shard(str(tmp_path / "masks" / "0.zarr"), stored, embedding_dim=8)
    build_index([str(tmp_path / "masks" / "0.zarr")], str(tmp_path / "masks" / "index.parquet"))
    torch.manual_seed(0)
    save_backbone(str(tmp_path / "backbone.pt"), build_resnet("resnet18"), "resnet18", {"method": "random"})
    return dict(manifest=str(tmp_path / "manifest.parquet"), masks_index=str(tmp_path / "masks" / "index.parquet"),
                backbone=str(tmp_path / "backbone.pt"))


def _read_csv(path) -> list[list[str]]:
    return [line.split(",") for line in open(path).read().splitlines()]


def test_smoke_trains_writes_weights_and_loss_log(tmp_path, data, caplog, monkeypatch):
    """3 steps: finite terms in every loss-log row; lr 0.01 x 0.01 at step 1, 0.01 x (0.01 x 0.5 + 0.5) =
    0.00505 at step 2 (detectron2's linear warm-up over 2 steps from 0.01), then constant 0.01. Images 4 (no
    masks) and 5 (not indexed)
    are left out and counted. The collapse warning, its threshold lowered to 0 and its run to 2 steps,
    fires once, at step 2."""
    monkeypatch.setattr(train_mod, "COLLAPSE_FG", 0.0)
    monkeypatch.setattr(train_mod, "COLLAPSE_STEPS", 2)
    params = SoloTrainParams(**TINY, steps=3, checkpoint_every=2)
    out, csv = tmp_path / "w" / "solo.pt", tmp_path / "w" / "loss.csv"
    with caplog.at_level(logging.INFO, logger="maskless.solo.train"):
        summary = train_solo(**data, out_weights=str(out), state_dir=str(tmp_path / "state"), params=params,
                             device="cpu", threads=1, loss_log=str(csv), log_every=1)
    assert summary["steps_done"] == 3 and summary["images"] == 3
    assert summary["skipped"] == {"not_in_index": 1, "no_masks": 1, "background": 0}
    assert 0.0 <= summary["data_fraction"] <= 1.0
    rows = _read_csv(csv)
    assert rows[0] == list(LOSS_COLUMNS) and set(TERMS) <= set(rows[0]) and len(rows) == 4
    assert all(math.isfinite(float(v)) for r in rows[1:] for v in r)
    assert [float(r[-1]) for r in rows[1:]] == pytest.approx([0.0001, 0.00505, 0.01])
    assert all(float(r[rows[0].index("num_pos")]) > 0 for r in rows[1:])
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["kind"] == "solov2" and ckpt["params"]["steps"] == 3 and ckpt["params"]["model"]["emb_dim"] == 8
    assert not (tmp_path / "state" / train_mod.STATE_NAME).exists()
    assert any("data" in r.message and "ETA" in r.message and "num_pos" in r.message for r in caplog.records)
    assert all(0.0 <= float(r[rows[0].index("mask_fg")]) <= 1.0 for r in rows[1:])
    collapsed = [r.message for r in caplog.records if "collapsed to whole-image masks" in r.message]
    assert len(collapsed) == 1 and collapsed[0].startswith("SOLO step 2:")


def test_resume_after_kill_is_bit_identical(tmp_path, data, caplog, device, same):
    """4 steps straight vs. stopped after step 3 (checkpoint at 2, step 3 lost as in a kill) and rerun:
    torch.equal on every weight, identical loss logs (on CUDA with AMP: close)."""
    params = SoloTrainParams(**{**TINY, "amp": device == "cuda"}, steps=4, checkpoint_every=2)
    kw = dict(**data, params=params, device=device, threads=1)
    train_solo(out_weights=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"),
               loss_log=str(tmp_path / "a.csv"), **kw)
    stopped = train_solo(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                         loss_log=str(tmp_path / "b.csv"), stop_after=3, **kw)
    assert stopped["stopped"] and not (tmp_path / "b.pt").exists()
    with caplog.at_level(logging.INFO, logger="maskless.solo.train"):
        resumed = train_solo(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                             loss_log=str(tmp_path / "b.csv"), **kw)
    assert resumed["resumed"] and resumed["start_step"] == 2
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert same.state(a["model"], b["model"]) and same.csv(tmp_path / "a.csv", tmp_path / "b.csv")


def test_prefetched_batches_train_the_same_weights(tmp_path, data, monkeypatch, device, same):
    """Batches made one step ahead in a thread (maskless.train.prefetch, on CUDA by default) train the same
    weights and loss log as the plain loop (forced on the CPU), with a stop and resume in between."""
    params = SoloTrainParams(**{**TINY, "amp": device == "cuda"}, steps=4, checkpoint_every=2)
    kw = dict(**data, params=params, device=device, threads=1)
    monkeypatch.setattr(train_mod, "PREFETCH_DEVICES", ())
    train_solo(out_weights=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"), loss_log=str(tmp_path / "a.csv"),
               **kw)
    monkeypatch.setattr(train_mod, "PREFETCH_DEVICES", (device,))
    train_solo(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"), loss_log=str(tmp_path / "b.csv"),
               stop_after=3, **kw)
    train_solo(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"), loss_log=str(tmp_path / "b.csv"),
               **kw)
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert same.state(a["model"], b["model"]) and same.csv(tmp_path / "a.csv", tmp_path / "b.csv")


def test_batch_worker_processes_train_the_same_weights(tmp_path, data):
    """num_workers 1: the batches come from a spawned DataLoader worker (which opens its own mask store) and
    train the same weights and loss log as the plain loop, with a stop and resume in between."""
    kw = dict(**data, device="cpu", threads=1)
    plain = SoloTrainParams(**TINY, steps=3, checkpoint_every=1)
    train_solo(out_weights=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"), loss_log=str(tmp_path / "a.csv"),
               params=plain, **kw)
    workers = SoloTrainParams(**TINY, steps=3, checkpoint_every=1, num_workers=1)
    train_solo(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"), loss_log=str(tmp_path / "b.csv"),
               params=workers, stop_after=2, **kw)
    resumed = train_solo(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                         loss_log=str(tmp_path / "b.csv"), params=workers, **kw)
    assert resumed["resumed"] and resumed["start_step"] == 2
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert open(tmp_path / "a.csv").read() == open(tmp_path / "b.csv").read()


def test_changed_params_start_fresh(tmp_path, data, caplog):
    """A state made with another lr is not used (the log names the differing field)."""
    kw = dict(**data, device="cpu", threads=1, state_dir=str(tmp_path / "s"), out_weights=str(tmp_path / "w.pt"))
    train_solo(params=SoloTrainParams(**TINY, steps=3, checkpoint_every=1), stop_after=1, **kw)
    with caplog.at_level(logging.INFO, logger="maskless"):
        summary = train_solo(params=SoloTrainParams(**{**TINY, "lr": 0.02}, steps=2, checkpoint_every=1), **kw)
    assert summary["start_step"] == 0 and any("'lr'" in r.message for r in caplog.records)


def test_nan_loss_names_step_and_term(tmp_path, data, monkeypatch):
    """solo_losses patched to give loss_pair = NaN at every step: the error names step 1 and loss_pair."""
    real = train_mod.solo_losses

    def fake(*args, **kwargs):
        out = real(*args, **kwargs)
        out["loss_pair"] = out["loss_pair"] * float("nan")
        out["loss"] = out["loss"] + out["loss_pair"]
        return out

    monkeypatch.setattr(train_mod, "solo_losses", fake)
    with pytest.raises(FloatingPointError, match=r"step 1: .*\['loss_pair', 'loss'\]"):
        train_solo(**data, out_weights=str(tmp_path / "w.pt"), state_dir=str(tmp_path / "s"),
                   params=SoloTrainParams(**TINY, steps=2), device="cpu", threads=1)


def test_background_images_are_kept_when_asked(tmp_path, data):
    """background_images: image 4 (zero masks) joins the 3 training images; image 5 (not indexed) stays out."""
    params = SoloTrainParams(**TINY, steps=2, background_images=True)
    summary = train_solo(**data, out_weights=str(tmp_path / "w.pt"), state_dir=str(tmp_path / "s"),
                         params=params, device="cpu", threads=1)
    assert summary["images"] == 4 and summary["skipped"] == {"not_in_index": 1, "no_masks": 0, "background": 1}
    assert math.isfinite(summary["final"]["loss"])


def test_no_image_with_masks_is_a_clear_error(tmp_path, data):
    """An index whose only image has zero masks: the error names the manifest and the index."""
    write_shard(str(tmp_path / "e.zarr"), [ImageMasks(4, 80, 64, np.zeros((0, 80, 64), bool), [])], embedding_dim=8)
    build_index([str(tmp_path / "e.zarr")], str(tmp_path / "e.parquet"))
    with pytest.raises(ValueError, match="e.parquet"):
        train_solo(**{**data, "masks_index": str(tmp_path / "e.parquet")}, out_weights=str(tmp_path / "w.pt"),
                   state_dir=str(tmp_path / "s"), params=SoloTrainParams(**TINY, steps=1), device="cpu")


def test_params_validation_names_the_field():
    with pytest.raises(ValueError, match="SoloTrainParams.copy_paste_prob"):
        SoloTrainParams(copy_paste_prob=1.5)
    with pytest.raises(ValueError, match="SoloTrainParams.views"):
        SoloTrainParams(views="middle")
    with pytest.raises(ValueError, match="SoloTrainParams.geometry"):
        SoloTrainParams(geometry="reference")  # 5 grids vs the small model's 3
    p = SoloTrainParams(model=TINY_MODEL, loss={"loss_emb": 0.5})  # dicts from a config file
    assert p.model.emb_dim == 8 and p.loss.loss_emb == 0.5
    assert SoloTrainParams(**p.to_dict()).to_dict() == p.to_dict()


def test_cosine_schedule_by_hand():
    """lr 1, 5 steps, warm-up 2 from 0.5: 0.5, 0.75, then cosine over the 3 remaining steps:
    0.5 (1 + cos(0)) = 1, 0.5 (1 + cos(pi/3)) = 0.75, 0.5 (1 + cos(2 pi/3)) = 0.25."""
    p = SoloTrainParams(steps=5, warmup_steps=2, warmup_start=0.5, schedule="cosine", lr=1.0)
    assert [lr_at(s, p) for s in range(5)] == pytest.approx([0.5, 0.75, 1.0, 0.75, 0.25])


def test_step_schedule_by_hand():
    """steps 9, warm-up 0: x0.1 from step 6 (>= 2/3 x 9), x0.01 from step 8 (>= 8/9 x 9)."""
    p = SoloTrainParams(steps=9, warmup_steps=0, schedule="step", lr=1.0)
    assert [lr_at(s, p) for s in range(9)] == pytest.approx([1] * 6 + [0.1] * 2 + [0.01])


# ---------------------------------------------------------------- augmentation


def test_flip_moves_a_known_mask():
    """A 4x4 square at columns 2..5 of a 10-wide image lands at columns 4..7 after the flip (10 - 6 = 4)."""
    image = np.zeros((8, 10, 3), np.uint8)
    masks = _square(8, 10, 1, 2, 4)[None]
    image[masks[0]] = 200
    params = SoloAugmentParams(input_size=8, p_flip=1.0)
    s = weak_sample(image, masks, np.ones((1, 3), np.float32), np.random.default_rng(0), params)
    assert s.image.shape == (8, 10, 3) and s.masks.shape == (1, 8, 10)
    np.testing.assert_array_equal(s.masks[0], _square(8, 10, 1, 4, 4))
    assert (s.image[s.masks[0]] == 200).all() and (s.image[~s.masks[0]] == 0).all()


def test_copy_paste_updates_the_occluded_mask_exactly():
    """Target: blank 12x12 image with a 6x6 square at (2, 2) and a 2x2 square at (9, 9). Source: a 4x4
    square at (5, 5) filled with 255, embedding (0.5, 0.5). The pasted square covers rows/cols 5..8, so the
    6x6 square (rows/cols 2..7) loses its 3x3 corner at rows/cols 5..7: 36 - 9 = 27 px stay visible. The
    2x2 square is not occluded but has 4 px < min_visible_px = 5, so it is dropped with its embedding."""
    target = Sample(np.zeros((12, 12, 3), np.uint8), np.stack([_square(12, 12, 2, 2, 6), _square(12, 12, 9, 9, 2)]),
                    np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    src_img = np.zeros((12, 12, 3), np.uint8)
    src_mask = _square(12, 12, 5, 5, 4)
    src_img[src_mask] = 255
    source = Sample(src_img, src_mask[None], np.array([[0.5, 0.5]], np.float32))
    out, k = _paste(target, source, max_instances=3, min_visible_px=5)
    assert k == 1 and len(out.masks) == 2
    expected = _square(12, 12, 2, 2, 6) & ~src_mask
    assert expected.sum() == 27
    np.testing.assert_array_equal(out.masks[0], expected)
    np.testing.assert_array_equal(out.masks[1], src_mask)
    assert (out.image[src_mask] == 255).all() and (out.image[~src_mask] == 0).all()
    np.testing.assert_array_equal(out.embeddings, [[1.0, 0.0], [0.5, 0.5]])


def test_copy_paste_without_embeddings_gives_zero_rows_and_fully_hidden_masks_drop():
    """Target mask entirely covered by the pasted one -> dropped; target without embeddings + source with:
    the kept rows are the source's."""
    target = Sample(np.zeros((8, 8, 3), np.uint8), _square(8, 8, 2, 2, 2)[None], None)
    source = Sample(np.full((8, 8, 3), 9, np.uint8), _square(8, 8, 1, 1, 4)[None], np.ones((1, 2), np.float32))
    out, k = _paste(target, source, max_instances=1, min_visible_px=1)
    assert k == 1 and len(out.masks) == 1 and out.masks[0].sum() == 16
    np.testing.assert_array_equal(out.embeddings, [[1.0, 1.0]])
    empty = Sample(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8, 8), bool), None)
    assert _paste(target, empty, max_instances=2)[1] == 0


def test_copy_paste_overlap_filter_by_ioy():
    """FreeSOLO's filter (copy_paste_max_ioy 0.5): IoY = |pasted & target| / |target|. Target: a 4x4 square at
    (2, 2) (16 px). Source instance A, a 4x4 square at (4, 2), covers rows 4..5 of it: 8 / 16 = 0.5, so it is
    left out at 0.5 and pasted at 0.6; instance B, a 2x2 square at (10, 10), covers nothing: always pasted.
    Without the filter both are pasted (seed 0 draws k = 2); the draws are the same either way."""
    target = Sample(np.zeros((12, 12, 3), np.uint8), _square(12, 12, 2, 2, 4)[None], None)
    src_masks = np.stack([_square(12, 12, 4, 2, 4), _square(12, 12, 10, 10, 2)])
    source = Sample(np.full((12, 12, 3), 50, np.uint8), src_masks, None)
    from maskless.solo.augment import overlap_ioy

    np.testing.assert_allclose(overlap_ioy(src_masks, target.masks), [[0.5], [0.0]])
    runs = {ioy: _paste(target, source, max_instances=2, min_visible_px=1, max_ioy=ioy) for ioy in (None, 0.6, 0.5)}
    assert [runs[i][1] for i in (None, 0.6, 0.5)] == [2, 2, 1]
    out = runs[0.5][0]
    np.testing.assert_array_equal(out.masks[0], _square(12, 12, 2, 2, 4))  # not occluded: A was left out
    np.testing.assert_array_equal(out.masks[1], src_masks[1])
    assert (out.image[src_masks[0] & ~src_masks[1]] == 0).all() and (out.image[src_masks[1]] == 50).all()


def test_random_erasing_by_hand():
    """One pass at p 1, area fraction 1/4 of 8 x 8 and ratio 1: a 4 x 4 box (sqrt(16 x 1) = 4) of noise, so
    every changed pixel lies in a 4 x 4 window; p 0 changes nothing; the input is left as it was."""
    image = np.full((8, 8, 3), 7, dtype=np.uint8)
    out = random_erasing(image, np.random.default_rng(0), ((1.0, (0.25, 0.25), (1.0, 1.0)),))
    ys, xs = np.nonzero((out != image).any(-1))
    assert 10 <= len(ys) <= 16 and ys.max() - ys.min() <= 3 and xs.max() - xs.min() <= 3
    assert (image == 7).all()
    assert np.array_equal(random_erasing(image, np.random.default_rng(0), ((0.0, (0.25, 0.25), (1.0, 1.0)),)), image)


def test_strong_view_keeps_geometry_and_batch_is_seeded():
    """The strong view has the weak view's shape and differs in pixels when jitter is forced; the same
    generator seed gives the same batch."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    p = SoloAugmentParams(input_size=16, p_jitter=1.0, p_gray=0.0, p_blur=0.0, scale_jitter=(0.8, 1.2))
    strong = strong_view(image, np.random.default_rng(0), p)
    assert strong.shape == image.shape and strong.dtype == np.uint8 and not np.array_equal(strong, image)
    items = [(image, _square(20, 30, 2, 2, 8)[None], None)] * 2
    a, _ = batch_samples(items, np.random.default_rng(5), p)
    b, _ = batch_samples(items, np.random.default_rng(5), p)
    assert all(np.array_equal(x.strong, y.strong) and np.array_equal(x.masks, y.masks) for x, y in zip(a, b))


def test_resize_masks_edge_cases():
    """No masks -> (0, h, w); a one-pixel mask shrunk 4x vanishes (bilinear 1/16 < 0.5) and upsampling a
    2x2 square x2 gives a 4x4 square. A sample with no masks resizes, and receives a pasted instance."""
    assert resize_masks(np.zeros((0, 8, 8), bool), (4, 4)).shape == (0, 4, 4)
    s = resize_sample(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8, 8), bool), np.zeros((0, 3), np.float32), (4, 6))
    assert s.image.shape == (4, 6, 3) and s.masks.shape == (0, 4, 6) and s.embeddings.shape == (0, 3)
    target = Sample(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8, 8), bool), None)
    source = Sample(np.zeros((8, 8, 3), np.uint8), _square(8, 8, 0, 0, 5)[None], None)
    out, k = _paste(target, source, max_instances=2)
    assert k == 1 and out.masks.shape == (1, 8, 8) and out.embeddings is None
    assert not resize_masks(_square(8, 8, 3, 3, 1)[None], (2, 2)).any()
    assert resize_masks(_square(4, 4, 1, 1, 2)[None], (8, 8))[0].sum() == 16


def test_finetune_starts_from_every_weight_of_the_init_checkpoint(tmp_path, data):
    """With init_weights and lr ~0 (1e-12 for 1 step), the fine-tuned model equals its initialisation in every
    head weight, while a fresh run (no init) differs from it; another architecture is refused by name."""
    kw = dict(**data, device="cpu", threads=1)
    train_solo(params=SoloTrainParams(**TINY, steps=2), out_weights=str(tmp_path / "r0.pt"),
               state_dir=str(tmp_path / "s0"), **kw)
    tiny_lr = SoloTrainParams(**{**TINY, "warmup_steps": 0, "lr": 1e-12}, steps=1, weight_decay=0.0)
    train_solo(params=tiny_lr, out_weights=str(tmp_path / "ft.pt"), state_dir=str(tmp_path / "s1"),
               init_weights=str(tmp_path / "r0.pt"), **kw)
    train_solo(params=tiny_lr, out_weights=str(tmp_path / "fresh.pt"), state_dir=str(tmp_path / "s2"), **kw)
    r0, ft, fresh = (torch.load(tmp_path / f"{n}.pt", weights_only=True)["model"] for n in ("r0", "ft", "fresh"))
    head = [k for k in r0 if k.startswith("head.") and r0[k].is_floating_point()]
    assert head and all(torch.allclose(r0[k], ft[k], atol=1e-6) for k in head)
    assert not all(torch.allclose(r0[k], fresh[k], atol=1e-6) for k in head)
    other = SoloTrainParams(**{**TINY, "model": SoloModelParams(**{**TINY_MODEL, "emb_dim": 4})}, steps=1)
    with pytest.raises(ValueError, match="cannot fine-tune from"):
        train_solo(params=other, out_weights=str(tmp_path / "x.pt"), state_dir=str(tmp_path / "s3"),
                   init_weights=str(tmp_path / "r0.pt"), **kw)


def test_freeze_at_two_stops_stem_and_res2_only():
    """detectron2's FREEZE_AT = 2: conv1/bn1 and layer1 get no gradient, layer2 does; 0 freezes nothing."""
    from maskless.models.freeze import freeze_stages

    net = build_resnet("resnet18")
    n = freeze_stages(net, 2)
    frozen = {name.split(".")[0] for name, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"}
    assert n == sum(p.numel() for m in (net.conv1, net.bn1, net.layer1) for p in m.parameters())
    fresh = build_resnet("resnet18")
    assert freeze_stages(fresh, 0) == 0 and all(p.requires_grad for p in fresh.parameters())
    with pytest.raises(ValueError, match="freeze_at"):
        SoloTrainParams(freeze_at=6)


def test_supervised_dice_run_logs_its_term(tmp_path, data):
    """loss.mask "dice" (the supervised ceiling): the loss log gains loss_dice after the terms, finite and
    positive, with the weak mask terms at zero; the progress line names it."""
    params = SoloTrainParams(**{**TINY, "loss": {"mask": "dice"}}, steps=2, checkpoint_every=2)
    csv = tmp_path / "loss.csv"
    train_solo(**data, out_weights=str(tmp_path / "w.pt"), state_dir=str(tmp_path / "state"), params=params,
               device="cpu", threads=1, loss_log=str(csv), log_every=1)
    rows = _read_csv(csv)
    assert rows[0] == [*LOSS_COLUMNS[:LOSS_COLUMNS.index("loss_emb") + 1], "loss_dice",
                       *LOSS_COLUMNS[LOSS_COLUMNS.index("loss_emb") + 1:]]
    col = {name: i for i, name in enumerate(rows[0])}
    assert all(float(r[col["loss_dice"]]) > 0 and float(r[col["loss_max"]]) == 0.0 for r in rows[1:])
