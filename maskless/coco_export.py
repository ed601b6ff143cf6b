"""COCO JSON export of a mask store: results (for evaluation) and annotations (to train any detector).

Memory stays flat in the dataset (issue 17): the store is read one image at a time (MaskStore.iter_images,
one shard reader at a time), each image's masks are RLE-encoded once for both files, and each record is
written to its file as it is made, so no list of every record, nor the whole JSON text, is ever held; of
the manifest only four columns are read (arrow and int64 arrays, tens of bytes an image). The
files are byte for byte what json.dumps of the whole object (write_json_atomic) gives, written to a temp
path and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import IO, Iterable, Iterator

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
def _streamed(path: str | None, head: Iterable[str], tail: str) -> Iterator[_JsonList | None]:
    """A list written after the head pieces and before tail, into a temp file renamed onto path at the end
    (None: no file)."""
    if path is None:
        yield None
        return
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.writelines(head)
        out = _JsonList(f)
        yield out
        f.write(tail)


class _Manifest:
    """The manifest columns an export needs (id, file_name, width, height), sorted by id: arrow columns
    and int64 arrays, not a dict per row (a row dict with paths and hashes is about a kilobyte)."""

    COLUMNS = ("id", "file_name", "width", "height")

    def __init__(self, path: str) -> None:
        import pyarrow.parquet as pq

        self.path = str(path)
        missing = [c for c in self.COLUMNS if c not in pq.read_schema(path).names]
        if missing:
            raise ValueError(f"image manifest {path} lacks columns {missing}")
        self.table = pq.read_table(path, columns=list(self.COLUMNS)).sort_by("id")
        self.ids, self.heights, self.widths = (self.table[c].to_numpy().astype(np.int64)
                                               for c in ("id", "height", "width"))  # (M,) each

    def check(self, im: ImageMasks, index: str) -> None:
        k = int(np.searchsorted(self.ids, im.image_id))
        if k >= self.ids.size or self.ids[k] != im.image_id:
            raise ValueError(f"image id {im.image_id} of mask index {index} is not in manifest {self.path}")
        if (self.heights[k], self.widths[k]) != (im.height, im.width):
            raise ValueError(f"image {im.image_id}: masks are {im.height}x{im.width} in {index} but the "
                             f"manifest {self.path} says {self.heights[k]}x{self.widths[k]}")

    def images_json(self) -> Iterator[str]:
        """The COCO "images" list as json.dumps writes it, a piece per image."""
        yield "["
        for i, row in enumerate(r for batch in self.table.to_batches() for r in batch.to_pylist()):
            yield (", " if i else "") + json.dumps({"id": int(row["id"]), "file_name": row["file_name"],
                                                    "width": int(row["width"]), "height": int(row["height"])})
        yield "]"


def _annotations_head(index: str, manifest: _Manifest) -> Iterator[str]:
    yield f'{{"info": {json.dumps({"description": f"maskless masks from {index}"})}, "images": '
    yield from manifest.images_json()
    yield f', "categories": {json.dumps(CATEGORIES)}, "annotations": ['


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
    caps = {"max_per_image": max_per_image, "max_annotations_per_image": max_annotations_per_image}
    for name, cap in caps.items():
        if cap is not None and cap < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {cap}")
    wanted = [cap for path, cap in ((results, max_per_image), (annotations, max_annotations_per_image)) if path]
    if not wanted:
        raise ValueError("export_coco_files needs a results or an annotations path")
    keep = None if None in wanted else max(wanted)  # each mask is encoded once, for both files
    images = _Manifest(manifest)
    head = _annotations_head(index, images) if annotations else ()
    with _streamed(results, ("[",), "]\n") as res, _streamed(annotations, head, "]}\n") as ann:
        for im in MaskStore(index).iter_images():
            images.check(im, index)
            for rank, (rle, score, box, area) in enumerate(_coco_records(im, keep)):
                if res is not None and (max_per_image is None or rank < max_per_image):
                    res.add({"image_id": im.image_id, "category_id": 1, "segmentation": rle, "score": score})
                if ann is not None and (max_annotations_per_image is None or rank < max_annotations_per_image):
                    ann.add({"id": ann.n + 1, "image_id": im.image_id, "category_id": 1,
                             "bbox": [float(v) for v in box], "area": area, "iscrowd": 0,
                             "segmentation": rle, "score": score})
    counts = {"images": int(images.ids.size), "results": res.n if res else 0, "annotations": ann.n if ann else 0}
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
