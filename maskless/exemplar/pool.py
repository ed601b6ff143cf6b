"""The exemplar pool (Exemplar-FreeSOLO EKA output) and the mining run that builds it (build_pool).

On disk a pool is one folder, written whole into a temp folder beside it and renamed into place (as
maskless.store writes mask stores), so a killed job leaves nothing at the final path:

    arrays.zarr/        zarr v3 group: crops uint8 (N, S, S, 3) RGB, masks bool (N, S, S),
                        embeddings float32 (N, D) and pivot_centres float32 (K, D) when present;
                        attrs: format, format_version, n, side, n_pivots, and the caller's attrs (params, summary)
    exemplars.parquet   one row per exemplar: index, image_id, x, y, w, h (crop box in the source image),
                        method ("solo" or "grabcut"), iou (best SOLO mask vs GrabCut), pivot (-1: not clustered)

Pivots (optional, for analysis): spherical k-means (maskless.stego.baseline.fit_kmeans, seeded) of the pool's
embeddings into K centres, the "pivots of the hidden categories" of METHODS.md. build_pool stores as
embeddings the round-0 SOLO's mask-pooled, L2-normalised mask features of each crop (eec.pool_embeddings with
no head); training recomputes its own with the EEC head.

An empty pool is a ValueError naming its path (on save and on load): every exemplar image failing GrabCut
must stop the workflow, not train EEC against nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from maskless.data.images import load_record
from maskless.exemplar.grabcut import GrabCutParams, grabcut_foreground
from maskless.exemplar.refine import REFINE_METHODS, Exemplar, RefineParams, refine_exemplar
from maskless.exemplar.select import SelectParams, check_count, choose_exemplars, pooled_features

log = logging.getLogger(__name__)

FORMAT = "maskless-exemplar-pool"
FORMAT_VERSION = 1
ARRAYS_NAME, TABLE_NAME = "arrays.zarr", "exemplars.parquet"


def cluster_pivots(embeddings: np.ndarray, k: int, *, seed: int = 0, iterations: int = 50
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(centres float32 (k, D) unit rows, labels int64 (N,)) of spherical k-means on embeddings (N, D).
    k > N is a ValueError naming both."""
    from maskless.ops.kmeans import KMeansParams, fit_kmeans

    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or not 1 <= k <= len(emb):
        raise ValueError(f"cluster_pivots: {k} pivots need 1 <= k <= the {len(emb)} exemplar embeddings "
                         f"(shape {emb.shape})")
    x = torch.from_numpy(emb)
    centres = torch.nn.functional.normalize(
        fit_kmeans(x[:, :, None, None], KMeansParams(n_clusters=k, iterations=iterations, seed=seed)), dim=1)
    labels = (torch.nn.functional.normalize(x, dim=1) @ centres.T).argmax(1)  # (N,)
    return centres.numpy().astype(np.float32), labels.numpy().astype(np.int64)


