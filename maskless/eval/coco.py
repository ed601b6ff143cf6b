"""Class-agnostic COCO instance evaluation (METHODS.md, "Evaluation"): pycocotools COCOeval with
params.useCats = 0, iouType segm and bbox; AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100 in percent.

pycocotools traps handled here (DESIGN.md, "Known traps"):
- a category_id absent from the GT silently drops the detection (AP 0): every prediction gets one
  category id that exists in the GT; with useCats = 0 which one does not matter;
- segm results that carry `bbox` get the box area, which puts them in the wrong small/medium/large
  range: the key is removed for segm;
- only the top `max_dets` detections per image count: predictions are cut to those, by score;
- `loadRes([])` raises IndexError: empty predictions are evaluated against an empty results set, so
  they score 0 like any prediction set that finds nothing;
- RLE counts are bytes after `mask.encode`: converted to str.

Undefined metrics (pycocotools' -1: no GT object in that area range) are reported as NaN, shown as "-"
in the tables. Crowd GT regions are ignored exactly as pycocotools does (a detection matched to one is
neither a true nor a false positive).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskless.eval.metrics import INSTANCE_METRICS, metric_rows, metrics_markdown, write_metrics
from maskless.io import write_text_atomic

__all__ = [
    "INSTANCE_METRICS",
    "load_gt",
    "load_predictions",
    "prepare_predictions",
    "evaluate_instances",
    "run_eval",
]

log = logging.getLogger(__name__)

IOU_TYPES = ("segm", "bbox")
_GT_ANN_KEYS = ("id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd")


@contextlib.contextmanager
def _pycocotools_output():
    """pycocotools prints progress to stdout; send it to the log (debug) instead."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        for line in buf.getvalue().splitlines():
            if line.strip():
                log.debug("pycocotools: %s", line.strip())


def _read_json(path: str | os.PathLike, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is not valid JSON: {err}") from err


def load_gt(path: str | os.PathLike) -> COCO:
    """A COCO instances file as a pycocotools COCO object, after checking the keys COCOeval reads."""
    data = _read_json(path, "ground-truth file")
    if not isinstance(data, dict):
        raise ValueError(f"ground-truth file {path} is not a COCO object (got a JSON {type(data).__name__})")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"ground-truth file {path} lacks the list {key!r}")
    if not data["categories"]:
        raise ValueError(f"ground-truth file {path} has no categories: class-agnostic eval needs one valid id")
    for img in data["images"]:
        missing = [k for k in ("id", "height", "width") if k not in img]
        if missing:
            raise ValueError(f"ground-truth file {path}: image {img.get('id')} lacks keys {missing}")
    for ann in data["annotations"]:
        missing = [k for k in _GT_ANN_KEYS if k not in ann]
        if missing:
            raise ValueError(f"ground-truth file {path}: annotation {ann.get('id')} lacks keys {missing}")
    gt = COCO()
    gt.dataset = data
    with _pycocotools_output():
        gt.createIndex()
    return gt


