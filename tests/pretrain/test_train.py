"""DenseCL training loop (smoke, exact resume, parameter change, NaN stop), given weights, batch sampling and
the two-view augmentation it feeds on."""

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
from maskless.models.weights import load_backbone
from maskless.pretrain import train as train_mod
from maskless.data.batches import batch_indices
from maskless.data.photometric import color_jitter
from maskless.pretrain.augment import AugmentParams, augment_view, crop_box, two_views
from maskless.pretrain.densecl import DenseCL, DenseCLParams
from maskless.pretrain.train import lr_at, train_densecl, use_given_weights

TINY = dict(arch="resnet18", batch_size=4, crop_size=32, queue_size=8, feat_dim=8, hidden_dim=16, amp=False)


@pytest.fixture
def manifest(tmp_path) -> str:
    """Five synthetic PNGs (coloured rectangles on noise, 40x56 and 56x40) and their manifest."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(5):
        h, w = (40, 56) if i % 2 else (56, 40)
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(img, (5 + i, 6), (30, 30 + i), tuple(int(c) for c in rng.integers(100, 255, 3)), -1)
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), img)
        records.append(dict(id=i + 1, file_name=path.name, path=str(path), width=w, height=h, split="train",
                            hash=hashlib.sha256(path.read_bytes()).hexdigest()))
    out = tmp_path / "manifest.parquet"
    write_manifest(out, records)
    return str(out)


def _read_csv(path) -> list[list[str]]:
    return [line.split(",") for line in open(path).read().splitlines()]


def test_smoke_trains_writes_weights_and_loss_log(tmp_path, manifest):
    """lr column: 0.03 x 4/256 = 4.6875e-4 at step 1, then x 0.5 (1 + cos(pi/3)) = x 0.75 at step 2."""
    params = DenseCLParams(**TINY, steps=3, checkpoint_every=2)
    out, csv, state = tmp_path / "w" / "backbone.pt", tmp_path / "w" / "loss.csv", tmp_path / "state"
    summary = train_densecl(manifest=manifest, out_weights=str(out), state_dir=str(state), params=params,
                            device="cpu", threads=1, loss_log=str(csv), log_every=1)
    assert summary["steps_done"] == 3 and summary["images"] == 5 and not summary["resumed"]
    rows = _read_csv(csv)
    assert rows[0] == ["step", "loss", "loss_global", "loss_dense", "lr"] and len(rows) == 4
    assert all(math.isfinite(float(v)) for r in rows[1:] for v in r)
    assert float(rows[1][4]) == pytest.approx(4.6875e-4) and float(rows[2][4]) == pytest.approx(4.6875e-4 * 0.75)
    model = load_backbone(str(out))
    raw = torch.load(out, weights_only=True)
    assert raw["params"]["method"] == "densecl" and raw["params"]["steps"] == 3
    torch.manual_seed(params.seed)
    init = DenseCL.from_params(params).encoder_q.state_dict()
    assert not torch.equal(model.state_dict()["conv1.weight"], init["conv1.weight"])  # it trained
    assert not (state / train_mod.STATE_NAME).exists()  # resume state removed after success


def test_resume_after_kill_is_bit_identical(tmp_path, manifest, caplog, device, same):
    """4 steps straight vs. a run stopped after step 3 (checkpoint at step 2; step 3 is lost as in a kill)
    and restarted: same final weights (torch.equal; on CUDA with AMP, close) and the same loss log."""
    params = DenseCLParams(**{**TINY, "amp": device == "cuda"}, steps=4, checkpoint_every=2)
    kw = dict(manifest=manifest, params=params, device=device, threads=1)
    train_densecl(out_weights=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"),
                  loss_log=str(tmp_path / "a.csv"), **kw)
    stopped = train_densecl(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                            loss_log=str(tmp_path / "b.csv"), stop_after=3, **kw)
    assert stopped["stopped"] and not (tmp_path / "b.pt").exists()
    assert torch.load(tmp_path / "sb" / train_mod.STATE_NAME, weights_only=True)["step"] == 2
    with caplog.at_level(logging.INFO, logger="maskless"):
        resumed = train_densecl(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                                loss_log=str(tmp_path / "b.csv"), **kw)
    assert resumed["start_step"] == 2 and "resuming DenseCL" in caplog.text
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert same.state(a, b) and same.csv(tmp_path / "a.csv", tmp_path / "b.csv")


def test_changed_params_start_fresh(tmp_path, manifest, caplog):
    kw = dict(manifest=manifest, out_weights=str(tmp_path / "w.pt"), state_dir=str(tmp_path / "s"),
              device="cpu", threads=1)
    train_densecl(params=DenseCLParams(**TINY, steps=2, checkpoint_every=1), stop_after=1, **kw)
    with caplog.at_level(logging.INFO, logger="maskless"):
        summary = train_densecl(params=DenseCLParams(**TINY, steps=2, checkpoint_every=1, lr=0.05), **kw)
    assert summary["start_step"] == 0
    assert "other parameters ['lr']" in caplog.text and "starting fresh" in caplog.text


def test_corrupt_resume_state_starts_fresh(tmp_path, manifest, caplog):
    state = tmp_path / "s" / train_mod.STATE_NAME
    state.parent.mkdir()
    state.write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="maskless"):
        summary = train_densecl(manifest=manifest, out_weights=str(tmp_path / "w.pt"), state_dir=str(state.parent),
                                params=DenseCLParams(**TINY, steps=1), device="cpu", threads=1)
    assert summary["start_step"] == 0 and "unreadable" in caplog.text and (tmp_path / "w.pt").exists()


def test_nan_loss_names_step_and_term(tmp_path, manifest, monkeypatch):
    real_forward = DenseCL.forward
    calls = []

    def forward(self, view_q, view_k):
        out = real_forward(self, view_q, view_k)
        calls.append(1)
        if len(calls) == 2:
            out["loss_dense"] = out["loss_dense"] * float("nan")
        return out

    monkeypatch.setattr(DenseCL, "forward", forward)
    with pytest.raises(FloatingPointError, match=r"DenseCL step 2: non-finite loss terms \['loss_dense'\]"):
        train_densecl(manifest=manifest, out_weights=str(tmp_path / "w.pt"), state_dir=str(tmp_path / "s"),
                      params=DenseCLParams(**TINY, steps=3), device="cpu", threads=1)
    assert not (tmp_path / "w.pt").exists()


def test_empty_manifest_is_an_error(tmp_path):
    path = tmp_path / "empty.parquet"
    write_manifest(path, [])
    with pytest.raises(ValueError, match="empty.parquet has no images"):
        train_densecl(manifest=str(path), out_weights=str(tmp_path / "w.pt"), state_dir=str(tmp_path / "s"),
                      params=DenseCLParams(**TINY, steps=1), device="cpu")


def test_use_given_weights(tmp_path):
    torch.manual_seed(0)
    src = tmp_path / "tv.pth"
    state = build_resnet("resnet18").state_dict()
    torch.save({**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, src)
    use_given_weights(src=str(src), out_weights=str(tmp_path / "out.pt"), arch="resnet18")
    raw = torch.load(tmp_path / "out.pt", weights_only=True)
    assert raw["arch"] == "resnet18" and raw["params"]["method"] == "given"
    assert all(torch.equal(raw["state_dict"][k], state[k]) for k in state)
    with pytest.raises(ValueError, match="tv.pth does not fit"):
        use_given_weights(src=str(src), out_weights=str(tmp_path / "bad.pt"), arch="resnet34")
    assert not (tmp_path / "bad.pt").exists()


# --- sampling and schedule ------------------------------------------------------------------------------

def test_batch_indices_cover_each_epoch_and_repeat():
    """5 images, batch 2: steps 0..4 cover positions 0..9 = two full epochs, each a permutation of 0..4."""
    seq = np.concatenate([batch_indices(s, n_images=5, batch_size=2, seed=3) for s in range(5)])
    assert sorted(seq[:5]) == list(range(5)) and sorted(seq[5:]) == list(range(5))
    assert np.array_equal(batch_indices(2, n_images=5, batch_size=2, seed=3), seq[4:6])
    assert len(batch_indices(0, n_images=1, batch_size=3, seed=0)) == 3  # fewer images than a batch


def test_lr_schedule_warmup_then_cosine():
    """peak = 0.03 x 256/256; warm-up 2 of 6 steps: peak/2, peak, then cosine over 4: 1, 0.854, 0.5, 0.146."""
    p = DenseCLParams(batch_size=256, queue_size=256, steps=6, warmup_steps=2)
    got = [lr_at(s, p) for s in range(6)]
    want = [0.015, 0.03] + [0.03 * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert got == pytest.approx(want)


# --- augmentation ---------------------------------------------------------------------------------------

def test_views_are_reproducible_from_the_generator():
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    aug = AugmentParams(crop_size=24)
    a = two_views(img, np.random.default_rng(7), aug)
    b = two_views(img, np.random.default_rng(7), aug)
    c = two_views(img, np.random.default_rng(8), aug)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], a[1])
    assert a[0].shape == (3, 24, 24) and a[0].dtype == np.float32 and 0 <= a[0].min() and a[0].max() <= 1


def test_crop_box_respects_scale_and_ratio():
    """Accepted crops cover 20-100% of the area with w/h in [3/4, 4/3], up to rounding of h and w."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = crop_box(100, 120, rng, (0.2, 1.0), (3 / 4, 4 / 3))
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 120
        assert 0.19 <= h * w / 12000 <= 1.0 and 0.73 <= w / h <= 1.37


