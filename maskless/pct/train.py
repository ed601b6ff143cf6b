"""PCT training (METHODS.md "PCT") and a single supervised network (strong-only baseline and retrain on pseudo
labels), both on the shared training loop (maskless.train, through `_fit`). The data side (batches,
augmentation, start-up checks, fingerprint) is maskless.pct.train_data, a step's loss terms maskless.pct.terms.

Data (sequences indexed 0..N-1, lists or lazy): images, uint8 (H, W, 3) RGB; labels, uint8/int (H, W) label
maps with 0 = background, 1..K-1 the classes, 255 = ignore, or None for a weak image (PCT only); tags, per
image an iterable of foreground class ids (PCT; a strong image's tags must equal its label map's classes).

- Lazy data: a sequence whose items are decoded on access may describe them without decoding
  (maskless.pct.stage.LazyMaps does): content_keys() per item a string naming its content (a file's sha256
  and how it is decoded), known_shapes() per item (H, W), source_paths() the files (for messages),
  present_items() which items are not None. Then the start-up reads no image: image sizes come from
  known_shapes (dtype and channels are checked when a batch reads an image) and the resume fingerprint
  hashes the keys. Only the label maps a run trains on are read before training (PCT: the strong ones;
  supervised: all used), one at a time (`threads` at once, none kept), to check their size, values and
  tags; errors name the image and the label's file. Sequences without these methods (lists) are read item
  by item, and their fingerprint is the one they had before keys existed (older resume states still match).
- Batches (StepBatches): item s is the batch of step s, a pure function of (seed, s) and the rank, made in
  the training process (num_workers 0) or by num_workers DataLoader workers: the same batches, so the same
  result; num_workers is not part of the resume key.

- Augmentation (per sample, random only through (seed, step)): resize to a short side of input_size times
  a scale drawn from scale_range, horizontal flip, pad (ImageNet mean colour, label 255) and a random
  input_size square crop. A weak image keeps its full-image tags after cropping (an object may be cropped
  out: accepted tag noise); padding is excluded from its max pooling and cross-supervision targets.
- PCT batch: batch_size / 2 strong and batch_size / 2 weak images, each drawn epoch-wise
  (maskless.data.batches.batch_indices). Hybrid-Net H and Pseudo-Net P see the same batch. Terms
  (maskless.pct.losses): h_cce = CCE(H_strong, GT); h_mlsm = MLSM(gmp(H_weak), tags); p_cce = CCE(P_strong,
  GT); h2p = CCE(P_weak, argmax H_weak); p2h = mean(w CCE(H_weak, argmax P_weak)), w from the dynamic
  evaluation, which is updated with this step's P predictions on the strong half before the weights are
  read (no update when the half is empty). With use_contextrast, {h,p}_ctr_nce / {h,p}_ctr_pa on the
  strong half (maskless.pct.contextrast). A split without strong or without weak images is a ValueError
  (train_supervised is the strong-only path); a batch half that is empty gives zero for its terms.
- Supervised: plain cross entropy (CCE with every class present) on every labelled image (+ Contextrast).
- Optimiser SGD (momentum, weight decay) or AdamW; poly learning rate lr (1 - s / steps) ^ poly_power, the
  backbone at lr x backbone_lr_mult (reference 0.1 with a pretrained backbone). AMP on CUDA only.
- Resume (maskless.train): state in state_dir every checkpoint_every steps, used when params, data and
  backbone match; bit-identical on CPU. Non-finite network outputs or terms raise FloatingPointError naming
  them and the step. Output {"model": state_dict, "params": resolved dict, "kind": "pct" | "segnet"}.
- Data parallel (maskless.dist, config key train_processes): each rank takes its share of both halves of the
  global batch; DDP averages the gradients of each network; the dynamic evaluation sums its counts over the
  ranks (equal weights everywhere); rank 0 alone writes checkpoints, the model and the loss log.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from maskless import dist
from maskless.io import pick_device, set_threads, torch_save_atomic
from maskless.models.resnet import normalize
from maskless.pct.contextrast import ContextrastParams
from maskless.pct.losses import DynamicEvaluation
from maskless.pct.model import SegNet, SegNetParams, build_segnet
from maskless.pct.split import tag_matrix, validate_tags
from maskless.pct.terms import PCTPair, pct_losses, supervised_losses, term_names
from maskless.pct.train_data import (Batch, StepBatches, check_images, check_labels, data_fingerprint,
                                     has_label_map)
from maskless.resume import resume_key
from maskless.train import LoopParams, Resume, Run, Schedule, autocast, fit, step_batches, use_amp

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
_RESUME_IGNORED = ("checkpoint_every", "num_workers")  # they do not change the result


@dataclass
class SegTrainParams:
    steps: int = 300
    batch_size: int = 8
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    backbone_lr_mult: float = 1.0
    grad_clip: float = 0.0  # global L2 norm; 0 disables
    input_size: int = 128
    scale_range: tuple[float, float] = (0.75, 1.25)
    flip: bool = True
    amp: bool = True  # CUDA only
    checkpoint_every: int = 50
    seed: int = 0
    use_contextrast: bool = False
    num_workers: int = 0  # DataLoader workers making the batches; 0 = in the training process (same result)
    model: SegNetParams = field(default_factory=SegNetParams)
    contextrast: ContextrastParams = field(default_factory=ContextrastParams)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = SegNetParams(**self.model)
        if isinstance(self.contextrast, dict):
            self.contextrast = ContextrastParams(**self.contextrast)
        self.scale_range = tuple(float(x) for x in self.scale_range)
        name = type(self).__name__
        for key in ("steps", "batch_size", "input_size", "checkpoint_every"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {getattr(self, key)!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"{name}.seed must be an integer >= 0, got {self.seed!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"{name}.num_workers must be an integer >= 0, got {self.num_workers!r}")
        for key in ("lr", "momentum", "weight_decay", "poly_power", "backbone_lr_mult", "grad_clip"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}.{key} must be a finite number >= 0, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"{name}.lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{name}.optimizer {self.optimizer!r} unknown; choices: {list(OPTIMIZERS)}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"{name}.scale_range must be (lo, hi) with 0 < lo <= hi, got {self.scale_range}")
        if self.input_size < 32:
            raise ValueError(f"{name}.input_size must be >= 32 (output stride 16 and BatchNorm), "
                             f"got {self.input_size}")

    def to_dict(self) -> dict:
        """JSON-like values (nested dicts, lists for tuples), for checkpoints and params files."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"], out["contextrast"] = self.model.to_dict(), self.contextrast.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass
