"""Self-training relabel (METHODS.md "Self-supervised SOLO", last point; FreeSOLO Sec. 3.3).

Round r's training masks come from round r-1's SOLO predictions: keep predictions with score >= score_thresh,
at most max_per_image of them (highest scores first), and drop those whose box is almost as wide as the image
(real box width w >= max_width_fraction x image width; the reference computes `w - x` here, a width minus a
left edge, which keeps wide masks that start right of the origin: we use the width). Optionally
(keep_previous) the previous round's training masks that overlap no new mask (IoU < keep_iou with every
kept prediction) are carried over, so an object the segmenter missed is not lost from the labels.

Embeddings: the reference's relabelled annotations carry no semantic embedding, so the embedding loss has
nothing to learn from them (maskless.solo.losses masks zero-norm targets). `embeddings: "none"` (default)
writes none; "predicted" keeps the segmenter's own embedding-branch vector as the next target (a
self-distillation choice of ours, not in the paper). Carried-over previous masks keep their embeddings in
both modes when the previous store has them.

One relabel job per shard: it reads round r-1's prediction store of the shard and (keep_previous) the
shard's previous training-mask store, and writes one new store; the shard's images are exactly those of
the prediction store (an image with no kept mask is written with zero masks, so it stays counted).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from maskless.ops.masks import boxes_xywh, mask_iou
from maskless.store import ImageMasks, ShardReader
from maskless.store_writer import ShardWriter

log = logging.getLogger(__name__)

EMBEDDING_MODES = ("none", "predicted")


@dataclass(frozen=True)
class RelabelParams:
    score_thresh: float = 0.3
    max_per_image: int = 20
    max_width_fraction: float = 0.95
    keep_previous: bool = False
    keep_iou: float = 0.5
    embeddings: str = "none"

    def __post_init__(self) -> None:
        for key in ("score_thresh", "keep_iou"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"RelabelParams.{key} must lie in [0, 1], got {getattr(self, key)}")
        if not 0.0 < self.max_width_fraction <= 1.0:
            raise ValueError(f"RelabelParams.max_width_fraction must lie in (0, 1], got {self.max_width_fraction}")
        if self.max_per_image < 1:
            raise ValueError(f"RelabelParams.max_per_image must be >= 1, got {self.max_per_image}")
        if self.embeddings not in EMBEDDING_MODES:
            raise ValueError(f"RelabelParams.embeddings {self.embeddings!r} unknown; choices: {list(EMBEDDING_MODES)}")


def select_predictions(pred: ImageMasks, params: RelabelParams) -> tuple[np.ndarray, dict[str, int]]:
    """Indices of the predictions kept as labels (score order) and counts dropped per reason."""
    scores = pred.scores
    order = np.argsort(-scores, kind="stable")
    confident = order[scores[order] >= params.score_thresh]
    widths = boxes_xywh(pred.masks)[:, 2] if len(pred.scores) else np.zeros(0, np.float32)
    wide = widths[confident] >= params.max_width_fraction * pred.width
    empty = pred.masks[confident].reshape(len(confident), -1).sum(1) == 0 if len(confident) else np.zeros(0, bool)
    ok = confident[~wide & ~empty]
    kept = ok[: params.max_per_image]
    dropped = {"low_score": int(len(order) - len(confident)), "too_wide": int(wide.sum()),
               "empty": int((empty & ~wide).sum()), "over_limit": int(len(ok) - len(kept))}
    return kept, dropped


def relabel_image(pred: ImageMasks, previous: ImageMasks | None, params: RelabelParams
                  ) -> tuple[ImageMasks, dict[str, int]]:
    """The next round's training masks of one image (see the module docstring) and its counts."""
    kept, counts = select_predictions(pred, params)
    masks, scores = pred.masks[kept], pred.scores[kept]
    emb = None
    if params.embeddings == "predicted" and pred.embeddings is not None:
        emb = pred.embeddings[kept]
    counts["kept"], counts["carried"] = int(len(kept)), 0
    if params.keep_previous and previous is not None and len(previous.scores):
        if (previous.height, previous.width) != (pred.height, pred.width):
            raise ValueError(f"image {pred.image_id}: previous masks are {previous.height}x{previous.width} but "
                             f"predictions are {pred.height}x{pred.width}")
        iou = mask_iou(previous.masks, masks) if len(kept) else np.zeros((len(previous.scores), 0))
        carry = np.nonzero((iou < params.keep_iou).all(axis=1))[0]  # overlaps no new mask
        counts["carried"] = int(len(carry))
        if len(carry):
            old_emb = previous.embeddings[carry] if previous.embeddings is not None else None
            if emb is not None or old_emb is not None:
                d = (emb if emb is not None else old_emb).shape[1]
                emb = np.concatenate([emb if emb is not None else np.zeros((len(kept), d), np.float32),
                                      old_emb if old_emb is not None else np.zeros((len(carry), d), np.float32)])
            masks = np.concatenate([masks, previous.masks[carry]])
            scores = np.concatenate([scores, previous.scores[carry]])
    return ImageMasks(pred.image_id, pred.height, pred.width, masks, scores, emb), counts


def relabel_shard(*, predictions: str, out_store: str, params: RelabelParams, previous: str | None = None) -> dict:
    """Relabel every image of the prediction store `predictions` into `out_store`; return summed counts."""
    pred_reader = ShardReader(predictions)
    prev_reader = ShardReader(previous) if (previous and params.keep_previous) else None
    dim = int(pred_reader.attrs["embedding_dim"])
    if prev_reader is not None and int(prev_reader.attrs["embedding_dim"]) != dim:
        raise ValueError(f"embedding dims differ: predictions {predictions} have {dim}, previous masks {previous} "
                         f"have {prev_reader.attrs['embedding_dim']} (solo.model.emb_dim must equal "
                         f"freemask.embedding_dim)")
    prev_ids = set(int(i) for i in prev_reader.image_ids()) if prev_reader is not None else set()
    writer = ShardWriter(out_store, embedding_dim=dim,
                         attrs={"method": "selftrain", "params": asdict(params), "predictions": str(predictions),
                                "previous": str(previous) if prev_reader is not None else None})
    totals: dict[str, int] = {"images": 0}
    best = 0.0  # the highest prediction score, for the message when nothing is kept
    for pred in pred_reader.iter_images():
        best = max(best, float(pred.scores.max())) if len(pred.scores) else best
        prev = prev_reader.get(pred.image_id) if pred.image_id in prev_ids else None
        im, counts = relabel_image(pred, prev, params)
        writer.add(im)
        totals["images"] += 1
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    writer.close()
    log.info("relabel %s -> %s: %s", predictions, out_store, totals)
    if totals["images"] and not totals.get("kept", 0) and not totals.get("carried", 0):
        log.warning("relabel %s: no prediction passed the filters (score >= %.2f, the highest score is %.3f); the "
                    "next round has no masks from this shard (config key selftrain.score_thresh)", predictions,
                    params.score_thresh, best)
    return totals

