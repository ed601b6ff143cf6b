"""Quality of a set of training masks against ground truth (issue 15): what SOLO is taught, not how it scores.

COCO AP ranks masks by score and says little about why a detector trained on them fails. These figures
describe the masks themselves (every mask of a mask index, whatever its score), per dataset:

    masks, objects            masks in the index; non-crowd ground-truth objects of the indexed images
    precision50, recall50     greedy one-to-one matching at IoU >= 0.5 within each image, masks in score
                              order (as COCO matches): matched masks / masks, matched objects / objects (%)
    masks_per_object          masks / objects
    components                mean 8-connected components per non-empty mask (1 = whole)
    fragmented                share of non-empty masks with more than one component (%)
    box_inflation             median of (mask box area / box area of the object it overlaps most), over the
                              masks that overlap some object (1 = tight; > 1 = inflated extents)
    centre_outside            share of those masks whose centre of mass is not a pixel of that object (%):
                              SOLO assigns a mask to the grid cell of its centre, so such a mask teaches a
                              positive cell on background

IoU is pycocotools' on the RLEs of the masks and the objects (crowd objects left out).
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

from maskless.io import write_json_atomic, write_text_atomic
from maskless.ops.masks import boxes_xywh, components
from maskless.store import MaskStore

log = logging.getLogger(__name__)

COLUMNS = ("masks", "objects", "precision50", "recall50", "masks_per_object", "components", "fragmented",
           "box_inflation", "centre_outside")
IOU_MATCH = 0.5


def _rles(masks: np.ndarray) -> list:
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def image_quality(masks: np.ndarray, objects: np.ndarray) -> dict:
    """Counts of one image: masks (N, H, W) bool in score order, objects (M, H, W) bool (non-crowd GT).

    Returns masks, objects, matched (greedy at IoU >= 0.5), nonempty, components, fragmented, and for the
    masks overlapping an object: overlapping, centre_outside and inflation (a list of box-area ratios)."""
    n, m = masks.shape[0], objects.shape[0]
    out = {"masks": n, "objects": m, "matched": 0, "nonempty": 0, "components": 0, "fragmented": 0,
           "overlapping": 0, "centre_outside": 0, "inflation": []}
    comps = [components(mk) for mk in masks]
    out["nonempty"] = sum(c > 0 for c in comps)
    out["components"] = sum(comps)
    out["fragmented"] = sum(c > 1 for c in comps)
    if n == 0 or m == 0:
        return out
    iou = np.asarray(mask_utils.iou(_rles(masks), _rles(objects), [0] * m)).reshape(n, m)  # (N, M)
    taken = np.zeros(m, dtype=bool)
    for i in range(n):  # score order: each mask takes the best free object at IoU >= 0.5
        cand = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= IOU_MATCH:
            taken[j] = True
            out["matched"] += 1
    mask_boxes, object_boxes = boxes_xywh(masks), boxes_xywh(objects)  # (N, 4), (M, 4)
    for i in range(n):
        j = int(np.argmax(iou[i]))
        if iou[i, j] <= 0:
            continue
        out["overlapping"] += 1
        ys, xs = np.nonzero(masks[i])
        cy, cx = int(round(float(ys.mean()))), int(round(float(xs.mean())))
        out["centre_outside"] += int(not objects[j, cy, cx])
        area = float(object_boxes[j, 2] * object_boxes[j, 3])
        out["inflation"].append(float(mask_boxes[i, 2] * mask_boxes[i, 3]) / area)
    return out


def summarize(counts: list[dict]) -> dict:
    """The COLUMNS of a dataset from its images' image_quality counts (NaN where a ratio has no denominator)."""
    total = {k: sum(c[k] for c in counts) for k in ("masks", "objects", "matched", "nonempty", "components",
                                                     "fragmented", "overlapping", "centre_outside")}
    inflation = [v for c in counts for v in c["inflation"]]

    def ratio(a: float, b: float, scale: float = 1.0) -> float:
        return scale * a / b if b else math.nan

    return {
        "masks": total["masks"],
        "objects": total["objects"],
        "precision50": ratio(total["matched"], total["masks"], 100),
        "recall50": ratio(total["matched"], total["objects"], 100),
        "masks_per_object": ratio(total["masks"], total["objects"]),
        "components": ratio(total["components"], total["nonempty"]),
        "fragmented": ratio(total["fragmented"], total["nonempty"], 100),
        "box_inflation": float(np.median(inflation)) if inflation else math.nan,
        "centre_outside": ratio(total["centre_outside"], total["overlapping"], 100),
    }


def mask_quality(index: str | os.PathLike, gt: str | os.PathLike) -> dict:
    """The COLUMNS of every mask of a mask index against the ground truth of its images (one image in memory
    at a time; images of the index without ground truth are an error)."""
    coco = COCO(str(gt))
    counts = []
    for im in MaskStore(str(index)).iter_images():
        if im.image_id not in coco.imgs:
            raise ValueError(f"image {im.image_id} of mask index {index} has no entry in the ground truth {gt}")
        anns = [a for a in coco.imgToAnns.get(im.image_id, []) if not a.get("iscrowd", 0)]
        objects = np.stack([coco.annToMask(a).astype(bool) for a in anns]) if anns else \
            np.zeros((0, im.height, im.width), bool)
        counts.append(image_quality(im.masks, objects))
    return summarize(counts)


def _fmt(value) -> str:
    if isinstance(value, int):
        return str(value)
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def quality_markdown(rows: dict[str, dict]) -> str:
    """Markdown: one line per mask set (name -> COLUMNS), in the given order."""
    lines = ["| masks of | " + " | ".join(COLUMNS) + " |", "|:--|" + "--:|" * len(COLUMNS)]
    lines += [f"| {name} | " + " | ".join(_fmt(row[c]) for c in COLUMNS) + " |" for name, row in rows.items()]
    return "\n".join(lines) + "\n"


def run_mask_quality(*, index: str, gt: str, out_json: str, name: str) -> dict:
    """Rule mask_quality: the figures of one mask set, as JSON."""
    row = mask_quality(index, gt)
    log.info("mask quality of %s: %s", name, row)
    write_json_atomic(out_json, {"name": name, **row}, indent=1)
    return row


def run_quality_table(*, inputs: list[str], out_table: str) -> None:
    """Rule mask_quality_table: every mask set's figures in one markdown table."""
    rows = {}
    for path in inputs:
        with open(path) as f:
            row = json.load(f)
        rows[row.pop("name")] = row
    write_text_atomic(out_table, quality_markdown(rows))
