"""A trivial coarse-mask extractor for the extractor-interface test: connected components of a colour
quantisation. It exists to show what a new extractor costs (issue 13 item 3): this module, its rule file
(colorcc.smk beside it) and one entry in the Snakefile's EXTRACTORS; the index, COCO exports, instance
metrics, mask quality and SOLO round 0 (config solo.masks: colorcc) come from the shared rules.

As a Snakemake script (rule colorcc_shard) it writes one shard of an image set into a mask store (no
`from __future__` import: Snakemake puts its preamble above a script).
"""

import cv2
import numpy as np

from maskless.data.images import load_record
from maskless.data.manifest import read_manifest, shard_records
from maskless.stage_utils import begin
from maskless.store import ImageMasks
from maskless.store_writer import ShardWriter


def color_components(image: np.ndarray, levels: int = 4, min_area: int = 16,
                     max_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> masks (N, H, W) bool, scores (N,): the 8-connected components of each colour after
    quantising every channel to `levels` values, keeping those of at least min_area pixels and at most
    max_fraction of the image; score = the component's share of its bounding box (compact blobs first)."""
    h, w = image.shape[:2]
    q = (image.astype(np.int32) * levels // 256).reshape(h, w, 3)
    codes = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
    masks, scores = [], []
    for code in np.unique(codes):
        n, labels, stats, _ = cv2.connectedComponentsWithStats((codes == code).astype(np.uint8), connectivity=8)
        for c in range(1, n):
            x, y, bw, bh, area = stats[c]
            if min_area <= area <= max_fraction * h * w:
                masks.append(labels == c)
                scores.append(area / float(bw * bh))
    if not masks:
        return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
    return np.stack(masks), np.asarray(scores, np.float32)


def run_shard(manifest: str, shard: int, shard_size: int, out_store: str, embedding_dim: int) -> None:
    writer = ShardWriter(out_store, embedding_dim=embedding_dim, attrs={"method": "colorcc", "shard": shard})
    for rec in shard_records(read_manifest(manifest), shard, shard_size):
        image = load_record(rec)
        masks, scores = color_components(image)
        writer.add(ImageMasks(int(rec["id"]), image.shape[0], image.shape[1], masks, scores))  # no embeddings
    writer.close()


if "snakemake" in globals():
    smk = snakemake  # noqa: F821 (injected by Snakemake)
    params = begin(smk)  # the rule's log file, its params logged
    run_shard(smk.input.manifest, int(smk.wildcards.shard), params["shard_size"], smk.output.store,
              params["embedding_dim"])
