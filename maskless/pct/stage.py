"""The PCT stages of the workflow (METHODS.md "PCT"): split, train, pseudo-label, retrain, evaluate.

Data. Images come from the experiment's manifest; pixel labels and tags from its validated COCO instances
(results/<exp>/data/instances_gt.json: thing classes 1..C, background 0, crowd 255; for the synthetic data
these are the generator's own objects), so a strong image's tags always equal its label map's classes.
The whole split is held in memory (images and label maps): fine for the embedded data and coco-tiny, not
for full COCO (issue 7).

Split (split.json, one per label ratio). A held-out evaluation set of `eval_fraction` of the images is
drawn first, with the seed only, so it is the same for every ratio and no model ever trains on it. The
remaining training images are split into strong (pixel labels; `ratio` of the training images, at least
one) and weak (tags only), stratified by default so that a small strong set still covers every class.

Models, per (ratio, mode); mode "plain" or "ctr" (Contextrast on the supervised terms):
  strong_only   one network on the strong images' labels only (the baseline PCT must beat)
  pct           Hybrid-Net and Pseudo-Net cross-trained on strong + weak images
  pseudo/       Pseudo-Net's labels of the weak images, restricted to their tags (multi-scale, flip), PNGs
  retrain       a fresh network on strong labels + weak pseudo labels

Evaluation rows (iou_type "semantic", metrics mIoU and Acc; stage "<name>[+ctr]@<ratio>"):
  strong_only   held-out images, no tags
  pct_hybrid    Hybrid-Net on the held-out images, no tags
  pct_pseudo    Pseudo-Net on the held-out images WITH their tags (multi-scale, flip), as in the paper
  pct_labels    the pseudo labels the retrain learns from, against the weak images' ground truth
  pct_retrain   the retrained network on the held-out images, no tags
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from maskless.data.images import load_rgb
from maskless.data.manifest import read_manifest
from maskless.io import atomic_dir, pick_device, set_threads, write_json_atomic, write_text_atomic
from maskless.pct.split import split_ids, tags_from_label_map

log = logging.getLogger(__name__)

KINDS = ("strong_only", "pct", "retrain")
MODES = ("plain", "ctr")
SPLIT_FORMAT = "maskless-pct-split"


@dataclass(frozen=True)
class SplitParams:
    ratio: float
    eval_fraction: float = 0.25
    stratified: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"config key 'pct.ratios': a label ratio must lie in (0, 1], got {self.ratio}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"config key 'pct.eval_fraction' must lie in (0, 1), got {self.eval_fraction}")


def load_labels(gt: str, ids: Sequence[int]) -> tuple[list[np.ndarray], int]:
    """uint8 (H, W) label maps of `ids` from a COCO instances JSON, and the class count (background included)."""
    from maskless.data.semantic import coco_labels, num_classes

    k = num_classes(gt)
    if k > 255:
        raise ValueError(f"{gt}: {k - 1} categories; PCT label maps hold at most 254 classes (255 = ignore)")
    return [lab.astype(np.uint8) for lab in coco_labels(gt, ids)], k


def load_images(manifest: str, ids: Sequence[int]) -> list[np.ndarray]:
    """uint8 (H, W, 3) RGB images of `ids`, in that order (an id missing from the manifest is an error)."""
    rows = {int(r["id"]): r for r in read_manifest(manifest)}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ValueError(f"manifest {manifest} lacks image ids {missing[:10]} named by the PCT split")
    return [load_rgb(rows[i]["path"]) for i in ids]


def make_split(ids: Sequence[int], tags: dict[int, frozenset[int]], params: SplitParams) -> dict:
    """{"eval", "strong", "weak"} id lists (module doc): eval first (seed only), then strong / weak."""
    ids = sorted(int(i) for i in ids)
    if len(ids) < 3:
        raise ValueError(f"PCT needs at least 3 images (held-out, strong, weak), the dataset has {len(ids)}")
    n_eval = min(len(ids) - 2, max(1, round(params.eval_fraction * len(ids))))
    held, train = split_ids(ids, count=n_eval, seed=params.seed)
    strong, weak = split_ids(train, ratio=params.ratio, seed=params.seed,
                             tags={i: tags[i] for i in train} if params.stratified else None)
    if not weak:
        raise ValueError(f"config key 'pct.ratios': ratio {params.ratio} of {len(train)} training images leaves "
                         "no weak image; PCT needs both (ratio 1 is the fully supervised case)")
    return {"eval": held, "strong": strong, "weak": weak}


def run_pct_split(*, manifest: str, gt: str, out: str, params: SplitParams) -> dict:
    """Write split.json: the three id lists, every image's tags, the class count and the params."""
    ids = [int(r["id"]) for r in read_manifest(manifest)]
    labels, k = load_labels(gt, ids)
    tags = {i: tags_from_label_map(lab) for i, lab in zip(ids, labels)}
    split = make_split(ids, tags, params)
    train_classes = set().union(*(tags[i] for i in split["strong"]))
    absent = sorted(set(range(1, k)) - train_classes)
    if absent:
        log.warning("classes %s have no strong image at ratio %s: they are learnt from tags alone", absent,
                    params.ratio)
    record = {"format": SPLIT_FORMAT, "ratio": params.ratio, "eval_fraction": params.eval_fraction,
              "stratified": params.stratified, "seed": params.seed, "num_classes": k,
              **split, "tags": {str(i): sorted(tags[i]) for i in ids}}
    write_json_atomic(out, record, indent=1)
    log.info("PCT split at ratio %s: %d held-out, %d strong, %d weak images, %d classes", params.ratio,
             len(split["eval"]), len(split["strong"]), len(split["weak"]), k)
    return record


