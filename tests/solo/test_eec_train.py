"""The EEC term inside SOLO training: logged, saved, resumable, and refused without its pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskless.solo.eec import EECParams
from maskless.exemplar.pool import ExemplarPool
from maskless.solo.eec_train import EEC_COLUMNS
from maskless.solo.train import SoloTrainParams, train_solo

from .test_train import TINY, data  # noqa: F401 (data is a fixture)

# alpha 0.3 / beta 0.1 with a 16-d head on 3 exemplars; gn_groups of the tiny model is 8.
EEC = dict(alpha=0.3, beta=0.1, dim=16, refresh_every=2, weight=1.0)


@pytest.fixture
def pool(tmp_path) -> str:
    """Three 32-px exemplars: bright squares of three colours on dark noise, masks = the squares."""
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 40, (3, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((3, 32, 32), bool)
    for i, colour in enumerate(([250, 40, 40], [40, 250, 40], [40, 40, 250])):
        masks[i, 8:24, 8:24] = True
        crops[i][masks[i]] = colour
    path = str(tmp_path / "pool")
    ExemplarPool(crops, masks, [1, 2, 3], [[0, 0, 32, 32]] * 3, ["solo"] * 3, [1.0] * 3).save(path)
    return path


def _params(**kw) -> SoloTrainParams:
    return SoloTrainParams(**TINY, eec=EECParams(**EEC), **kw)


def test_eec_trains_logs_and_saves_its_head(tmp_path, data, pool):  # noqa: F811
    out, csv = tmp_path / "solo.pt", tmp_path / "loss.csv"
    summary = train_solo(**data, out_weights=str(out), state_dir=str(tmp_path / "s"), params=_params(steps=3),
                         device="cpu", threads=1, loss_log=str(csv), exemplar_pool=pool)
    header = open(csv).readline().strip().split(",")
    assert header[-1] == "lr" and all(c in header for c in EEC_COLUMNS)
    assert all(np.isfinite(summary["final"][c]) for c in EEC_COLUMNS)
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["params"]["eec"]["alpha"] == 0.3 and "eec_head" in ckpt
    assert any(k.endswith("weight") for k in ckpt["eec_head"])


def test_eec_resume_is_bit_identical(tmp_path, data, pool):  # noqa: F811
    """Pool embeddings refresh at steps 1 and 3; a stop after step 3 resumes from the step-2 state, whose
    buffer holds the step-1 embeddings, and must end where the straight run ends."""
    kw = dict(**data, params=_params(steps=4, checkpoint_every=2), device="cpu", threads=1, exemplar_pool=pool)
    train_solo(out_weights=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"), loss_log=str(tmp_path / "a.csv"),
               **kw)
    train_solo(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"), stop_after=3, **kw)
    resumed = train_solo(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                         loss_log=str(tmp_path / "b.csv"), **kw)
    assert resumed["start_step"] == 2
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("a", "b"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["eec_head"][k], b["eec_head"][k]) for k in a["eec_head"])
    assert open(tmp_path / "a.csv").read() == open(tmp_path / "b.csv").read()


def test_eec_and_pool_go_together(tmp_path, data, pool):  # noqa: F811
    kw = dict(**data, out_weights=str(tmp_path / "w.pt"), state_dir=str(tmp_path / "s"), device="cpu")
    with pytest.raises(ValueError, match="needs an exemplar pool"):
        train_solo(params=_params(steps=1), **kw)
    with pytest.raises(ValueError, match="needs params.eec"):
        train_solo(params=SoloTrainParams(**TINY, steps=1), exemplar_pool=pool, **kw)


def test_eec_head_gets_a_gradient_and_backbone_bn_stays_frozen(tmp_path, data, pool):  # noqa: F811
    """One EEC step by hand: the head's and the kernel branch's weights receive a non-zero gradient, and the refresh (which runs the
    model in eval mode and restores train mode) leaves the backbone BatchNorm in eval mode."""
    from maskless.solo import train as train_mod
    from maskless.solo.eec_train import eec_losses

    params = _params(steps=1)
    source_pool = ExemplarPool.load(pool)
    model, eec, _, _, _ = train_mod.build_training(data["backbone"], params, torch.device("cpu"), None, source_pool)
    eec.refresh(model, freeze_backbone_bn=True)
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert eec.pool_emb.norm(dim=1).allclose(torch.ones(3), atol=1e-5)
    rows, _ = train_mod.select_images(train_mod.read_manifest(data["manifest"]),
                                      train_mod.mask_counts(data["masks_index"]))
    from maskless.store import MaskStore

    source = train_mod.SampleSource(rows, MaskStore(data["masks_index"]), 64)
    images, targets, _ = train_mod.make_batch(source, 0, params, params.solo_geometry())
    outputs = model(train_mod.normalize(images))
    # A pool of u and -u with alpha = beta = 0: every instance (cosine s to u, -s to -u) has one positive
    # and one negative, so every positive counts.
    u = torch.nn.functional.normalize(torch.randn(1, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    eec.pool_emb = torch.cat([u, -u])
    eec.params = EECParams(alpha=0.0, beta=0.0, dim=16, upsample=2)
    terms = eec_losses(outputs, targets, eec)
    assert terms["num_eec_valid"] > 0
    terms["loss_eec"].backward()
    grads = [p.grad for p in eec.head.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # The paper aims the term at the masks: with detach_masks false (the default) the gradient reaches the
    # kernel branch that makes them; the category branch is not a target.
    assert model.head.kernel_out.weight.grad.abs().sum() > 0
    assert model.head.cate_out.weight.grad is None or model.head.cate_out.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("with_eec", [False, True])
def test_ddp_group_of_one_matches_one_process(tmp_path, data, pool, process_group_of_one,  # noqa: F811
                                              monkeypatch, with_eec):
    """Inside a Gloo group of one, SOLO (and the EEC head) train through DDP wrappers: the forward really goes
    through them (counted), and 3 steps give the plain run's weights and loss log bit for bit."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    calls = []
    real_forward = DDP.forward
    monkeypatch.setattr(DDP, "forward", lambda self, *a, **k: calls.append(type(self.module).__name__)
                        or real_forward(self, *a, **k))
    params = _params(steps=3) if with_eec else SoloTrainParams(**TINY, steps=3)
    kw = dict(**data, params=params, device="cpu", threads=1, exemplar_pool=pool if with_eec else None)
    a = train_solo(out_weights=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"),
                   loss_log=str(tmp_path / "a.csv"), **kw)
    assert calls.count("SOLOv2") == 3 and calls.count("EECHead") == (3 if with_eec else 0)
    with process_group_of_one.paused():
        b = train_solo(out_weights=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                       loss_log=str(tmp_path / "b.csv"), **kw)
    assert a["param_digest"] == b["param_digest"]
    wa, wb = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("a", "b"))
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert open(tmp_path / "a.csv").read() == open(tmp_path / "b.csv").read()
