"""The figures of the pipeline's HTML report (``snakemake --report``), made from a finished experiment folder.

`build_report_figures(results/<experiment>, out_dir)` reads whatever stages the folder holds and writes PNG
figures plus an ``index.json`` listing them (the same list it returns) into `out_dir`, written whole: built
in a temp folder beside it and renamed into place (maskless.io.atomic_dir), so a killed job leaves the old
folder or none. Every input is optional: a stage whose outputs are absent is skipped (logged), so the report
of a half-run experiment shows what there is. An input that is present but unreadable is an error.

Figures, in this order (category in brackets; every figure is drawn with maskless.viz):

    masks_<id>.png      [masks]      per sampled image: image | ground-truth instances | Free Mask | each SOLO
                                     variant and round ("freesolo r0", "exemplar_n8 r1"); SOLO masks with
                                     score >= 0.3, at most 20 (best first); Free Masks: the 20 best. With an
                                     evaluation set (dataset.eval): its images, ground truth and the Free
                                     Mask and SOLO predictions on them (maskless.evalset), the scored ones
    semantic_<id>.png   [semantic]   per sampled image, when STEGO or PCT outputs exist: image | ground-truth
                                     classes | STEGO input and ground truth at its square input size | STEGO
                                     cluster map | PCT retrained map (the first label budget found: ratios,
                                     then counts, each by value; then mode, plain before ctr)
    semantic_pct_<id>.png [semantic] with PCT on user files (pct.data), per sampled held-out image of
                                     results/<exp>/pct/data/: image | its label PNG's classes | PCT
                                     retrained map (same model); the semantic_<id> strips then show STEGO only
    loss_<name>.png     [losses]     the "loss" column over step of each training log (log scale when every
                                     value is positive); name = the log's folder, "/" -> "_"
    metrics_instance.png [metrics]   mask (segm) AP, AP50 and AR100 per instance stage and round: one bar
                                     chart per metric, stacked top to bottom
    metrics_semantic.png [metrics]   mIoU per semantic stage (STEGO probes, k-means)
    metrics_semi.png    [metrics]    mIoU per semi/weakly supervised model ("<model>[+ctr]"): one bar chart
                                     per label budget (ratios, then counts, by value), stacked top to bottom
    exemplars_n<k>.png  [exemplars]  each exemplar pool's crops with their masks, captioned with the source
                                     image id

The sampled images are the first `n_images` ids of the manifest (mask strips with an evaluation set: of the
evaluation manifest; PCT strips of pct.data: of its held-out "val" images). STEGO clusters are coloured as the
ground-truth class they are matched to by Hungarian matching over the sampled images (maskless.eval.semantic;
clusters left unmatched get colours of their own); without ground truth each cluster gets its own colour.
The output is deterministic: the same inputs give the same PNG bytes.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import numpy as np

from maskless import evalset, viz
from maskless.data.images import load_record
from maskless.io import atomic_dir, write_json_atomic

log = logging.getLogger(__name__)

__all__ = ["build_report_figures", "CATEGORIES", "MIN_SOLO_SCORE", "MAX_MASKS"]

CATEGORIES = ("masks", "semantic", "losses", "metrics", "exemplars")
MIN_SOLO_SCORE = 0.3  # SOLO predictions shown: score >= this ...
MAX_MASKS = 20  # ... and at most this many per image (Free Masks too), best first
STRIP_HEIGHT = 192  # px of each side_by_side panel
CHART_SIZE = (480, 320)  # smallest (width, height) of a chart
INSTANCE_METRICS = ("AP", "AP50", "AR100")
EXEMPLAR_COLUMNS = 8
EXEMPLAR_CELL = (128, 128)
_EXPERIMENT = "results/{experiment}/"  # the prefix of maskless.evalset's path templates
TRAIN_MANIFEST = "data/manifest.parquet"  # under results/<experiment>/ (rule ingest)
PCT_DATA_MANIFEST = "pct/data/manifest.parquet"  # rule pct_data (pct.data): the PCT images ...
PCT_DATA_LABELS = "pct/data/labels.json"  # ... and their label PNGs (maskless.pct.stage.run_pct_data)


def build_report_figures(results_dir: str, out_dir: str, *, n_images: int = 4, device: str = "cpu",
                         eval_set: bool | None = None, pct_data: bool | None = None) -> list[dict]:
    """Write the report's PNG figures and index.json into out_dir (replaced whole); return the index.

    results_dir: a finished (or partly finished) experiment folder results/<experiment>/. Returns one dict per
    figure, in the order of the module docstring: {"file": PNG name, "category": one of CATEGORIES,
    "caption": one sentence}. index.json holds the same list. device: where STEGO and PCT predict.
    eval_set: whether the run has an evaluation set (config dataset.eval), so the mask strips show its images
    and the predictions on them; pct_data: whether PCT ran on user files (config pct.data). None (the
    default): decided by whether the folder holds the evaluation manifest, resp. PCT's labels.json.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {results_dir} does not exist")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 0:
        raise ValueError(f"n_images must be an integer >= 0, got {n_images!r}")
    if eval_set is None:
        eval_set = _path(root, evalset.EVAL_MANIFEST).is_file()
    if pct_data is None:
        pct_data = (root / PCT_DATA_LABELS).is_file()
    records = _sample(root / TRAIN_MANIFEST, n_images)
    gt = _ground_truth(_path(root, evalset.TRAIN_GT))
    if eval_set:
        log.info("report: evaluation set: mask strips of %s", _path(root, evalset.EVAL_MANIFEST))
        mask_records = _sample(_path(root, evalset.EVAL_MANIFEST), n_images)
        mask_gt = _ground_truth(_path(root, evalset.EVAL_GT))
    else:
        mask_records, mask_gt = records, gt
    figures: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        tmp = Path(tmp)

        def add(name: str, category: str, caption: str, rgb: np.ndarray) -> None:
            viz.save_png(tmp / name, rgb)
            figures.append({"file": name, "category": category, "caption": caption})

        _mask_figures(root, mask_records, mask_gt, eval_set, add)
        _semantic_figures(root, records, gt, device, pct_data, add)
        if pct_data:
            _pct_data_figures(root, n_images, device, add)
        _loss_figures(root, add)
        _metric_figures(root, add)
        _exemplar_figures(root, add)
        write_json_atomic(tmp / "index.json", figures, indent=1)
    log.info("report figures of %s: %d in %s (%s)", results_dir, len(figures), out_dir,
             ", ".join(f"{c} {sum(f['category'] == c for f in figures)}" for c in CATEGORIES))
    return figures


