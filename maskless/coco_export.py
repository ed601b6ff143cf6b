"""COCO JSON export of a mask store: results (for evaluation) and annotations (to train any detector)."""

from __future__ import annotations

import logging

import numpy as np

from maskless.io import write_json_atomic
from maskless.ops.masks import boxes_xywh, encode_rles
from maskless.store import ImageMasks, MaskStore

log = logging.getLogger(__name__)


def _coco_records(im: ImageMasks, max_per_image: int | None) -> list[tuple[dict, float, np.ndarray, float]]:
    order = np.argsort(-im.scores, kind="stable")[:max_per_image]
    masks = im.masks[order]
    rles = encode_rles(masks)
    boxes = boxes_xywh(masks)
    areas = masks.sum(axis=(1, 2))
    return [(rles[i], float(im.scores[k]), boxes[i], float(areas[i])) for i, k in enumerate(order)]


def export_coco(*, index: str, manifest: str, out_json: str, kind: str = "results",
                max_per_image: int | None = None) -> dict:
    """Export the indexed masks to COCO JSON (atomic write); returns {"images", "masks"} counts.

    kind "results": [{image_id, category_id: 1, segmentation (RLE, str counts), score}], sorted by score
    within each image and WITHOUT "bbox" (pycocotools would otherwise use box areas for the size ranges).
    kind "annotations": a COCO dataset (images from the manifest, one category "object", annotations with
    id, bbox xywh, area, iscrowd 0, segmentation RLE, score) that any detector can train on.
    """
    from maskless.data.manifest import read_manifest

    if kind not in ("results", "annotations"):
        raise ValueError(f"export_coco kind must be 'results' or 'annotations', got {kind!r}")
    if max_per_image is not None and max_per_image < 1:
        raise ValueError(f"max_per_image must be >= 1 or None, got {max_per_image}")
    records = {int(r["id"]): r for r in read_manifest(manifest)}
    out, anns = [], []
    for im in MaskStore(index).iter_images():
        rec = records.get(im.image_id)
        if rec is None:
            raise ValueError(f"image id {im.image_id} of mask index {index} is not in manifest {manifest}")
        if (int(rec["height"]), int(rec["width"])) != (im.height, im.width):
            raise ValueError(f"image {im.image_id}: masks are {im.height}x{im.width} in {index} but the "
                             f"manifest {manifest} says {rec['height']}x{rec['width']}")
        for rle, score, box, area in _coco_records(im, max_per_image):
            if kind == "results":
                out.append({"image_id": im.image_id, "category_id": 1, "segmentation": rle, "score": score})
            else:
                anns.append({"id": len(anns) + 1, "image_id": im.image_id, "category_id": 1,
                             "bbox": [float(v) for v in box], "area": area, "iscrowd": 0,
                             "segmentation": rle, "score": score})
    if kind == "annotations":
        images = [{"id": int(r["id"]), "file_name": r["file_name"], "width": int(r["width"]),
                   "height": int(r["height"])} for r in records.values()]
        out = {"info": {"description": f"maskless masks from {index}"}, "images": images,
               "categories": [{"id": 1, "name": "object", "supercategory": "object"}], "annotations": anns}
    write_json_atomic(out_json, out)
    n = len(out) if kind == "results" else len(anns)
    log.info("exported %d masks (%s) to %s", n, kind, out_json)
    return {"images": len(records), "masks": n}
