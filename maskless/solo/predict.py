"""SOLOv2 inference over one manifest shard -> one mask store (the Free Mask store format, maskless.store).

The store is what export_coco, eval and the next self-training round read, exactly as for Free Mask: masks
at each image's original size, scores (Matrix-NMS-decayed category x maskness) and L2-normalised
embedding-branch vectors. Images are resized as in training without jitter (short side input_size, long
side at most twice that; maskless.data.images.resized_hw) and batched only with images of the same resized
size, so every image is padded only to the next multiple of 32 and its predictions do not depend on which
other images share its batch.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from maskless.data.images import resized_batches
from maskless.data.manifest import read_manifest, shard_records
from maskless.io import pick_device, set_threads
from maskless.models.resnet import normalize
from maskless.solo.inference import SoloInferenceParams, instance_strides, predict
from maskless.solo.model import SOLOv2, SoloModelParams, pad_to_multiple
from maskless.store import ImageMasks
from maskless.store_writer import ShardWriter

log = logging.getLogger(__name__)


def load_solo(weights: str) -> tuple[SOLOv2, dict]:
    """Rebuild SOLOv2 from a train_solo checkpoint -> (model in eval mode on CPU, its params dict)."""
    try:
        ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"SOLO weights {weights} do not exist") from None
    except Exception as e:  # noqa: BLE001 (torch.load raises many types on junk bytes)
        raise ValueError(f"{weights} is not a readable torch checkpoint: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "solov2" or "model" not in ckpt:
        raise ValueError(f"{weights} is not a SOLOv2 checkpoint written by maskless.solo.train "
                         f"(want keys kind='solov2', model, params)")
    params = ckpt.get("params") or {}
    if "model" not in params:
        raise ValueError(f"{weights}: params lack the 'model' architecture entry")
    model = SOLOv2(SoloModelParams(**params["model"]))
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval(), params


def predict_shard(*, manifest: str, weights: str, shard: int, shard_size: int, out_store: str,
                  params: SoloInferenceParams, input_size: int, device: str = "auto",
                  threads: int | None = None, batch_size: int = 4) -> dict:
    """SOLOv2 predictions for one manifest shard -> the zarr store out_store.

    Returns a summary: shard, images, masks, empty (images with no prediction), seconds.
    """

    if input_size < 1:
        raise ValueError(f"predict_shard: input_size must be >= 1, got {input_size}")
    t0 = time.perf_counter()
    set_threads(threads)
    dev = pick_device(device)
    records = shard_records(read_manifest(manifest), shard, shard_size)
    model, train_params = load_solo(weights)
    model = model.to(dev)
    emb_dim = model.params.emb_dim
    strides = instance_strides(model.params.levels)
    log.info("SOLO predict: shard %d, %d images, weights %s on %s", shard, len(records), weights, dev)
    attrs = {"method": "solo", "params": {**dataclasses.asdict(params), "input_size": input_size},
             "weights": str(weights), "shard": shard}
    writer = ShardWriter(out_store, embedding_dim=emb_dim, attrs=attrs)
    done, n_masks, empty = 0, 0, 0
    every = max(1, len(records) // 10)
    with torch.inference_mode():
        for recs, batch, sizes in resized_batches(records, max(1, batch_size), input_size):
            x = normalize(torch.from_numpy(batch).permute(0, 3, 1, 2).to(dev))  # (B, 3, h, w)
            x, hw = pad_to_multiple(x)  # (B, 3, H', W')
            outputs = model(x)
            for rec, orig, res in zip(recs, sizes, _per_image(outputs, hw, sizes, params, strides)):
                writer.add(ImageMasks(int(rec["id"]), orig[0], orig[1], res["masks"], res["scores"],
                                      res["embeddings"]))
                n_masks += len(res["scores"])
                empty += len(res["scores"]) == 0
            prev, done = done, done + len(recs)
            if done // every > prev // every or done == len(records):
                log.info("SOLO predict: %d/%d images, %d masks so far", done, len(records), n_masks)
    writer.close()
    summary = {"shard": shard, "images": len(records), "masks": n_masks, "empty": empty,
               "seconds": round(time.perf_counter() - t0, 3)}
    log.info("SOLO predict: wrote %s: %s", out_store, summary)
    return summary


def _per_image(outputs: dict, hw: tuple[int, int], sizes: list[tuple[int, int]], params: SoloInferenceParams,
               strides):
    """predict() per image, each resized to its own original size (images of a batch share hw)."""
    for b, orig in enumerate(sizes):
        one = {k: [t[b : b + 1] for t in v] if isinstance(v, list) else v[b : b + 1] for k, v in outputs.items()}
        yield predict(one, hw, params, out_hw=orig, strides=strides)[0]
