"""Self-supervised SOLOv2 training on coarse masks (METHODS.md "Self-supervised SOLO (FreeSOLO)").

Follows maskless.pretrain.train's design:
- Data (maskless.solo.data): the manifest images that have at least one coarse mask in the mask index;
  images without masks (or absent from the index) are counted, logged and left out (with
  background_images, indexed images with zero masks are kept as all-background samples: they feed only the
  focal loss's negatives). Per step: weak geometry, copy-paste, strong view, padding to a common multiple
  of 32, assign_targets per view's masks, Lab at mask resolution.
- Views (`views`): "strong" trains on the strong view only: its geometry is the weak view's, so the coarse
  masks stay aligned while the colours vary; "weak" on the weak view only; "both" (default, FreeSOLO's) puts
  both views of each image in the batch (2 x batch_size samples, twice the compute). Copy-paste
  (maskless.solo.augment) goes onto the strong view alone by default (copy_paste_view "strong", FreeSOLO's),
  which then has masks of its own; with copy_paste_view "both" the two views share the pasted masks.
- Schedule: SGD (momentum 0.9, weight decay 1e-4), linear warm-up over warmup_steps from warmup_start x lr
  (detectron2's WarmupMultiStepLR "linear": factor warmup_start (1 - a) + a, a = step / warmup_steps), then
  constant ("constant", FreeSOLO's freesolo_30k.yaml: STEPS empty), cosine to zero ("cosine") or x0.1 at
  lr_decay_at fractions of the steps ("step", detectron-style). Gradients are
  clipped to grad_clip (global L2 norm; 35 as in the SOLOv2 mmdet configs; 0 disables).
- Backbone BatchNorm frozen (freeze_backbone_bn): statistics and affine kept, as the reference's FrozenBN.
- Determinism and resume: batch of step s from (seed, s) only; state (model, optimizer, AMP scaler, step,
  loss rows, torch RNG) to state_dir/solo_last.pt every checkpoint_every steps, used only when params,
  images, masks and backbone match; removed once out_weights is written. Resume is bit-identical on CPU.
- Data parallel (maskless.dist, config key train_processes): each rank trains on its share of the global
  batch; DDP averages the gradients of SOLO (and of the EEC head) before clipping; logged values are rank
  means; rank 0 alone writes checkpoints, weights and the loss log.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from maskless import dist
from maskless.data.manifest import read_manifest
from maskless.io import pick_device, set_threads, torch_save_atomic
from maskless.models.resnet import normalize
from maskless.params import from_config
from maskless.resume import resume_key
from maskless.solo.eec import EECParams
from maskless.solo.augment import SoloAugmentParams
from maskless.solo.data import (SampleSource, StepBatches, data_fingerprint, make_batch, mask_counts,  # noqa: F401
                                select_images)
from maskless.solo.losses import TERMS, SoloLossWeights, solo_losses
from maskless.solo.pairwise import lab_at_mask_resolution
from maskless.solo.eec_train import EEC_COLUMNS, EECState, eec_losses
from maskless.solo.model import SOLOv2, SoloModelParams
from maskless.solo.targets import SoloGeometry
from maskless.solo.exemplar_pool import ExemplarPool
from maskless.solo.predict import load_solo
from maskless.store import MaskStore
from maskless.train import LoopParams, Resume, Run, Schedule, autocast, fit, prefetch, step_batches, use_amp
from maskless.models.freeze import freeze_bn, freeze_stages

log = logging.getLogger(__name__)

STATE_NAME = "solo_last.pt"
GEOMETRIES = {"small": SoloGeometry.small, "reference": SoloGeometry.reference}
SCHEDULES = ("constant", "cosine", "step")
VIEWS = ("strong", "weak", "both")
PASTE_SOURCES, PASTE_VIEWS = ("reverse", "random"), ("strong", "both")
# maskless's copy-paste before issue 15, which config.yaml pins: what a run whose resolved params predate a
# copy_paste_ key did (bench/ scripts that replay a finished run fill the missing keys with these).
EARLIER_COPY_PASTE = dict(copy_paste_prob=0.5, copy_paste_min=1, copy_paste_max=3, copy_paste_max_ioy=None,
                          copy_paste_source="random", copy_paste_view="both", copy_paste_occlude_pasted=True,
                          copy_paste_min_visible_px=16)
_RESUME_IGNORED = ("checkpoint_every", "num_workers")  # fields that do not change the result
LOSS_COLUMNS = ("step", "loss", *TERMS, "num_pos", "num_emb", "mask_fg", "lr")
# Collapse warning: the positives' masks predicted foreground on at least this share of their pixels for this
# many steps in a row (maskless.solo.losses.foreground_fraction; BENCHMARKS.md "SOLO round 0 collapses").
COLLAPSE_FG, COLLAPSE_STEPS = 0.97, 10


@dataclass
class SoloTrainParams:
    steps: int = 300
    batch_size: int = 8
    lr: float = 0.001  # FreeSOLO's BASE_LR (at batch 16)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    warmup_start: float = 0.01  # FreeSOLO's WARMUP_FACTOR
    schedule: str = "constant"  # FreeSOLO's WarmupMultiStepLR without steps
    lr_decay_at: tuple[float, ...] = (2 / 3, 8 / 9)  # "step" schedule: fractions of steps, x0.1 at each
    grad_clip: float = 35.0
    input_size: int = 160
    scale_jitter: tuple[float, float] = (0.8, 1.2)
    views: str = "both"  # FreeSOLO: each batch holds the strong and the weak view of every image
    random_erasing: bool = True  # FreeSOLO's three RandomErasing passes on the strong view
    # Copy-paste: FreeSOLO's by default (maskless.solo.augment; the schema's descriptions cite its code)
    copy_paste_prob: float = 1.0
    copy_paste_min: int = 0
    copy_paste_max: int | None = None  # None: up to all the source's instances
    copy_paste_max_ioy: float | None = 0.5  # FreeSOLO's overlap filter; None: none
    copy_paste_source: str = "reverse"
    copy_paste_view: str = "strong"
    copy_paste_occlude_pasted: bool = False
    copy_paste_min_visible_px: int = 1
    amp: bool = True  # CUDA only
    checkpoint_every: int = 50
    num_workers: int = 0  # batch-building processes (0: in the training process); the same batches either way
    seed: int = 0
    freeze_backbone_bn: bool = True
    freeze_at: int = 0  # detectron2's BACKBONE.FREEZE_AT: FreeSOLO's freesolo_30k.yaml sets 0 (nothing frozen)
    background_images: bool = False  # also train on indexed images with zero masks (all-background samples)
    geometry: str | SoloGeometry = "small"  # a preset name (GEOMETRIES) or explicit values (config)
    model: SoloModelParams = field(default_factory=SoloModelParams)
    loss: SoloLossWeights = field(default_factory=SoloLossWeights)
    eec: EECParams | None = None  # Exemplar-FreeSOLO's contrastive term (needs an exemplar pool); None: off

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = SoloModelParams(**self.model)
        if isinstance(self.loss, dict):
            self.loss = SoloLossWeights(**self.loss)
        if isinstance(self.geometry, dict):
            self.geometry = SoloGeometry(**self.geometry)
        if isinstance(self.eec, dict):
            self.eec = EECParams(**self.eec)
        self.lr_decay_at = tuple(float(x) for x in self.lr_decay_at)
        self.scale_jitter = tuple(float(x) for x in self.scale_jitter)
        name = "SoloTrainParams"
        for key in ("steps", "batch_size", "input_size", "checkpoint_every"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.freeze_at not in range(6):
            raise ValueError(f"{name}.freeze_at must be 0..5 (0 none, 1 stem, 2 stem + res2, ...), got "
                             f"{self.freeze_at!r}")
        for key in ("warmup_steps", "copy_paste_min", "seed", "num_workers"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise ValueError(f"{name}.{key} must be an integer >= 0, got {getattr(self, key)!r}")
        self._check_copy_paste(name)
        for key in ("lr", "momentum", "weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise ValueError(f"{name}.{key} must be a finite number >= 0, got {getattr(self, key)!r}")
        if not self.lr > 0:
            raise ValueError(f"{name}.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_start <= 1.0:
            raise ValueError(f"{name}.warmup_start must lie in [0, 1], got {self.warmup_start}")
        if not 0.0 <= self.copy_paste_prob <= 1.0:
            raise ValueError(f"{name}.copy_paste_prob must lie in [0, 1], got {self.copy_paste_prob}")
        if self.copy_paste_max_ioy is not None and not 0.0 < self.copy_paste_max_ioy <= 1.0:
            raise ValueError(f"{name}.copy_paste_max_ioy must lie in (0, 1] or be null, got {self.copy_paste_max_ioy}")
        if len(self.scale_jitter) != 2 or not 0 < self.scale_jitter[0] <= self.scale_jitter[1]:
            raise ValueError(f"{name}.scale_jitter must be (lo, hi) with 0 < lo <= hi, got {self.scale_jitter}")
        if any(not 0 < x < 1 for x in self.lr_decay_at):
            raise ValueError(f"{name}.lr_decay_at must be fractions in (0, 1), got {self.lr_decay_at}")
        checked = [("schedule", SCHEDULES), ("views", VIEWS), ("copy_paste_source", PASTE_SOURCES),
                   ("copy_paste_view", PASTE_VIEWS)]
        if not isinstance(self.geometry, SoloGeometry):
            checked.append(("geometry", tuple(GEOMETRIES)))
        for key, choices in checked:
            if getattr(self, key) not in choices:
                raise ValueError(f"{name}.{key} {getattr(self, key)!r} unknown; choices: {list(choices)}")
        if self.solo_geometry().grids != self.model.grids:
            raise ValueError(f"{name}.geometry has grids {self.solo_geometry().grids} but "
                             f"{name}.model.grids is {self.model.grids}; they must be equal")

    def _check_copy_paste(self, name: str) -> None:
        cap = self.copy_paste_max
        if cap is not None and (not isinstance(cap, int) or cap < self.copy_paste_min):
            raise ValueError(f"{name}.copy_paste_max must be null or an integer >= copy_paste_min "
                             f"({self.copy_paste_min}), got {cap!r}")
        if not isinstance(self.copy_paste_min_visible_px, int) or self.copy_paste_min_visible_px < 1:
            raise ValueError(f"{name}.copy_paste_min_visible_px must be an integer >= 1, got "
                             f"{self.copy_paste_min_visible_px!r}")
        if self.views == "weak" and self.copy_paste_view == "strong" and self.copy_paste_prob > 0:
            raise ValueError(f"{name}: views 'weak' with copy_paste_view 'strong' would train on no pasted "
                             "instance; set copy_paste_view 'both', or copy_paste_prob 0 for no copy-paste")

    def solo_geometry(self) -> SoloGeometry:
        return self.geometry if isinstance(self.geometry, SoloGeometry) else GEOMETRIES[self.geometry]()

    def augment_params(self) -> SoloAugmentParams:
        paste = {f.name: getattr(self, f.name) for f in dataclasses.fields(SoloAugmentParams)
                 if f.name.startswith("copy_paste_")}
        return SoloAugmentParams(input_size=self.input_size, scale_jitter=self.scale_jitter,
                                 random_erasing=self.random_erasing, **paste)

    def to_dict(self) -> dict:
        """JSON-like values (nested dicts, lists for tuples), for checkpoints and params files."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = self.model.to_dict()
        out["loss"] = dataclasses.asdict(self.loss)
        out["eec"] = dataclasses.asdict(self.eec) if self.eec is not None else None
        if isinstance(self.geometry, SoloGeometry):
            g = dataclasses.asdict(self.geometry)
            out["geometry"] = {k: [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v
                               for k, v in g.items()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# Where SOLO's batches are made in a thread one step ahead (maskless.train.prefetch; the same batches either
# way). Not on CPU: with torch's threads on every core the thread competes with the step, and on 2 cores at 2
# threads it cost 15% of the images per second while cutting the data wait from 4.9% to 0.4% of the time
# (BENCHMARKS.md "SOLO training throughput", bench/solo_train.py --compare-prefetch).
PREFETCH_DEVICES = ("cuda",)


def params_from_config(solo: dict, *, arch: str, emb_dim: int, seed: int, steps: int | None = None,
                       eec: dict | None = None, num_workers: int = 0) -> SoloTrainParams:
    """SoloTrainParams from the `solo` section's algorithm keys (maskless.params.section_params; the rule's
    param) through maskless.params.from_config. Derived from other sections: the model's arch (pretrain.arch),
    its embedding dimension (freemask.embedding_dim: the embedding loss compares the two), its grids and
    levels (solo.geometry's), and EEC (exemplar.eec, for the exemplar variants); num_workers is the workflow
    key solo.num_workers, which the rule does not pass as a param (it does not change the result)."""
    geo = dict(solo["geometry"])
    levels = geo.pop("levels")
    model = from_config(SoloModelParams, solo["model"], "solo.model", arch=arch, emb_dim=emb_dim,
                        grids=tuple(geo["grids"]), levels=tuple(levels))
    values = {**solo, "geometry": geo, "model": model, **({"steps": steps} if steps is not None else {})}
    return from_config(SoloTrainParams, values, "solo", seed=seed, num_workers=num_workers,
                       eec=from_config(EECParams, eec, "exemplar.eec") if eec else None)


def schedule(params: SoloTrainParams) -> Schedule:
    """The learning-rate schedule (module docstring)."""
    return Schedule(params.lr, params.steps, params.schedule, params.warmup_steps, params.warmup_start,
                    params.lr_decay_at)


def lr_at(step: int, params: SoloTrainParams) -> float:
    """Learning rate of 0-based `step` (schedule)."""
    return schedule(params)(step)


def loss_columns(params: SoloTrainParams) -> tuple[str, ...]:
    """Columns of the loss log: loss_dice after the terms with the supervised mask loss (loss.mask "dice");
    the EEC term and its counts before lr when EEC is on."""
    columns = LOSS_COLUMNS
    if params.loss.mask == "dice":
        at = columns.index(TERMS[-1]) + 1
        columns = (*columns[:at], "loss_dice", *columns[at:])
    return columns if params.eec is None else (*columns[:-1], *EEC_COLUMNS, "lr")


def _init_model(backbone: str, params: SoloTrainParams, init_weights: str | None) -> SOLOv2:
    """A fresh SOLOv2 on the pretrained backbone, or (fine-tuning) every weight of an earlier SOLO checkpoint."""
    if not init_weights:
        return SOLOv2.from_backbone_weights(backbone, params.model)

    model, init_params = load_solo(init_weights)
    if init_params["model"] != params.model.to_dict():
        raise ValueError(f"cannot fine-tune from {init_weights}: its architecture {init_params['model']} differs "
                         f"from solo.model {params.model.to_dict()}")
    log.info("SOLOv2: every weight initialised from %s (fine-tuning)", init_weights)
    return model


def build_training(backbone: str, params: SoloTrainParams, dev: torch.device, init_weights: str | None = None,
           pool=None):
    """-> (SOLOv2, EECState or None, the module whose state a resume saves, trainable params, optimizer)."""
    torch.manual_seed(params.seed)  # FPN and head initialisation
    model = _init_model(backbone, params, init_weights).to(dev).train()
    if params.freeze_backbone_bn:
        log.info("froze %d backbone BatchNorm layers", freeze_bn(model.backbone))
    if params.freeze_at:
        log.info("froze the backbone up to stage %d (%d parameters)", params.freeze_at,
                 freeze_stages(model.backbone, params.freeze_at))
    eec, saved = None, model
    if params.eec is not None:
        eec = EECState(params.eec, kernel_dim=params.model.kernel_dim, gn_groups=params.model.gn_groups,
                       crops=pool.crops, masks=pool.masks).to(dev)
        saved = torch.nn.ModuleDict({"solo": model, "eec": eec})
    trainable = [p for p in saved.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=lr_at(0, params), momentum=params.momentum,
                          weight_decay=params.weight_decay)
    return model, eec, saved, trainable, opt


def solo_step(model: SOLOv2, batch, step: int, params: SoloTrainParams, dev: torch.device, amp: bool,
              eec: EECState | None = None, forward: dict | None = None) -> dict[str, torch.Tensor]:
    """The named values of 1-based `step` on batch (images, targets): the FreeSOLO terms, "loss", the counts,
    and with EEC its term (added to "loss" at its weight) and counts. forward: {"model": ..., "eec_head": ...}
    to call instead of the modules themselves (their DDP wrappers in data-parallel training)."""
    forward = forward or {}
    images, targets = batch
    if eec is not None and eec.refresh_due(step):
        eec.refresh(model, freeze_backbone_bn=params.freeze_backbone_bn)
    images = images.to(dev, non_blocking=True)  # (B, 3, H, W) uint8
    lab = lab_at_mask_resolution(images, targets[0].mask_stride)  # (B, 3, Hf, Wf)
    with autocast(dev, amp):
        outputs = forward.get("model", model)(normalize(images))
    # The losses run in float32 (sigmoids, logs and dice sums are fragile in half precision).
    outputs = {k: [t.float() for t in v] if isinstance(v, list) else v.float() for k, v in outputs.items()}
    try:
        losses = solo_losses(outputs, targets, lab, weights=params.loss, step=step)
    except FloatingPointError as e:
        raise FloatingPointError(f"SOLO step {step}: {e}") from e
    if eec is not None:
        losses.update(eec_losses(outputs, targets, eec, head=forward.get("eec_head")))
        losses["loss"] = losses["loss"] + params.eec.weight * losses["loss_eec"]
    return losses


def train_solo(*, manifest: str, masks_index: str, backbone: str, out_weights: str, state_dir: str,
               params: SoloTrainParams, device: str = "auto", threads: int | None = None,
               loss_log: str | None = None, log_every: int = 10, stop_after: int | None = None,
               init_weights: str | None = None, exemplar_pool: str | None = None) -> dict:
    """Train SOLOv2 on the coarse masks of `masks_index` for the images of `manifest`; write out_weights
    as {"model": state_dict, "params": params dict, "kind": "solov2"} (loadable with weights_only=True).

    init_weights: an earlier train_solo checkpoint to fine-tune (self-training "finetune"); None starts
    from the pretrained backbone with fresh FPN and heads.
    exemplar_pool: the exemplar pool folder (maskless.solo.exemplar_pool) the EEC term contrasts with; required
    when params.eec is set, refused otherwise. The EEC head is saved under "eec_head".

    stop_after: testing hook; stop once that many steps are done, writing neither out_weights nor loss_log,
    as a kill would. Returns a summary dict.
    """

    set_threads(threads)
    rank = dist.current()
    dev = dist.device(pick_device(device))
    dist.check_batch(params.batch_size, "solo.batch_size", rank)
    rows, skipped = select_images(read_manifest(manifest), mask_counts(masks_index),
                                  background=params.background_images)
    if any(skipped.values()):
        log.info("SOLO: manifest images without coarse masks (left out, or kept as background): %s", skipped)
    if not rows or len(rows) == skipped["background"]:
        raise ValueError(f"no image of manifest {manifest} has a coarse mask in {masks_index} ({skipped}); for a "
                         "self-training round this means the relabel kept no prediction of the previous round: its "
                         "log gives the highest score against config key selftrain.score_thresh")
    if (params.eec is None) != (exemplar_pool is None):
        raise ValueError("SOLO: an exemplar pool needs params.eec, and params.eec needs an exemplar pool "
                         f"(eec {'on' if params.eec else 'off'}, exemplar_pool {exemplar_pool!r})")
    pool = None
    if exemplar_pool is not None:
        pool = ExemplarPool.load(exemplar_pool)
        log.info("EEC: exemplar pool %s with %d exemplars", exemplar_pool, len(pool))
    fingerprint = data_fingerprint(rows, masks_index, backbone, init_weights, exemplar_pool)
    short = params.input_size * params.scale_jitter[1]  # the cached images' short side (largest jitter)
    # Opened here even when worker processes make the batches (each opens its own): a store that cannot be
    # read fails now, naming its path, before the model is built, not inside a DataLoader worker.
    source = SampleSource(rows, MaskStore(masks_index), short)
    geometry = params.solo_geometry()
    model, eec, saved, trainable, opt = build_training(backbone, params, dev, init_weights, pool)
    # DDP wrappers for the forward calls (a loss term without positives leaves some parameters unused).
    forward = {"model": dist.wrap(model, find_unused=True)}
    if eec is not None:
        forward["eec_head"] = dist.wrap(eec.head, find_unused=True)
    columns = loss_columns(params)
    amp = use_amp(params.amp, dev)
    log.info("SOLO %s on %d images, %d steps of %d (%s views), input %d, device %s%s%s%s", params.model.arch,
             len(rows), params.steps, params.batch_size, params.views, params.input_size, dev,
             ", AMP" if amp else "", f", {rank.world_size} processes" if rank.world_size > 1 else "",
             f", batches from {params.num_workers} worker processes" if params.num_workers else "")
    seen = {"pasted": 0, "saturated": 0}

    def batches(start: int):
        """num_workers processes make the batches (spawned: the mask store's zarr thread does not survive a
        fork); else this process, on a GPU one step ahead in a thread (PREFETCH_DEVICES)."""
        if params.num_workers:
            data = StepBatches(rows, masks_index, short, params, geometry, rank)
            return step_batches(data, start, params.num_workers, pin_memory=dev.type == "cuda", spawn=True)
        made = (make_batch(source, s, params, geometry, rank) for s in range(start, params.steps))
        return prefetch(made) if dev.type in PREFETCH_DEVICES else made

    def step(batch, step: int) -> dict[str, torch.Tensor]:
        images, targets, pasted = batch
        seen["pasted"] += pasted
        return solo_step(model, (images, targets), step, params, dev, amp, eec, forward)

    def after_step(step: int, values: dict[str, float]) -> None:
        seen["saturated"] = seen["saturated"] + 1 if values["mask_fg"] >= COLLAPSE_FG else 0
        if seen["saturated"] == COLLAPSE_STEPS:
            log.warning("SOLO step %d: for %d steps the positives' masks have covered >= %.0f%% of the image "
                        "(mask_fg %.3f): training has collapsed to whole-image masks, whose saturated sigmoids "
                        "pass almost no gradient; its predictions will score near 0 AP. On short schedules this "
                        "happens on some seeds whatever the targets, ground truth included (BENCHMARKS.md 'SOLO "
                        "round 0 collapses'; bench/solo_collapse.py follows the first steps)", step,
                        COLLAPSE_STEPS, 100 * COLLAPSE_FG, values["mask_fg"])

    def save() -> None:
        resolved = {**params.to_dict(), "images": len(rows), "skipped": skipped, "data": fingerprint,
                    "init_weights": str(init_weights) if init_weights else None}
        out = {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, "params": resolved,
               "kind": "solov2"}
        if eec is not None:
            out["eec_head"] = {k: v.detach().cpu().clone() for k, v in eec.head.state_dict().items()}
        torch_save_atomic(out, out_weights)

    run = Run("SOLO", log, step, batches, saved, opt, columns, save, clip=trainable,
              images_per_step=params.batch_size * (2 if params.views == "both" else 1), after_step=after_step,
              note=lambda: f", {seen['pasted']} instances pasted so far")
    loop = LoopParams(params.steps, params.checkpoint_every, log_every, schedule(params),
                      params.grad_clip, params.amp)
    # The loss log's columns are part of the key: a state saved with other columns starts afresh.
    resume = Resume(Path(state_dir) / STATE_NAME,
                    resume_key({**params.to_dict(), "loss_columns": list(columns)}, _RESUME_IGNORED), fingerprint)
    summary = fit(run, loop, resume, dev=dev, loss_log=loss_log, stop_after=stop_after)
    if not summary["stopped"] and rank.is_main:
        summary.update(images=len(rows), skipped=skipped, out_weights=str(out_weights))
    return summary