# ----------------------------------------------------------------------------------------------- inputs

def _number_key(text: str) -> tuple:
    """Sort key reading the numbers in text as numbers ("round10" after "round2", "ratio0.125" before
    "ratio0.5")."""
    parts = re.split(r"(\d+(?:\.\d+)?)", text)
    return tuple((0, float(p), p) if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _path(root: Path, template: str, **fields) -> Path:
    """A maskless.evalset path template ("results/{experiment}/...") under the experiment folder root, its
    other fields formatted (a glob pattern with "*" fields)."""
    if not template.startswith(_EXPERIMENT):
        raise ValueError(f"path template {template!r} does not start with {_EXPERIMENT!r}")
    return root / template.removeprefix(_EXPERIMENT).format(**fields)


def _glob(root: Path, template: str) -> list[tuple[dict, Path]]:
    """[(fields, path)] of the files matching a maskless.evalset path template ("{variant}", "{round}", ...
    read back from each path), in path order."""
    rel = template.removeprefix(_EXPERIMENT)
    parts = re.split(r"\{(\w+)\}", rel)  # literal, field, literal, ...
    regex = re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts)))
    out = []
    for path in sorted(root.glob(_path(root, template, **{f: "*" for f in parts[1::2]}).relative_to(root)
                                 .as_posix())):
        m = regex.fullmatch(path.relative_to(root).as_posix())
        if m:
            out.append((m.groupdict(), path))
    return out


def _sample(path: Path, n_images: int) -> list[dict]:
    """The first n_images rows (sorted by id) of the manifest at path; [] without it."""
    from maskless.data.manifest import read_manifest

    if not path.is_file():
        log.info("report: no manifest %s: no figures of its images", path)
        return []
    return read_manifest(path)[:n_images]


def _ground_truth(path: Path) -> dict | None:
    if not path.is_file():
        log.info("report: no ground truth %s: figures without ground-truth panels", path)
        return None
    with open(path) as f:
        return json.load(f)


