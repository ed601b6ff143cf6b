"""The PCT stages of the workflow (METHODS.md "PCT"): data, split, train, pseudo-label, retrain, evaluate.

Data, two sources (the `gt` input of every PCT rule says which):
- The dataset's ground truth (pct.data null, the default). Images come from the experiment's manifest;
  pixel labels and tags from its validated COCO instances (results/<exp>/data/train/instances_gt.json: thing
  classes 1..C, background 0, crowd 255; for the synthetic data these are the generator's own objects), so a
  strong image's tags always equal its label map's classes. A held-out set of `eval_fraction` of the images
  is drawn first, with the seed only, so it is the same for every label budget and no model ever trains
  on it. The label maps of a split are read into memory at once (one read of the instances JSON).
- User files (pct.data: images, PNG labels, an optional tag table, train and val lists; PASCAL VOC with
  SBD's SegmentationClassAug is the reference layout). Rule pct_data (maskless.data.voc.run_pct_data) checks every listed
  file once and writes results/<exp>/pct/data/manifest.parquet (ids 1..N by sorted image stem, split
  "train" / "val") and labels.json (format maskless-pct-labels: classes, ignore value, each image's stem,
  label PNG and the tags of its mask and, with a table, of the table). The val list is the held-out
  scoring set (pct.eval_fraction is not used); the train list is split into strong and weak. Tags: a
  strong image's are its mask's, and must equal the table's when a table is given (validate_tags, naming
  the image and both files); a weak image's come from the table when given, else from its PNG mask (as the
  PCT paper does on VOC); a held-out image's from its mask. Label maps are read from their PNGs when used.
Images are read when used (a lazy sequence, maskless.pct.labels.LazyMaps), in either mode: the training loop indexes them per
batch, pseudo-labelling and evaluation stream them one at a time, and evaluation accumulates confusion
matrices, so no stage holds a whole split's pixels. The sequences also describe their items without reading
them (maskless.pct.train, "Lazy data"): images by the manifest's content hash, height and width, label and
pseudo-label PNGs by their files' sha256; so the training loop's start-up reads no image (its resume
fingerprint hashes those keys), only the label maps it trains on, one at a time, to check them.

Split (split.json, one per label budget, the `budget` wildcard: "ratio<r>" for a value of pct.ratios, or
"count<n>" for a value of pct.counts). The training images are split into strong (pixel labels; `ratio` of
the training images, at least one, or exactly `count`) and weak (tags only), stratified by default so that
a small strong set still covers every class.

Models, per (budget, mode); mode "plain" or "ctr" (Contextrast on the supervised terms):
  strong_only   one network on the strong images' labels only (the baseline PCT must beat)
  pct           Hybrid-Net and Pseudo-Net cross-trained on strong + weak images
  pseudo/       Pseudo-Net's labels of the weak images, restricted to their tags (multi-scale, flip), PNGs
  retrain       a fresh network on strong labels + weak pseudo labels

Evaluation rows (iou_type "semantic", metrics mIoU and Acc; columns method "pct", variant the name below,
budget the ratio or count as a number ("0.125", "92"), mode plain | ctr: maskless.eval.metrics):
  strong_only   held-out images, no tags
  pct_hybrid    Hybrid-Net on the held-out images, no tags
  pct_pseudo    Pseudo-Net on the held-out images WITH their tags (multi-scale, flip), as in the paper
  pct_labels    the pseudo labels the retrain learns from, against the weak images' ground truth
  pct_retrain   the retrained network on the held-out images, no tags
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from maskless.data.manifest import read_manifest
from maskless.io import atomic_dir, pick_device, set_threads, write_json_atomic, write_text_atomic
from maskless.params import from_config
from maskless.pct.budget import parse_budget
from maskless.pct.labels import (LazyMaps, is_file_source, label_maps, lazy_images, load_labels,
                                 read_format, read_label_source, read_pseudo)
from maskless.pct.split import held_out_count, split_ids, tags_from_label_map

log = logging.getLogger(__name__)

KINDS = ("strong_only", "pct", "retrain")
MODES = ("plain", "ctr")
SPLIT_FORMAT = "maskless-pct-split"


@dataclass(frozen=True)
class SplitParams:
    """How the training images are split: exactly one of `ratio` (share of the training images) and `count`
    (number of strong images); eval_fraction only for the dataset-ground-truth source (module doc)."""

    ratio: float | None = None
    eval_fraction: float = 0.25
    stratified: bool = True
    seed: int = 0
    count: int | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.count is None):
            raise ValueError(f"SplitParams: give exactly one of ratio and count, got {self.ratio!r} and {self.count!r}")
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"config key 'pct.ratios': a label ratio must lie in (0, 1], got {self.ratio}")
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)
                                       or self.count < 1):
            raise ValueError(f"config key 'pct.counts': a label count must be an integer >= 1, got {self.count!r}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"config key 'pct.eval_fraction' must lie in (0, 1), got {self.eval_fraction}")

    @classmethod
    def from_budget(cls, budget: str, **kw) -> "SplitParams":
        """From a `budget` wildcard value ("ratio0.125" or "count92")."""
        ratio, count = parse_budget(budget)
        return cls(ratio=ratio, count=count, **kw)

    def budget_fields(self) -> dict:
        return {"ratio": self.ratio} if self.ratio is not None else {"count": self.count}


def _strong_weak(train: Sequence[int], tags: dict, params: SplitParams) -> tuple[list[int], list[int]]:
    """The strong / weak split of the training images (module doc); errors name the config key."""
    if params.count is not None and params.count >= len(train):
        raise ValueError(f"config key 'pct.counts': {params.count} strong images of {len(train)} training images "
                         "leaves no weak image; PCT needs both")
    strong, weak = split_ids(train, ratio=params.ratio, count=params.count, seed=params.seed,
                             tags={i: tags[i] for i in train} if params.stratified else None)
    if not weak and params.ratio != 1.0:  # ratio 1: the oracle's split (every training image strong)
        raise ValueError(f"config key 'pct.ratios': ratio {params.ratio} of {len(train)} training images leaves "
                         "no weak image; PCT needs both (ratio 1 is the fully supervised case)")
    return strong, weak


def make_split(ids: Sequence[int], tags: dict[int, frozenset[int]], params: SplitParams) -> dict:
    """{"eval", "strong", "weak"} id lists (module doc): eval first (seed only), then strong / weak."""
    ids = sorted(int(i) for i in ids)
    if len(ids) < 3:
        raise ValueError(f"PCT needs at least 3 images (held-out, strong, weak), the dataset has {len(ids)}")
    n_eval = held_out_count(len(ids), params.eval_fraction)
    held, train = split_ids(ids, count=n_eval, seed=params.seed)
    strong, weak = _strong_weak(train, tags, params)
    return {"eval": held, "strong": strong, "weak": weak}


def make_list_split(train: Sequence[int], val: Sequence[int], tags: dict[int, frozenset[int]],
                    params: SplitParams) -> dict:
    """{"eval", "strong", "weak"} of list-based data: eval = the val list, the train list split into strong /
    weak (module doc); an image in both lists is an error."""
    train, val = sorted(int(i) for i in train), sorted(int(i) for i in val)
    both = sorted(set(train) & set(val))
    if both:
        raise ValueError(f"images {both[:10]} are in both the train and the val list")
    if len(train) < 2 or not val:
        raise ValueError(f"PCT needs at least 2 training images (strong and weak) and 1 held-out image, the lists "
                         f"give {len(train)} and {len(val)}")
    strong, weak = _strong_weak(train, tags, params)
    return {"eval": val, "strong": strong, "weak": weak}


def _log_split(split: dict, k: int, tags: dict, params: SplitParams) -> None:
    budget = params.ratio if params.ratio is not None else params.count
    absent = sorted(set(range(1, k)) - set().union(*(tags[i] for i in split["strong"])))
    if absent:
        log.warning("classes %s have no strong image at %s %s: they are learnt from tags alone", absent,
                    "ratio" if params.ratio is not None else "count", budget)
    log.info("PCT split at %s %s: %d held-out, %d strong, %d weak images, %d classes",
             "ratio" if params.ratio is not None else "count", budget, len(split["eval"]), len(split["strong"]),
             len(split["weak"]), k)


def run_pct_split(*, manifest: str, gt: str, out: str, params: SplitParams) -> dict:
    """Write split.json: the three id lists, every image's tags, the class count and the params."""
    if is_file_source(gt):
        return _run_list_split(gt=gt, out=out, params=params)
    ids = [int(r["id"]) for r in read_manifest(manifest)]
    labels, k = load_labels(gt, ids)
    tags = {i: tags_from_label_map(lab) for i, lab in zip(ids, labels)}
    split = make_split(ids, tags, params)
    record = {"format": SPLIT_FORMAT, **params.budget_fields(), "eval_fraction": params.eval_fraction,
              "stratified": params.stratified, "seed": params.seed, "num_classes": k,
              **split, "tags": {str(i): sorted(tags[i]) for i in ids}}
    write_json_atomic(out, record, indent=1)
    _log_split(split, k, tags, params)
    return record