class PCTParams(SegTrainParams):
    """SegTrainParams plus the PCT term weights and dynamic evaluation (maskless.pct.losses)."""

    mlsm_weight: float = 1.0
    pseudo_gt_weight: float = 1.0  # P's CCE against GT on the strong half
    h2p_weight: float = 1.0
    p2h_weight: float = 1.0
    ema_momentum: float = 0.99
    iou_power: float = 8.0
    unseen_iou: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"PCTParams.batch_size must be even and >= 2 (half strong, half weak), "
                             f"got {self.batch_size}")
        for key in ("mlsm_weight", "pseudo_gt_weight", "h2p_weight", "p2h_weight"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"PCTParams.{key} must be a finite number >= 0, got {v!r}")
        DynamicEvaluation(2, momentum=self.ema_momentum, power=self.iou_power, unseen_iou=self.unseen_iou)


def schedule(params: SegTrainParams) -> Schedule:
    """Poly learning rate (DeepLab): lr (1 - step / steps) ^ poly_power."""
    return Schedule(params.lr, params.steps, "poly", power=params.poly_power)


def lr_at(step: int, params: SegTrainParams) -> float:
    """Learning rate of 0-based `step` (schedule)."""
    return schedule(params)(step)


# ---------------------------------------------------------------- the shared loop


def make_optimizer(nets: Iterable[SegNet], params: SegTrainParams) -> torch.optim.Optimizer:
    backbone, head = [], []
    for net in nets:
        for name, p in net.named_parameters():
            (backbone if name.startswith("backbone.") else head).append(p)
    groups = [{"params": backbone, "lr_mult": params.backbone_lr_mult}, {"params": head, "lr_mult": 1.0}]
    if params.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.SGD(groups, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)


def check_outputs(outputs: dict[str, Tensor], what: str, step: int) -> None:
    bad = [k for k, v in outputs.items() if not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"{what} step {step}: non-finite network outputs {bad}; try a lower lr, "
                                 "grad_clip > 0 or amp: false")


@dataclass
class _Run:
    """What differs between PCT and supervised training; `_fit` does the rest."""

    what: str  # "PCT" / "supervised", for messages
    kind: str  # checkpoint kind
    module: nn.Module
    nets: list[SegNet]
    batches: StepBatches  # 0-based step -> batch
    losses: Callable[[Batch, int], tuple[dict[str, Tensor], dict]]  # (batch, step) -> (terms, stats)


