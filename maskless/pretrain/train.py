"""DenseCL training loop: resumable, reproducible, and safe to kill.

- Images: every manifest image is read once, resized so its short side is ceil(1.15 x crop_size) (the
  random resized crop then works on a small image, which is what makes CPU training feasible), and kept in
  memory when the resized set fits CACHE_LIMIT_BYTES (2 GiB, about 500k images at crop 96). Larger sets are
  re-read and resized from disk on every use, which gives the same pixels, only slower.
- Determinism: the images of step s and their augmentations come from numpy generators seeded with
  (seed, s) (and the epoch permutation from (seed, epoch)), never from a running stream. A run killed after a
  checkpoint and restarted therefore repeats exactly the steps it lost, and on CPU its final weights are
  bit-identical to an uninterrupted run's (CUDA kernels are not bitwise deterministic).
- Resumable state (model with key encoder and queues, optimizer, AMP scaler, step, loss rows, torch RNG)
  goes to state_dir/densecl_last.pt every checkpoint_every steps, atomically. state_dir must lie outside the
  rule's outputs (Snakemake deletes outputs before a job starts). The state is used only when its
  parameters and images match this run's; it is deleted once the final weights are written.
- Data parallel (maskless.dist, config key train_processes): each rank builds its share of the global batch
  of batch_size images, DDP averages the gradients, the queues take every rank's keys; rank 0 alone writes
  checkpoints, weights and the loss log. One process (the default) is the plain loop above.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from maskless import dist
from maskless.data.batches import batch_indices
from maskless.data.manifest import read_manifest, rows_digest
from maskless.io import pick_device, set_threads
from maskless.models.resnet import normalize
from maskless.models.weights import load_backbone, save_backbone
from maskless.pretrain.augment import AugmentParams, two_views
from maskless.pretrain.densecl import DenseCL, DenseCLParams
from maskless.resume import resume_key
from maskless.train import LoopParams, Resume, Run, Schedule, autocast, fit, step_batches, use_amp
from maskless.data.images import load_rgb
from maskless.data.images import sha256_file

log = logging.getLogger(__name__)

CACHE_LIMIT_BYTES = 2 << 30
CACHE_SHORT_SIDE_FACTOR = 1.15
STATE_NAME = "densecl_last.pt"
# Fields that do not change the result: a resume across a change of these is still exact.
_RESUME_IGNORED = ("checkpoint_every", "num_workers")
LOSS_COLUMNS = ("step", "loss", "loss_global", "loss_dense", "lr")


def _resize_short(image: np.ndarray, short: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = short / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


class ImageSource:
    """The manifest's images, resized to a short side of `short`; cached when they fit CACHE_LIMIT_BYTES."""

    def __init__(self, rows: list[dict], short: int, cache_limit: int = CACHE_LIMIT_BYTES):
        self.paths = [r["path"] for r in rows]
        self.short = short
        est = sum(short * short * max(r["width"], r["height"]) // max(1, min(r["width"], r["height"])) * 3
                  for r in rows)
        self.cache: list[np.ndarray] | None = None
        if est <= cache_limit:
            self.cache = [self._load(i) for i in range(len(rows))]
            log.info("cached %d images in memory (short side %d px, %.1f MB)", len(rows), short,
                     sum(a.nbytes for a in self.cache) / 1e6)
        else:
            log.info("%d images need ~%.1f GB at short side %d px (> cache limit %.1f GB): reading them from "
                     "disk at every step", len(rows), est / 1e9, short, cache_limit / 1e9)

    def _load(self, i: int) -> np.ndarray:
        return _resize_short(load_rgb(self.paths[i]), self.short)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.cache[i] if self.cache is not None else self._load(i)


class StepBatches(torch.utils.data.Dataset):
    """Item `step` -> (view_q, view_k), each (B, 3, S, S) float in [0, 1]; random only through (seed, step)."""

    def __init__(self, images: ImageSource, params: DenseCLParams, rank: dist.Rank | None = None):
        self.images = images
        self.params = params
        self.aug = AugmentParams(crop_size=params.crop_size)
        self.rank = rank or dist.current()  # kept: DataLoader workers run outside the process group

    def __len__(self) -> int:
        return self.params.steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        idx = dist.shard(batch_indices(step, n_images=len(self.images), batch_size=p.batch_size, seed=p.seed),
                         self.rank)
        rng = np.random.default_rng(dist.rng_key(p.seed, step, 1, rank=self.rank))
        pairs = [two_views(self.images[int(i)], rng, self.aug) for i in idx]
        view_q = torch.from_numpy(np.stack([a for a, _ in pairs]))  # (B, 3, S, S)
        view_k = torch.from_numpy(np.stack([b for _, b in pairs]))  # (B, 3, S, S)
        return view_q, view_k