def _gt_instances(gt: dict, image_id: int, hw: tuple[int, int]) -> np.ndarray | None:
    """bool (N, H, W) non-crowd ground-truth instances of an image, largest first (the smaller, usually
    occluding, drawn over them); None when the image is not in the ground truth."""
    from maskless.data.semantic import _instance_mask

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
    masks = [_instance_mask(a["segmentation"], h, w, f"ground truth annotation {a.get('id')} of image {image_id}")
             for a in anns]
    return np.stack(masks) if masks else np.zeros((0, h, w), bool)


def _mask_stores(root: Path, on_eval: bool) -> list[tuple[str, str, Path, bool]]:
    """[(panel title, short name, index parquet, is SOLO)]: Free Mask, then SOLO variants (pipeline order)
    and rounds; their predictions on the evaluation images when on_eval, else on the training images."""
    from maskless.eval.metrics import stage_rank

    out = []
    free = _path(root, evalset.FREEMASK_EVAL_INDEX) if on_eval else root / "freemask" / "index.parquet"
    if free.is_file():
        out.append(("free mask", "Free Mask", free, False))
    else:
        log.info("report: no Free Mask index %s", free)
    solo = []
    for fields, path in _glob(root, evalset.SOLO_EVAL_INDEX if on_eval else evalset.SOLO_INDEX):
        variant, rnd = fields["variant"], fields["round"]
        if rnd.isdigit():
            solo.append((stage_rank(variant), int(rnd), variant, path))
    if not solo:
        log.info("report: no SOLO predictions %s", _path(root, evalset.SOLO_EVAL_INDEX if on_eval
                                                            else evalset.SOLO_INDEX, variant="*", round="*"))
    for _, rnd, variant, path in sorted(solo):
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


# ------------------------------------------------------------------------------------------------ masks

def _mask_figures(root: Path, records: list[dict], gt: dict | None, on_eval: bool, add) -> None:
    from maskless.store import MaskStore

    stores = [(title, short, MaskStore(str(path)), is_solo)
              for title, short, path, is_solo in _mask_stores(root, on_eval)]
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

def _stego_geometry(model_path: Path, params: dict, backbone) -> tuple[int, str]:
    """(square input size, feature layer) STEGO was trained at: from the checkpoint's params["features"]
    (maskless.stego.stage), else the stage's params record beside the model (maskless.stage_utils.begin),
    else inferred from the checkpoint (feature channels -> layer, feature map size x layer stride -> input
    size; checkpoints from before params["features"])."""
    source = params.get("features") or {}
    if "input_size" in source and "layer" in source:
        return int(source["input_size"]), str(source["layer"])
    record = model_path.with_name(model_path.name + ".params.json")
    if record.is_file():
        with open(record) as f:
            stage = (json.load(f).get("params") or {}).get("stage") or {}
        if "input_size" in stage and "layer" in stage:
            return int(stage["input_size"]), str(stage["layer"])
    layers = [k for k, c in backbone.out_channels.items() if c == int(params["in_channels"])]
    if not layers or "feature_hw" not in params:
        raise ValueError(f"STEGO checkpoint {model_path}: no params record {record} and its params do not say "
                         "its input size and layer")
    layer = "res3" if "res3" in layers else layers[0]
    size = int(params["feature_hw"][0]) * int(backbone.strides[layer])
    log.info("report: STEGO input size %d and layer %s inferred from %s (no %s)", size, layer, model_path, record)
    return size, layer


def _stego_maps(root: Path, images: list[np.ndarray], gt: dict | None, ids: list[int], dev):
    """(square images, square gt maps or None, display maps, input size) of the sampled images, or None
    when STEGO's outputs are absent."""
    import torch

    from maskless.data.semantic import coco_labels, num_classes, square_labels
    from maskless.eval.semantic import hungarian_match, semantic_confusion
    from maskless.stego.features import square_image
    from maskless.stego.predict import load_stego, predict
    from maskless.stego.stage import load_frozen

    model_path, backbone_path = root / "stego" / "model.pt", root / "pretrain" / "backbone.pt"
    missing = [str(p) for p in (model_path, backbone_path) if not p.is_file()]
    if missing:
        log.info("report: no STEGO panels (missing %s)", ", ".join(missing))
        return None
    stego = load_stego(str(model_path), dev)
    net = load_frozen(str(backbone_path), dev)
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


