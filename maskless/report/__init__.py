"""The figures of the pipeline's HTML report (``snakemake --report``), made from the files a run gives it.

`build_report_figures(inputs, out_dir)` draws the files named in `inputs` (a ReportInputs: the workflow's
input function report_inputs in rules/common.smk fills it with what the run makes, each file with the
variant, round, budget or mode it is of) and writes PNG figures plus an ``index.json`` listing them (the same
list it returns) into `out_dir`, written whole: built in a temp folder beside it and renamed into place
(maskless.io.atomic_dir), so a killed job leaves the old folder or none. Nothing else is read: a file the
inputs do not name is not drawn, whatever lies beside the named ones (a variant the config no longer runs
leaves no figure). Every input is optional: a stage given no files is skipped (logged), so the report of a
smaller run shows what there is. An input that is named but unreadable is an error.

Figures, in this order (category in brackets; every figure is drawn with maskless.viz):

    masks_<id>.png      [masks]      per sampled image: image | ground-truth instances | Free Mask | each SOLO
                                     variant (in the order given: the workflow gives pipeline order) and
                                     round ("freesolo r0", "exemplar_n8 r1"); SOLO masks with
                                     score >= 0.3, at most 20 (best first); Free Masks: the 20 best. With an
                                     evaluation set (inputs.eval_manifest): its images, ground truth and the
                                     Free Mask and SOLO predictions on them
    semantic_<id>.png   [semantic]   per sampled image, when STEGO or PCT outputs are given: image |
                                     ground-truth classes | STEGO input and ground truth at its square input
                                     size | STEGO cluster map | PCT retrained map (the first label budget:
                                     ratios, then counts, each by value; then mode, plain before ctr)
    semantic_pct_<id>.png [semantic] with PCT on user files (pct.data: inputs.pct_labels), per sampled
                                     held-out image of its manifest: image | its label PNG's classes | PCT
                                     retrained map (same model); the semantic_<id> strips then show STEGO only
    loss_<name>.png     [losses]     the "loss" column over step of each training log (log scale when every
                                     value is positive): pretrain, SOLO (variants in the order given, then
                                     rounds), STEGO, PCT (budget, mode, then strong_only / pct / retrain);
                                     name = the log's folder under results/<experiment>/, "/" -> "_"
    metrics_instance.png [metrics]   mask (segm) AP, AP50 and AR100 per instance stage and round (labelled
                                     by maskless.eval.metrics.row_label, in pipeline order: row_rank): one
                                     bar chart per metric, stacked top to bottom
    metrics_semantic.png [metrics]   mIoU per semantic stage (STEGO probes, k-means)
    metrics_semi.png    [metrics]    mIoU per semi/weakly supervised model ("<model>[+ctr]": the rows'
                                     variant and mode): one bar chart per label budget (ratios, then
                                     counts, by value), stacked top to bottom
    exemplars_n<k>.png  [exemplars]  each exemplar pool's crops with their masks, captioned with the source
                                     image id

The sampled images are the first `n_images` ids of the manifest (mask strips with an evaluation set: of the
evaluation manifest; PCT strips of pct.data: of its held-out "val" images). STEGO clusters are coloured as the
ground-truth class they are matched to by Hungarian matching over the sampled images (maskless.eval.semantic;
clusters left unmatched get colours of their own); without ground truth each cluster gets its own colour.
The output is deterministic: the same inputs give the same PNG bytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskless import viz
from maskless.data.images import load_record
from maskless.eval.metrics import model_rank, read_metrics, row_label, row_rank
from maskless.io import atomic_dir, write_json_atomic
from maskless.pct.budget import budget_text

log = logging.getLogger(__name__)

__all__ = ["build_report_figures", "ReportInputs", "CATEGORIES", "MIN_SOLO_SCORE", "MAX_MASKS", "PCT_RUNS"]

CATEGORIES = ("masks", "semantic", "losses", "metrics", "exemplars")
MIN_SOLO_SCORE = 0.3  # SOLO predictions shown: score >= this ...
MAX_MASKS = 20  # ... and at most this many per image (Free Masks too), best first
STRIP_HEIGHT = 192  # px of each side_by_side panel
CHART_SIZE = (480, 320)  # smallest (width, height) of a chart
INSTANCE_METRICS = ("AP", "AP50", "AR100")
EXEMPLAR_COLUMNS = 8
EXEMPLAR_CELL = (128, 128)
PCT_RUNS = ("strong_only", "pct", "retrain")  # PCT training runs of a budget and mode, in pipeline order


@dataclass(frozen=True)
class ReportInputs:
    """The files the report draws, each with what it is of; None / empty: not drawn. Paths are strings.

    Keyed lists hold tuples whose last item is the path: solo (variant, round, prediction index), pct
    (budget wildcard "ratio0.125" / "count92", mode, retrained model.pt), solo_losses (variant, round,
    loss.csv), pct_losses (budget, mode, run of PCT_RUNS, loss.csv), pct_metrics (budget, mode,
    metrics.parquet), pools (exemplar count, pool folder).
    """

    manifest: str | None = None  # the training images (mask strips without an evaluation set, semantic strips)
    ground_truth: str | None = None  # their COCO instances
    eval_manifest: str | None = None  # the evaluation set (dataset.eval): the mask strips show its images ...
    eval_ground_truth: str | None = None  # ... and its ground truth
    freemask: str | None = None  # the Free Mask index on the images of the mask strips
    solo: Sequence[tuple[str, int, str]] = ()  # SOLO predictions on those images
    backbone: str | None = None  # the frozen backbone STEGO predicts on
    stego: str | None = None  # the STEGO model
    pct: Sequence[tuple[str, str, str]] = ()  # PCT retrained models
    pct_manifest: str | None = None  # pct.data's images ...
    pct_labels: str | None = None  # ... and labels (given: PCT learnt from them, not from the dataset)
    pretrain_loss: str | None = None
    solo_losses: Sequence[tuple[str, int, str]] = ()
    stego_loss: str | None = None
    pct_losses: Sequence[tuple[str, str, str, str]] = ()
    metrics: Sequence[str] = ()  # instance and STEGO metric rows (maskless.eval.metrics)
    pct_metrics: Sequence[tuple[str, str, str]] = ()  # PCT's metric rows of each budget and mode
    pools: Sequence[tuple[int, str]] = ()  # exemplar pools

    @classmethod
    def from_workflow(cls, files: Mapping[str, str | Sequence[str]], keys: Mapping[str, Sequence]) -> ReportInputs:
        """From a rule's named inputs (field -> path, or -> [path]) and the keys of its keyed lists (field ->
        [key], a key a list of the tuple's items before the path, in the paths' order). A name that is no
        field is an error, but "after" (inputs that only order the rule after the rest of the run)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(files) - fields - {"after"} | set(keys) - fields)
        if unknown:
            raise ValueError(f"report inputs: unknown names {unknown}; known: {sorted(fields)}")
        values: dict = {}
        for name, value in files.items():
            if name == "after":
                continue
            if name not in keys:
                values[name] = str(value) if isinstance(value, (str, Path)) else [str(v) for v in value]
                continue
            paths, name_keys = [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value], keys[name]
            if len(paths) != len(name_keys):
                raise ValueError(f"report inputs: {len(paths)} files of {name} but {len(name_keys)} keys")
            values[name] = [(*(key if isinstance(key, (list, tuple)) else [key]), path)
                            for key, path in zip(name_keys, paths)]
        missing = sorted(set(keys) - set(files))
        if missing:
            raise ValueError(f"report inputs: keys of {missing} but no files")
        return cls(**values)


