"""STEGO training on precomputed frozen features (METHODS.md "STEGO").

- Data: features (N, C, h, w) of the frozen backbone (maskless.stego.features), their kNN (N, k)
  (maskless.stego.knn) and, optionally, label maps (N, H, W) int64 (255 = ignore) for the linear probe.
- Step s: batch_size images (epoch permutations from (seed, epoch), maskless.data.batches.batch_indices);
  for each, a kNN partner drawn uniformly from its first knn_top neighbours and neg_samples random partners,
  each from its own in-batch derangement; two independent sets of points x points coordinates: the anchor's
  (also both sides of the self pair) and the partners' (shared by the kNN and every random partner). All of
  it comes from a numpy generator seeded with (seed, s), and dropout from torch.manual_seed((seed, s)): a
  step never depends on the steps before it.
- As the reference (mhamilton723/STEGO src/train_segmentation.py training_step: self.net(img),
  self.net(img_pos)), the head runs once on the batch and once on the kNN partners, each forward drawing its
  own dropout masks (and one per head branch: maskless.stego.model); with feature_dropout the features that
  give the correlations F are dropped out too, with a mask of their own (DinoFeaturizer.forward returns
  self.dropout(image_feat) when cfg.dropout, True in train_config.yml).
- Loss: the correlation loss (maskless.stego.losses) trains the head; the cluster probe's and the linear
  probe's losses are added to the total but see detached codes, so they train only themselves.
- Optimisation: Adam, lr for the head (5e-4, METHODS.md) and probe_lr for the probes. They are param groups
  of one Adam: Adam's update is per parameter and the groups share no parameter, so this equals separate
  optimizers, and one state file holds it all.
- Resume: state (modules, optimizer, step, loss rows) to state_dir/stego_last.pt every checkpoint_every
  steps (the shared loop, maskless.train), used only when params and data match; removed once `out` is
  written. A resumed run is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from maskless.io import pick_device, torch_save_atomic
from maskless.data.batches import batch_indices
from maskless.resume import resume_key
from maskless.stego.knn import check_knn
from maskless.stego.losses import (TERMS, StegoLossParams, random_coords, random_derangement, sample_points,
                                   stego_losses)
from maskless.stego.model import IGNORE, ClusterProbe, LinearProbe, StegoHead
from maskless.train import LoopParams, Resume, Run, fit

log = logging.getLogger(__name__)

STATE_NAME = "stego_last.pt"
_RESUME_IGNORED = ("checkpoint_every",)
LOSS_TERMS = (*TERMS, "corr", "cluster", "linear")
LOSS_COLUMNS = ("step", "loss", *LOSS_TERMS)


@dataclass
class StegoTrainParams:
    steps: int = 500
    batch_size: int = 16
    lr: float = 5e-4
    probe_lr: float = 5e-3
    code_dim: int = 70
    dropout: float = 0.1
    feature_dropout: bool = True  # the correlation features are dropped out too (reference cfg.dropout)
    n_clusters: int = 5
    points: int = 11
    knn_top: int = 7  # x_knn is drawn from the first knn_top neighbours
    neg_samples: int = 5  # random partners per image and step (reference train_config.yml neg_samples)
    checkpoint_every: int = 100
    seed: int = 0
    loss: StegoLossParams = field(default_factory=StegoLossParams)

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = StegoLossParams(**self.loss)
        name = "StegoTrainParams"
        for key in ("steps", "batch_size", "code_dim", "n_clusters", "points", "knn_top", "neg_samples",
                    "checkpoint_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"{name}.batch_size must be >= 2 (random pairs come from the batch), got "
                             f"{self.batch_size}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"{name}.seed must be an integer >= 0, got {self.seed!r}")
        for key in ("lr", "probe_lr"):
            if not (isinstance(getattr(self, key), (int, float)) and math.isfinite(getattr(self, key))
                    and getattr(self, key) > 0):
                raise ValueError(f"{name}.{key} must be a finite number > 0, got {getattr(self, key)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{name}.dropout must lie in [0, 1), got {self.dropout}")
        if not isinstance(self.feature_dropout, bool):
            raise ValueError(f"{name}.feature_dropout must be true or false, got {self.feature_dropout!r}")

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["loss"] = self.loss.to_dict()
        return out


def data_fingerprint(features: torch.Tensor, knn: torch.Tensor, labels: torch.Tensor | None) -> str:
    """sha256 over the bytes and shapes of features, kNN and labels."""
    h = hashlib.sha256()
    for t in (features, knn, labels):
        if t is None:
            h.update(b"none")
            continue
        arr = np.ascontiguousarray(t.detach().cpu().numpy())
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _check_labels(labels, n_images: int, num_classes: int | None) -> tuple[torch.Tensor, int]:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 3:
        raise ValueError(f"labels must be an int64 tensor (N, H, W), got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
    if labels.shape[0] != n_images:
        raise ValueError(f"labels has {labels.shape[0]} maps but features has {n_images} images")
    valid = labels[labels != IGNORE]
    if valid.numel() == 0:
        raise ValueError("labels hold no valid pixel (all 255 = ignore); pass labels=None to skip the probe")
    if num_classes is None:
        num_classes = int(valid.max()) + 1
        log.info("linear probe: num_classes not given, %d from the largest label id", num_classes)
    if int(valid.min()) < 0 or int(valid.max()) >= num_classes:
        raise ValueError(f"labels hold ids in [{int(valid.min())}, {int(valid.max())}], outside [0, {num_classes}) "
                         "(255 = ignore)")
    return labels, num_classes


def step_batch(step: int, n_images: int, knn: torch.Tensor, params: StegoTrainParams) -> dict:
    """0-based step's image indices (B,), kNN partners (B,), neg_samples in-batch derangements "perms"
    (neg_samples, B) (row n: the batch position of each image's n-th random partner, never itself) and point
    coordinates "coords_a" (anchor and self pair), "coords_b" (kNN and random partners), (B, P, P, 2) each."""
    idx = batch_indices(step, n_images=n_images, batch_size=params.batch_size, seed=params.seed)
    rng = np.random.default_rng([params.seed, step, 1])
    top = min(params.knn_top, knn.shape[1])
    nn_idx = knn[torch.from_numpy(idx), torch.from_numpy(rng.integers(0, top, len(idx)))]  # (B,)
    perms = np.stack([random_derangement(rng, len(idx)) for _ in range(params.neg_samples)])  # (n_neg, B)
    return {"idx": torch.from_numpy(idx), "knn": nn_idx, "perms": torch.from_numpy(perms),
            "coords_a": random_coords(rng, len(idx), params.points),
            "coords_b": random_coords(rng, len(idx), params.points)}


def train_losses(modules: torch.nn.ModuleDict, feats: torch.Tensor, feats_knn: torch.Tensor, batch: dict,
                 params: StegoTrainParams, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Named loss terms of one batch (feats, feats_knn (B, C, h, w)); "loss" is their sum."""
    head = modules["head"]
    codes, codes_knn = head(feats), head(feats_knn)  # (B, D, h, w) each, own dropout masks per forward
    if params.feature_dropout and head.training:  # the correlation signal, a mask of its own (reference)
        feats = torch.nn.functional.dropout2d(feats, params.dropout, training=True)  # (B, C, h, w)
        feats_knn = torch.nn.functional.dropout2d(feats_knn, params.dropout, training=True)
    ca, cb = batch["coords_a"], batch["coords_b"]
    anchor = (sample_points(feats, ca), sample_points(codes, ca))  # (B, C, P, P), (B, D, P, P)
    other = (sample_points(feats, cb), sample_points(codes, cb))  # the batch at the partners' points
    knn_pair = (sample_points(feats_knn, cb), sample_points(codes_knn, cb))
    rand = [(other[0][perm], other[1][perm]) for perm in batch["perms"].to(feats.device)]  # neg_samples pairs
    out = stego_losses(anchor, knn_pair, rand, **params.loss.to_dict())
    out["cluster"] = modules["cluster"].loss(codes)
    out["linear"] = modules["linear"].loss(codes, labels) if "linear" in modules else codes.new_zeros(())
    out["loss"] = out["corr"] + out["cluster"] + out["linear"]
    return out


def build_modules(in_channels: int, num_classes: int | None, params: StegoTrainParams, dev: torch.device):
    torch.manual_seed(params.seed)  # head and probe initialisation
    modules = torch.nn.ModuleDict({"head": StegoHead(in_channels, params.code_dim, params.dropout),
                                   "cluster": ClusterProbe(params.code_dim, params.n_clusters)})
    if num_classes is not None:
        modules["linear"] = LinearProbe(params.code_dim, num_classes)
    modules = modules.to(dev).train()
    groups = [{"params": modules["head"].parameters(), "lr": params.lr},
              {"params": modules["cluster"].parameters(), "lr": params.probe_lr}]
    if "linear" in modules:
        groups.append({"params": modules["linear"].parameters(), "lr": params.probe_lr})
    return modules, torch.optim.Adam(groups)


def _checked_inputs(features, knn, labels, num_classes):
    if not isinstance(features, torch.Tensor) or features.ndim != 4 or not features.is_floating_point():
        raise ValueError(f"features must be a float tensor (N, C, h, w), got "
                         f"{getattr(features, 'dtype', type(features).__name__)} "
                         f"{tuple(getattr(features, 'shape', ()))}")
    if not torch.isfinite(features).all():
        raise ValueError("features hold NaN or inf values")
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"STEGO needs at least 2 images, got {n}")
    knn = check_knn(knn, n)
    if labels is None:
        return features, knn, None, None
    labels, num_classes = _check_labels(labels, n, num_classes)
    return features, knn, labels, num_classes


