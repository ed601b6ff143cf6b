"""Class-agnostic COCO evaluation on hand-built ground truth, where every expected number follows from
the COCOeval definitions: 10 IoU thresholds 0.50:0.05:0.95, 101 recall thresholds 0:0.01:1, areas
small < 32^2 <= medium < 96^2 <= large, useCats = 0 so all objects form one pool."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskless.eval.coco import (
    INSTANCE_METRICS,
    evaluate_instances,
    load_gt,
    load_predictions,
    prepare_predictions,
    run_eval,
)
from maskless.eval.metrics import read_metrics

SIZE = 160  # every synthetic image is SIZE x SIZE
# (y, x, h, w) boxes: small 20x20 = 400 px, medium 40x40 = 1600 px, large 100x100 = 10000 px.
SMALL, MEDIUM, LARGE = (120, 120, 20, 20), (110, 0, 40, 40), (0, 0, 100, 100)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _rect(y: int, x: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[y : y + h, x : x + w] = True
    return mask


def _write_gt(path, objects: dict[int, list[np.ndarray]], crowd: dict[int, list[np.ndarray]] | None = None) -> str:
    """COCO GT JSON: images 1..n of SIZE x SIZE; objects alternate between categories 3 and 7."""
    anns = []
    for image_id, masks in objects.items():
        for mask, is_crowd in [(m, 0) for m in masks] + [(m, 1) for m in (crowd or {}).get(image_id, [])]:
            rle = _rle(mask)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": 3 if len(anns) % 2 == 0 else 7,
                    "segmentation": rle,
                    "area": float(mask.sum()),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": is_crowd,
                }
            )
    data = {
        "images": [{"id": i, "height": SIZE, "width": SIZE, "file_name": f"{i}.png"} for i in objects],
        "annotations": anns,
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    }
    path.write_text(json.dumps(data))
    return str(path)


def _pred(image_id: int, mask: np.ndarray, score: float, **extra) -> dict:
    return {"image_id": image_id, "segmentation": _rle(mask), "score": score, **extra}


# Three images with objects in all three size ranges: 2 small, 2 medium, 2 large.
OBJECTS = {
    1: [_rect(*SMALL), _rect(*MEDIUM)],
    2: [_rect(*LARGE)],
    3: [_rect(*SMALL), _rect(*MEDIUM), _rect(*LARGE)],
}


@pytest.fixture
def gt_json(tmp_path) -> str:
    return _write_gt(tmp_path / "gt.json", OBJECTS)


def test_perfect_predictions_score_100(tmp_path):
    """GT masks as predictions (score 1): every detection matches its own GT at IoU 1, so precision is 1
    at every recall threshold and recall is 1 at every IoU threshold: AP..APl and AR10, AR100 are 100,
    for segm and bbox (boxes derived from the masks equal the GT boxes). AR1 keeps one detection per
    image: 3 images, 6 objects -> 50. A crowd region, with a detection on it, changes nothing:
    pycocotools ignores detections matched to crowd GT."""
    crowd_mask = _rect(60, 120, 40, 30)
    gt = _write_gt(tmp_path / "gt.json", OBJECTS, crowd={1: [crowd_mask]})
    preds = [_pred(i, m, 1.0) for i, masks in OBJECTS.items() for m in masks] + [_pred(1, crowd_mask, 1.0)]
    results = evaluate_instances(gt, preds)
    expected = {m: 100.0 for m in INSTANCE_METRICS} | {"AR1": 50.0}
    for iou_type in ("segm", "bbox"):
        assert list(results[iou_type]) == list(INSTANCE_METRICS)
        assert results[iou_type] == pytest.approx(expected), iou_type


def test_perfect_predictions_on_coco_tiny(coco_tiny):
    """Real COCO photos (polygon GT, 5 crowd regions): each non-crowd GT mask and GT box as a prediction
    gives 100 except AR1 and AR10, which count at most 1 (10) detections per image: with n_i non-crowd
    objects in image i, AR_k = 100 * sum_i min(n_i, k) / sum_i n_i."""
    gt_path = str(coco_tiny / "instances.json")
    gt = load_gt(gt_path)
    preds = []
    for ann in gt.dataset["annotations"]:
        if ann["iscrowd"]:
            continue
        rle = gt.annToRLE(ann)
        seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        preds.append({"image_id": ann["image_id"], "segmentation": seg, "bbox": ann["bbox"], "score": 1.0})
    results = evaluate_instances(gt_path, preds)
    counts = np.bincount([p["image_id"] for p in preds])
    expected = {m: 100.0 for m in INSTANCE_METRICS} | {
        f"AR{k}": 100.0 * np.minimum(counts, k).sum() / len(preds) for k in (1, 10)
    }
    assert expected["AR1"] < expected["AR10"] < 100.0  # the formula is exercised, not trivially 100
    for iou_type in ("segm", "bbox"):
        assert results[iou_type] == pytest.approx(expected), iou_type


def test_empty_predictions_give_zeros(gt_json, tmp_path):
    """No detections: recall 0 and precision 0 wherever GT exists (here in every area range), no crash
    (pycocotools' loadRes([]) would raise IndexError); the same from an empty results file."""
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    for preds in ([], str(empty)):
        results = evaluate_instances(gt_json, preds)
        assert results == {t: {m: 0.0 for m in INSTANCE_METRICS} for t in ("segm", "bbox")}


def test_area_range_without_gt_is_nan(tmp_path):
    """Only a large object: APs and APm are undefined (pycocotools -1), reported as NaN, not 0 or -1."""
    gt = _write_gt(tmp_path / "gt.json", {1: [_rect(*LARGE)]})
    results = evaluate_instances(gt, [_pred(1, _rect(*LARGE), 0.9)], iou_types=("segm",))["segm"]
    assert math.isnan(results["APs"]) and math.isnan(results["APm"])
    assert results["APl"] == pytest.approx(100.0)


def test_half_found(gt_json):
    """3 of the 6 objects found exactly (image 1: both, image 2: none, image 3: the small one). With
    useCats = 0 there is one pool, so recall is 3/6 at each of the 10 IoU thresholds (IoU 1 or no match):
    AR100 = AR10 = 50 exactly. AR1 keeps one detection per image: 2 of 6 found -> 100/3. AP: precision
    is 1 for recall thresholds 0.00..0.50 (51 of 101) and 0 above -> 100 * 51/101."""
    preds = [_pred(1, OBJECTS[1][0], 0.9), _pred(1, OBJECTS[1][1], 0.8), _pred(3, OBJECTS[3][0], 0.7)]
    for iou_type, res in evaluate_instances(gt_json, preds).items():
        assert res["AR100"] == 50.0, iou_type
        assert res["AR10"] == 50.0, iou_type
        assert res["AR1"] == pytest.approx(100 / 3), iou_type
        assert res["AP"] == pytest.approx(100 * 51 / 101), iou_type


def test_bbox_key_does_not_set_segm_area(tmp_path):
    """A false positive shaped like an L (two 1-px lines of 60 px): mask area 119 (small), box 60x60 =
    3600 (medium); it scores higher than the two exact detections (one small, one medium GT object).
    Scored by mask area it is a false positive among small objects: APs = 50 (precision 1/2 at recall
    1), APm = 100. With its `bbox` kept, pycocotools would use the box area: APs 100, APm 50 (checked
    below, so the case is decisive). For bbox eval the box area is the right one: APs 100, APm 50."""
    small, medium = _rect(2, 2, 20, 20), _rect(80, 80, 40, 40)
    gt = _write_gt(tmp_path / "gt.json", {1: [small, medium]})
    ell = np.zeros((SIZE, SIZE), bool)
    ell[10:70, 30] = True
    ell[69, 30:90] = True
    assert ell.sum() == 119
    preds = [
        _pred(1, ell, 1.0, bbox=[30.0, 10.0, 60.0, 60.0], category_id=3),
        _pred(1, small, 0.9, bbox=[2.0, 2.0, 20.0, 20.0], category_id=3),
        _pred(1, medium, 0.8, bbox=[80.0, 80.0, 40.0, 40.0], category_id=3),
    ]
    res = evaluate_instances(gt, preds)
    assert res["segm"]["APs"] == pytest.approx(50.0) and res["segm"]["APm"] == pytest.approx(100.0)
    assert res["bbox"]["APs"] == pytest.approx(100.0) and res["bbox"]["APm"] == pytest.approx(50.0)

    # Plain pycocotools with the bbox kept gets it wrong (the trap this guards against).
    coco = COCO(gt)
    ev = COCOeval(coco, coco.loadRes([dict(p) for p in preds]), iouType="segm")
    ev.params.useCats = 0
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[3] == pytest.approx(1.0) and ev.stats[4] == pytest.approx(0.5)


def test_top_max_dets_by_score(tmp_path):
    """One GT object. 150 junk detections (a 2x2 square away from it, IoU 0) score 0.99..0.50-ish, the
    exact detection scores lower than all of them and comes first in the list: it ranks 151st, outside
    the top 100, so AR100 = 0 (if all 151 counted, AR100 would be 100). Give it a score with 60 junk
    above and 90 below: rank 61, kept, AR100 = 100 (a cut by list position would drop it, it is last)."""
    obj = _rect(100, 100, 30, 30)
    gt = _write_gt(tmp_path / "gt.json", {1: [obj]})
    junk = [_pred(1, _rect(0, 0, 2, 2), 0.99 - 0.003 * k) for k in range(150)]
    res = evaluate_instances(gt, [_pred(1, obj, 0.01)] + junk, iou_types=("segm",))["segm"]
    assert res["AR100"] == 0.0 and res["AP"] == 0.0

    rank61 = junk + [_pred(1, obj, (junk[59]["score"] + junk[60]["score"]) / 2)]
    res = evaluate_instances(gt, rank61, iou_types=("segm",))["segm"]
    assert res["AR100"] == 100.0 and res["AR10"] == 0.0

    kept = prepare_predictions(rank61, load_gt(gt), max_dets=100)
    assert len(kept) == 100
    scores = [p["score"] for p in kept]
    assert scores == sorted(scores, reverse=True) and scores[-1] == junk[98]["score"]
    assert "bbox" not in kept[0] and kept[0]["category_id"] == 3


def test_wrong_category_id_still_scores(gt_json):
    """Category 999 is not in the GT (pycocotools would drop every detection: AP 0); class-agnostic
    evaluation sets a valid id, so exact masks score 100."""
    preds = [_pred(i, m, 1.0, category_id=999) for i, masks in OBJECTS.items() for m in masks]
    assert evaluate_instances(gt_json, preds)["segm"]["AP"] == pytest.approx(100.0)


def test_unknown_image_id_is_an_error(gt_json):
    preds = [_pred(1, OBJECTS[1][0], 1.0), _pred(42, OBJECTS[1][0], 1.0), _pred(43, OBJECTS[1][0], 1.0)]
    with pytest.raises(ValueError, match=r"2 predictions on 2 image ids .*\[42, 43\]"):
        evaluate_instances(gt_json, preds)


def test_mask_size_mismatch_is_an_error(gt_json):
    with pytest.raises(ValueError, match=r"image 1: mask size \[10, 10\]"):
        prepare_predictions([_pred(1, np.ones((10, 10), bool), 1.0)], load_gt(gt_json))


def test_polygon_and_bytes_rle_predictions(gt_json):
    """Bytes counts and a polygon (the small square's outline) become str-count RLE; the square's
    polygon rasterises to the same 20x20 mask, so the small object is found exactly (IoU 1)."""
    y, x, h, w = SMALL
    raw = mask_utils.encode(np.asfortranarray(OBJECTS[1][1].astype(np.uint8)))
    poly = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    preds = [{"image_id": 1, "segmentation": poly, "score": 0.5}, {"image_id": 1, "segmentation": raw, "score": 0.6}]
    out = prepare_predictions(preds, load_gt(gt_json))
    assert all(isinstance(p["segmentation"]["counts"], str) for p in out)
    assert mask_utils.area(out[1]["segmentation"]) == h * w
    assert mask_utils.iou([out[1]["segmentation"]], [_rle(OBJECTS[1][0])], [0])[0, 0] == 1.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "is not valid JSON"),
        ('{"image_id": 1}', "is not a COCO results list"),
        ('[{"image_id": 1, "score": 0.5}]', r"entry 0 lacks keys \['segmentation'\]"),
        ('[{"image_id": 1, "segmentation": {}, "score": NaN}]', "non-finite score"),
        ('[{"image_id": 1, "segmentation": {}, "score": Infinity}]', "non-finite score"),
        ('[{"image_id": 1, "segmentation": {}, "score": "high"}]', "non-numeric score"),
    ],
)
def test_load_predictions_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "preds.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_predictions(str(path))
    assert str(path) in str(err.value)