def build_report_figures(inputs: ReportInputs, out_dir: str, *, n_images: int = 4,
                         device: str = "cpu") -> list[dict]:
    """Write the report's PNG figures of `inputs` and index.json into out_dir (replaced whole); return the index.

    Returns one dict per figure, in the order of the module docstring: {"file": PNG name, "category": one of
    CATEGORIES, "caption": one sentence}. index.json holds the same list. device: where STEGO and PCT predict.
    """
    if not isinstance(inputs, ReportInputs):
        raise TypeError(f"build_report_figures takes a ReportInputs, got {type(inputs).__name__}")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 0:
        raise ValueError(f"n_images must be an integer >= 0, got {n_images!r}")
    records = _sample(inputs.manifest, n_images)
    gt = _ground_truth(inputs.ground_truth)
    on_eval = inputs.eval_manifest is not None
    if on_eval:
        log.info("report: evaluation set: mask strips of %s", inputs.eval_manifest)
        mask_records = _sample(inputs.eval_manifest, n_images)
        mask_gt = _ground_truth(inputs.eval_ground_truth)
    else:
        mask_records, mask_gt = records, gt
    pct_data = inputs.pct_labels is not None
    figures: list[dict] = []
    images: list[np.ndarray] = []

    def add(name: str, category: str, caption: str, rgb: np.ndarray) -> None:
        figures.append({"file": name, "category": category, "caption": caption})
        images.append(rgb)

    # drawn first, written after: an input that cannot be read raises its own error, naming it
    _mask_figures(inputs, mask_records, mask_gt, on_eval, add)
    _semantic_figures(inputs, records, gt, device, pct_data, add)
    if pct_data:
        _pct_data_figures(inputs, n_images, device, add)
    _loss_figures(inputs, add)
    _metric_figures(inputs, add)
    _exemplar_figures(inputs, add)
    with atomic_dir(out_dir) as tmp:
        for figure, rgb in zip(figures, images):
            viz.save_png(Path(tmp) / figure["file"], rgb)
        write_json_atomic(Path(tmp) / "index.json", figures, indent=1)
    log.info("report figures: %d in %s (%s)", len(figures), out_dir,
             ", ".join(f"{c} {sum(f['category'] == c for f in figures)}" for c in CATEGORIES))
    return figures


