"""The exemplar mining run (Exemplar-FreeSOLO's EKA): build_pool selects the exemplar images, cuts their
foreground with GrabCut, refines it with the round-0 SOLO and writes the pool (maskless.solo.exemplar_pool:
its format, reader and optional k-means pivots). The pool's embeddings are the round-0 SOLO's mask-pooled,
L2-normalised mask features of each crop (maskless.solo.eec.pool_embeddings with no head); training
recomputes its own with the EEC head.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from maskless.data.images import load_record
from maskless.exemplar.grabcut import GrabCutParams, grabcut_foreground
from maskless.exemplar.refine import RefineParams, refine_exemplar
from maskless.exemplar.select import SelectParams, check_count, choose_exemplars, pooled_features
from maskless.solo.exemplar_pool import ExemplarPool

log = logging.getLogger(__name__)


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
