"""FreeSOLO "Free Mask": coarse object masks from self-supervised features, without labels.

Wang et al. 2022, "FreeSOLO", Sec. 3.1; METHODS.md "Free Mask". Keys are the last backbone feature map;
queries are that map resized by a few scale factors. Each query's cosine similarity to every key location,
min-max normalised, is a soft mask; thresholding gives a mask whose mean soft value inside it ("maskness")
scores it. Matrix NMS with maskness as score and a top-k remove duplicates; the kept soft masks are
upsampled to the image and filtered.

Score = the Matrix-NMS-DECAYED maskness, as in FreeSOLO's reference (demo/inference_freemask.py overwrites
maskness with the matrix_nms output before the top-k, the maskness >= 0.7 filter and the stored score). The
filter on the decayed score is what removes the near-duplicates that survive the top-k (a duplicate's score
decays to about exp(-sigma) x maskness). The raw maskness is kept in the result for inspection.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maskless.data.images import resized_batches
from maskless.data.manifest import read_manifest, shard_records
from maskless.io import pick_device, set_threads
from maskless.models.backbones import LEVELS as BACKBONE_LEVELS
from maskless.models.backbones import load_any_backbone, require_level
from maskless.models.resnet import normalize
from maskless.ops.masks import boxes_xywh, largest_component
from maskless.ops.matrix_nms import KERNELS, matrix_nms_top_k
from maskless.store import ImageMasks
from maskless.store_writer import ShardWriter

log = logging.getLogger(__name__)

# Every level of maskless.models.backbones.BACKBONES (the ResNets' res2..res5, the ViTs' "tokens"); the
# loaded backbone's own levels are checked in run_freemask_shard.
FEATURE_LEVELS = BACKBONE_LEVELS
EMBEDDING_METHODS = ("interpolate", "random_projection")
# Filter reasons, in the order they are checked (a mask is counted under its first reason).
REASONS = ("small", "top_k", "empty", "low_maskness", "top", "wide")


@dataclass
class FreeMaskParams:
    """Free Mask hyperparameters (METHODS.md "Free Mask"; FreeSOLO reference values as defaults).

    drop_top_fraction = 0 disables the top filter; max_width_fraction > 1 disables the width filter;
    min_maskness = 0 disables the maskness filter.
    """

    feature_level: str = "res5"
    input_size: int = 320  # short side before the backbone; long side capped at 2x
    scales: tuple[float, ...] = (1.0, 0.5, 0.25)
    mask_threshold: float = 0.5
    min_area_cells: int = 2  # masks of fewer cells (area <= 1 with the default) are dropped
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0
    top_k: int = 20
    min_maskness: float = 0.7
    drop_top_fraction: float = 0.2
    max_width_fraction: float = 0.95
    embedding_dim: int = 128
    embedding_method: str = "interpolate"
    embedding_seed: int = 0  # seeds the random_projection matrix
    upsample_threshold: float = 0.5
    keep_largest_component: bool = False  # not in FreeSOLO: MaskCut's post-processing (mask_quality.py)

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        checks = [
            ("feature_level", self.feature_level in FEATURE_LEVELS, f"one of {FEATURE_LEVELS}"),
            ("input_size", int(self.input_size) >= 32, ">= 32"),
            ("scales", len(self.scales) > 0 and all(0 < s <= 1 for s in self.scales), "non-empty, each in (0, 1]"),
            ("mask_threshold", 0 < self.mask_threshold < 1, "in (0, 1)"),
            ("min_area_cells", int(self.min_area_cells) >= 1, ">= 1"),
            ("nms_kernel", self.nms_kernel in KERNELS, f"one of {KERNELS}"),
            ("nms_sigma", self.nms_sigma > 0, "> 0"),
            ("top_k", int(self.top_k) >= 1, ">= 1"),
            ("min_maskness", 0 <= self.min_maskness <= 1, "in [0, 1]"),
            ("drop_top_fraction", 0 <= self.drop_top_fraction < 1, "in [0, 1)"),
            ("max_width_fraction", self.max_width_fraction > 0, "> 0"),
            ("embedding_dim", int(self.embedding_dim) >= 1, ">= 1"),
            ("embedding_method", self.embedding_method in EMBEDDING_METHODS, f"one of {EMBEDDING_METHODS}"),
            ("upsample_threshold", 0 < self.upsample_threshold < 1, "in (0, 1)"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"FreeMaskParams.{name} must be {want}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["scales"] = list(self.scales)
        return d


@dataclass
class FreeMaskResult:
    """Masks of one image, sorted by score (Matrix-NMS-decayed maskness) descending.

    masks (N, H, W) bool at image size; scores (N,) float32 decayed maskness; maskness (N,) float32 raw
    maskness before Matrix NMS; embeddings (N, D) float32; soft_masks (N, h, w) float32 normalised
    similarity at feature resolution; filtered: counts of dropped masks per reason (REASONS); n_queries;
    skipped_scales: the scales whose query map was empty (feature map under 1 / s cells on a side).
    """

    masks: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray
    soft_masks: np.ndarray
    maskness: np.ndarray
    filtered: dict[str, int] = field(default_factory=dict)
    n_queries: int = 0
    skipped_scales: tuple[float, ...] = ()


def query_scale(features: Tensor, scale: float) -> Tensor | None:
    """(1, C, h, w) -> (1, C, floor(h s), floor(w s)) queries at one scale, or None when a side is empty.

    FreeSOLO's demo/inference_freemask.py calls F.interpolate(keys, scale_factor=s, mode="bilinear") with
    align_corners and recompute_scale_factor left at their defaults (False and None, PyTorch >= 1.6): the
    output size is floor(h s) and the sampling positions come from s itself, src = (dst + 0.5) / s - 0.5,
    not from the ratio of the two sizes. A scale whose floor size is 0 (the reference would raise) gives no
    queries; the caller counts it.
    """
    h, w = features.shape[-2:]
    if math.floor(h * scale) < 1 or math.floor(w * scale) < 1:
        return None
    return F.interpolate(features, scale_factor=scale, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)


def query_masks(features: Tensor, *, scales: tuple[float, ...], mask_threshold: float) -> dict:
    """Soft and binary masks of every multi-scale query.

    features: (C, h, w). Returns dict: queries (Q, C) L2-normalised, soft (Q, h, w) min-max normalised
    cosine similarity, masks (Q, h, w) bool = soft >= mask_threshold, maskness (Q,) = sum(soft * mask) /
    sum(mask) (0 for an empty mask), area (Q,) cells, skipped_scales: the scales whose map was empty.
    Q = sum over scales of floor(h s) * floor(w s) (query_scale). A query whose similarities are all equal
    (max == min) gets an all-zero soft mask: it carries no spatial structure, so its mask is empty and
    later dropped as small.
    """
    c, h, w = features.shape
    feats = features.float()[None]  # (1, C, h, w)
    qs, skipped = [feats.new_zeros(0, c)], []
    for s in scales:
        q = query_scale(feats, s)  # (1, C, floor(h s), floor(w s)) or None
        if q is None:
            skipped.append(s)
        else:
            qs.append(q[0].flatten(1).T)  # (hs * ws, C)
    queries = F.normalize(torch.cat(qs, dim=0), dim=1)  # (Q, C)
    keys = F.normalize(feats[0].flatten(1), dim=0)  # (C, h*w)
    sim = queries @ keys  # (Q, h*w) cosine similarity A
    # amin / amax: the values without indices, 10x faster than min / max (and 20x than aminmax) on the CPU
    lo, hi = sim.amin(dim=1, keepdim=True), sim.amax(dim=1, keepdim=True)  # (Q, 1) each
    span = hi - lo
    # In place on sim (the same operations as (sim - lo) / span, without two (Q, h*w) temporaries); a flat
    # row (span <= 1e-6) becomes zeros. (torch.where over the whole map was 5x slower than this.)
    soft = sim.sub_(lo).div_(span.clamp(min=1e-6))  # (Q, h*w)
    flat = (span <= 1e-6)[:, 0]
    if flat.any():
        soft[flat] = 0.0
    masks = soft >= mask_threshold  # (Q, h*w)
    area = masks.sum(dim=1, dtype=torch.int32)  # (Q,) (an int32 count: 3x faster than the default int64)
    # soft * masks without the bool -> float copy: threshold keeps x > the float32 just below mask_threshold,
    # i.e. x >= mask_threshold, and writes +0.0 elsewhere (soft >= 0): the same tensor, 5x faster
    below = torch.nextafter(torch.tensor(float(mask_threshold), dtype=soft.dtype), torch.tensor(-math.inf,
                                                                                                dtype=soft.dtype))
    maskness = F.threshold(soft, float(below), 0.0).sum(dim=1) / area.clamp(min=1)  # (Q,)
    return {
        "queries": queries,
        "soft": soft.view(-1, h, w),
        "masks": masks.view(-1, h, w),
        "maskness": maskness,
        "area": area,
        "skipped_scales": tuple(skipped),
    }


def embed_queries(queries: Tensor, *, dim: int, method: str, seed: int = 0) -> Tensor:
    """Reduce (K, C) query vectors to (K, dim) semantic embeddings.

    "interpolate" (FreeSOLO reference): linear interpolation of each channel vector to `dim` entries.
    "random_projection": a fixed orthogonal (C, dim) matrix from a seeded generator (orthonormal columns
    when C >= dim, orthonormal rows otherwise), identical across images and runs.
    """
    if method == "interpolate":
        return F.interpolate(queries[:, None, :].float(), size=dim, mode="linear", align_corners=False)[:, 0]
    if method == "random_projection":
        c = queries.shape[1]
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(max(c, dim), min(c, dim), generator=gen))  # orthonormal columns
        proj = q if c >= dim else q.T  # (C, dim)
        return queries.float() @ proj.to(queries.device)
    raise ValueError(f"embedding_method must be one of {EMBEDDING_METHODS}, got {method!r}")


def filter_reasons(masks: np.ndarray, maskness: np.ndarray, params: FreeMaskParams) -> np.ndarray:
    """Why each image-size mask is dropped ("" = kept), first matching reason of
    empty, low_maskness, top (box centre y < drop_top_fraction * H), wide (box w >= max_width_fraction * W).

    masks (N, H, W) bool, maskness (N,). Box centre y = y + h / 2 (pixel-edge coordinates).
    """
    n, height, width = masks.shape
    boxes = boxes_xywh(masks)  # (N, 4)
    centre_y = boxes[:, 1] + boxes[:, 3] / 2
    reasons = np.full(n, "", dtype=object)
    checks = [
        ("wide", boxes[:, 2] >= params.max_width_fraction * width),
        ("top", centre_y < params.drop_top_fraction * height),
        ("low_maskness", maskness < params.min_maskness),
        ("empty", boxes[:, 2] == 0),
    ]
    for reason, hit in checks:  # last assignment wins, so the list runs from last to first reason
        reasons[hit] = reason
    return reasons


def free_mask(features: Tensor, image_hw: tuple[int, int], params: FreeMaskParams) -> FreeMaskResult:
    """Free Mask of one image. features: (C, h, w) backbone map; image_hw: (H, W) of the output masks."""
    if features.ndim != 3:
        raise ValueError(f"free_mask features must be (C, h, w), got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("free_mask features contain NaN or inf (check the backbone checkpoint and input)")
    height, width = int(image_hw[0]), int(image_hw[1])
    qm = query_masks(features, scales=params.scales, mask_threshold=params.mask_threshold)
    n_queries = qm["queries"].shape[0]
    counts = dict.fromkeys(REASONS, 0)

    big = qm["area"] >= params.min_area_cells  # (Q,)
    counts["small"] = int((~big).sum())
    # Exact shortcut: a decayed score never exceeds its raw maskness, and Matrix NMS decays a mask only by
    # masks ranked above it. A mask with raw maskness below min_maskness therefore fails the final score
    # filter whatever happens, and removing it changes neither the decay of any mask that can pass nor
    # which of those the top-k keeps. Dropping it first saves most of the Matrix NMS on fine grids.
    strong = big & (qm["maskness"] >= params.min_maskness)  # (Q,)
    counts["low_maskness"] = int((big & ~strong).sum())
    # The top_k masks by decayed maskness, exactly as the full Matrix NMS and a stable sort would rank them
    # (matrix_nms_top_k stops once no lower-ranked mask can enter the top k).
    keep = strong.nonzero()[:, 0]  # (K,)
    top, decayed = matrix_nms_top_k(qm["masks"][keep], qm["maskness"][keep], params.top_k,
                                    kernel=params.nms_kernel, sigma=params.nms_sigma, areas=qm["area"][keep])
    counts["top_k"] = keep.numel() - top.numel()
    idx = keep[top]

    soft = qm["soft"][idx]  # (N, h, w)
    masks = np.zeros((0, height, width), dtype=bool)
    if idx.numel():
        up = F.interpolate(soft[None], size=(height, width), mode="bilinear", align_corners=False)[0]  # (N, H, W)
        masks = (up >= params.upsample_threshold).cpu().numpy()
        if params.keep_largest_component:
            masks = np.stack([largest_component(m) for m in masks])
    maskness = qm["maskness"][idx].cpu().numpy().astype(np.float32)  # raw, (N,)
    scores = decayed.cpu().numpy().astype(np.float32)  # (N,) the reference's score
    reasons = filter_reasons(masks, scores, params)
    for r in REASONS[2:]:
        counts[r] += int((reasons == r).sum())
    kept = np.flatnonzero(reasons == "")
    kept = kept[np.argsort(-scores[kept], kind="stable")]  # sorted by stored score
    kept_t = torch.from_numpy(kept).to(idx.device)

    emb = torch.zeros(0, params.embedding_dim)
    if kept.size:
        emb = embed_queries(qm["queries"][idx[kept_t]], dim=params.embedding_dim,
                            method=params.embedding_method, seed=params.embedding_seed)  # (N, D)
    return FreeMaskResult(
        masks=masks[kept],
        scores=scores[kept],
        maskness=maskness[kept],
        embeddings=emb.cpu().numpy().astype(np.float32),
        soft_masks=soft[kept_t].cpu().numpy().astype(np.float32),
        filtered=counts,
        n_queries=n_queries,
        skipped_scales=qm["skipped_scales"],
    )


def run_freemask_shard(*, manifest: str, weights: str, shard: int, shard_size: int, out_store: str,
                       params: FreeMaskParams, device: str = "auto", threads: int | None = None,
                       batch_size: int = 4, arch: str | None = None) -> dict:
    """Free Mask over one manifest shard -> one zarr store (maskless.store).

    The backbone (any of maskless.models.backbones.BACKBONES, a ResNet or a DINO ViT, recognised from the
    checkpoint; arch from the checkpoint unless given) runs in eval mode under inference_mode on images
    resized as in maskless.data.images.resized_hw; masks come back at each image's original size. Returns
    a summary dict: shard, images, masks, filtered (counts per REASONS), seconds.
    """

    t0 = time.perf_counter()
    set_threads(threads)
    dev = pick_device(device)
    records = shard_records(read_manifest(manifest), shard, shard_size)
    model = load_any_backbone(weights, arch=arch)
    require_level(model, params.feature_level, "freemask.feature_level", weights)
    model = model.to(dev).eval()
    log.info("free mask: shard %d, %d images, backbone %s on %s", shard, len(records), weights, dev)

    attrs = {"method": "freemask", "params": params.to_dict(), "weights": str(weights), "shard": shard}
    # Masks are packed as each image finishes: memory stays flat in the number of images of a shard.
    writer = ShardWriter(out_store, embedding_dim=params.embedding_dim, attrs=attrs)
    totals, done, n_masks = dict.fromkeys(REASONS, 0), 0, 0
    skipped = dict.fromkeys(params.scales, 0)  # images whose query map at a scale was empty
    step = max(1, len(records) // 10)
    with torch.inference_mode():
        for recs, batch, sizes in resized_batches(records, max(1, batch_size), params.input_size):
            x = normalize(torch.from_numpy(batch).permute(0, 3, 1, 2).to(dev))  # (B, 3, h, w)
            feats = model(x)[params.feature_level]  # (B, C, h/s, w/s)
            for rec, f, hw in zip(recs, feats, sizes):
                res = free_mask(f, hw, params)
                writer.add(ImageMasks(int(rec["id"]), hw[0], hw[1], res.masks, res.scores, res.embeddings))
                n_masks += len(res.scores)
                totals = {k: totals[k] + res.filtered[k] for k in REASONS}
                for s in res.skipped_scales:
                    skipped[s] += 1
            prev, done = done, done + len(recs)
            if done // step > prev // step or done == len(records):
                log.info("free mask: %d/%d images, %d masks so far", done, len(records), n_masks)
    writer.close()
    log.info("free mask: dropped per reason %s", totals)
    for s, n in skipped.items():
        if n:
            log.warning("free mask: scale %g gave no queries on %d/%d images (feature map under %g cells on "
                        "a side; raise input_size or use a finer feature_level)", s, n, len(records), 1 / s)
    summary = {"shard": shard, "images": len(records), "masks": n_masks, "filtered": totals,
               "seconds": round(time.perf_counter() - t0, 3)}
    log.info("free mask: wrote %s: %s", out_store, summary)
    return summary