def _run_list_split(*, gt: str, out: str, params: SplitParams) -> dict:
    """run_pct_split for user files (module doc): strong tags checked against the table, if any."""
    from maskless.pct.split import validate_tags

    src = read_label_source(gt)
    k, images = int(src["num_classes"]), src["images"]
    table = src.get("tag_table")
    train, val = [int(i) for i in src["train"]], [int(i) for i in src["val"]]
    mask_tags = {int(i): frozenset(rec["mask_tags"]) for i, rec in images.items()}
    split_tags = {i: frozenset(images[str(i)]["tags"]) if table else mask_tags[i] for i in train}
    split = make_list_split(train, val, split_tags, params)
    if table:  # the library's check, with the images named by their stems
        stems = {i: images[str(i)]["stem"] for i in split["strong"]}
        maps, _ = label_maps(gt, split["strong"])
        validate_tags({stems[i]: split_tags[i] for i in split["strong"]}, k, tag_file=table,
                      labels={stems[i]: lab for i, lab in zip(split["strong"], maps)},
                      label_files={stems[i]: images[str(i)]["label"] for i in split["strong"]})
    tags = {**mask_tags, **{i: split_tags[i] for i in split["weak"]}}
    ids = sorted(split["eval"] + split["strong"] + split["weak"])
    record = {"format": SPLIT_FORMAT, "source": "files", **params.budget_fields(), "stratified": params.stratified,
              "seed": params.seed, "num_classes": k, "tag_source": "table" if table else "masks", **split,
              "tags": {str(i): sorted(tags[i]) for i in ids}, "names": {str(i): images[str(i)]["stem"] for i in ids}}
    write_json_atomic(out, record, indent=1)
    _log_split(split, k, tags, params)
    return record


