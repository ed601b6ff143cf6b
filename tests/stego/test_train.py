"""STEGO training loop: smoke and checkpoint contents, exact resume, no-label skip, NaN naming, batches."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from maskless.stego import train as train_mod
from maskless.stego.knn import compute_knn, pool_features
from maskless.stego.losses import StegoLossParams
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


def test_resume_is_bit_identical(tmp_path, data):
    params = StegoTrainParams(**TINY, steps=6, checkpoint_every=3)
    full = tmp_path / "full.pt"
    train_stego(**data, params=params, out=str(full), state_dir=str(tmp_path / "a"), device="cpu",
                loss_log=str(tmp_path / "full.csv"))
    state = tmp_path / "b"
    stopped = train_stego(**data, params=params, out=str(tmp_path / "x.pt"), state_dir=str(state), device="cpu",
                          stop_after=4)
    assert stopped["stopped"] and not (tmp_path / "x.pt").exists()
    assert (state / train_mod.STATE_NAME).exists()
    resumed = train_stego(**data, params=params, out=str(tmp_path / "resumed.pt"), state_dir=str(state),
                          device="cpu", loss_log=str(tmp_path / "resumed.csv"))
    assert resumed["start_step"] == 3 and resumed["resumed"]
    a, b = _load(full), _load(tmp_path / "resumed.pt")
    for part in ("head", "cluster", "linear"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert (tmp_path / "full.csv").read_text() == (tmp_path / "resumed.csv").read_text()


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
    assert (a["perm"] != torch.arange(4)).all() and sorted(a["perm"].tolist()) == [0, 1, 2, 3]
    for i, j in zip(a["idx"].tolist(), a["knn"].tolist()):
        assert j in data["knn"][i, :2].tolist()
    assert a["coords_a"].shape == (4, 3, 3, 2) and not torch.equal(a["coords_a"], a["coords_b"])


def test_every_trainable_term_has_a_gradient_and_probes_do_not_train_the_head(data):
    """corr_* train the head only; cluster trains the centroids only; linear trains the linear probe only."""
    params = StegoTrainParams(**TINY)
    modules, _ = train_mod._build(8, 3, params, torch.device("cpu"))
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
