"""COCO JSON export of a mask store: results (for evaluation) and annotations (to train any detector).

Memory stays flat in the dataset (issue 17): the store is read one image at a time (MaskStore.iter_images,
one shard reader at a time), each image's masks are RLE-encoded once for both files, and each record is
written to its file as it is made, so no list of every record, nor the whole JSON text, is ever held. The
files are byte for byte what json.dumps of the whole object (write_json_atomic) gives, written to a temp
path and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import IO, Iterator

import numpy as np

from maskless.io import atomic_path
from maskless.ops.masks import boxes_xywh, encode_rles
from maskless.store import ImageMasks, MaskStore

log = logging.getLogger(__name__)

CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]


def _coco_records(im: ImageMasks, max_per_image: int | None) -> list[tuple[dict, float, np.ndarray, float]]:
    order = np.argsort(-im.scores, kind="stable")[:max_per_image]
    masks = im.masks[order]
    rles = encode_rles(masks)
    boxes = boxes_xywh(masks)
    areas = masks.sum(axis=(1, 2))
    return [(rles[i], float(im.scores[k]), boxes[i], float(areas[i])) for i, k in enumerate(order)]


class _JsonList:
    """Writes the items of a JSON list one by one, as json.dumps writes a list (", " between items)."""

    def __init__(self, f: IO[str]) -> None:
        self.f, self.n = f, 0

    def add(self, item) -> None:
        self.f.write((", " if self.n else "") + json.dumps(item))
        self.n += 1


@contextlib.contextmanager
def _streamed(path: str | None, head: str, tail: str) -> Iterator[_JsonList | None]:
    """A list written between head and tail into a temp file renamed onto path at the end (None: no file)."""
    if path is None:
        yield None
        return
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(head)
        out = _JsonList(f)
        yield out
        f.write(tail)


def _images_json(records: dict[int, dict]) -> str:
    return json.dumps([{"id": int(r["id"]), "file_name": r["file_name"], "width": int(r["width"]),
                        "height": int(r["height"])} for r in records.values()])


def _checked(im: ImageMasks, records: dict[int, dict], index: str, manifest: str) -> None:
    rec = records.get(im.image_id)
    if rec is None:
        raise ValueError(f"image id {im.image_id} of mask index {index} is not in manifest {manifest}")
    if (int(rec["height"]), int(rec["width"])) != (im.height, im.width):
        raise ValueError(f"image {im.image_id}: masks are {im.height}x{im.width} in {index} but the "
                         f"manifest {manifest} says {rec['height']}x{rec['width']}")


def export_coco_files(*, index: str, manifest: str, results: str | None = None, annotations: str | None = None,
                      max_per_image: int | None = None, max_annotations_per_image: int | None = None) -> dict:
    """Export the indexed masks to COCO results and/or annotations JSON in one pass over the store.

    results: [{image_id, category_id: 1, segmentation (RLE, str counts), score}], sorted by score within each
    image, at most max_per_image per image, and WITHOUT "bbox" (pycocotools would otherwise use box areas
    for the size ranges). annotations: a COCO dataset (images from the manifest, one category "object",
    annotations with id, bbox xywh, area, iscrowd 0, segmentation RLE, score) that any detector can train
    on, at most max_annotations_per_image per image (None: every mask). Returns {"images", "results",
    "annotations"} counts (0 for a file not asked for).
    """
    from maskless.data.manifest import read_manifest

    caps = {"max_per_image": max_per_image, "max_annotations_per_image": max_annotations_per_image}
    for name, cap in caps.items():
        if cap is not None and cap < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {cap}")
    wanted = [cap for path, cap in ((results, max_per_image), (annotations, max_annotations_per_image)) if path]
    if not wanted:
        raise ValueError("export_coco_files needs a results or an annotations path")
    keep = None if None in wanted else max(wanted)  # each mask is encoded once, for both files
    records = {int(r["id"]): r for r in read_manifest(manifest)}
    head = "" if annotations is None else (
        f'{{"info": {json.dumps({"description": f"maskless masks from {index}"})}, "images": '
        f'{_images_json(records)}, "categories": {json.dumps(CATEGORIES)}, "annotations": [')
    with _streamed(results, "[", "]\n") as res, _streamed(annotations, head, "]}\n") as ann:
        for im in MaskStore(index).iter_images():
            _checked(im, records, index, manifest)
            for rank, (rle, score, box, area) in enumerate(_coco_records(im, keep)):
                if res is not None and (max_per_image is None or rank < max_per_image):
                    res.add({"image_id": im.image_id, "category_id": 1, "segmentation": rle, "score": score})
                if ann is not None and (max_annotations_per_image is None or rank < max_annotations_per_image):
                    ann.add({"id": ann.n + 1, "image_id": im.image_id, "category_id": 1,
                             "bbox": [float(v) for v in box], "area": area, "iscrowd": 0,
                             "segmentation": rle, "score": score})
    counts = {"images": len(records), "results": res.n if res else 0, "annotations": ann.n if ann else 0}
    log.info("exported the masks of %s: %d results (%s), %d annotations (%s)", index, counts["results"], results,
             counts["annotations"], annotations)
    return counts


def export_coco(*, index: str, manifest: str, out_json: str, kind: str = "results",
                max_per_image: int | None = None) -> dict:
    """Export the indexed masks to one COCO JSON file, kind "results" or "annotations" (export_coco_files,
    max_per_image capping that file); returns {"images", "masks"} counts."""
    if kind not in ("results", "annotations"):
        raise ValueError(f"export_coco kind must be 'results' or 'annotations', got {kind!r}")
    if kind == "results":
        counts = export_coco_files(index=index, manifest=manifest, results=out_json, max_per_image=max_per_image)
    else:
        counts = export_coco_files(index=index, manifest=manifest, annotations=out_json,
                                   max_annotations_per_image=max_per_image)
    return {"images": counts["images"], "masks": counts[kind]}