@dataclass
class ExemplarPool:
    """N exemplar objects (module docstring); arrays as named there, methods a list of N strings."""

    crops: np.ndarray
    masks: np.ndarray
    image_ids: np.ndarray
    boxes: np.ndarray
    methods: list[str]
    ious: np.ndarray
    embeddings: np.ndarray | None = None
    pivots: np.ndarray | None = None
    pivot_centres: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.crops, self.masks = np.asarray(self.crops, np.uint8), np.asarray(self.masks, bool)
        self.image_ids = np.asarray(self.image_ids, np.int64).reshape(-1)
        self.boxes = np.asarray(self.boxes, np.int64).reshape(-1, 4)
        self.ious = np.asarray(self.ious, np.float32).reshape(-1)
        self.methods = [str(m) for m in self.methods]
        n = len(self.image_ids)
        if self.crops.ndim != 4 or self.crops.shape[3] != 3 or self.crops.shape[1] != self.crops.shape[2]:
            raise ValueError(f"ExemplarPool: crops must be (N, S, S, 3), got {self.crops.shape}")
        if self.masks.shape != self.crops.shape[:3] or len(self.crops) != n:
            raise ValueError(f"ExemplarPool: masks {self.masks.shape} and {n} image ids do not fit crops "
                             f"{self.crops.shape}")
        if len(self.boxes) != n or len(self.ious) != n or len(self.methods) != n:
            raise ValueError(f"ExemplarPool: boxes, ious and methods need {n} rows, got {len(self.boxes)}, "
                             f"{len(self.ious)}, {len(self.methods)}")
        bad = sorted(set(self.methods) - set(REFINE_METHODS))
        if bad:
            raise ValueError(f"ExemplarPool: methods {bad} unknown; choices: {list(REFINE_METHODS)}")
        if n and not self.masks.reshape(n, -1).any(1).all():
            raise ValueError(f"ExemplarPool: exemplars {np.flatnonzero(~self.masks.reshape(n, -1).any(1)).tolist()} "
                             f"have empty masks")
        if self.embeddings is not None:
            self.embeddings = np.asarray(self.embeddings, np.float32)
            if self.embeddings.ndim != 2 or len(self.embeddings) != n:
                raise ValueError(f"ExemplarPool: embeddings must be ({n}, D), got {self.embeddings.shape}")
        if (self.pivots is None) != (self.pivot_centres is None):
            raise ValueError("ExemplarPool: pivots and pivot_centres come together")
        if self.pivots is not None:
            self.pivots = np.asarray(self.pivots, np.int64).reshape(-1)
            self.pivot_centres = np.asarray(self.pivot_centres, np.float32)
            if len(self.pivots) != n or self.pivots.min(initial=0) < 0 or \
                    self.pivots.max(initial=-1) >= len(self.pivot_centres):
                raise ValueError(f"ExemplarPool: pivots must be {n} labels in [0, {len(self.pivot_centres)})")

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def side(self) -> int:
        return int(self.crops.shape[1])

    @classmethod
    def from_exemplars(cls, exemplars: list[Exemplar]) -> ExemplarPool:
        sides = {e.crop.shape for e in exemplars}
        if len(sides) > 1:
            raise ValueError(f"ExemplarPool.from_exemplars: crops of different sizes {sorted(sides)}")
        side = next(iter(sides))[0] if sides else 1  # an empty pool: (0, 1, 1, 3), refused by save()
        return cls(np.array([e.crop for e in exemplars], np.uint8).reshape(-1, side, side, 3),
                   np.array([e.mask for e in exemplars], bool).reshape(-1, side, side),
                   [e.image_id for e in exemplars], [e.box for e in exemplars], [e.method for e in exemplars],
                   [e.iou for e in exemplars])

    def with_pivots(self, k: int, *, seed: int = 0, iterations: int = 50) -> ExemplarPool:
        """A copy with K pivots clustered from the embeddings (ValueError without embeddings)."""
        if self.embeddings is None:
            raise ValueError("ExemplarPool.with_pivots: the pool has no embeddings to cluster")
        centres, labels = cluster_pivots(self.embeddings, k, seed=seed, iterations=iterations)
        return dataclasses.replace(self, pivots=labels, pivot_centres=centres)

    def save(self, path: str, *, attrs: dict | None = None) -> None:
        """Write the pool folder at `path` atomically (module docstring); attrs must be JSON-like."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        import zarr

        from maskless.io import atomic_dir

        if len(self) == 0:
            raise ValueError(f"exemplar pool {path} would be empty: no exemplar to save")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "n": len(self), "side": self.side,
                "n_pivots": 0 if self.pivot_centres is None else len(self.pivot_centres)}
        extra = json.loads(json.dumps(attrs or {}))
        clash = sorted(set(meta) & set(extra))
        if clash:
            raise ValueError(f"exemplar pool {path}: attrs {clash} are the pool's own; pick other names")
        arrays = {"crops": self.crops, "masks": self.masks, "embeddings": self.embeddings,
                  "pivot_centres": self.pivot_centres}
        table = pa.table({
            "index": pa.array(np.arange(len(self)), pa.int64()), "image_id": pa.array(self.image_ids, pa.int64()),
            **{c: pa.array(self.boxes[:, j], pa.int64()) for j, c in enumerate("xywh")},
            "method": pa.array(self.methods, pa.string()), "iou": pa.array(self.ious, pa.float32()),
            "pivot": pa.array(np.full(len(self), -1) if self.pivots is None else self.pivots, pa.int64())})
        with atomic_dir(path) as tmp:
            group = zarr.open_group(str(Path(tmp) / ARRAYS_NAME), mode="w", zarr_format=3)
            for name, data in arrays.items():
                if data is not None:
                    group.create_array(name, data=data, chunks=(min(64, len(data)), *data.shape[1:]))
            group.attrs.update({**extra, **meta})
            pq.write_table(table, Path(tmp) / TABLE_NAME)

    @classmethod
    def load(cls, path: str) -> ExemplarPool:
        """Read a pool folder back exactly; ValueError naming path when it is not a pool, empty or inconsistent."""
        import pyarrow.parquet as pq
        import zarr

        if not (Path(path) / ARRAYS_NAME).is_dir() or not (Path(path) / TABLE_NAME).is_file():
            raise FileNotFoundError(f"exemplar pool {path} does not exist (want {ARRAYS_NAME} and {TABLE_NAME})")
        group = zarr.open_group(str(Path(path) / ARRAYS_NAME), mode="r")
        if group.attrs.get("format") != FORMAT or group.attrs.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not an exemplar pool of format {FORMAT} v{FORMAT_VERSION} "
                             f"(attrs format={group.attrs.get('format')!r} v{group.attrs.get('format_version')})")
        t = pq.read_table(Path(path) / TABLE_NAME).to_pydict()
        n = int(group.attrs["n"])
        if n == 0 or len(t["index"]) != n or t["index"] != list(range(n)):
            raise ValueError(f"exemplar pool {path} is empty or inconsistent: attrs n={n}, "
                             f"{len(t['index'])} table rows")
        names = set(group.array_keys())
        get = {k: (group[k][...] if k in names else None) for k in ("crops", "masks", "embeddings", "pivot_centres")}
        pivots = np.asarray(t["pivot"], np.int64) if get["pivot_centres"] is not None else None
        try:
            return cls(get["crops"], get["masks"], t["image_id"], np.stack([t[c] for c in "xywh"], axis=1),
                       t["method"], t["iou"], get["embeddings"], pivots, get["pivot_centres"])
        except ValueError as e:
            raise ValueError(f"exemplar pool {path}: {e}") from e

    @staticmethod
    def read_attrs(path: str) -> dict:
        import zarr

        return dict(zarr.open_group(str(Path(path) / ARRAYS_NAME), mode="r").attrs)


@dataclass
class PoolParams:
    """Everything build_pool's result depends on. pivots: K clusters of the pool (0: none)."""

    select: SelectParams = field(default_factory=SelectParams)
    grabcut: GrabCutParams = field(default_factory=GrabCutParams)
    refine: RefineParams = field(default_factory=RefineParams)
    pivots: int = 0
    pivot_seed: int = 0
    embed_batch_size: int = 32

    def __post_init__(self) -> None:
        for key, kind in (("select", SelectParams), ("grabcut", GrabCutParams), ("refine", RefineParams)):
            if isinstance(getattr(self, key), dict):
                setattr(self, key, kind(**getattr(self, key)))
        for key in ("pivots", "pivot_seed"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PoolParams.{key} must be an integer >= 0, got {value!r}")
        if not isinstance(self.embed_batch_size, int) or self.embed_batch_size < 1:
            raise ValueError(f"PoolParams.embed_batch_size must be a positive integer, got {self.embed_batch_size!r}")
        if self.pivots > self.select.count:
            raise ValueError(f"PoolParams.pivots {self.pivots} exceeds the exemplar count {self.select.count}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _mine(chosen: list[dict], model, params: PoolParams, store, dev, counts: Counter, failed: dict) -> list:
    exemplars = []
    for rec in chosen:
        image_id = int(rec["id"])
        img = load_record(rec)
        masks = store.get(image_id) if store is not None and image_id in store else None
        fg = grabcut_foreground(img, params.grabcut, masks=masks, image_id=image_id)
        counts[f"init_{fg.init}"] += 1
        if fg.empty:
            failed[image_id] = fg.reason
            log.warning("exemplar image %d left out: %s", image_id, fg.reason)
            continue
        ex = refine_exemplar(img, fg, image_id=image_id, model=model, params=params.refine, device=dev)
        counts[f"mask_{ex.method}"] += 1
        exemplars.append(ex)
    return exemplars


def build_pool(*, manifest: str, solo_weights: str, out_pool: str, params: PoolParams,
               masks_index: str | None = None, device: str = "auto", threads: int | None = None) -> dict:
    """Mine the exemplar pool: select images, GrabCut, refine with the round-0 SOLO, embed, cluster, save.

    "diverse" selection pools the SOLO checkpoint's own backbone features. masks_index (Free Mask index) is
    required for grabcut init "freemask"; images without Free Masks fall back to the centred rectangle
    (counted as init_center (no free mask)). Returns the summary also stored in the pool's attrs: images,
    selected, exemplars, counts (init_* and mask_solo / mask_grabcut), pivots (K used: at most the exemplars
    left, a logged cap), no_foreground {image id: reason}, seconds. No exemplar left: ValueError naming
    out_pool and every reason.
    """
    from maskless.data.manifest import read_manifest
    from maskless.solo.eec import pool_embeddings
    from maskless.io import pick_device, set_threads
    from maskless.solo.predict import load_solo
    from maskless.store import MaskStore

    t0 = time.perf_counter()
    set_threads(threads)
    dev = pick_device(device)
    if params.grabcut.init == "freemask" and not masks_index:
        raise ValueError("build_pool: grabcut init 'freemask' needs masks_index (the Free Mask index)")
    records = read_manifest(manifest)
    check_count(len(records), params.select.count)
    model, _ = load_solo(solo_weights)
    model = model.to(dev)
    features = None
    if params.select.method == "diverse":
        features = pooled_features(records, model.backbone, input_size=params.select.input_size, device=dev)
    chosen = choose_exemplars(records, params.select, features=features)
    store = MaskStore(masks_index) if params.grabcut.init == "freemask" else None
    counts, failed = Counter(), {}
    exemplars = _mine(chosen, model, params, store, dev, counts, failed)
    if not exemplars:
        raise ValueError(f"exemplar pool {out_pool} would be empty: GrabCut found no foreground in any of the "
                         f"{len(chosen)} exemplar images: {failed}")
    pool = ExemplarPool.from_exemplars(exemplars)
    emb = pool_embeddings(model, None, pool.crops, pool.masks, batch_size=params.embed_batch_size)
    pool = dataclasses.replace(pool, embeddings=emb.cpu().numpy())
    if params.pivots:
        pool = pool.with_pivots(min(params.pivots, len(pool)), seed=params.pivot_seed)
        if params.pivots > len(pool):
            log.warning("exemplar pool: %d pivots asked, only %d exemplars: clustered into %d",
                        params.pivots, len(pool), len(pool))
    summary = {"images": len(records), "selected": len(chosen), "exemplars": len(pool), "counts": dict(counts),
               "pivots": 0 if pool.pivot_centres is None else len(pool.pivot_centres),
               "no_foreground": {str(k): v for k, v in failed.items()},
               "seconds": round(time.perf_counter() - t0, 3)}
    pool.save(out_pool, attrs={"params": params.to_dict(), "summary": summary, "solo_weights": str(solo_weights)})
    log.info("exemplar pool %s: %s", out_pool, summary)
    return summary
