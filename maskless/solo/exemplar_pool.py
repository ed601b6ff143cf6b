"""The exemplar pool on disk (Exemplar-FreeSOLO's EKA output): the one piece of the exemplar stage that SOLO
training reads (the EEC term, maskless/solo/eec.py), so it lives on the SOLO side; maskless.exemplar.pool
mines and writes it (build_pool).

A pool is one folder, written whole into a temp folder beside it and renamed into place (as maskless.store
writes mask stores), so a killed job leaves nothing at the final path:

    arrays.zarr/        zarr v3 group: crops uint8 (N, S, S, 3) RGB, masks bool (N, S, S),
                        embeddings float32 (N, D) and pivot_centres float32 (K, D) when present;
                        attrs: format, format_version, n, side, n_pivots, and the caller's attrs (params, summary)
    exemplars.parquet   one row per exemplar: index, image_id, x, y, w, h (crop box in the source image),
                        method ("solo" or "grabcut"), iou (best SOLO mask vs GrabCut), pivot (-1: not clustered)

Pivots (optional, for analysis): spherical k-means (maskless.ops.kmeans, seeded) of the pool's embeddings
into K centres, the "pivots of the hidden categories" of METHODS.md.

An empty pool is a ValueError naming its path (on save and on load): every exemplar image failing GrabCut
must stop the workflow, not train EEC against nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from maskless.ops.kmeans import KMeansParams, fit_kmeans
from maskless.io import atomic_dir

if TYPE_CHECKING:
    from maskless.exemplar.refine import Exemplar

METHODS = ("solo", "grabcut")  # which mask an exemplar keeps (maskless.exemplar.refine)

FORMAT = "maskless-exemplar-pool"
FORMAT_VERSION = 1
ARRAYS_NAME, TABLE_NAME = "arrays.zarr", "exemplars.parquet"


def cluster_pivots(embeddings: np.ndarray, k: int, *, seed: int = 0, iterations: int = 50
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(centres float32 (k, D) unit rows, labels int64 (N,)) of spherical k-means on embeddings (N, D).
    k > N is a ValueError naming both."""

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
        bad = sorted(set(self.methods) - set(METHODS))
        if bad:
            raise ValueError(f"ExemplarPool: methods {bad} unknown; choices: {list(METHODS)}")
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