def _budget_key(budget: str) -> tuple | None:
    """Sort key of a PCT label budget folder ("ratio0.125", "count92"; maskless.pct.stage.parse_budget):
    ratios before counts, each by value; None for another name (pct/data)."""
    from maskless.pct.stage import parse_budget

    try:
        ratio, count = parse_budget(budget)
    except ValueError:
        return None
    return (0, ratio, budget) if ratio is not None else (1, float(count), budget)


def _mode_key(mode: str) -> tuple:
    """PCT modes in pipeline order (plain, then ctr), others after by name."""
    from maskless.pct.stage import MODES

    return (MODES.index(mode), "") if mode in MODES else (len(MODES), mode)


def _budget_words(budget: str) -> str:
    """"label ratio 0.125" of ratio0.125, "label count 92" of count92."""
    from maskless.pct.stage import budget_text

    return f"label {'ratio' if budget.startswith('ratio') else 'count'} {budget_text(budget)}"


def _pct_model(root: Path):
    """(title, budget words, mode, path) of the first PCT retrained model (label budget by _budget_key, then
    mode), or None."""
    from maskless.pct.stage import budget_text

    found = []
    for path in (root / "pct").glob("*/*/retrain/model.pt"):
        budget, mode = path.parent.parent.parent.name, path.parent.parent.name
        key = _budget_key(budget)
        if key is not None:
            found.append((key, _mode_key(mode), budget, mode, path))
    if not found:
        log.info("report: no PCT retrained model under %s", root / "pct")
        return None
    _, _, budget, mode, path = min(found)
    return f"pct retrain {mode}@{budget_text(budget)}", _budget_words(budget), mode, path


def _pct_maps(root: Path, images: list[np.ndarray], dev, found=None):
    """(title, budget words, mode, label maps, number of classes) of the first PCT retrained model (or of
    `found`, a _pct_model answer), or None."""
    import torch

    from maskless.pct.model import load_segnet
    from maskless.pct.pseudo import predict

    found = _pct_model(root) if found is None else found
    if found is None:
        return None
    title, budget, mode, path = found
    params = torch.load(path, map_location="cpu", weights_only=True)["params"]
    model = load_segnet(str(path)).to(dev)
    maps = [predict(model, img, input_size=int(params["input_size"])) for img in images]
    return title, budget, mode, maps, int(params["model"]["num_classes"])


def _semantic_figures(root: Path, records: list[dict], gt: dict | None, device: str, pct_data: bool, add) -> None:
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
    stego = _stego_maps(root, images, gt, ids, dev)
    if pct_data:
        log.info("report: PCT learnt from pct.data, not from the dataset's images: its maps are in the "
                 "semantic_pct_<id> strips")
    pct = None if pct_data else _pct_maps(root, images, dev)
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


def _pct_data_figures(root: Path, n_images: int, device: str, add) -> None:
    """The semantic_pct_<id> strips of PCT on user files (pct.data): the first n_images held-out ("val")
    images of results/<exp>/pct/data/, their label PNGs and the first PCT retrained model's map."""
    from maskless.data.manifest import read_manifest
    from maskless.io import pick_device
    from maskless.pct.stage import label_maps, read_label_source

    manifest, labels = root / PCT_DATA_MANIFEST, root / PCT_DATA_LABELS
    missing = [str(p) for p in (manifest, labels) if not p.is_file()]
    if missing:
        log.info("report: no PCT strips of pct.data (missing %s)", ", ".join(missing))
        return
    found = _pct_model(root)
    if found is None or n_images == 0:
        log.info("report: no PCT strips of pct.data (%s)", "no retrained model" if found is None else "n_images 0")
        return
    rows = {int(r["id"]): r for r in read_manifest(manifest)}
    source = read_label_source(str(labels))
    ids = sorted(int(i) for i in source.get("val") or [])[:n_images]
    absent = [i for i in ids if i not in rows]
    if absent:
        raise ValueError(f"PCT manifest {manifest} lacks the held-out images {absent[:10]} of {labels}")
    if not ids:
        log.info("report: no PCT strips of pct.data (%s lists no held-out images)", labels)
        return
    images = [load_record(rows[i]) for i in ids]
    gts, k = label_maps(str(labels), ids)
    title, budget, mode, maps, n_model = _pct_maps(root, images, pick_device(device), found)
    n_classes = max(k, n_model)
    for i, image_id in enumerate(ids):
        stem = source["images"][str(image_id)]["stem"]
        panels = [("image", images[i]), ("ground truth", viz.colorize_labels(gts[i], n_classes)),
                  (title, viz.colorize_labels(maps[i], n_classes))]
        caption = (f"PCT held-out image {image_id} ({stem}) of pct.data: the image, the classes of its label PNG "
                   f"and the PCT retrained model's classes ({budget}, {mode}).")
        add(f"semantic_pct_{image_id}.png", "semantic", caption, viz.side_by_side(panels, height=STRIP_HEIGHT))