def read_split(path: str) -> dict:
    return read_format(path, SPLIT_FORMAT, "PCT split file")


def _tags(split: dict, ids: Sequence[int]) -> list[frozenset[int]]:
    return [frozenset(split["tags"][str(i)]) for i in ids]


def run_pct_train(*, kind: str, split_path: str, manifest: str, gt: str, params, out: str, state_dir: str,
                  backbone: str | None, pseudo: str | None = None, loss_log: str | None = None,
                  device: str = "auto", threads: int | None = None) -> dict:
    """Train one model of the (ratio, mode) family (module doc); `params` a SegTrainParams (PCTParams for
    kind "pct", both from train_params) whose model.num_classes equals the split's."""
    from maskless.pct.train import train_pct, train_supervised

    if kind not in KINDS:
        raise ValueError(f"PCT model kind {kind!r} unknown; choices: {list(KINDS)}")
    split = read_split(split_path)
    if params.model.num_classes != split["num_classes"]:
        raise ValueError(f"{split_path}: {split['num_classes']} classes, the model is built for "
                         f"{params.model.num_classes}")
    strong, weak = split["strong"], split["weak"]
    ids = strong + ([] if kind == "strong_only" else weak)
    images = lazy_images(manifest, ids)  # read per batch by the training loop
    gt_strong, _ = label_maps(gt, strong)
    common = dict(params=params, out=out, state_dir=state_dir, backbone=backbone, device=device, threads=threads,
                  loss_log=loss_log)
    if kind == "pct":
        return train_pct(images=images, labels=LazyMaps.concat(gt_strong, [None] * len(weak)),
                         tags=_tags(split, ids), **common)
    if kind == "retrain":
        if pseudo is None:
            raise ValueError("the retrain needs the pseudo label folder")
        return train_supervised(images=images, labels=LazyMaps.concat(gt_strong, read_pseudo(pseudo, weak, lazy=True)),
                                **common)
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
        for n, (i, image, tags) in enumerate(zip(weak, lazy_images(manifest, weak), _tags(split, weak))):
            label = pseudo_label(net, image, tags, scales=scales, flip=flip, input_size=input_size)
            write_label_png(Path(tmp) / f"{i}.png", label)
            if (n + 1) % 50 == 0 or n + 1 == len(weak):
                log.info("pseudo labels %d/%d (%.1f s)", n + 1, len(weak), time.perf_counter() - t0)
        write_json_atomic(Path(tmp) / "pseudo.json", {"model": model, "images": len(weak), "scales": list(scales),
                                                     "flip": flip, "input_size": input_size,
                                                     "device": str(dev), "torch": torch.__version__})
    return len(weak)