def read_split(path: str) -> dict:
    with open(path) as f:
        split = json.load(f)
    if not isinstance(split, dict) or split.get("format") != SPLIT_FORMAT:
        raise ValueError(f"{path} is not a PCT split file (format {SPLIT_FORMAT!r})")
    return split


def _tags(split: dict, ids: Sequence[int]) -> list[frozenset[int]]:
    return [frozenset(split["tags"][str(i)]) for i in ids]


def read_pseudo(folder: str, ids: Sequence[int]) -> list[np.ndarray]:
    """The pseudo label PNGs <folder>/<id>.png of `ids` as uint8 maps (a missing or unreadable one is an error)."""
    import cv2

    out = []
    for i in ids:
        path = Path(folder) / f"{i}.png"
        lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if lab is None or lab.ndim != 2:
            raise ValueError(f"pseudo label {path} is missing or not a single-channel PNG")
        out.append(lab.astype(np.uint8))
    return out


def run_pct_train(*, kind: str, split_path: str, manifest: str, gt: str, params, out: str, state_dir: str,
                  backbone: str | None, pseudo: str | None = None, loss_log: str | None = None,
                  device: str = "auto", threads: int | None = None) -> dict:
    """Train one model of the (ratio, mode) family (module doc); `params` a SegTrainParams (PCTParams for
    kind "pct") whose model.num_classes equals the split's."""
    from maskless.pct.train import train_pct, train_supervised

    if kind not in KINDS:
        raise ValueError(f"PCT model kind {kind!r} unknown; choices: {list(KINDS)}")
    split = read_split(split_path)
    if params.model.num_classes != split["num_classes"]:
        raise ValueError(f"{split_path}: {split['num_classes']} classes, the model is built for "
                         f"{params.model.num_classes}")
    strong, weak = split["strong"], split["weak"]
    ids = strong + ([] if kind == "strong_only" else weak)
    images = load_images(manifest, ids)
    gt_strong, _ = load_labels(gt, strong)
    common = dict(params=params, out=out, state_dir=state_dir, backbone=backbone, device=device, threads=threads,
                  loss_log=loss_log)
    if kind == "pct":
        return train_pct(images=images, labels=gt_strong + [None] * len(weak), tags=_tags(split, ids), **common)
    if kind == "retrain":
        if pseudo is None:
            raise ValueError("the retrain needs the pseudo label folder")
        return train_supervised(images=images, labels=gt_strong + read_pseudo(pseudo, weak), **common)
    return train_supervised(images=images, labels=gt_strong, **common)


def run_pct_pseudo(*, split_path: str, manifest: str, model: str, out_dir: str, input_size: int,
                   scales: Sequence[float], flip: bool = True, device: str = "auto",
                   threads: int | None = None) -> int:
    """Pseudo-Net's labels of the weak images as <out_dir>/<id>.png (written whole, then renamed into place)."""
    import torch

    from maskless.pct.model import load_segnet
    from maskless.pct.pseudo import pseudo_label, write_label_png

    set_threads(threads)
    dev = pick_device(device)
    split = read_split(split_path)
    weak = split["weak"]
    net = load_segnet(model, which="pseudo").to(dev)
    t0 = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        for n, (i, image, tags) in enumerate(zip(weak, load_images(manifest, weak), _tags(split, weak))):
            label = pseudo_label(net, image, tags, scales=scales, flip=flip, input_size=input_size)
            write_label_png(Path(tmp) / f"{i}.png", label)
            if (n + 1) % 50 == 0 or n + 1 == len(weak):
                log.info("pseudo labels %d/%d (%.1f s)", n + 1, len(weak), time.perf_counter() - t0)
        write_json_atomic(Path(tmp) / "pseudo.json", {"model": model, "images": len(weak), "scales": list(scales),
                                                     "flip": flip, "input_size": input_size,
                                                     "device": str(dev), "torch": torch.__version__})
    return len(weak)