# ----------------------------------------------------------------------------------------------- inputs

def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _sample(path: str | None, n_images: int) -> list[dict]:
    """The first n_images rows (sorted by id) of the manifest at path; [] without one."""
    from maskless.data.manifest import read_manifest

    if path is None:
        log.info("report: no manifest given: no figures of its images")
        return []
    return read_manifest(path)[:n_images]


def _ground_truth(path: str | None) -> dict | None:
    if path is None:
        log.info("report: no ground truth given: figures without ground-truth panels")
        return None
    with open(path) as f:
        return json.load(f)


def _gt_instances(gt: dict, image_id: int, hw: tuple[int, int]) -> np.ndarray | None:
    """bool (N, H, W) non-crowd ground-truth instances of an image, largest first (the smaller, usually
    occluding, drawn over them); None when the image is not in the ground truth."""
    from maskless.data.semantic import instance_mask

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
    order = _first_seen([v for v, _, _ in inputs.solo])
    for _, rnd, variant, path in sorted((order[v], int(r), v, p) for v, r, p in inputs.solo):
        out.append((f"{variant} r{rnd}", f"{variant} r{rnd}", path, True))
    return out


def _first_seen(variants: list[str]) -> dict[str, int]:
    """{SOLO variant: its place in the order given}: the workflow gives the variants in pipeline order
    (solo_variants in rules/common.smk), so the report keeps it rather than reading it from their names."""
    return {v: i for i, v in enumerate(dict.fromkeys(variants))}


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


# ------------------------------------------------------------------------------------------------ masks

def _mask_figures(inputs: ReportInputs, records: list[dict], gt: dict | None, on_eval: bool, add) -> None:
    from maskless.store import MaskStore

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


# --------------------------------------------------------------------------------------------- semantic

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
    import torch

    from maskless.data.semantic import coco_labels, num_classes, square_labels
    from maskless.eval.semantic import hungarian_match, semantic_confusion
    from maskless.stego.features import square_image
    from maskless.stego.predict import load_stego, predict
    from maskless.stego.stage import load_frozen

    model_path, backbone_path = inputs.stego, inputs.backbone
    if model_path is None or backbone_path is None:
        log.info("report: no STEGO panels (no %s given)", " and ".join(
            name for name, p in (("STEGO model", model_path), ("backbone", backbone_path)) if p is None))
        return None
    stego = load_stego(model_path, dev)
    net = load_frozen(backbone_path, dev)
    size, layer = _stego_geometry(model_path, stego["params"], net)
    squares = [square_image(img, size) for img in images]
    batch = torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8
    maps = predict(net, stego, batch.to(dev), layer=layer, flip=True, crf=None)["cluster"].numpy()  # (B, S, S)
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


