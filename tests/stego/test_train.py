"""STEGO training loop: smoke and checkpoint contents, exact resume, no-label skip, NaN naming, batches."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from maskless.stego import train as train_mod
from maskless.stego.knn import compute_knn, pool_features
from maskless.stego.losses import StegoLossParams, corr_loss, sample_points
from maskless.stego.train import LOSS_COLUMNS, StegoTrainParams, step_batch, train_stego

TINY = dict(batch_size=4, code_dim=6, n_clusters=3, points=3, knn_top=2)


@pytest.fixture
def data() -> dict:
    """10 images of 8-channel 5x5 features, their 3-NN, and 10x10 labels with ignored pixels."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(10, 8, 5, 5, generator=g).relu()
    labels = torch.randint(0, 3, (10, 10, 10), generator=g)
    labels[:, 0] = 255
    return {"features": feats, "knn": compute_knn(pool_features(feats), 3), "labels": labels}


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_smoke_checkpoint_and_loss_log(tmp_path, data, caplog):
    params = StegoTrainParams(**TINY, steps=3, checkpoint_every=2)
    out, csv = tmp_path / "w" / "stego.pt", tmp_path / "w" / "loss.csv"
    with caplog.at_level(logging.INFO, logger="maskless.stego.train"):
        summary = train_stego(**data, num_classes=3, params=params, out=str(out), state_dir=str(tmp_path / "s"),
                              device="cpu", loss_log=str(csv), log_every=1)
    assert summary["steps_done"] == 3 and not summary["stopped"]
    ckpt = _load(out)
    assert ckpt["kind"] == "stego" and set(ckpt) == {"head", "cluster", "linear", "params", "kind"}
    assert ckpt["params"]["num_classes"] == 3 and ckpt["params"]["loss"] == StegoLossParams().to_dict()
    assert ckpt["params"]["in_channels"] == 8 and ckpt["params"]["steps"] == 3
    assert ckpt["linear"]["conv.weight"].shape == (3, 6, 1, 1)
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    assert tuple(rows[0]) == LOSS_COLUMNS and len(rows) == 4
    assert all(np.isfinite(float(v)) for r in rows[1:] for v in r)
    assert not (tmp_path / "s" / train_mod.STATE_NAME).exists()  # removed once the weights exist
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 3/3")]
    assert progress and all(t in progress[0] for t in ("corr_self", "corr_knn", "corr_rand", "cluster",
                                                        "linear", "ETA"))


def test_resume_is_bit_identical(tmp_path, data, device, same):
    """6 steps straight vs. stopped after 4 (state at 3) and rerun: the same weights and loss log (CUDA: close)."""
    params = StegoTrainParams(**TINY, steps=6, checkpoint_every=3)
    full = tmp_path / "full.pt"
    train_stego(**data, params=params, out=str(full), state_dir=str(tmp_path / "a"), device=device,
                loss_log=str(tmp_path / "full.csv"))
    state = tmp_path / "b"
    stopped = train_stego(**data, params=params, out=str(tmp_path / "x.pt"), state_dir=str(state), device=device,
                          stop_after=4)
    assert stopped["stopped"] and not (tmp_path / "x.pt").exists()
    assert (state / train_mod.STATE_NAME).exists()
    resumed = train_stego(**data, params=params, out=str(tmp_path / "resumed.pt"), state_dir=str(state),
                          device=device, loss_log=str(tmp_path / "resumed.csv"))
    assert resumed["start_step"] == 3 and resumed["resumed"]
    a, b = _load(full), _load(tmp_path / "resumed.pt")
    assert all(same.state(a[part], b[part]) for part in ("head", "cluster", "linear"))
    assert same.csv(tmp_path / "full.csv", tmp_path / "resumed.csv")


def test_changed_params_start_fresh(tmp_path, data):
    p1 = StegoTrainParams(**TINY, steps=4, checkpoint_every=2)
    train_stego(**data, params=p1, out=str(tmp_path / "x.pt"), state_dir=str(tmp_path), device="cpu", stop_after=2)
    p2 = StegoTrainParams(**{**TINY, "points": 4}, steps=4, checkpoint_every=2)
    summary = train_stego(**data, params=p2, out=str(tmp_path / "y.pt"), state_dir=str(tmp_path), device="cpu")
    assert summary["start_step"] == 0


