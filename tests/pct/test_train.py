"""PCT and supervised training loops: smoke, exact resume, empty batch halves, NaN naming, data checks,
augmentation and the poly schedule (maskless.pct.train)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from maskless.pct import train as train_mod
from maskless.pct.contextrast import TERMS as CTR_TERMS
from maskless.pct.losses import DynamicEvaluation
from maskless.pct.model import load_segnet
from maskless.pct.terms import PCT_TERMS, pct_losses, supervised_losses
from maskless.pct.train import PCTParams, SegTrainParams, lr_at, train_pct, train_supervised
from maskless.pct.train_data import Batch, augment

MODEL = dict(num_classes=3, aspp_channels=8, low_channels=8, decoder_channels=8, embed_dim=8)
TINY = dict(batch_size=4, input_size=32, amp=False, model=MODEL)


def _csv(path) -> list[list[str]]:
    return [line.split(",") for line in open(path).read().splitlines()]


def test_pct_resume_is_bit_identical_and_checkpoint_loads(tmp_path, data, caplog, device, same):
    """With Contextrast on, 3 steps straight vs. stopped after step 3 (state saved at 2, step 3 lost as in a
    kill) and rerun: torch.equal on every tensor (weights, BN statistics, dynamic-evaluation EMA), identical
    loss logs with every term. Both networks load back from the checkpoint."""
    params = PCTParams(**{**TINY, "amp": device == "cuda"}, steps=3, checkpoint_every=2, use_contextrast=True)
    kw = dict(**data, params=params, device=device, threads=1)
    with caplog.at_level(logging.INFO, logger="maskless.pct.train"):
        a = train_pct(out=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"), loss_log=str(tmp_path / "a.csv"),
                      log_every=1, **kw)
    assert a["strong"] == 2 and a["weak"] == 4 and not a["resumed"]
    assert any("ETA" in r.message and "p2h" in r.message and "h_ctr_nce" in r.message for r in caplog.records)
    stopped = train_pct(out=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"), stop_after=3, **kw)
    assert stopped["stopped"] and not (tmp_path / "b.pt").exists()
    b = train_pct(out=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"), loss_log=str(tmp_path / "b.csv"), **kw)
    assert b["resumed"] and b["start_step"] == 2
    ca, cb = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert ca["kind"] == "pct" and ca["params"]["strong"] == 2 and ca["model"].keys() == cb["model"].keys()
    assert same.state(ca["model"], cb["model"])
    assert int(ca["model"]["dyn.updates"]) == 3
    rows = _csv(tmp_path / "a.csv")
    assert same.csv(tmp_path / "a.csv", tmp_path / "b.csv")
    assert set(PCT_TERMS) | {"h_" + t for t in CTR_TERMS} | {"p_" + t for t in CTR_TERMS} <= set(rows[0])
    assert len(rows) == 4 and all(math.isfinite(float(v)) for r in rows[1:] for v in r)
    assert not (tmp_path / "sb" / "pct_last.pt").exists()
    for which in ("hybrid", "pseudo"):
        net = load_segnet(str(tmp_path / "a.pt"), which)
        assert net(torch.zeros(1, 3, 32, 32))["logits"].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="which"):
        load_segnet(str(tmp_path / "a.pt"))


def test_supervised_trains_and_leaves_out_unlabelled(tmp_path, data):
    """Strong-only baseline: the 4 images without labels are left out and counted; kind "segnet"."""
    params = SegTrainParams(**{**TINY, "batch_size": 2}, steps=2, optimizer="adamw", lr=1e-3)
    s = train_supervised(images=data["images"], labels=data["labels"], params=params, out=str(tmp_path / "s.pt"),
                         state_dir=str(tmp_path / "st"), device="cpu", threads=1, loss_log=str(tmp_path / "s.csv"))
    assert s["images"] == 2 and s["left_out"] == 4
    assert _csv(tmp_path / "s.csv")[0] == ["step", "loss", "ce", "lr"]
    net = load_segnet(str(tmp_path / "s.pt"))
    assert not net.training and net.params.num_classes == 3


def _fake_outputs(b: int, seed: int = 0, k: int = 3, size: int = 8, emb: bool = True) -> dict:
    torch.manual_seed(seed)
    out = {"logits": torch.randn(b, k, size, size, requires_grad=True)}
    if emb:
        out["embeddings"] = [torch.nn.functional.normalize(torch.randn(b, 4, 4, 4), dim=1).requires_grad_(True)]
    return out


def _batch(n_strong: int, n_weak: int, size: int = 8) -> Batch:
    b = n_strong + n_weak
    labels = torch.randint(0, 3, (b, size, size))
    labels[n_strong:] = 255
    present = torch.ones(b, 3, dtype=torch.bool)
    return Batch(images=torch.zeros(b, 3, size, size, dtype=torch.uint8), labels=labels,
                 valid=torch.ones(b, size, size, dtype=torch.bool), present=present, n_strong=n_strong)


@pytest.mark.parametrize("n_strong,n_weak", [(0, 2), (2, 0), (1, 1)])
def test_pct_losses_finite_with_an_empty_half(n_strong, n_weak):
    """A batch with no strong (or no weak) image: that half's terms are 0, all finite; with both halves every
    term has a gradient. The dynamic evaluation is not updated by an empty strong half."""
    params = PCTParams(**TINY, use_contextrast=True)
    ho, po = _fake_outputs(n_strong + n_weak, 0), _fake_outputs(n_strong + n_weak, 1)
    dyn = DynamicEvaluation(3, unseen_iou=1.0)
    terms, stats = pct_losses(ho, po, _batch(n_strong, n_weak), dyn, params)
    assert all(torch.isfinite(v) for v in terms.values()) and all(math.isfinite(v) for v in stats.values())
    assert int(dyn.updates) == (1 if n_strong else 0)
    if n_strong == 0:
        assert terms["h_cce"].item() == 0 and terms["p_cce"].item() == 0
    if n_weak == 0:
        assert terms["h_mlsm"].item() == 0 and terms["h2p"].item() == 0 and terms["p2h"].item() == 0
    if n_strong and n_weak:
        for name, t in terms.items():
            ho["logits"].grad = po["logits"].grad = None
            t.backward(retain_graph=True)
            grads = [x.grad for x in (ho["logits"], po["logits"], *ho["embeddings"], *po["embeddings"])]
            assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_supervised_losses_all_ignored_is_zero():
    params = SegTrainParams(**TINY, use_contextrast=True)
    batch = _batch(2, 0)
    batch.labels[:] = 255
    terms, _ = supervised_losses(_fake_outputs(2), batch, params)
    assert all(v.item() == 0.0 for v in terms.values())


def test_non_finite_term_names_term_and_step(tmp_path, data, monkeypatch):
    def broken(*args, **kwargs):
        terms, stats = real(*args, **kwargs)
        return {**terms, "h2p": terms["h2p"] * float("nan")}, stats

    with pytest.raises(FloatingPointError, match=r"PCT step 7: non-finite network outputs \['pseudo logits'\]"):
        train_mod.check_outputs({"hybrid logits": torch.zeros(2), "pseudo logits": torch.tensor([0.0, math.inf])},
                                 "PCT", 7)
    real = train_mod.pct_losses
    monkeypatch.setattr(train_mod, "pct_losses", broken)
    with pytest.raises(FloatingPointError, match=r"PCT step 1: non-finite loss terms \['h2p'\]"):
        train_pct(**data, params=PCTParams(**TINY, steps=2), out=str(tmp_path / "x.pt"),
                  state_dir=str(tmp_path / "s"), device="cpu", threads=1)


def test_data_errors(tmp_path, data):
    """No weak images, no strong images, tags that disagree with a mask: clear ValueErrors."""
    kw = dict(params=PCTParams(**TINY, steps=1), out=str(tmp_path / "x.pt"), state_dir=str(tmp_path / "s"),
              device="cpu")
    with pytest.raises(ValueError, match="0 weak"):
        train_pct(images=data["images"][:2], labels=data["labels"][:2], tags=data["tags"][:2], **kw)
    with pytest.raises(ValueError, match="0 strong"):
        train_pct(images=data["images"], labels=[None] * 6, tags=data["tags"], **kw)
    bad_tags = [[2]] + data["tags"][1:]
    with pytest.raises(ValueError, match=r"image 0: label map labels\[0\] and tag table tags argument disagree"):
        train_pct(images=data["images"], labels=data["labels"], tags=bad_tags, **kw)
    with pytest.raises(ValueError, match="image 1 must be uint8"):
        train_supervised(images=[data["images"][0], data["images"][1].astype(np.float32)],
                         labels=data["labels"][:2], params=SegTrainParams(**TINY), out="x", state_dir="s")
    with pytest.raises(ValueError, match="even"):
        PCTParams(**{**TINY, "batch_size": 3})


def test_augment_keeps_image_and_label_aligned():
    """Scale fixed at 1 on a 40 x 40 image, crop 32: the output is a (possibly mirrored) window, so the
    label still equals the image's red channel / 100 everywhere; scale 0.5 pads: valid marks the image."""
    lab = np.zeros((40, 40), np.uint8)
    lab[:, 25:] = 2
    img = np.repeat((lab * 100)[:, :, None], 3, axis=2).astype(np.uint8)
    params = SegTrainParams(**TINY, scale_range=(1.0, 1.0))
    for seed in range(4):
        i, l, v = augment(img, lab, np.random.default_rng(seed), params)
        assert i.shape == (32, 32, 3) and v.all() and np.array_equal(i[:, :, 0] // 100, l)
    small = SegTrainParams(**{**TINY, "input_size": 64}, scale_range=(0.5, 0.5))
    i, l, v = augment(img, None, np.random.default_rng(0), small)
    assert v.sum() == 32 * 32 and v[:32, :32].all() and (l == 255).all()  # 40 x 64 / 40 x 0.5 = 32


def test_poly_lr():
    """lr (1 - s / steps)^0.9: step 0 -> lr, step 5 of 10 -> 0.01 x 0.5^0.9 = 0.0053589."""
    p = SegTrainParams(**TINY, steps=10, lr=0.01)
    assert lr_at(0, p) == 0.01 and lr_at(5, p) == pytest.approx(0.0053589, abs=1e-7)


def test_ddp_group_of_one_matches_one_process(tmp_path, data, process_group_of_one):
    """Inside a Gloo group of one the networks are DDP-wrapped and the dynamic evaluation all-reduces; the
    weights after 3 PCT steps equal a plain run's bit for bit (averaging over one rank changes nothing)."""
    from maskless import dist

    assert isinstance(dist.wrap(torch.nn.Linear(2, 2)), torch.nn.parallel.DistributedDataParallel)
    params = PCTParams(**TINY, steps=3)
    in_group = train_pct(**data, params=params, out=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"),
                         device="cpu", threads=1)
    with process_group_of_one.paused():
        plain = train_pct(**data, params=params, out=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                          device="cpu", threads=1)
    assert in_group["param_digest"] == plain["param_digest"]
    a, b = (torch.load(tmp_path / f, weights_only=True)["model"] for f in ("a.pt", "b.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_gloo_processes_stay_in_step(tmp_path, data):
    """Two spawned CPU processes, each with half of every global batch: after 3 steps both hold the same
    parameters (DDP averaged the same gradients), only rank 0 wrote the model and the loss log, and the
    result differs from one process (each rank saw other images and augmentations)."""
    from maskless import dist

    fn, params = train_pct, PCTParams(**TINY, steps=3)
    kw = dict(params=params, device="cpu", threads=2, **data)
    results = dist.launch(fn, processes=2, all_ranks=True, out=str(tmp_path / "m.pt"), state_dir=str(tmp_path / "s"),
                          loss_log=str(tmp_path / "loss.csv"), **kw)
    assert [r["rank"] for r in results] == [0, 1]
    assert results[0]["param_digest"] == results[1]["param_digest"]
    assert "out" in results[0] and "out" not in results[1]
    assert len(open(tmp_path / "loss.csv").read().splitlines()) == 1 + 3
    single = fn(out=str(tmp_path / "one.pt"), state_dir=str(tmp_path / "s1"), **kw)
    assert single["param_digest"] != results[0]["param_digest"]
