"""The STEGO stages of the workflow: train (features, kNN, head and probes) and evaluate (rows of a table).

Images are made square (short side resized to input_size, centre crop: maskless.stego.features.square_image)
so the frozen features of every image stack into one tensor; the ground truth gets the same geometry
(maskless.data.semantic.square_labels). Ground truth comes from the experiment's validated COCO instances
(thing classes 1..C, background 0, crowd 255): for the synthetic data these are the generator's own objects.

Evaluation rows (iou_type "semantic", metrics mIoU and Acc, and obj_mIoU and obj_Acc on the object pixels
alone: maskless.eval.semantic), by their (method, variant, mode) columns (maskless.eval.metrics):
  constant                 background everywhere: the trivial baseline (on mostly-background data it beats a
                           weak clustering on mIoU and Acc, never on the object-pixel scores)
  kmeans                   k-means on the raw frozen features, K = n_clusters (the baseline STEGO must beat):
                           the same backbone and layer as STEGO's (stego.backbone, stego.layer)
  stego, cluster, plain    the cluster probe (Hungarian-matched to the classes over the whole dataset)
  stego, cluster, crf      the same after the dense CRF
  stego, linear, plain     the linear probe (trained on the labels: an evaluation probe, not unsupervised)
  stego, linear, crf       the same after the dense CRF
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from maskless.data.images import load_rgb
from maskless.data.manifest import read_manifest
from maskless.data.semantic import coco_labels, num_classes, square_labels
from maskless.eval.metrics import metric_rows, metrics_markdown, row_label, write_metrics
from maskless.eval.semantic import semantic_results
from maskless.io import pick_device, set_threads, write_text_atomic
from maskless.models.backbones import load_any_backbone, require_level
from maskless.stego.baseline import KMeansParams, kmeans_baseline
from maskless.stego.crf import CrfParams
from maskless.stego.features import extract_all, square_image
from maskless.stego.knn import compute_knn, pool_features, save_knn
from maskless.stego.predict import load_stego, predict
from maskless.stego.train import train_stego

log = logging.getLogger(__name__)
BACKGROUND = 0  # the class id of background in the ground truth (maskless.data.semantic)


@dataclass(frozen=True)
class StegoStageParams:
    layer: str = "res3"
    input_size: int = 160
    knn_k: int = 7
    batch_size: int = 16  # images per backbone forward


def _images(manifest: str, size: int) -> tuple[list[int], np.ndarray]:
    rows = read_manifest(manifest)
    ids = [int(r["id"]) for r in rows]
    return ids, np.stack([square_image(load_rgb(r["path"]), size) for r in rows])  # (N, S, S, 3)


def square_ground_truth(gt: str, ids: list[int], size: int) -> tuple[torch.Tensor, int]:
    """(N, S, S) int64 labels of the images in ids, and the class count (background included)."""

    labels = [square_labels(lab, size) for lab in coco_labels(gt, ids)]
    return torch.from_numpy(np.stack(labels).astype(np.int64)), num_classes(gt)


def load_frozen(backbone_path: str, device, layer: str | None = None) -> torch.nn.Module:
    """The frozen backbone (any of maskless.models.backbones.BACKBONES, recognised from the file) in eval
    mode on device; with `layer`, checked to have that level (an error names config key stego.layer)."""

    net = load_any_backbone(backbone_path)
    if layer is not None:
        require_level(net, layer, "stego.layer", backbone_path)
    return net.to(device).eval()


def run_stego_train(*, manifest: str, backbone: str, out_model: str, out_knn: str, state_dir: str,
                    params: StegoStageParams, train_params, gt: str | None = None, loss_log: str | None = None,
                    device: str = "auto", threads: int | None = None) -> dict:
    """Features of the frozen backbone, their kNN (saved to out_knn), then train_stego -> out_model."""

    set_threads(threads)
    dev = pick_device(device)
    t0 = time.perf_counter()
    ids, images = _images(manifest, params.input_size)
    feats = extract_all(load_frozen(backbone, dev, params.layer), list(images), layer=params.layer,
                        batch_size=params.batch_size)  # (N, C, h, w)
    log.info("STEGO: %s features %s of %d images in %.1f s", params.layer, tuple(feats.shape[1:]), len(ids),
             time.perf_counter() - t0)
    knn = compute_knn(pool_features(feats), params.knn_k)
    save_knn(out_knn, knn)
    labels, n_classes = square_ground_truth(gt, ids, params.input_size) if gt else (None, None)
    return train_stego(features=feats, knn=knn, params=train_params, out=out_model, state_dir=state_dir,
                       device=device, labels=labels, num_classes=n_classes, loss_log=loss_log,
                       feature_source={**dataclasses.asdict(params), "backbone": str(backbone)})


def run_stego_eval(*, manifest: str, backbone: str, model: str, gt: str, out_metrics: str, out_table: str,
                   experiment: str, dataset: str, seed: int, params: StegoStageParams, crf: dict | None,
                   flip: bool = True, device: str = "auto", threads: int | None = None) -> list[dict]:
    """Score the STEGO probes (with and without CRF) and the k-means baseline; write the rows and a table.
    seed: the run's training seed, k-means' seed and the rows' seed column."""

    set_threads(threads)
    dev = pick_device(device)
    ids, images = _images(manifest, params.input_size)
    gts, n_classes = square_ground_truth(gt, ids, params.input_size)
    stego = load_stego(model, dev)
    k = stego["params"]["n_clusters"]
    net = load_frozen(backbone, dev, params.layer)
    feats = extract_all(net, list(images), layer=params.layer, batch_size=params.batch_size)  # (N, C, h, w)
    size = (params.input_size, params.input_size)
    # (method, variant, mode) of the rows -> predicted maps (N, S, S)
    preds = {("constant", "", ""): torch.full_like(gts, BACKGROUND),
             ("kmeans", "", ""): kmeans_baseline(feats, size, KMeansParams(n_clusters=k, seed=seed))}
    modes = [("plain", None)] + ([("crf", CrfParams(**crf))] if crf is not None else [])
    for mode, crf_params in modes:
        t0 = time.perf_counter()
        maps = {"cluster": [], "linear": []}
        for start in range(0, len(images), params.batch_size):
            batch = torch.from_numpy(images[start : start + params.batch_size]).permute(0, 3, 1, 2)  # (B, 3, S, S)
            out = predict(net, stego, batch.to(dev), layer=params.layer, flip=flip, crf=crf_params)
            for key in maps:
                if out[key] is not None:
                    maps[key].append(out[key])
        preds[("stego", "cluster", mode)] = torch.cat(maps["cluster"])
        if maps["linear"]:
            preds[("stego", "linear", mode)] = torch.cat(maps["linear"])
        log.info("STEGO maps%s of %d images in %.1f s", " with CRF" if crf_params else "", len(images),
                 time.perf_counter() - t0)
    rows = []
    for (method, variant, mode), pred in preds.items():
        classes = variant == "linear" or method == "constant"  # class ids, not cluster ids
        res = semantic_results(list(pred.numpy()), list(gts.numpy()), num_pred=n_classes if classes else k,
                               num_classes=n_classes, match="identity" if classes else "hungarian",
                               background=BACKGROUND)
        new = metric_rows(res, experiment=experiment, method=method, variant=variant, mode=mode, dataset=dataset,
                          seed=seed)
        rows += new
        log.info("%s: %s", row_label(new[0]), res["semantic"])
    write_metrics(out_metrics, rows)
    write_text_atomic(out_table, metrics_markdown(rows))
    return rows