# ----------------------------------------------------------------------------------------------- losses

PCT_RUNS = ("strong_only", "pct", "retrain")  # PCT training runs of a budget and mode, in pipeline order


def _loss_logs(root: Path) -> list[Path]:
    """The training loss logs present: pretrain, SOLO (variants in pipeline order, then rounds), STEGO, PCT
    (by label budget: ratios, then counts; mode: plain, then ctr; then strong_only / pct / retrain)."""
    from maskless.eval.metrics import stage_rank

    found = [(0, (), p) for p in [root / "pretrain" / "loss.csv"]]
    for p in root.glob("solo/*/round*/loss.csv"):
        rnd = p.parent.name.removeprefix("round")
        if rnd.isdigit():
            found.append((1, (stage_rank(p.parent.parent.name), int(rnd)), p))
    found.append((2, (), root / "stego" / "loss.csv"))
    for p in root.glob("pct/*/*/*/loss.csv"):
        budget = _budget_key(p.parent.parent.parent.name)
        if p.parent.name in PCT_RUNS and budget is not None:
            found.append((3, (budget, _mode_key(p.parent.parent.name), PCT_RUNS.index(p.parent.name)), p))
    return [p for *_, p in sorted(found) if p.is_file()]


def _loss_figures(root: Path, add) -> None:
    found = _loss_logs(root)
    if not found:
        log.info("report: no loss logs in %s", root)
    for path in found:
        rel = path.parent.relative_to(root).as_posix()
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


def _budget_kind(root: Path, value: float, text: str) -> str:
    """"ratio" or "count": what the label budget of a metric row's stage ("pct_retrain@0.125", "@92";
    maskless.pct.stage.budget_text) is. A whole number above 1 is a count, anything else a ratio, but for
    "1" (a ratio of 1 or a count of 1), a count when results/<exp>/pct/ has count1 and no ratio1."""
    if value > 1 and float(value).is_integer() and "." not in text:
        return "count"
    if text == "1" and (root / "pct" / "count1").is_dir() and not (root / "pct" / "ratio1").is_dir():
        return "count"
    return "ratio"


