"""The figures of the pipeline's HTML report (``snakemake --report``), made from the files a run gives it.

`build_report_figures(inputs, out_dir)` draws the files named in `inputs` (a ReportInputs: the workflow's
input function report_inputs in rules/inputs/report.smk fills it with what the run makes, each file with the
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

The package draws each kind of figure in a module of its own: masks (the mask strips), semantic (the STEGO
and PCT strips), charts (loss curves and metric charts), exemplars (the exemplar gallery); inputs holds
ReportInputs and what they share. This module samples the images, calls them in the order above and writes
the figures.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from maskless import viz
from maskless.data.manifest import read_manifest
from maskless.io import atomic_dir, write_json_atomic
from maskless.report.charts import loss_figures, metric_figures
from maskless.report.exemplars import exemplar_figures
from maskless.report.inputs import PCT_RUNS, STRIP_HEIGHT, ReportInputs
from maskless.report.masks import MAX_MASKS, MIN_SOLO_SCORE, mask_figures
from maskless.report.semantic import pct_data_figures, semantic_figures

log = logging.getLogger(__name__)

__all__ = ["build_report_figures", "ReportInputs", "CATEGORIES", "MIN_SOLO_SCORE", "MAX_MASKS", "PCT_RUNS",
           "STRIP_HEIGHT"]

CATEGORIES = ("masks", "semantic", "losses", "metrics", "exemplars")


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
    mask_figures(inputs, mask_records, mask_gt, on_eval, add)
    semantic_figures(inputs, records, gt, device, pct_data, add)
    if pct_data:
        pct_data_figures(inputs, n_images, device, add)
    loss_figures(inputs, add)
    metric_figures(inputs, add)
    exemplar_figures(inputs, add)
    with atomic_dir(out_dir) as tmp:
        for figure, rgb in zip(figures, images):
            viz.save_png(Path(tmp) / figure["file"], rgb)
        write_json_atomic(Path(tmp) / "index.json", figures, indent=1)
    log.info("report figures: %d in %s (%s)", len(figures), out_dir,
             ", ".join(f"{c} {sum(f['category'] == c for f in figures)}" for c in CATEGORIES))
    return figures


# ----------------------------------------------------------------------------------------------- inputs

def _sample(path: str | None, n_images: int) -> list[dict]:
    """The first n_images rows (sorted by id) of the manifest at path; [] without one."""
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