def _check_entry(pred, i: int, where: str) -> None:
    if not isinstance(pred, dict):
        raise ValueError(f"{where}: entry {i} is a {type(pred).__name__}, not an object")
    missing = [k for k in ("image_id", "segmentation", "score") if k not in pred]
    if missing:
        raise ValueError(f"{where}: entry {i} lacks keys {missing}")
    score = pred["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float, np.number)):
        raise ValueError(f"{where}: entry {i} has a non-numeric score {score!r}")
    if not math.isfinite(score):
        raise ValueError(f"{where}: entry {i} (image {pred['image_id']}) has a non-finite score {score}")


def load_predictions(path: str | os.PathLike) -> list[dict]:
    """A COCO results JSON: a list of {image_id, segmentation (RLE), score, ...}."""
    preds = _read_json(path, "predictions file")
    if not isinstance(preds, list):
        raise ValueError(f"predictions file {path} is not a COCO results list (got a JSON {type(preds).__name__})")
    for i, pred in enumerate(preds):
        _check_entry(pred, i, f"predictions file {path}")
    return preds


def _to_rle(segm, height: int, width: int, where: str) -> dict:
    """Compressed RLE with str counts from compressed/uncompressed RLE or polygons in image coordinates."""
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError(f"{where}: RLE segmentation lacks 'counts' or 'size'")
        if [int(s) for s in segm["size"]] != [height, width]:
            raise ValueError(f"{where}: mask size {list(segm['size'])} differs from the image's [{height}, {width}]")
        if isinstance(segm["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            rle = segm
    elif isinstance(segm, list) and segm:
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))  # polygons
    else:
        raise ValueError(f"{where}: segmentation is neither an RLE dict nor a polygon list")
    counts = rle["counts"]
    return {"size": [height, width], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def _box(pred: dict, rle: dict, where: str) -> list[float]:
    """The prediction's own box when it has one (a detector's box head), else the mask's box."""
    if "bbox" not in pred:
        return [float(v) for v in mask_utils.toBbox(rle)]
    box = pred["bbox"]
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"{where}: bbox {box!r} is not [x, y, w, h]")
    box = [float(v) for v in box]
    if not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
        raise ValueError(f"{where}: bbox {box} has non-finite values or a negative size")
    return box


def prepare_predictions(
    preds: list[dict], gt: COCO, *, max_dets: int = 100, iou_type: str = "segm"
) -> list[dict]:
    """COCO results ready for `gt.loadRes`: one GT category for all (class-agnostic), at most `max_dets`
    per image (highest scores; ties keep input order), images in id order, then score descending.

    segm entries: {image_id, category_id, segmentation, score} (no `bbox`, so pycocotools uses the mask
    area for small/medium/large). bbox entries: {image_id, category_id, bbox, score}, the box taken from
    the entry's `bbox` when present, else from the mask. Image ids not in the GT are an error.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type {iou_type!r} is not one of {IOU_TYPES}")
    for i, pred in enumerate(preds):
        _check_entry(pred, i, "predictions")
    images = {img["id"]: img for img in gt.dataset["images"]}
    unknown = sorted({p["image_id"] for p in preds if p["image_id"] not in images}, key=str)
    if unknown:
        n = sum(p["image_id"] not in images for p in preds)
        raise ValueError(
            f"{n} predictions on {len(unknown)} image ids that are not in the ground truth, e.g. {unknown[:5]}"
        )
    category = min(gt.getCatIds())  # any id present in the GT; useCats = 0 pools all categories
    by_image: dict = {}
    for pred in preds:
        by_image.setdefault(pred["image_id"], []).append(pred)
    out, dropped = [], 0
    for image_id in sorted(by_image):
        ranked = sorted(by_image[image_id], key=lambda p: -float(p["score"]))  # stable: ties keep order
        dropped += max(0, len(ranked) - max_dets)
        img = images[image_id]
        for pred in ranked[:max_dets]:
            where = f"prediction on image {image_id}"
            rle = _to_rle(pred["segmentation"], int(img["height"]), int(img["width"]), where)
            entry = {"image_id": image_id, "category_id": category, "score": float(pred["score"])}
            if iou_type == "segm":
                entry["segmentation"] = rle
            else:
                entry["bbox"] = _box(pred, rle, where)
            out.append(entry)
    if dropped:
        log.info("kept the top %d detections per image: dropped %d of %d predictions", max_dets, dropped, len(preds))
    return out


def _results_coco(gt: COCO, results: list[dict]) -> COCO:
    """gt.loadRes(results); for no results an empty results set (loadRes([]) raises IndexError)."""
    with _pycocotools_output():
        if results:
            return gt.loadRes(results)
        res = COCO()
        res.dataset = {
            "images": list(gt.dataset["images"]),
            "categories": copy.deepcopy(gt.dataset["categories"]),
            "annotations": [],
        }
        res.createIndex()
        return res


def _summary(ev: COCOeval) -> dict[str, float]:
    """The COCO summary numbers in percent, as COCOeval.summarize computes them, -1 -> NaN."""
    p = ev.params
    precision = ev.eval["precision"]  # (T, R, K, A, M), K = 1 with useCats = 0
    recall = ev.eval["recall"]  # (T, K, A, M)
    area = {name: i for i, name in enumerate(p.areaRngLbl)}
    t50 = np.flatnonzero(np.isclose(p.iouThrs, 0.5))
    t75 = np.flatnonzero(np.isclose(p.iouThrs, 0.75))

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]  # -1: no GT in this area range
        return float(values.mean()) * 100.0 if values.size else math.nan

    m = len(p.maxDets) - 1
    return {
        "AP": mean(precision[..., area["all"], m]),
        "AP50": mean(precision[t50][..., area["all"], m]),
        "AP75": mean(precision[t75][..., area["all"], m]),
        "APs": mean(precision[..., area["small"], m]),
        "APm": mean(precision[..., area["medium"], m]),
        "APl": mean(precision[..., area["large"], m]),
        f"AR{p.maxDets[0]}": mean(recall[..., area["all"], 0]),
        f"AR{p.maxDets[1]}": mean(recall[..., area["all"], 1]),
        f"AR{p.maxDets[2]}": mean(recall[..., area["all"], 2]),
    }


def _evaluate(gt: COCO, results: list[dict], iou_type: str, max_dets: int) -> dict[str, float]:
    dt = _results_coco(gt, results)
    with _pycocotools_output():
        ev = COCOeval(gt, dt, iouType=iou_type)
        ev.params.useCats = 0  # class-agnostic (METHODS.md, "Evaluation")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    return _summary(ev)


def evaluate_instances(
    gt_json: str | os.PathLike,
    predictions: list[dict] | str | os.PathLike,
    *,
    iou_types: tuple[str, ...] = IOU_TYPES,
    max_dets: int = 100,
) -> dict[str, dict[str, float]]:
    """{iou_type: {metric: value in percent}}; metrics AP, AP50, AP75, APs, APm, APl, AR1, AR10,
    AR<max_dets>; NaN where undefined. `predictions` is a COCO results list or the path of one."""
    if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets <= 10:
        raise ValueError(f"max_dets must be an int > 10 (AR1 and AR10 are also reported), got {max_dets!r}")
    gt = load_gt(gt_json)
    if isinstance(predictions, (str, os.PathLike)):
        predictions = load_predictions(predictions)
    results = {}
    for iou_type in iou_types:
        prepared = prepare_predictions(predictions, gt, max_dets=max_dets, iou_type=iou_type)
        results[iou_type] = _evaluate(gt, prepared, iou_type, max_dets)
        log.info(
            "%s (class-agnostic, %d detections on %d images): %s",
            iou_type,
            len(prepared),
            len(gt.getImgIds()),
            "  ".join(f"{k} {v:.3f}" for k, v in results[iou_type].items()),
        )
    return results


def run_eval(
    *,
    gt: str,
    predictions: str,
    out_metrics: str,
    out_table: str,
    experiment: str,
    method: str,
    variant: str,
    round: int,
    dataset: str,
    seed: int,
    max_dets: int = 100,
) -> list[dict]:
    """Evaluate `predictions` against `gt`; write the metrics parquet and its markdown table; return rows.
    method, variant, round, dataset, seed: the rows' columns (maskless.eval.metrics)."""
    results = evaluate_instances(gt, predictions, max_dets=max_dets)
    rows = metric_rows(results, experiment=experiment, method=method, variant=variant, round=round,
                       dataset=dataset, seed=seed)
    write_metrics(out_metrics, rows)
    columns = INSTANCE_METRICS[:-1] + (f"AR{max_dets}",)
    write_text_atomic(out_table, metrics_markdown(rows, metrics=columns))
    return rows
