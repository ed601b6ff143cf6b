"""Ground-truth instance masks as a mask store: what the oracle SOLO variant trains on (config `oracles`).

One store per shard of the manifest, in the Free Mask sharding and format (maskless.store), so the oracle's
SOLO training reads them exactly as it reads Free Mask's coarse masks: every non-crowd annotation of an image
becomes one mask of score 1.0 with no embedding (the embedding loss skips zero targets). The COCO file is
read once per shard; masks are packed image by image.
"""

from __future__ import annotations

import logging

import numpy as np
from pycocotools.coco import COCO

from maskless.data.manifest import read_manifest, shard_records
from maskless.store import ImageMasks
from maskless.store_writer import ShardWriter

log = logging.getLogger(__name__)


def gt_image_masks(coco: COCO, image_id: int, height: int, width: int, where: str) -> ImageMasks:
    """The non-crowd annotations of one image as ImageMasks (score 1.0 each). An image the ground truth does
    not know, or a size that differs from the manifest's, is an error naming `where`."""
    info = coco.imgs.get(image_id)
    if info is None:
        raise ValueError(f"{where}: image {image_id} of the manifest has no entry in the ground truth")
    if (int(info["height"]), int(info["width"])) != (height, width):
        raise ValueError(f"{where}: image {image_id} is {info['height']}x{info['width']} in the ground truth "
                         f"but {height}x{width} in the manifest")
    anns = [a for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
    masks = (np.stack([coco.annToMask(a).astype(bool) for a in anns]) if anns
             else np.zeros((0, height, width), bool))
    return ImageMasks(image_id, height, width, masks, np.ones(len(masks), np.float32))


def write_gt_shard(*, manifest: str, gt: str, shard: int, shard_size: int, out_store: str,
                   embedding_dim: int) -> dict:
    """Write shard `shard` of the manifest's ground-truth masks to `out_store`; returns counts."""
    coco = COCO(gt)
    records = shard_records(read_manifest(manifest), shard, shard_size)
    writer = ShardWriter(out_store, embedding_dim=embedding_dim,
                         attrs={"method": "ground_truth", "gt": str(gt), "shard": shard})
    n_masks = 0
    for rec in records:
        im = gt_image_masks(coco, int(rec["id"]), int(rec["height"]), int(rec["width"]), gt)
        writer.add(im)
        n_masks += len(im.masks)
    writer.close()
    log.info("ground-truth masks: shard %d, %d images, %d masks", shard, len(records), n_masks)
    return {"shard": shard, "images": len(records), "masks": n_masks}