def run_pct_eval(*, split_path: str, manifest: str, gt: str, models: dict[str, str], pseudo: str | None,
                 out_metrics: str, out_table: str, experiment: str, dataset: str, budget: str, mode: str,
                 seed: int, input_size: int, scales: Sequence[float], flip: bool = True, device: str = "auto",
                 threads: int | None = None) -> list[dict]:
    """Score the family's models (module doc); models maps "strong_only" / "pct" / "retrain" to checkpoints;
    `budget` is the label budget as the rows' budget column holds it ("0.125", or "92" for a count:
    maskless.pct.budget.budget_text), `mode` plain | ctr, `seed` the run's training seed.
    Streams the images: one image at a time through every model, confusion matrices summed. The oracle gives
    "strong_only" alone and no pseudo labels: only its row is written."""
    from maskless.eval.metrics import metric_rows, metrics_markdown, row_label, write_metrics
    from maskless.eval.semantic import confusion_matrix, scores
    from maskless.pct.model import load_segnet
    from maskless.pct.pseudo import predict, pseudo_label

    set_threads(threads)
    dev = pick_device(device)
    split = read_split(split_path)
    k, held, weak = split["num_classes"], split["eval"], split["weak"]
    if pseudo is None:
        weak = []
    labels, _ = label_maps(gt, held + weak)  # one read of the instances JSON (large for full COCO)
    gts, weak_gt = labels[: len(held)], labels[len(held) :]
    which_net = {"strong_only": ("strong_only", None), "pct_hybrid": ("pct", "hybrid"),
                 "pct_retrain": ("retrain", None)}
    nets = {name: load_segnet(models[kind], which=which).to(dev) for name, (kind, which) in which_net.items()
            if kind in models}
    pseudo_net = load_segnet(models["pct"], which="pseudo").to(dev) if "pct" in models else None
    names = [n for n in ("strong_only", "pct_hybrid", "pct_pseudo", "pct_retrain")
             if n in nets or (n == "pct_pseudo" and pseudo_net is not None)]
    names += ["pct_labels"] if pseudo is not None else []
    confusion = {name: np.zeros((k, k), np.int64) for name in names}

    def add(name: str, pred: np.ndarray, gt_map: np.ndarray, image_id: int) -> None:
        try:
            confusion[name] += confusion_matrix(pred, gt_map, k, k)
        except ValueError as e:
            raise ValueError(f"{name}, image {image_id}: {e}") from e

    t0 = time.perf_counter()
    for n, (i, image, gt_map, tags) in enumerate(zip(held, lazy_images(manifest, held), gts, _tags(split, held))):
        for name, net in nets.items():
            add(name, predict(net, image, input_size=input_size), gt_map, i)
        if pseudo_net is not None:
            add("pct_pseudo", pseudo_label(pseudo_net, image, tags, scales=scales, flip=flip,
                                           input_size=input_size), gt_map, i)
        if (n + 1) % 100 == 0:
            log.info("PCT predictions %d/%d (%.1f s)", n + 1, len(held), time.perf_counter() - t0)
    log.info("PCT predictions of %d held-out images in %.1f s", len(held), time.perf_counter() - t0)
    if pseudo is not None:
        for i, lab, gt_map in zip(weak, read_pseudo(pseudo, weak, lazy=True), weak_gt):
            add("pct_labels", lab, gt_map, i)
    rows = []
    for name in names:
        s = scores(confusion[name])
        res = {"semantic": {"mIoU": s["mIoU"], "Acc": s["Acc"]}}
        new = metric_rows(res, experiment=experiment, method="pct", variant=name, budget=budget, mode=mode,
                          dataset=dataset, seed=seed)
        rows += new
        what = f" (pseudo labels of the {len(weak)} weak images)" if name == "pct_labels" else ""
        log.info("%s%s: %s", row_label(new[0]), what, res["semantic"])
    write_metrics(out_metrics, rows)
    write_text_atomic(out_table, metrics_markdown(rows))
    return rows