def _fit(run: _Run, params: SegTrainParams, *, fingerprint: str, out: str, state_dir: str, dev,
         loss_log: str | None, log_every: int, stop_after: int | None, resolved: dict) -> dict:
    """The shared loop (maskless.train.fit) on `run`: poly lr, the backbone at backbone_lr_mult, clipping over
    every network's parameters; the statistics are logged beside the terms, never summed into the loss."""
    terms_n, stats_n = term_names(run.kind, params)
    opt = make_optimizer(run.nets, params)
    amp = use_amp(params.amp, dev)
    run.module.train()

    def step(batch: Batch, step: int) -> dict[str, Tensor]:
        with autocast(dev, amp):
            terms, stats = run.losses(batch, step)
        return {**terms, **{k: torch.tensor(float(stats[k]), dtype=torch.float64) for k in stats_n}}

    def save() -> None:
        state_dict = {k: v.detach().cpu().clone() for k, v in run.module.state_dict().items()}
        torch_save_atomic({"model": state_dict, "params": {**params.to_dict(), **resolved, "data": fingerprint},
                           "kind": run.kind}, out)

    loop_run = Run(run.what, log, step, lambda start: step_batches(run.batches, start, params.num_workers,
                                                                   pin_memory=dev.type == "cuda"),
                   run.module, opt, ("step", "loss", *terms_n, *stats_n, "lr"), save,
                   clip=[p for n in run.nets for p in n.parameters()], stats=stats_n,
                   images_per_step=params.batch_size)
    loop = LoopParams(params.steps, params.checkpoint_every, log_every, schedule(params),
                      params.grad_clip, params.amp)
    resume = Resume(Path(state_dir) / f"{run.kind}_last.pt", resume_key(params.to_dict(), _RESUME_IGNORED),
                    fingerprint)
    summary = fit(loop_run, loop, resume, dev=dev, loss_log=loss_log, stop_after=stop_after)
    if not summary["stopped"] and summary["rank"] == 0:
        summary["out"] = str(out)
    return summary


# ---------------------------------------------------------------- entry points


def batch_to(batch: Batch, dev) -> Batch:
    return dataclasses.replace(batch, images=batch.images.to(dev), labels=batch.labels.to(dev),
                               valid=batch.valid.to(dev), present=batch.present.to(dev))