def _budget_key(budget: str) -> tuple:
    """Sort key of a PCT label budget ("ratio0.125", "count92": the budget wildcard,
    maskless.pct.budget.parse_budget): ratios before counts, each by value."""
    from maskless.pct.budget import parse_budget

    ratio, count = parse_budget(budget)
    return (0, ratio, budget) if ratio is not None else (1, float(count), budget)


def _mode_key(mode: str) -> tuple:
    """PCT modes in pipeline order (plain, then ctr), others after by name."""
    from maskless.pct.stage import MODES

    return (MODES.index(mode), "") if mode in MODES else (len(MODES), mode)


def _budget_kind(budget: str) -> str:
    """"ratio" or "count": the kind of a label budget wildcard (_budget_key)."""
    return "ratio" if _budget_key(budget)[0] == 0 else "count"


def _budget_words(budget: str) -> str:
    """"label ratio 0.125" of ratio0.125, "label count 92" of count92."""
    return f"label {_budget_kind(budget)} {budget_text(budget)}"


def _pct_model(inputs: ReportInputs):
    """(title, budget words, mode, path) of the first PCT retrained model given (label budget by _budget_key,
    then mode), or None."""
    if not inputs.pct:
        log.info("report: no PCT retrained model given")
        return None
    _, _, budget, mode, path = min((_budget_key(b), _mode_key(m), b, m, p) for b, m, p in inputs.pct)
    return f"pct retrain {mode}@{budget_text(budget)}", _budget_words(budget), mode, path


def _pct_maps(inputs: ReportInputs, images: list[np.ndarray], dev, found=None):
    """(title, budget words, mode, label maps, number of classes) of the first PCT retrained model (or of
    `found`, a _pct_model answer), or None."""
    import torch

    from maskless.pct.model import load_segnet
    from maskless.pct.pseudo import predict

    found = _pct_model(inputs) if found is None else found
    if found is None:
        return None
    title, budget, mode, path = found
    params = torch.load(path, map_location="cpu", weights_only=True)["params"]
    model = load_segnet(path).to(dev)
    maps = [predict(model, img, input_size=int(params["input_size"])) for img in images]
    return title, budget, mode, maps, int(params["model"]["num_classes"])


def _semantic_figures(inputs: ReportInputs, records: list[dict], gt: dict | None, device: str, pct_data: bool,
                      add) -> None:
    """The semantic_<id> strips of the dataset's images; their PCT panel only where PCT learnt from the
    dataset's ground truth (with pct.data its images are others: _pct_data_figures)."""
    if not records:
        log.info("report: no semantic figures of the dataset's images (no sampled images)")
        return
    from maskless.data.semantic import coco_labels, num_classes
    from maskless.io import pick_device

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


def _pct_data_figures(inputs: ReportInputs, n_images: int, device: str, add) -> None:
    """The semantic_pct_<id> strips of PCT on user files (pct.data): the first n_images held-out ("val")
    images of its manifest, their label PNGs and the first PCT retrained model's map."""
    from maskless.data.manifest import read_manifest
    from maskless.io import pick_device
    from maskless.pct.labels import label_maps, read_label_source

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


# ----------------------------------------------------------------------------------------------- losses

