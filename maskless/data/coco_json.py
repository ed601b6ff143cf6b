"""The COCO instances JSON at ingest (maskless.data.ingest): load_coco reads and checks it, clean_gt restricts
it to the usable images and fills in what may be missing; IngestError is the error ingest raises for bad
input, with one line per problem.

The JSON is checked before any image is decoded: structure, duplicate ids, dangling image/category ids,
segmentations, boxes (more than 1 px outside the image is an error, within 1 px they are clipped). A
missing `area` is computed from the segmentation and a missing `iscrowd` becomes 0, both counted and logged.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pycocotools.mask as mask_utils

log = logging.getLogger("maskless.ingest")

REQUIRED_ANN_KEYS = ("id", "image_id", "category_id", "bbox", "segmentation")
BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image before it is an error (else clipped)
MAX_LISTED = 50  # annotation problems listed in one error (image problems are always all listed)


class IngestError(ValueError):
    """Bad input found by ingest; `.problems` holds one line per problem."""

    def __init__(self, message: str, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(message + "\n  " + "\n  ".join(shown) + more)


def load_coco(path: str) -> dict:
    """Read and check a COCO instances JSON; raises IngestError listing its problems."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"dataset.annotations: {path} does not exist")
    try:
        coco = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(coco, dict):
        raise ValueError(f"{path}: top level must be a JSON object with images, annotations, categories")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(coco.get(k), list)]
    if missing:
        raise ValueError(f"{path}: missing top-level list(s) {missing}")
    problems = _image_problems(coco["images"]) + _category_problems(coco["categories"])
    if not problems:
        problems = _annotation_problems(coco)
    if problems:
        raise IngestError(f"{path}: {len(problems)} problem(s) in the COCO JSON:", problems)
    if not coco["images"]:
        raise ValueError(f"{path}: the images list is empty")
    return coco


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _duplicates(ids: list) -> list:
    seen, dup = set(), []
    for i in ids:
        if i in seen and i not in dup:
            dup.append(i)
        seen.add(i)
    return dup


def _image_problems(images: list) -> list[str]:
    problems = []
    for i, im in enumerate(images):
        missing = [k for k in ("id", "file_name", "width", "height") if not isinstance(im, dict) or k not in im]
        if missing:
            problems.append(f"images[{i}]: missing {missing}")
        elif isinstance(im["id"], bool) or not isinstance(im["id"], int):
            problems.append(f"images[{i}]: id {im['id']!r} is not an integer")
        elif not (isinstance(im["width"], int) and isinstance(im["height"], int)
                  and im["width"] > 0 and im["height"] > 0):
            problems.append(f"images[{i}] (id {im['id']}): width/height must be positive integers")
    if not problems:
        problems += [f"duplicate image id {d}" for d in _duplicates([im["id"] for im in images])]
    return problems


def _category_problems(categories: list) -> list[str]:
    problems = [f"categories[{i}]: missing id" for i, c in enumerate(categories) if not isinstance(c, dict)
                or "id" not in c]
    if not problems:
        problems += [f"duplicate category id {d}" for d in _duplicates([c["id"] for c in categories])]
    return problems


def _annotation_problems(coco: dict) -> list[str]:
    images = {im["id"]: im for im in coco["images"]}
    cat_ids = {c["id"] for c in coco["categories"]}
    problems = []
    for i, ann in enumerate(coco["annotations"]):
        missing = [k for k in REQUIRED_ANN_KEYS if not isinstance(ann, dict) or k not in ann]
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if missing:
            problems.append(f"{where}: missing {missing}")
            continue
        im = images.get(ann["image_id"])
        if im is None:
            problems.append(f"{where}: image_id {ann['image_id']} is not in images")
            continue
        if ann["category_id"] not in cat_ids:
            problems.append(f"{where}: category_id {ann['category_id']} is not in categories")
        problems += [f"{where}: {p}" for p in _ann_value_problems(ann, im["height"], im["width"])]
    ann_ids = [a["id"] for a in coco["annotations"] if isinstance(a, dict) and "id" in a]
    problems += [f"duplicate annotation id {d}" for d in _duplicates(ann_ids)]
    return problems