def train_pct(*, images: Sequence[np.ndarray], labels: Sequence[np.ndarray | None], tags: Sequence[Iterable[int]],
              params: PCTParams, out: str, state_dir: str, backbone: str | None = None, device: str = "auto",
              threads: int | None = None, loss_log: str | None = None, log_every: int = 10,
              stop_after: int | None = None) -> dict:
    """Cross-train Hybrid-Net and Pseudo-Net (module doc); labels[i] None marks a weak image.

    backbone: checkpoint for both backbones (maskless.models.weights.load_backbone), None = random init.
    Writes `out` as {"model": PCTPair state dict ("hybrid.*", "pseudo.*", "dyn.*"), "params", "kind": "pct"}
    (maskless.pct.model.load_segnet(out, which=...) rebuilds one network). stop_after: testing hook; stop
    once that many steps are done, writing neither out nor loss_log, as a kill would.
    """
    set_threads(threads)
    dev = dist.device(pick_device(device))
    dist.check_batch(params.batch_size // 2, "pct.train.batch_size (half of it, the strong or weak share)")
    image_shapes = check_images(images, labels)
    if len(tags) != len(images):
        raise ValueError(f"tags has {len(tags)} entries but images has {len(images)}")
    k = params.model.num_classes
    has_label = has_label_map(labels)
    strong = [i for i, has in enumerate(has_label) if has]
    weak = [i for i, has in enumerate(has_label) if not has]
    if not strong or not weak:
        raise ValueError(f"PCT needs strong and weak images, got {len(strong)} strong and {len(weak)} weak; "
                         "with no weak images train the strong-only network with train_supervised")
    validate_tags(dict(enumerate(tags)), k, tag_file="tags argument")  # class ids of every image's tags
    check_labels(labels, strong, image_shapes, k, tags, tag_file="tags argument", threads=threads or 1)
    present = tag_matrix(tags, k)
    fingerprint = data_fingerprint(images, labels, tags, backbone)
    torch.manual_seed(params.seed)
    hybrid = build_segnet(params.model, backbone)
    torch.manual_seed(params.seed + 1)  # P starts from a different decoder than H
    pseudo = build_segnet(params.model, backbone)
    dyn = DynamicEvaluation(k, momentum=params.ema_momentum, power=params.iou_power, unseen_iou=params.unseen_iou)
    pair = PCTPair(hybrid, pseudo, dyn).to(dev)
    half = params.batch_size // 2
    # DDP wrappers for the forward calls (the embedding head is unused without Contextrast).
    hybrid_fwd, pseudo_fwd = dist.wrap(hybrid, find_unused=True), dist.wrap(pseudo, find_unused=True)
    batches = StepBatches(images, labels, present, strong, weak, half, half, params)

    def losses(b: Batch, step: int):
        b = batch_to(b, dev)
        x = normalize(b.images)  # (B, 3, S, S)
        ho = hybrid_fwd(x, embeddings=params.use_contextrast)
        po = pseudo_fwd(x, embeddings=params.use_contextrast)
        check_outputs({"hybrid logits": ho["logits"], "pseudo logits": po["logits"]}, "PCT", step)
        with torch.autocast(device_type=dev.type, enabled=False):  # losses in float32
            return pct_losses(ho, po, b, dyn, params)

    log.info("PCT: %d strong + %d weak images, %d classes, %d steps of %d+%d, device %s", len(strong),
             len(weak), k, params.steps, half, half, dev)
    run = _Run("PCT", "pct", pair, [hybrid, pseudo], batches, losses)
    summary = _fit(run, params, fingerprint=fingerprint, out=out, state_dir=state_dir, dev=dev,
                   loss_log=loss_log, log_every=log_every, stop_after=stop_after,
                   resolved={"strong": len(strong), "weak": len(weak), "backbone": backbone})
    return {**summary, "strong": len(strong), "weak": len(weak)}


def train_supervised(*, images: Sequence[np.ndarray], labels: Sequence[np.ndarray | None],
                     params: SegTrainParams, out: str, state_dir: str, backbone: str | None = None,
                     device: str = "auto", threads: int | None = None, loss_log: str | None = None,
                     log_every: int = 10, stop_after: int | None = None) -> dict:
    """One network on pixel labels: the strong-only baseline (labels of the strong images) or the retrain on
    pseudo labels. Images whose label is None are left out (counted and logged). Writes `out` as
    {"model": SegNet state dict, "params", "kind": "segnet"}."""
    set_threads(threads)
    dev = dist.device(pick_device(device))
    dist.check_batch(params.batch_size, "pct.train.batch_size")
    image_shapes = check_images(images, labels)
    k = params.model.num_classes
    used = [i for i, has in enumerate(has_label_map(labels)) if has]
    if not used:
        raise ValueError("train_supervised: no image has a label map")
    if len(used) < len(images):
        log.info("supervised: %d of %d images have no label map and are left out", len(images) - len(used),
                 len(images))
    check_labels(labels, used, image_shapes, k, None, tag_file="<tags>", threads=threads or 1)
    fingerprint = data_fingerprint(images, labels, None, backbone)
    torch.manual_seed(params.seed)
    net = build_segnet(params.model, backbone).to(dev)
    net_fwd = dist.wrap(net, find_unused=True)  # DDP in a process group (the embedding head may be unused)
    everything = np.ones((len(images), k), dtype=bool)
    batches = StepBatches(images, labels, everything, used, [], params.batch_size, 0, params)

    def losses(b: Batch, step: int):
        b = batch_to(b, dev)
        o = net_fwd(normalize(b.images), embeddings=params.use_contextrast)
        check_outputs({"logits": o["logits"]}, "supervised", step)
        with torch.autocast(device_type=dev.type, enabled=False):
            return supervised_losses(o, b, params)

    log.info("supervised: %d labelled images, %d classes, %d steps of %d, device %s", len(used), k,
             params.steps, params.batch_size, dev)
    run = _Run("supervised", "segnet", net, [net], batches, losses)
    summary = _fit(run, params, fingerprint=fingerprint, out=out, state_dir=state_dir, dev=dev,
                   loss_log=loss_log, log_every=log_every, stop_after=stop_after,
                   resolved={"images": len(used), "left_out": len(images) - len(used), "backbone": backbone})
    return {**summary, "images": len(used), "left_out": len(images) - len(used)}