def _loss_logs(inputs: ReportInputs) -> list[tuple[str, str]]:
    """[(name, loss.csv)] of the training logs given, name the log's folder under results/<experiment>/:
    pretrain, SOLO (variants in the order given, then rounds), STEGO, PCT (by label budget: ratios, then
    counts; mode: plain, then ctr; then strong_only / pct / retrain)."""
    order = _first_seen([v for v, _, _ in inputs.solo_losses])
    found = [(0, (), "pretrain", inputs.pretrain_loss)]
    found += [(1, (order[v], int(r)), f"solo/{v}/round{int(r)}", p) for v, r, p in inputs.solo_losses]
    found.append((2, (), "stego", inputs.stego_loss))
    for budget, mode, run, p in inputs.pct_losses:
        if run not in PCT_RUNS:
            raise ValueError(f"PCT loss log {p}: run {run!r} is not one of {list(PCT_RUNS)}")
        found.append((3, (_budget_key(budget), _mode_key(mode), PCT_RUNS.index(run)), f"pct/{budget}/{mode}/{run}", p))
    return [(name, p) for _, _, name, p in sorted(found) if p is not None]


def _loss_figures(inputs: ReportInputs, add) -> None:
    found = _loss_logs(inputs)
    if not found:
        log.info("report: no loss logs given")
    for rel, path in found:
        series = viz.read_loss_csv(path)
        xs, ys = series["loss"]
        finite = ys[np.isfinite(ys)]
        log_y = bool(finite.size) and bool((finite > 0).all())
        img = viz.line_plot({"loss": (xs, ys)}, title=f"{rel} loss", xlabel="step", ylabel="loss", log_y=log_y,
                            size=CHART_SIZE)
        caption = (f"Training loss of {rel} over {int(np.isfinite(xs).sum())} logged steps"
                   f"{' (log scale)' if log_y else ''}.")
        add(f"loss_{_safe(rel.replace('/', '_'))}.png", "losses", caption, img)


# ---------------------------------------------------------------------------------------------- metrics

def _label_width(labels: list[str]) -> int:
    return viz.label_width(labels) + 12


def _chart_width(labels: list[str]) -> int:
    """Wide enough that every bar's label fits its slot (bar_chart shortens labels that do not)."""
    return max(CHART_SIZE[0], 90 + len(labels) * _label_width(labels))


def _stack(charts: list[np.ndarray]) -> np.ndarray:
    """Charts of one size, top to bottom."""
    h, w = charts[0].shape[:2]
    return viz.grid(charts, columns=1, cell=(w, h))