def _metric_figures(root: Path, add) -> None:
    from maskless.eval.metrics import RATIO_MODELS, read_metrics, split_ratio_stage, stage_rank

    paths = sorted((p for p in (root / "eval").rglob("metrics.parquet") if p.is_file()),
                   key=lambda p: _number_key(p.relative_to(root).as_posix())) if (root / "eval").is_dir() else []
    if not paths:
        log.info("report: no metrics under %s", root / "eval")
        return
    rows = read_metrics(paths)

    def suffixer(group: list[dict]):
        """Labels of a chart name the dataset only where its rows come from several (e.g. the instance
        stages scored on an evaluation set beside the semantic ones on the training set)."""
        several = len({r["dataset"] for r in group}) > 1
        return lambda row: f" ({row['dataset']})" if several else ""

    # instance: mask AP, AP50, AR100 per stage and round, pipeline order
    inst = [r for r in rows if r["iou_type"] == "segm" and r["metric"] in INSTANCE_METRICS
            and split_ratio_stage(r["stage"]) is None]
    if inst:
        keys = sorted({(r["stage"], int(r["round"]), r["dataset"]) for r in inst},
                      key=lambda k: (stage_rank(k[0]), k[1], k[2]))
        several = len({k[2] for k in keys}) > 1
        label = {k: k[0] + ("" if k[0] == "freemask" else f" r{k[1]}") + (f" ({k[2]})" if several else "")
                 for k in keys}
        size = (_chart_width(list(label.values())), CHART_SIZE[1])
        value = {(r["stage"], int(r["round"]), r["dataset"], r["metric"]): r["value"] for r in inst}
        charts = [viz.bar_chart({label[k]: value.get((*k, m), math.nan) for k in keys},
                                title=f"mask {m} (%)", ylabel=m, size=size) for m in INSTANCE_METRICS]
        add("metrics_instance.png", "metrics",
            f"Mask AP, AP50 and AR100 (COCO segm, %) of {len(keys)} instance stages and rounds, one chart per "
            "metric.", _stack(charts))
    else:
        log.info("report: no instance (segm) metrics")

    # semantic: mIoU per stage
    sem = sorted((r for r in rows if r["iou_type"] == "semantic" and r["metric"] == "mIoU"
                  and split_ratio_stage(r["stage"]) is None),
                 key=lambda r: (stage_rank(r["stage"]), int(r["round"]), r["dataset"]))
    if sem:
        suffix = suffixer(sem)
        values = {r["stage"] + (f" r{r['round']}" if int(r["round"]) else "") + suffix(r): r["value"] for r in sem}
        img = viz.bar_chart(values, title="mIoU (%) per semantic stage", ylabel="mIoU",
                            size=(_chart_width(list(values)), CHART_SIZE[1]))
        add("metrics_semantic.png", "metrics", f"Semantic mIoU (%) of {len(values)} unsupervised stages and probes.",
            img)
    else:
        log.info("report: no semantic metrics")

    # semi/weak: mIoU per model, one chart per label budget (a ratio or a count: the text after "@"; the
    # same order as the per-ratio tables, by value, so ratios (<= 1) come before counts)
    semi = [(split_ratio_stage(r["stage"]), r) for r in rows if r["iou_type"] == "semantic" and r["metric"] == "mIoU"]
    semi = [(p, r) for p, r in semi if p is not None]
    if semi:
        def rank(model: str) -> tuple:
            return (RATIO_MODELS.index(model), "") if model in RATIO_MODELS else (len(RATIO_MODELS), model)

        suffix = suffixer([r for _, r in semi])
        ratios = sorted({(p[2], p[3]) for p, _ in semi})
        kinds = {text: _budget_kind(root, value, text) for value, text in ratios}
        ordered = sorted(semi, key=lambda pr: (pr[0][1], rank(pr[0][0]), pr[1]["dataset"]))
        per_ratio = [{p[0] + ("+ctr" if p[1] else "") + suffix(r): r["value"] for p, r in ordered if p[3] == text}
                     for _, text in ratios]
        size = (_chart_width([k for d in per_ratio for k in d]), CHART_SIZE[1])
        charts = [viz.bar_chart(values, title=f"mIoU (%) at label {kinds[text]} {text}", ylabel="mIoU", size=size)
                  for (_, text), values in zip(ratios, per_ratio)]
        groups = [f"label {kind} " + ", ".join(t for _, t in ratios if kinds[t] == kind)
                  for kind in ("ratio", "count") if kind in kinds.values()]
        each = kinds[ratios[0][1]] if len(groups) == 1 else "label budget"
        add("metrics_semi.png", "metrics",
            f"Semi/weakly supervised mIoU (%) per model at {' and '.join(groups)}, one chart per {each}.",
            _stack(charts))
    else:
        log.info("report: no semi/weak (label ratio) metrics")


# -------------------------------------------------------------------------------------------- exemplars

def _exemplar_figures(root: Path, add) -> None:
    from maskless.exemplar.pool import ExemplarPool

    pools = [p for p in (root / "exemplar").glob("n*/pool") if p.is_dir() and p.parent.name[1:].isdigit()]
    if not pools:
        log.info("report: no exemplar pools under %s", root / "exemplar")
    for path in sorted(pools, key=lambda p: int(p.parent.name[1:])):
        pool = ExemplarPool.load(str(path))
        tiles = [viz.overlay_masks(crop, mask[None]) for crop, mask in zip(pool.crops, pool.masks)]
        captions = [f"image {int(i)}" for i in pool.image_ids]
        methods = sorted(set(pool.methods))
        img = viz.grid(tiles, columns=min(EXEMPLAR_COLUMNS, len(tiles)), cell=EXEMPLAR_CELL, captions=captions)
        add(f"exemplars_{path.parent.name}.png", "exemplars",
            f"Exemplar pool {path.parent.name}: {len(pool)} exemplar crop{'s' if len(pool) != 1 else ''} with "
            f"their masks ({'/'.join(methods)}), each captioned with its source image id.", img)