def test_no_labels_skips_linear_probe_with_logged_reason(tmp_path, data, caplog):
    params = StegoTrainParams(**TINY, steps=2)
    with caplog.at_level(logging.INFO, logger="maskless.stego.train"):
        train_stego(features=data["features"], knn=data["knn"], params=params, out=str(tmp_path / "w.pt"),
                    state_dir=str(tmp_path), device="cpu")
    assert any("linear probe skipped: no ground-truth labels" in r.getMessage() for r in caplog.records)
    ckpt = _load(tmp_path / "w.pt")
    assert ckpt["linear"] is None and ckpt["params"]["linear_probe"].startswith("skipped")


def test_non_finite_loss_names_term_and_step(tmp_path, data, monkeypatch):
    real = train_mod.stego_losses

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out["corr_knn"] = out["corr_knn"] * float("nan")
        return out

    monkeypatch.setattr(train_mod, "stego_losses", poisoned)
    with pytest.raises(FloatingPointError, match=r"STEGO step 1: non-finite loss terms \['corr_knn'\]"):
        train_stego(**data, params=StegoTrainParams(**TINY, steps=2), out=str(tmp_path / "w.pt"),
                    state_dir=str(tmp_path), device="cpu")


def test_bad_inputs(tmp_path, data):
    kw = dict(params=StegoTrainParams(**TINY, steps=1), out=str(tmp_path / "w.pt"), state_dir=str(tmp_path),
              device="cpu")
    bad = data["features"].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_stego(features=bad, knn=data["knn"], **kw)
    with pytest.raises(ValueError, match="outside \\[0, 2\\)"):
        train_stego(**data, num_classes=2, **kw)
    with pytest.raises(ValueError, match="no valid pixel"):
        train_stego(features=data["features"], knn=data["knn"], labels=torch.full((10, 4, 4), 255), **kw)
    with pytest.raises(ValueError, match="expected \\(10, k\\)"):
        train_stego(features=data["features"], knn=data["knn"][:5], **kw)
    with pytest.raises(ValueError, match="batch_size"):
        StegoTrainParams(batch_size=1)


def test_step_batch_is_deterministic_with_a_derangement_and_top_neighbours(data):
    params = StegoTrainParams(**TINY)
    a, b = step_batch(5, 10, data["knn"], params), step_batch(5, 10, data["knn"], params)
    for k in a:
        assert torch.equal(a[k], b[k])
    assert a["perms"].shape == (params.neg_samples, 4) == (5, 4)  # the reference's 5 random partners
    for perm in a["perms"]:  # each a derangement of the batch: no image is its own random partner
        assert (perm != torch.arange(4)).all() and sorted(perm.tolist()) == [0, 1, 2, 3]
    assert len({tuple(p.tolist()) for p in a["perms"]}) > 1  # independent draws, not one repeated
    assert step_batch(5, 10, data["knn"], StegoTrainParams(**TINY, neg_samples=2))["perms"].shape == (2, 4)
    for i, j in zip(a["idx"].tolist(), a["knn"].tolist()):
        assert j in data["knn"][i, :2].tolist()
    assert a["coords_a"].shape == (4, 3, 3, 2) and not torch.equal(a["coords_a"], a["coords_b"])


def test_every_trainable_term_has_a_gradient_and_probes_do_not_train_the_head(data):
    """corr_* train the head only; cluster trains the centroids only; linear trains the linear probe only."""
    params = StegoTrainParams(**TINY)
    modules, _ = train_mod.build_modules(8, 3, params, torch.device("cpu"))
    batch = step_batch(0, 10, data["knn"], params)
    owners = {"corr_self": "head", "corr_knn": "head", "corr_rand": "head", "cluster": "cluster",
              "linear": "linear"}
    for term, owner in owners.items():
        modules.zero_grad(set_to_none=True)
        losses = train_mod.train_losses(modules, data["features"][batch["idx"]], data["features"][batch["knn"]],
                                        batch, params, data["labels"][batch["idx"]])
        losses[term].backward()
        for name, module in modules.items():
            grads = [p.grad for p in module.parameters()]
            if name == owner:
                assert all(g is not None and float(g.abs().sum()) > 0 for g in grads), (term, name)
            else:
                assert all(g is None or float(g.abs().sum()) == 0 for g in grads), (term, name)