def test_gt_missing_iscrowd_is_an_error(tmp_path):
    path = tmp_path / "gt.json"
    ann = {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]], "area": 1, "bbox": [0, 0, 1, 1]}
    images = [{"id": 1, "height": 4, "width": 4}]
    path.write_text(json.dumps({"images": images, "annotations": [ann], "categories": [{"id": 1}]}))
    with pytest.raises(ValueError, match=r"gt.json: annotation 5 lacks keys \['iscrowd'\]"):
        load_gt(str(path))


def test_run_eval_writes_metrics_and_table(gt_json, tmp_path):
    """The exact-prediction case through the file interface: 18 rows (2 iou types x 9 metrics), all 100
    but AR1 (50, see test_perfect_predictions_score_100); the parquet reads back the same rows."""
    preds_path = tmp_path / "preds.json"
    preds_path.write_text(json.dumps([_pred(i, m, 1.0) for i, masks in OBJECTS.items() for m in masks]))
    out_metrics, out_table = tmp_path / "m" / "metrics.parquet", tmp_path / "m" / "table.md"
    rows = run_eval(
        gt=gt_json, predictions=str(preds_path), out_metrics=str(out_metrics), out_table=str(out_table),
        experiment="exp", method="freemask", variant="", round=0, dataset="synthetic", seed=0,
    )
    assert len(rows) == 18
    assert [r["value"] for r in rows] == pytest.approx(([100.0] * 6 + [50.0, 100.0, 100.0]) * 2)
    assert read_metrics([str(out_metrics)]) == rows
    table = out_table.read_text()
    assert "| exp | freemask | 0 | synthetic | " + " | ".join(["100.0"] * 6 + ["50.0", "100.0", "100.0"]) + " |" in table
    assert table.index("### segm") < table.index("### bbox")