def test_one_pixel_image_and_forced_grayscale():
    aug = AugmentParams(crop_size=8, p_gray=1.0)
    view = augment_view(np.full((1, 1, 3), (200, 10, 10), dtype=np.uint8), np.random.default_rng(0), aug)
    assert view.shape == (3, 8, 8)
    assert np.allclose(view[0], view[1]) and np.allclose(view[1], view[2])


def test_zero_jitter_is_identity_and_bad_input_rejected():
    img = np.random.default_rng(0).random((4, 4, 3), dtype=np.float32)
    assert np.allclose(color_jitter(img, np.random.default_rng(0), (0, 0, 0, 0)), img)
    with pytest.raises(ValueError, match="uint8"):
        augment_view(np.zeros((4, 4, 3), dtype=np.float32), np.random.default_rng(0), AugmentParams())


def test_ddp_group_of_one_matches_one_process(tmp_path, manifest, process_group_of_one):
    """Inside a Gloo group of one (DDP wrapper, key all-gather into the queues, rank-0 writes), 3 steps give
    the plain run's backbone and loss log bit for bit."""
    params = DenseCLParams(**TINY, steps=3)
    kw = dict(manifest=manifest, params=params, device="cpu", threads=1)
    a = train_densecl(out_weights=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"),
                      loss_log=str(tmp_path / "a.csv"), **kw)
    with process_group_of_one.paused():
        b = train_densecl(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                          loss_log=str(tmp_path / "b.csv"), **kw)
    assert a["param_digest"] == b["param_digest"]
    wa, wb = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("a", "b"))
    assert all(torch.equal(wa["state_dict"][k], wb["state_dict"][k]) for k in wa["state_dict"])
    assert open(tmp_path / "a.csv").read() == open(tmp_path / "b.csv").read()


def test_two_gloo_processes_share_batch_and_queues(tmp_path, manifest):
    """Two spawned CPU processes with 2 of the 4 images of each global batch: the same parameters on both
    ranks after 3 steps, one output, and queues filled with both ranks' keys (4 per step: the ring of 8
    is full after 2 steps, so its pointer is back at 3 x 4 mod 8 = 4)."""
    from maskless import dist

    params = DenseCLParams(**TINY, steps=3)
    results = dist.launch(train_densecl, processes=2, all_ranks=True, manifest=manifest, params=params,
                          device="cpu", threads=2, out_weights=str(tmp_path / "w.pt"),
                          state_dir=str(tmp_path / "s"), loss_log=str(tmp_path / "loss.csv"))
    assert results[0]["param_digest"] == results[1]["param_digest"]
    assert results[0]["queue_ptr"] == results[1]["queue_ptr"] == 4
    assert "out_weights" in results[0] and "out_weights" not in results[1]
    assert len(open(tmp_path / "loss.csv").read().splitlines()) == 4