def test_pair_terms_rebuilt_by_hand_self_on_the_anchor_points(data):
    """Without dropout the head is deterministic, so every term can be rebuilt from the batch: self = the
    anchor (coords_a) against itself (the reference's helper(feats, feats, code, code)), knn = anchor vs the
    neighbour at coords_b, rand = the mean over the neg_samples derangements of anchor vs the permuted batch
    at coords_b. The old independent-points self pair (coords_b on one side) gives a different value."""
    params = StegoTrainParams(**TINY, dropout=0.0, neg_samples=3)
    modules, _ = train_mod.build_modules(8, None, params, torch.device("cpu"))
    batch = step_batch(2, 10, data["knn"], params)
    feats, feats_knn = data["features"][batch["idx"]], data["features"][batch["knn"]]
    with torch.no_grad():
        out = train_mod.train_losses(modules, feats, feats_knn, batch, params)
        head, ca, cb, shifts = modules["head"], batch["coords_a"], batch["coords_b"], params.loss
        fa, sa = sample_points(feats, ca), sample_points(head(feats), ca)
        fb, sb = sample_points(feats, cb), sample_points(head(feats), cb)
        self_term = corr_loss(fa, fa, sa, sa, shift=shifts.shift_self)
        knn_term = corr_loss(fa, sample_points(feats_knn, cb), sa, sample_points(head(feats_knn), cb),
                             shift=shifts.shift_knn)
        rand_term = sum(corr_loss(fa, fb[p], sa, sb[p], shift=shifts.shift_rand) for p in batch["perms"]) / 3
        independent = corr_loss(fa, fb, sa, sb, shift=shifts.shift_self)
    torch.testing.assert_close(out["corr_self"], self_term)
    torch.testing.assert_close(out["corr_knn"], knn_term)
    torch.testing.assert_close(out["corr_rand"], rand_term)
    assert abs(float(out["corr_self"]) - float(independent)) > 1e-4


def test_each_head_forward_and_each_branch_draws_its_own_dropout_mask():
    """Dropout 0.5 on 16 channels: two forwards of the same input differ (the batch and its kNN partners get
    their own masks, as the reference runs the net once per image), and within one forward the linear and
    the nonlinear branch see different channel masks (the reference calls its Dropout2d once per branch).
    With dropout 0 all of them are equal."""
    from maskless.stego.model import StegoHead

    x = torch.rand(2, 16, 3, 3) + 0.1  # no zero channel of its own
    for p, differ in ((0.5, True), (0.0, False)):
        torch.manual_seed(0)
        head = StegoHead(16, code_dim=4, dropout=p).train()
        seen = {}
        head.linear.register_forward_pre_hook(lambda m, inp: seen.__setitem__("linear", inp[0]))
        head.nonlinear.register_forward_pre_hook(lambda m, inp: seen.__setitem__("nonlinear", inp[0]))
        first, second = head(x), head(x)
        dropped = {k: (v == 0).all(-1).all(-1) for k, v in seen.items()}  # (B, C) channel masks of forward 2
        assert (not torch.equal(first, second)) == differ
        assert (not torch.equal(dropped["linear"], dropped["nonlinear"])) == differ
        assert bool(dropped["linear"].any()) == differ


def test_feature_dropout_changes_only_the_correlation_signal(data):
    """feature_dropout drops channels of the features that give F (a mask of its own; the reference's
    cfg.dropout), drawn after the head's masks, so the codes are the same with and without it and only F
    moves the self term; with dropout 0 it is a no-op."""
    batch_params = StegoTrainParams(**TINY)
    batch = step_batch(0, 10, data["knn"], batch_params)
    feats, feats_knn = data["features"][batch["idx"]], data["features"][batch["knn"]]
    values = {}
    for fd, p in ((True, 0.5), (False, 0.5), (True, 0.0), (False, 0.0)):
        params = StegoTrainParams(**TINY, dropout=p, feature_dropout=fd)
        modules, _ = train_mod.build_modules(8, None, params, torch.device("cpu"))
        torch.manual_seed(1)
        with torch.no_grad():
            values[fd, p] = float(train_mod.train_losses(modules, feats, feats_knn, batch, params)["corr_self"])
    assert values[True, 0.0] == values[False, 0.0]
    assert values[True, 0.5] != values[False, 0.5]