def _ann_value_problems(ann: dict, h: int, w: int) -> list[str]:
    problems = []
    box = ann["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)) or min(box[2:]) < 0:
        problems.append(f"bbox {box!r} is not [x, y, w, h] with w, h >= 0")
    elif (box[0] < -BOX_TOLERANCE or box[1] < -BOX_TOLERANCE or box[0] + box[2] > w + BOX_TOLERANCE
          or box[1] + box[3] > h + BOX_TOLERANCE):
        problems.append(f"bbox {box} lies outside the {w}x{h} image by more than {BOX_TOLERANCE:g} px")
    seg_problem = _segmentation_problem(ann["segmentation"], h, w)
    if seg_problem:
        problems.append(seg_problem)
    if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
        problems.append(f"area {ann['area']!r} is not a number >= 0")
    if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
        problems.append(f"iscrowd {ann['iscrowd']!r} is not 0 or 1")
    return problems


def _segmentation_problem(seg, h: int, w: int) -> str | None:
    """None when `seg` is polygons or an RLE (compressed or not) of an h x w image, else the reason."""
    if isinstance(seg, list):
        if not seg:
            return "segmentation is an empty polygon list"
        for poly in seg:
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                    and all(_is_number(v) for v in poly)):
                return "segmentation polygon is not a list of >= 3 (x, y) number pairs"
        return None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [h, w]:
            return f"segmentation RLE size {seg['size']} does not match the image's [height, width] [{h}, {w}]"
        if isinstance(seg["counts"], list) and all(isinstance(c, int) and c >= 0 for c in seg["counts"]):
            if sum(seg["counts"]) != h * w:
                return f"uncompressed RLE counts sum to {sum(seg['counts'])}, not {h * w} pixels"
            return None
        if isinstance(seg["counts"], str):
            return None
        return "segmentation RLE counts must be a string or a list of non-negative integers"
    return "segmentation must be a polygon list or an RLE dict with counts and size"


def segmentation_area(seg, h: int, w: int) -> int:
    """Pixel count of a (checked) polygon list or RLE, as pycocotools rasterises it."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    return int(mask_utils.area(rle))


def _clip_box(box: list, h: int, w: int) -> list:
    """The box cut to the image; the same list when it already lies inside (no float round-off)."""
    if box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= w and box[1] + box[3] <= h:
        return box
    x0, y0 = max(box[0], 0), max(box[1], 0)
    x1, y1 = min(box[0] + box[2], w), min(box[1] + box[3], h)
    return [x0, y0, max(x1 - x0, 0), max(y1 - y0, 0)]


def clean_gt(coco: dict, keep_ids: set) -> tuple[dict, dict]:
    """The GT restricted to `keep_ids`, with area / iscrowd filled and boxes clipped; and the counts."""
    images = sorted((im for im in coco["images"] if im["id"] in keep_ids), key=lambda im: im["id"])
    by_id = {im["id"]: im for im in images}
    anns, fixed_area, fixed_crowd, clipped = [], 0, 0, 0
    for ann in coco["annotations"]:
        im = by_id.get(ann["image_id"])
        if im is None:
            continue
        ann = dict(ann)
        if "area" not in ann:
            ann["area"] = segmentation_area(ann["segmentation"], im["height"], im["width"])
            fixed_area += 1
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
            fixed_crowd += 1
        box = _clip_box(ann["bbox"], im["height"], im["width"])
        if box is not ann["bbox"]:
            ann["bbox"] = box
            clipped += 1
        anns.append(ann)
    for count, what in ((fixed_area, "missing area computed from the segmentation"),
                        (fixed_crowd, "missing iscrowd set to 0"), (clipped, "boxes clipped to the image")):
        if count:
            log.info("%d annotations: %s", count, what)
    gt = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    gt.update(images=images, annotations=anns, categories=coco["categories"])
    counts = {"annotations": len(anns), "fixed_area": fixed_area, "fixed_iscrowd": fixed_crowd,
              "clipped_boxes": clipped}
    return gt, counts
