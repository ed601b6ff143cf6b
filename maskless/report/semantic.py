"""The semantic strips of the report: semantic_<id> (the image, its ground-truth classes, the STEGO cluster
map, the PCT retrained map) and semantic_pct_<id> (PCT on user files, pct.data) (maskless.report)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from maskless import viz
from maskless.data.images import load_record
from maskless.data.manifest import read_manifest
from maskless.data.semantic import coco_labels, num_classes, square_labels
from maskless.eval.semantic import hungarian_match, semantic_confusion
from maskless.io import pick_device
from maskless.pct import pseudo as pct_pseudo
from maskless.pct.budget import budget_text
from maskless.pct.labels import label_maps, read_label_source
from maskless.pct.model import load_segnet
from maskless.report.inputs import STRIP_HEIGHT, ReportInputs, budget_key, budget_words, mode_key
from maskless.stego import predict as stego_predict
from maskless.stego.features import square_image
from maskless.stego.stage import load_frozen

log = logging.getLogger(__name__)


def _stego_geometry(model_path: str, params: dict, backbone) -> tuple[int, str]:
    """(square input size, feature layer) STEGO was trained at: from the checkpoint's params["features"]
    (maskless.stego.stage), else inferred from the checkpoint (feature channels -> layer, feature map size x
    layer stride -> input size; checkpoints from before params["features"])."""
    source = params.get("features") or {}
    if "input_size" in source and "layer" in source:
        return int(source["input_size"]), str(source["layer"])
    layers = [k for k, c in backbone.out_channels.items() if c == int(params["in_channels"])]
    if not layers or "feature_hw" not in params:
        raise ValueError(f"STEGO checkpoint {model_path}: its params do not say its input size and layer")
    layer = "res3" if "res3" in layers else layers[0]
    size = int(params["feature_hw"][0]) * int(backbone.strides[layer])
    log.info("report: STEGO input size %d and layer %s inferred from %s (its params have no features)", size,
             layer, model_path)
    return size, layer


def _stego_maps(inputs: ReportInputs, images: list[np.ndarray], gt: dict | None, ids: list[int], dev):
    """(square images, square gt maps or None, display maps, input size) of the sampled images, or None
    when STEGO's model or backbone is not given."""
    model_path, backbone_path = inputs.stego, inputs.backbone
    if model_path is None or backbone_path is None:
        log.info("report: no STEGO panels (no %s given)", " and ".join(
            name for name, p in (("STEGO model", model_path), ("backbone", backbone_path)) if p is None))
        return None
    stego = stego_predict.load_stego(model_path, dev)
    net = load_frozen(backbone_path, dev)
    size, layer = _stego_geometry(model_path, stego["params"], net)
    squares = [square_image(img, size) for img in images]
    batch = torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8
    maps = stego_predict.predict(net, stego, batch.to(dev), layer=layer, flip=True,
                                 crf=None)["cluster"].numpy()  # (B, S, S)
    k = int(stego["params"]["n_clusters"])
    if gt is None:
        return squares, None, [viz.colorize_labels(m + 1, k + 1) for m in maps], size
    n_classes = num_classes(gt)
    gts = [square_labels(lab, size) for lab in coco_labels(gt, ids)]
    match = hungarian_match(semantic_confusion(list(maps), gts, num_pred=k, num_classes=n_classes))  # (K,)
    unmatched = np.flatnonzero(match < 0)
    match[unmatched] = n_classes + np.arange(unmatched.size)
    shown = [viz.colorize_labels(match[m], n_classes + unmatched.size) for m in maps]
    return squares, [viz.colorize_labels(g, n_classes) for g in gts], shown, size


def _pct_model(inputs: ReportInputs):
    """(title, budget words, mode, path) of the first PCT retrained model given (label budget by budget_key,
    then mode), or None."""
    if not inputs.pct:
        log.info("report: no PCT retrained model given")
        return None
    _, _, budget, mode, path = min((budget_key(b), mode_key(m), b, m, p) for b, m, p in inputs.pct)
    return f"pct retrain {mode}@{budget_text(budget)}", budget_words(budget), mode, path


def _pct_maps(inputs: ReportInputs, images: list[np.ndarray], dev, found=None):
    """(title, budget words, mode, label maps, number of classes) of the first PCT retrained model (or of
    `found`, a _pct_model answer), or None."""
    found = _pct_model(inputs) if found is None else found
    if found is None:
        return None
    title, budget, mode, path = found
    params = torch.load(path, map_location="cpu", weights_only=True)["params"]
    model = load_segnet(path).to(dev)
    maps = [pct_pseudo.predict(model, img, input_size=int(params["input_size"])) for img in images]
    return title, budget, mode, maps, int(params["model"]["num_classes"])


