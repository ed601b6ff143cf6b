"""SOLO training data: the images that have coarse masks, cached at training size, and the batch of a step.

- select_images: manifest rows with at least one coarse mask (or, with background, any indexed image);
  the rest are counted by reason, never dropped silently.
- SampleSource: each image and its masks resized once to a short side of input_size x max(scale_jitter) and
  kept in memory up to CACHE_LIMIT_BYTES (then re-read: same pixels, slower).
- make_batch: the batch of 0-based step s from (seed, s) only (weak geometry, copy-paste, strong view,
  padding to a multiple of 32, assign_targets per view's masks), so a resumed run sees the same batches.
- data_fingerprint: the identity of everything a resume state depends on besides the params.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from maskless import dist
from maskless.data.images import resized_hw
from maskless.data.batches import batch_indices
from maskless.data.manifest import rows_digest
from maskless.solo.augment import batch_samples, padded_size, resize_sample
from maskless.solo.model import SIZE_DIVISOR
from maskless.solo.targets import SoloGeometry, assign_targets
from maskless.data.images import load_rgb
from maskless.store import MaskStore
from maskless.data.images import sha256_file

if TYPE_CHECKING:
    from maskless.solo.train import SoloTrainParams

CACHE_LIMIT_BYTES = 2 << 30


class SampleSource:
    """Training images with their coarse masks, resized to a short side of `short` (cached up to a limit)."""

    def __init__(self, rows: list[dict], store, short: float, cache_limit: int = CACHE_LIMIT_BYTES):
        self.rows, self.store, self.short = rows, store, short
        self.cache: dict[int, tuple] = {}
        self.cache_limit, self.cached_bytes = cache_limit, 0

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        row = self.rows[i]
        image, masks = load_rgb(row["path"]), self.store.get(int(row["id"]))
        if image.shape[:2] != (masks.height, masks.width):
            raise ValueError(f"image {row['path']} (id {row['id']}) is {image.shape[0]}x{image.shape[1]} but "
                             f"its masks in {self.store.index_path} are {masks.height}x{masks.width}")
        s = resize_sample(image, masks.masks, masks.embeddings, resized_hw(*image.shape[:2], self.short))
        return s.image, s.masks, s.embeddings

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if i in self.cache:
            return self.cache[i]
        item = self._load(i)
        size = sum(a.nbytes for a in item if a is not None)
        if self.cached_bytes + size <= self.cache_limit:
            self.cache[i], self.cached_bytes = item, self.cached_bytes + size
        return item


def mask_counts(masks_index: str) -> dict[int, int]:
    """Masks per image id, from the index's per-image table."""

    return MaskStore(masks_index).mask_counts()


def select_images(rows: list[dict], counts: dict[int, int], *, background: bool = False
                  ) -> tuple[list[dict], dict[str, int]]:
    """Manifest rows with at least one coarse mask (or, with background, any row in the index); counts of
    the rows left out by reason (rows kept as all-background are counted under "background")."""
    least = 0 if background else 1
    keep = [r for r in rows if counts.get(int(r["id"]), -1) >= least]
    n_empty = sum(counts.get(int(r["id"]), -1) == 0 for r in rows)
    skipped = {"not_in_index": sum(int(r["id"]) not in counts for r in rows),
               "no_masks": 0 if background else n_empty, "background": n_empty if background else 0}
    return keep, skipped


def data_fingerprint(rows: list[dict], masks_index: str, backbone: str, init_weights: str | None = None,
                     exemplar_pool: str | None = None) -> str:
    """Identity of images, coarse masks (the index file's bytes), the initial backbone and SOLO weights, and
    the exemplar pool's files."""

    h = rows_digest(rows)
    h.update(f"masks {sha256_file(masks_index)} backbone {sha256_file(backbone)}".encode())
    if init_weights:
        h.update(f" init {sha256_file(init_weights)}".encode())
    if exemplar_pool:
        for f in sorted(p for p in Path(exemplar_pool).rglob("*") if p.is_file()):
            h.update(f" {f.relative_to(exemplar_pool)} {sha256_file(f)}".encode())
    return h.hexdigest()


class StepBatches(torch.utils.data.Dataset):
    """Item s: make_batch of 0-based step s, for DataLoader workers (maskless.train.step_batches with spawn).
    Holds the rows, the mask index path and the params only; each process opens its own SampleSource and
    MaskStore on first use, so the object pickles and no zarr handle crosses a process boundary."""

    def __init__(self, rows: list[dict], masks_index: str, short: float, params: "SoloTrainParams",
                 geometry: SoloGeometry, rank: dist.Rank | None = None):
        self.rows, self.masks_index, self.short = rows, masks_index, short
        self.params, self.geometry, self.rank = params, geometry, rank
        self._source: SampleSource | None = None

    def __len__(self) -> int:
        return self.params.steps

    def __getitem__(self, step: int):
        if self._source is None:
            self._source = SampleSource(self.rows, MaskStore(self.masks_index), self.short)
        return make_batch(self._source, step, self.params, self.geometry, self.rank)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_source": None}


def make_batch(source: SampleSource, step: int, params: "SoloTrainParams", geometry: SoloGeometry,
               rank: dist.Rank | None = None):
    """0-based step `step`'s batch -> (uint8 images (B, 3, H, W), [SoloTargets], pasted count); random only via
    (seed, step). In data-parallel training, this rank's share of the global batch (maskless.dist)."""
    idx = dist.shard(batch_indices(step, n_images=len(source), batch_size=params.batch_size, seed=params.seed),
                     rank)
    rng = np.random.default_rng(dist.rng_key(params.seed, step, 1, rank=rank))
    samples, pasted = batch_samples([source[int(i)] for i in idx], rng, params.augment_params())
    views = {"strong": ("strong",), "weak": ("weak",), "both": ("weak", "strong")}[params.views]
    hp, wp = padded_size(samples, SIZE_DIVISOR)
    images, targets = [], []
    for s in samples:
        h, w = s.image.shape[:2]
        labels = {}  # the weak view's targets serve the strong view too, unless copy-paste went onto it alone
        for view in views:
            image, masks, emb = s.view(view)
            own = "strong" if view == "strong" and s.strong_labels is not None else "weak"
            if own not in labels:
                labels[own] = _targets(masks, emb, (h, w), (hp, wp), geometry)
            img = np.zeros((hp, wp, 3), dtype=np.uint8)
            img[:h, :w] = image
            images.append(torch.from_numpy(img).permute(2, 0, 1))  # (3, H, W)
            targets.append(labels[own])
    return torch.stack(images), targets, pasted  # (B, 3, H, W)


def _targets(masks: np.ndarray, embeddings: np.ndarray | None, hw: tuple[int, int], padded_hw: tuple[int, int],
             geometry: SoloGeometry):
    """SoloTargets of (N, h, w) masks placed top-left in a zero (N, H, W) canvas of the padded batch size."""
    padded = np.zeros((len(masks), *padded_hw), dtype=bool)
    padded[:, : hw[0], : hw[1]] = masks
    return assign_targets(torch.from_numpy(padded), geometry, image_hw=hw,
                          embeddings=None if embeddings is None else torch.from_numpy(embeddings))