def _metric_figures(inputs: ReportInputs, add) -> None:
    if not inputs.metrics and not inputs.pct_metrics:
        log.info("report: no metrics given")
        return
    # each PCT row with the label budget wildcard of its file (a ratio or a count), which must name the
    # row's budget column
    pct_rows = []
    for budget, _, path in inputs.pct_metrics:
        for row in read_metrics([path]):
            if row["budget"] != budget_text(budget):
                raise ValueError(f"metrics file {path} of PCT label budget {budget}: a row has budget "
                                 f"{row['budget']!r}, expected {budget_text(budget)!r}")
            pct_rows.append((budget, row))
    rows = (read_metrics(list(inputs.metrics)) if inputs.metrics else []) + [row for _, row in pct_rows]

    def suffixer(group: list[dict]):
        """Labels of a chart name the dataset only where its rows come from several (e.g. the instance
        stages scored on an evaluation set beside the semantic ones on the training set)."""
        several = len({r["dataset"] for r in group}) > 1
        return lambda row: f" ({row['dataset']})" if several else ""

    # instance: mask AP, AP50, AR100 per method and round, pipeline order
    inst = [r for r in rows if r["iou_type"] == "segm" and r["metric"] in INSTANCE_METRICS and r["method"] != "pct"]
    if inst:
        ranks = {(row_label(r), int(r["round"]), r["dataset"]): (row_rank(r), int(r["round"]), r["dataset"])
                 for r in inst}
        keys = sorted(ranks, key=ranks.get)
        rounds = {(row_label(r), int(r["round"]), r["dataset"]): r["method"] != "freemask" for r in inst}
        several = len({k[2] for k in keys}) > 1
        label = {k: k[0] + (f" r{k[1]}" if rounds[k] else "") + (f" ({k[2]})" if several else "") for k in keys}
        size = (_chart_width(list(label.values())), CHART_SIZE[1])
        value = {(row_label(r), int(r["round"]), r["dataset"], r["metric"]): r["value"] for r in inst}
        charts = [viz.bar_chart({label[k]: value.get((*k, m), math.nan) for k in keys},
                                title=f"mask {m} (%)", ylabel=m, size=size) for m in INSTANCE_METRICS]
        add("metrics_instance.png", "metrics",
            f"Mask AP, AP50 and AR100 (COCO segm, %) of {len(keys)} instance stages and rounds, one chart per "
            "metric.", _stack(charts))
    else:
        log.info("report: no instance (segm) metrics")

    # semantic: mIoU per method (STEGO probes, baselines)
    sem = sorted((r for r in rows if r["iou_type"] == "semantic" and r["metric"] == "mIoU" and r["method"] != "pct"),
                 key=lambda r: (row_rank(r), int(r["round"]), r["dataset"]))
    if sem:
        suffix = suffixer(sem)
        values = {row_label(r) + (f" r{r['round']}" if int(r["round"]) else "") + suffix(r): r["value"] for r in sem}
        img = viz.bar_chart(values, title="mIoU (%) per semantic stage", ylabel="mIoU",
                            size=(_chart_width(list(values)), CHART_SIZE[1]))
        add("metrics_semantic.png", "metrics", f"Semantic mIoU (%) of {len(values)} unsupervised stages and probes.",
            img)
    else:
        log.info("report: no semantic metrics")

    # semi/weak: mIoU per model, one chart per label budget (the same order as the per-ratio tables: ratios,
    # then counts, each by value)
    semi = [(r, budget) for budget, r in pct_rows
            if r["method"] == "pct" and r["iou_type"] == "semantic" and r["metric"] == "mIoU"]
    if semi:
        suffix = suffixer([r for r, _ in semi])
        budgets = sorted({budget for _, budget in semi}, key=_budget_key)
        kinds = {budget: _budget_kind(budget) for budget in budgets}
        ordered = sorted(semi, key=lambda rb: (rb[0]["mode"] == "ctr", model_rank(rb[0]["variant"]), rb[0]["dataset"]))
        per_budget = [{r["variant"] + ("+ctr" if r["mode"] == "ctr" else "") + suffix(r): r["value"]
                       for r, b in ordered if b == budget} for budget in budgets]
        size = (_chart_width([k for d in per_budget for k in d]), CHART_SIZE[1])
        charts = [viz.bar_chart(values, title=f"mIoU (%) at {_budget_words(budget)}", ylabel="mIoU", size=size)
                  for budget, values in zip(budgets, per_budget)]
        groups = [f"label {kind} " + ", ".join(budget_text(b) for b in budgets if kinds[b] == kind)
                  for kind in ("ratio", "count") if kind in kinds.values()]
        each = kinds[budgets[0]] if len(groups) == 1 else "label budget"
        add("metrics_semi.png", "metrics",
            f"Semi/weakly supervised mIoU (%) per model at {' and '.join(groups)}, one chart per {each}.",
            _stack(charts))
    else:
        log.info("report: no semi/weak (label ratio) metrics")


# -------------------------------------------------------------------------------------------- exemplars

def _exemplar_figures(inputs: ReportInputs, add) -> None:
    from maskless.solo.exemplar_pool import ExemplarPool

    if not inputs.pools:
        log.info("report: no exemplar pools given")
    for n, path in sorted((int(n), path) for n, path in inputs.pools):
        pool = ExemplarPool.load(path)
        tiles = [viz.overlay_masks(crop, mask[None]) for crop, mask in zip(pool.crops, pool.masks)]
        captions = [f"image {int(i)}" for i in pool.image_ids]
        methods = sorted(set(pool.methods))
        img = viz.grid(tiles, columns=min(EXEMPLAR_COLUMNS, len(tiles)), cell=EXEMPLAR_CELL, captions=captions)
        add(f"exemplars_n{n}.png", "exemplars",
            f"Exemplar pool n{n}: {len(pool)} exemplar crop{'s' if len(pool) != 1 else ''} with "
            f"their masks ({'/'.join(methods)}), each captioned with its source image id.", img)
