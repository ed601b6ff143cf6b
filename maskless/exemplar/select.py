"""Choosing the exemplar images (Exemplar-FreeSOLO EKA, first step; METHODS.md "Exemplar-FreeSOLO").

The paper picks "a small number of unlabeled exemplar images"; how is not public, so two ways, both ours:

- "random": n distinct manifest rows drawn by a seeded numpy Generator (no replacement).
- "diverse": every image's backbone res5 map is average-pooled over space and L2-normalised, the vectors are
  clustered into n centres by spherical k-means (maskless.stego.baseline.fit_kmeans: k-means++ seeding,
  Lloyd iterations with cosine assignment, deterministic by seed), and each centre takes the image nearest
  to it (highest cosine). Why: exemplars are meant to be pivots of the hidden categories, so they should
  cover the feature space rather than repeat its densest mode. Two centres may share a nearest image
  (duplicates, tiny clusters); pairs are then taken greedily, best cosine first, each centre and image used
  once, so n distinct images always come back.

Either way the chosen rows come back sorted by image id. Fewer images than n is a ValueError naming both
numbers: silently using fewer exemplars would change the experiment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from maskless.data.images import resized_batches
from maskless.models.resnet import normalize
from maskless.ops.kmeans import KMeansParams, fit_kmeans

log = logging.getLogger(__name__)

METHODS = ("random", "diverse")


@dataclass
class SelectParams:
    """count: exemplar images n (our default 10; the issue sweeps it); method: "random" or "diverse";
    input_size: short side of the images fed to the backbone for "diverse" (the SOLO default, 160);
    kmeans_iterations: Lloyd iterations at most; seed: the draw and the k-means seeding."""

    count: int = 10
    method: str = "diverse"
    input_size: int = 160
    kmeans_iterations: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("count", "input_size", "kmeans_iterations"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SelectParams.{key} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SelectParams.seed must be an integer >= 0, got {self.seed!r}")
        if self.method not in METHODS:
            raise ValueError(f"SelectParams.method {self.method!r} unknown; choices: {list(METHODS)}")


def check_count(n_images: int, count: int) -> None:
    """ValueError naming both numbers when there are fewer images than exemplars wanted."""
    if n_images < count:
        raise ValueError(f"exemplar selection needs {count} images (SelectParams.count) but the manifest has "
                         f"only {n_images}; lower the exemplar count or add images")


def select_random(n_images: int, count: int, seed: int) -> np.ndarray:
    """(count,) sorted distinct row indices drawn without replacement, deterministic by seed."""
    check_count(n_images, count)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_images, size=count, replace=False))


@torch.no_grad()
def pooled_features(records: list[dict], backbone: torch.nn.Module, *, input_size: int,
                    device: str | torch.device = "cpu", batch_size: int = 8) -> np.ndarray:
    """float32 (N, C) L2-normalised global average of each image's res5 map, rows in records' order.

    Images are resized as for SOLO (maskless.data.images.resized_hw, short side input_size) and batched only
    with images of the same size, so a row does not depend on its batch. The backbone runs in eval mode
    (BatchNorm running statistics untouched); its mode is restored afterwards.
    """

    was_training = backbone.training
    backbone.eval()
    rows: dict[int, np.ndarray] = {}
    try:
        for recs, batch, _ in resized_batches(records, max(1, batch_size), input_size):
            x = normalize(torch.from_numpy(batch).permute(0, 3, 1, 2).to(device))  # (B, 3, h, w)
            res5 = backbone(x)["res5"]  # (B, C, h/32, w/32)
            pooled = F.normalize(res5.float().mean(dim=(2, 3)), dim=1)  # (B, C)
            for rec, vec in zip(recs, pooled.cpu().numpy()):
                rows[int(rec["id"])] = vec
    finally:
        backbone.train(was_training)
    return np.stack([rows[int(r["id"])] for r in records]).astype(np.float32)


def select_diverse(features: np.ndarray, count: int, *, seed: int, iterations: int = 50) -> np.ndarray:
    """(count,) sorted distinct row indices: the image nearest (cosine) each spherical k-means centre.

    features: (N, C), any scale (rows are L2-normalised here). NaN/inf is a ValueError.
    """

    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"select_diverse: features must be (N, C), got shape {features.shape}")
    check_count(features.shape[0], count)
    if not np.isfinite(features).all():
        raise ValueError("select_diverse: features hold NaN or inf values")
    x = torch.from_numpy(features)[:, :, None, None]  # (N, C, 1, 1): one "pixel" per image
    centres = fit_kmeans(x, KMeansParams(n_clusters=count, iterations=iterations, seed=seed))  # (n, C)
    sim = F.normalize(torch.from_numpy(features), dim=1) @ F.normalize(centres, dim=1).T  # (N, n)
    return np.sort(greedy_nearest(sim.numpy()))


def greedy_nearest(sim: np.ndarray) -> np.ndarray:
    """sim: (N, n) image-to-centre similarities, N >= n -> (n,) distinct image rows, one per centre.

    Pairs are taken best first (ties: lower image row, then lower centre, via a stable sort), each image and
    each centre at most once.
    """
    n_img, n_cen = sim.shape
    order = np.argsort(-sim.reshape(-1), kind="stable")  # flat index = image * n_cen + centre
    used_img, chosen = set(), {}
    for flat in order:
        i, c = divmod(int(flat), n_cen)
        if i in used_img or c in chosen:
            continue
        chosen[c] = i
        used_img.add(i)
        if len(chosen) == n_cen:
            break
    return np.array([chosen[c] for c in range(n_cen)], dtype=np.int64)


def choose_exemplars(records: list[dict], params: SelectParams, *, features: np.ndarray | None = None
                     ) -> list[dict]:
    """The chosen manifest rows, sorted by id. "diverse" needs features (N, C) for the records
    (pooled_features); "random" ignores them."""
    check_count(len(records), params.count)
    if params.method == "random":
        idx = select_random(len(records), params.count, params.seed)
    else:
        if features is None:
            raise ValueError("choose_exemplars: method 'diverse' needs features (see pooled_features)")
        if len(features) != len(records):
            raise ValueError(f"choose_exemplars: {len(features)} feature rows for {len(records)} records")
        idx = select_diverse(features, params.count, seed=params.seed, iterations=params.kmeans_iterations)
    chosen = sorted((records[int(i)] for i in idx), key=lambda r: int(r["id"]))
    log.info("exemplars: chose %d of %d images (%s, seed %d): ids %s", len(chosen), len(records), params.method,
             params.seed, [int(r["id"]) for r in chosen])
    return chosen