def schedule(params: DenseCLParams) -> Schedule:
    """Base lr x batch/256, linear warm-up, then cosine to zero."""
    return Schedule(params.lr * params.batch_size / 256, params.steps, "cosine", params.warmup_steps)


def lr_at(step: int, params: DenseCLParams) -> float:
    """Learning rate of 0-based `step` (schedule)."""
    return schedule(params)(step)


def data_fingerprint(rows: list[dict]) -> str:
    """Identity of the training images (ids and content hashes), so a resume never mixes datasets."""
    return rows_digest(rows).hexdigest()


def train_densecl(*, manifest: str, out_weights: str, state_dir: str, params: DenseCLParams,
                  device: str = "auto", threads: int | None = None, loss_log: str | None = None,
                  log_every: int = 10, stop_after: int | None = None) -> dict:
    """Train DenseCL on every image of `manifest`; write the query backbone to out_weights.

    stop_after: testing hook; stop once that many steps (counted from step 0) are done, without writing
    out_weights or loss_log, as a kill would. Returns a summary dict.
    """
    set_threads(threads)
    rank = dist.current()
    dev = dist.device(pick_device(device))
    dist.check_batch(params.batch_size, "pretrain.batch_size", rank)
    if params.batch_size // rank.world_size < 2:
        raise ValueError(f"config key pretrain.batch_size ({params.batch_size}) gives fewer than 2 images to each of "
                         f"{rank.world_size} processes (BatchNorm needs two): raise it or lower train_processes")
    rows = read_manifest(manifest)
    if not rows:
        raise ValueError(f"image manifest {manifest} has no images to pretrain on")
    fingerprint = data_fingerprint(rows)
    images = ImageSource(rows, math.ceil(CACHE_SHORT_SIDE_FACTOR * params.crop_size))
    data = StepBatches(images, params, rank)

    torch.manual_seed(params.seed)
    model = DenseCL.from_params(params).to(dev).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=lr_at(0, params), momentum=params.momentum,
                          weight_decay=params.weight_decay)
    forward = dist.wrap(model)  # DDP in a process group; state dicts come from `model`
    amp = use_amp(params.amp, dev)

    def step(batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        view_q = normalize(batch[0].to(dev, non_blocking=True))  # (B, 3, S, S)
        view_k = normalize(batch[1].to(dev, non_blocking=True))  # (B, 3, S, S)
        with autocast(dev, amp):
            return forward(view_q, view_k)

    def save() -> None:
        save_backbone(out_weights, model.encoder_q, params.arch,
                      {**params.to_dict(), "method": "densecl", "images": len(rows), "data": fingerprint})

    log.info("DenseCL %s on %d images, %d steps of %d, crop %d, device %s%s%s", params.arch, len(rows),
             params.steps, params.batch_size, params.crop_size, dev, ", AMP" if amp else "",
             f", {rank.world_size} processes" if rank.world_size > 1 else "")
    run = Run("DenseCL", log, step, lambda start: step_batches(data, start, params.num_workers), model, opt,
              LOSS_COLUMNS, save, images_per_step=params.batch_size, digest=model.encoder_q)
    loop = LoopParams(params.steps, params.checkpoint_every, log_every, schedule(params), amp=params.amp)
    resume = Resume(Path(state_dir) / STATE_NAME, resume_key(params.to_dict(), _RESUME_IGNORED), fingerprint)
    summary = fit(run, loop, resume, dev=dev, loss_log=loss_log, stop_after=stop_after)
    if summary["stopped"]:
        return summary
    summary["queue_ptr"] = int(model.queue_ptr)
    if rank.is_main:
        summary.update(images=len(rows), out_weights=str(out_weights))
    return summary


def use_given_weights(*, src: str, out_weights: str, arch: str) -> None:
    """The `pretrain.weights` option: check a user checkpoint fits `arch`, then write it in our format."""
    model = load_backbone(src, arch)

    save_backbone(out_weights, model, arch,
                  {"method": "given", "source": os.path.abspath(src), "source_sha256": sha256_file(src)})
    log.info("using given %s weights %s -> %s", arch, src, out_weights)
