"""The masks_<id> strips of the report: each sampled image with its ground-truth instances, Free Masks and
SOLO predictions overlaid (maskless.report)."""

from __future__ import annotations

import logging

import numpy as np

from maskless import viz
from maskless.data.images import load_record
from maskless.data.semantic import instance_mask
from maskless.report.inputs import STRIP_HEIGHT, ReportInputs, first_seen
from maskless.store import MaskStore

log = logging.getLogger(__name__)

MIN_SOLO_SCORE = 0.3  # SOLO predictions shown: score >= this ...
MAX_MASKS = 20  # ... and at most this many per image (Free Masks too), best first


def _gt_instances(gt: dict, image_id: int, hw: tuple[int, int]) -> np.ndarray | None:
    """bool (N, H, W) non-crowd ground-truth instances of an image, largest first (the smaller, usually
    occluding, drawn over them); None when the image is not in the ground truth."""
    images = {int(im["id"]): im for im in gt.get("images", [])}
    if image_id not in images:
        log.warning("report: image %d is not in the ground truth", image_id)
        return None
    im = images[image_id]
    h, w = int(im["height"]), int(im["width"])
    if (h, w) != tuple(hw):
        raise ValueError(f"ground truth says image {image_id} is {h}x{w}, the image is {hw[0]}x{hw[1]}")
    anns = [a for a in gt.get("annotations", []) if int(a["image_id"]) == image_id and not a.get("iscrowd")]
    anns.sort(key=lambda a: -float(a.get("area", 0)))  # stable: ties keep annotation order
    masks = [instance_mask(a["segmentation"], h, w, f"ground truth annotation {a.get('id')} of image {image_id}")
             for a in anns]
    return np.stack(masks) if masks else np.zeros((0, h, w), bool)


def _mask_stores(inputs: ReportInputs) -> list[tuple[str, str, str, bool]]:
    """[(panel title, short name, index parquet, is SOLO)]: Free Mask, then SOLO variants (in the order given)
    and rounds."""
    out = []
    if inputs.freemask is not None:
        out.append(("free mask", "Free Mask", inputs.freemask, False))
    else:
        log.info("report: no Free Mask index given")
    if not inputs.solo:
        log.info("report: no SOLO predictions given")
    order = first_seen([v for v, _, _ in inputs.solo])
    for _, rnd, variant, path in sorted((order[v], int(r), v, p) for v, r, p in inputs.solo):
        out.append((f"{variant} r{rnd}", f"{variant} r{rnd}", path, True))
    return out


def _store_masks(store, image_id: int, hw: tuple[int, int], min_score: float | None) -> np.ndarray | None:
    """bool (N, H, W): the image's masks with score >= min_score (None: all), the MAX_MASKS best; None when
    the store does not hold the image."""
    if image_id not in store:
        log.warning("report: image %d is not in mask index %s", image_id, store.index_path)
        return None
    im = store.get(image_id)
    if (im.height, im.width) != tuple(hw):
        raise ValueError(f"mask index {store.index_path}: image {image_id} is {im.height}x{im.width} there, "
                         f"the image is {hw[0]}x{hw[1]}")
    order = np.argsort(-im.scores, kind="stable")
    if min_score is not None:
        order = order[im.scores[order] >= min_score]
    return im.masks[order[:MAX_MASKS]]


def mask_figures(inputs: ReportInputs, records: list[dict], gt: dict | None, on_eval: bool, add) -> None:
    """Add (with add(name, category, caption, rgb)) a masks_<id> strip of each record: the image, its
    ground-truth instances (gt given) and the masks of each store of _mask_stores, on_eval: of the evaluation set."""
    stores = [(title, short, MaskStore(path), is_solo) for title, short, path, is_solo in _mask_stores(inputs)]
    if not records or (gt is None and not stores):
        log.info("report: no mask figures (%s)", "no sampled images" if not records else
                 "no ground truth and no mask store")
        return
    shown = (["ground-truth instances"] if gt is not None else []) + [s for _, s, _, _ in stores]
    for rec in records:
        image_id = int(rec["id"])
        image = load_record(rec)
        hw = image.shape[:2]
        panels = [("image", image)]
        if gt is not None:
            masks = _gt_instances(gt, image_id, hw)
            panels.append(("ground truth" if masks is not None else "ground truth (absent)",
                           viz.overlay_masks(image, masks if masks is not None else np.zeros((0, *hw), bool))))
        for title, _, store, is_solo in stores:
            masks = _store_masks(store, image_id, hw, MIN_SOLO_SCORE if is_solo else None)
            panels.append((title if masks is not None else f"{title} (absent)",
                           viz.overlay_masks(image, masks if masks is not None else np.zeros((0, *hw), bool))))
        caption = (f"{'Evaluation image' if on_eval else 'Image'} {image_id} with its {', '.join(shown)} overlaid "
                   f"(SOLO: score >= {MIN_SOLO_SCORE}; "
                   f"at most {MAX_MASKS} masks per panel, best first).")
        add(f"masks_{image_id}.png", "masks", caption, viz.side_by_side(panels, height=STRIP_HEIGHT))