def train_stego(*, features: torch.Tensor, knn: torch.Tensor, params: StegoTrainParams, out: str,
                state_dir: str, device: str = "auto", labels: torch.Tensor | None = None,
                num_classes: int | None = None, loss_log: str | None = None, log_every: int = 25,
                stop_after: int | None = None, feature_source: dict | None = None) -> dict:
    """Train the STEGO head and probes; write `out` as {"head", "cluster", "linear" (None without labels),
    "params": resolved params, "kind": "stego"} (state dicts, loadable with weights_only=True).
    feature_source: how the features were made (layer, input size, backbone), kept in params["features"] so
    the checkpoint alone says how to run it.

    labels: (N, H, W) int64 (255 = ignore) for the linear probe; None skips the probe (reason logged).
    num_classes: classes of the labels (inferred from them when None). stop_after: testing hook; stop once
    that many steps are done, writing neither `out` nor loss_log, as a kill would. Returns a summary.
    """
    features, knn, labels, num_classes = _checked_inputs(features, knn, labels, num_classes)
    if labels is None:
        log.info("linear probe skipped: no ground-truth labels were given (it is an evaluation-only probe)")
    dev = pick_device(device)
    n, in_channels = features.shape[:2]
    fingerprint = data_fingerprint(features, knn, labels)
    modules, opt = build_modules(in_channels, num_classes, params, dev)

    log.info("STEGO on %d images, features %s, %d steps of %d, code dim %d, %d clusters, linear probe %s, "
             "device %s", n, tuple(features.shape[1:]), params.steps, params.batch_size, params.code_dim,
             params.n_clusters, f"{num_classes} classes" if labels is not None else "skipped", dev)

    def step(batch: dict, step: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(params.seed * 1_000_003 + step)  # dropout masks depend on (seed, step) only
        feats = features[batch["idx"]].to(dev)  # (B, C, h, w)
        feats_knn = features[batch["knn"]].to(dev)
        lab = labels[batch["idx"]].to(dev) if labels is not None else None
        return train_losses(modules, feats, feats_knn, batch, params, lab)

    def save() -> None:
        resolved = {**params.to_dict(), "in_channels": int(in_channels), "feature_hw": list(features.shape[2:]),
                    "num_classes": num_classes, "images": int(n), "knn_k": int(knn.shape[1]), "data": fingerprint,
                    "linear_probe": "trained" if labels is not None else "skipped: no labels",
                    "features": dict(feature_source or {})}
        cpu = {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
        torch_save_atomic({"head": cpu["head"], "cluster": cpu["cluster"], "linear": cpu.get("linear"),
                           "params": resolved, "kind": "stego"}, out)

    run = Run("STEGO", log, step, lambda start: (step_batch(s, n, knn, params) for s in range(start, params.steps)),
              modules, opt, LOSS_COLUMNS, save, images_per_step=params.batch_size)
    resume = Resume(Path(state_dir) / STATE_NAME, resume_key({**params.to_dict(), "num_classes": num_classes},
                                                             _RESUME_IGNORED), fingerprint)
    summary = fit(run, LoopParams(params.steps, params.checkpoint_every, log_every), resume, dev=dev,
                  loss_log=loss_log, stop_after=stop_after)
    if not summary["stopped"]:
        summary.update(images=int(n), out=str(out))
    return summary