def semantic_figures(inputs: ReportInputs, records: list[dict], gt: dict | None, device: str, pct_data: bool,
                      add) -> None:
    """The semantic_<id> strips of the dataset's images; their PCT panel only where PCT learnt from the
    dataset's ground truth (with pct.data its images are others: pct_data_figures)."""
    if not records:
        log.info("report: no semantic figures of the dataset's images (no sampled images)")
        return
    dev = pick_device(device)
    ids = [int(r["id"]) for r in records]
    images = [load_record(r) for r in records]
    gt_ids = set() if gt is None else {int(im["id"]) for im in gt.get("images", [])}
    if gt is not None and not set(ids) <= gt_ids:
        log.warning("report: images %s are not in the ground truth: semantic figures without it",
                    sorted(set(ids) - gt_ids))
        gt = None
    stego = _stego_maps(inputs, images, gt, ids, dev)
    if pct_data:
        log.info("report: PCT learnt from pct.data, not from the dataset's images: its maps are in the "
                 "semantic_pct_<id> strips")
    pct = None if pct_data else _pct_maps(inputs, images, dev)
    if stego is None and pct is None:
        log.info("report: no semantic figures (no STEGO or PCT outputs)")
        return
    n_classes = num_classes(gt) if gt is not None else 1
    if pct is not None:
        n_classes = max(n_classes, pct[4])
    labels = coco_labels(gt, ids) if gt is not None else None
    parts = ["the image"] + (["its ground-truth classes"] if gt is not None else [])
    if stego is not None:
        parts.append(f"the STEGO cluster map at its {stego[3]}x{stego[3]} square input (beside that input"
                     + (" and its ground truth" if gt is not None else "") + "; clusters coloured as "
                     + ("the classes matched to them over the shown images)" if gt is not None else "ids)"))
    if pct is not None:
        parts.append(f"the PCT retrained model's classes ({pct[1]}, {pct[2]})")
    for i, image_id in enumerate(ids):
        panels = [("image", images[i])]
        if labels is not None:
            panels.append(("ground truth", viz.colorize_labels(labels[i], n_classes)))
        if stego is not None:
            squares, square_gts, maps, size = stego
            panels.append((f"stego input {size}", squares[i]))
            if square_gts is not None:
                panels.append(("stego ground truth", square_gts[i]))
            panels.append(("stego clusters", maps[i]))
        if pct is not None:
            panels.append((pct[0], viz.colorize_labels(pct[3][i], n_classes)))
        caption = f"Image {image_id}: " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] + "."
        add(f"semantic_{image_id}.png", "semantic", caption, viz.side_by_side(panels, height=STRIP_HEIGHT))


def pct_data_figures(inputs: ReportInputs, n_images: int, device: str, add) -> None:
    """The semantic_pct_<id> strips of PCT on user files (pct.data): the first n_images held-out ("val")
    images of its manifest, their label PNGs and the first PCT retrained model's map."""
    manifest, labels = inputs.pct_manifest, inputs.pct_labels
    if manifest is None:
        log.info("report: no PCT strips of pct.data (no manifest of its images given)")
        return
    found = _pct_model(inputs)
    if found is None or n_images == 0:
        log.info("report: no PCT strips of pct.data (%s)", "no retrained model" if found is None else "n_images 0")
        return
    rows = {int(r["id"]): r for r in read_manifest(manifest)}
    source = read_label_source(labels)
    ids = sorted(int(i) for i in source.get("val") or [])[:n_images]
    absent = [i for i in ids if i not in rows]
    if absent:
        raise ValueError(f"PCT manifest {manifest} lacks the held-out images {absent[:10]} of {labels}")
    if not ids:
        log.info("report: no PCT strips of pct.data (%s lists no held-out images)", labels)
        return
    images = [load_record(rows[i]) for i in ids]
    gts, k = label_maps(labels, ids)
    title, budget, mode, maps, n_model = _pct_maps(inputs, images, pick_device(device), found)
    n_classes = max(k, n_model)
    for i, image_id in enumerate(ids):
        stem = source["images"][str(image_id)]["stem"]
        panels = [("image", images[i]), ("ground truth", viz.colorize_labels(gts[i], n_classes)),
                  (title, viz.colorize_labels(maps[i], n_classes))]
        caption = (f"PCT held-out image {image_id} ({stem}) of pct.data: the image, the classes of its label PNG "
                   f"and the PCT retrained model's classes ({budget}, {mode}).")
        add(f"semantic_pct_{image_id}.png", "semantic", caption, viz.side_by_side(panels, height=STRIP_HEIGHT))