def stage_name(name: str, mode: str, ratio: str) -> str:
    """Row stage of a PCT model: "<name>[+ctr]@<ratio>" (maskless.eval.metrics renders the per-ratio table)."""
    if mode not in MODES:
        raise ValueError(f"PCT mode {mode!r} unknown; choices: {list(MODES)}")
    return f"{name}{'+ctr' if mode == 'ctr' else ''}@{ratio}"


def run_pct_eval(*, split_path: str, manifest: str, gt: str, models: dict[str, str], pseudo: str,
                 out_metrics: str, out_table: str, experiment: str, dataset: str, ratio: str, mode: str,
                 input_size: int, scales: Sequence[float], flip: bool = True, device: str = "auto",
                 threads: int | None = None) -> list[dict]:
    """Score the family's models (module doc); models maps "strong_only" / "pct" / "retrain" to checkpoints."""
    from maskless.eval.metrics import metric_rows, metrics_markdown, write_metrics
    from maskless.eval.semantic import semantic_results
    from maskless.pct.model import load_segnet
    from maskless.pct.pseudo import predict, pseudo_label

    set_threads(threads)
    dev = pick_device(device)
    split = read_split(split_path)
    k, held, weak = split["num_classes"], split["eval"], split["weak"]
    images = load_images(manifest, held)
    labels, _ = load_labels(gt, held + weak)  # one read of the instances JSON (large for full COCO)
    gts, weak_gt = labels[: len(held)], labels[len(held) :]
    preds: dict[str, list[np.ndarray]] = {}
    t0 = time.perf_counter()
    for name, path, which in (("strong_only", models["strong_only"], None), ("pct_hybrid", models["pct"], "hybrid"),
                              ("pct_retrain", models["retrain"], None)):
        net = load_segnet(path, which=which).to(dev)
        preds[name] = [predict(net, im, input_size=input_size) for im in images]
    net = load_segnet(models["pct"], which="pseudo").to(dev)
    preds["pct_pseudo"] = [pseudo_label(net, im, tags, scales=scales, flip=flip, input_size=input_size)
                           for im, tags in zip(images, _tags(split, held))]
    log.info("PCT predictions of %d held-out images in %.1f s", len(held), time.perf_counter() - t0)
    rows = []
    for name in ("strong_only", "pct_hybrid", "pct_pseudo", "pct_retrain"):
        res = semantic_results(preds[name], gts, num_pred=k, num_classes=k, match="identity")
        rows += metric_rows(res, experiment=experiment, stage=stage_name(name, mode, ratio), round=0,
                            dataset=dataset)
        log.info("%s: %s", stage_name(name, mode, ratio), res["semantic"])
    res = semantic_results(read_pseudo(pseudo, weak), weak_gt, num_pred=k, num_classes=k, match="identity")
    rows += metric_rows(res, experiment=experiment, stage=stage_name("pct_labels", mode, ratio), round=0,
                        dataset=dataset)
    log.info("%s (pseudo labels of the %d weak images): %s", stage_name("pct_labels", mode, ratio), len(weak),
             res["semantic"])
    write_metrics(out_metrics, rows)
    write_text_atomic(out_table, metrics_markdown(rows))
    return rows


def ratio_name(ratio: float) -> str:
    """The wildcard form of a label ratio (0.125 -> "0.125")."""
    return f"{float(ratio):g}"


def train_params(pct: dict, *, kind: str, mode: str, arch: str, num_classes: int, seed: int):
    """SegTrainParams (PCTParams for kind "pct") from the config's pct section (maskless/config.schema.yaml)."""
    from maskless.pct.train import PCTParams, SegTrainParams

    if kind not in KINDS or mode not in MODES:
        raise ValueError(f"PCT kind {kind!r} / mode {mode!r} unknown; choices: {list(KINDS)} / {list(MODES)}")
    train = dict(pct["train"])
    retrain_steps = train.pop("retrain_steps", None)
    pct_only = {k: train.pop(k) for k in ("mlsm_weight", "pseudo_gt_weight", "h2p_weight", "p2h_weight",
                                          "ema_momentum", "iou_power") if k in train}
    if kind == "retrain" and retrain_steps is not None:
        train["steps"] = retrain_steps
    common = dict(train, seed=seed, use_contextrast=mode == "ctr",
                  model={**pct["model"], "arch": arch, "num_classes": num_classes},
                  contextrast=dict(pct.get("contextrast_params") or {}))
    return PCTParams(**common, **pct_only) if kind == "pct" else SegTrainParams(**common)