def train_params(pct: dict, *, kind: str, mode: str, arch: str, num_classes: int, seed: int,
                 num_workers: int = 0):
    """SegTrainParams (PCTParams for kind "pct") from the pct section's algorithm keys (maskless.params.
    section_params; the rule's param) through maskless.params.from_config. pct.train holds PCTParams' fields
    (the PCT terms' weights and the dynamic evaluation's are PCT's alone, so the other kinds leave them out)
    and retrain_steps (the retrain's steps); the model's arch and classes come from pretrain.arch and the
    split, use_contextrast from the mode wildcard; num_workers is the workflow key pct.train.num_workers, which
    the rule does not pass as a param (DataLoader workers making the batches: the result does not depend on
    it), given here as the other stages give theirs (pretrain.num_workers, solo.num_workers)."""
    from maskless.pct.contextrast import ContextrastParams
    from maskless.pct.model import SegNetParams
    from maskless.pct.train import PCTParams, SegTrainParams

    if kind not in KINDS or mode not in MODES:
        raise ValueError(f"PCT kind {kind!r} / mode {mode!r} unknown; choices: {list(KINDS)} / {list(MODES)}")
    cls = PCTParams if kind == "pct" else SegTrainParams
    train = dict(pct["train"])
    retrain_steps = train.pop("retrain_steps", None)
    if kind == "retrain" and retrain_steps is not None:
        train["steps"] = retrain_steps
    if cls is SegTrainParams:
        train = {k: v for k, v in train.items() if k in {f.name for f in dataclasses.fields(SegTrainParams)}}
    model = from_config(SegNetParams, pct["model"], "pct.model", arch=arch, num_classes=num_classes)
    contextrast = from_config(ContextrastParams, pct.get("contextrast_params") or {}, "pct.contextrast_params")
    return from_config(cls, train, "pct.train", model=model, contextrast=contextrast, seed=seed,
                       use_contextrast=mode == "ctr", num_workers=num_workers)
