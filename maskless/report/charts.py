"""The charts of the report: the loss curve of each training log and the metric bar charts (instance AP,
semantic mIoU, semi/weakly supervised mIoU per label budget) (maskless.report)."""

from __future__ import annotations

import logging
import math
import re

import numpy as np

from maskless import viz
from maskless.eval.metrics import model_rank, read_metrics, row_label, row_rank
from maskless.pct.budget import budget_text
from maskless.report.inputs import (PCT_RUNS, ReportInputs, budget_key, budget_kind, budget_words, first_seen,
                                     mode_key)

log = logging.getLogger(__name__)

CHART_SIZE = (480, 320)  # smallest (width, height) of a chart
INSTANCE_METRICS = ("AP", "AP50", "AR100")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


# ----------------------------------------------------------------------------------------------- losses

def _loss_logs(inputs: ReportInputs) -> list[tuple[str, str]]:
    """[(name, loss.csv)] of the training logs given, name the log's folder under results/<experiment>/:
    pretrain, SOLO (variants in the order given, then rounds), STEGO, PCT (by label budget: ratios, then
    counts; mode: plain, then ctr; then strong_only / pct / retrain)."""
    order = first_seen([v for v, _, _ in inputs.solo_losses])
    found = [(0, (), "pretrain", inputs.pretrain_loss)]
    found += [(1, (order[v], int(r)), f"solo/{v}/round{int(r)}", p) for v, r, p in inputs.solo_losses]
    found.append((2, (), "stego", inputs.stego_loss))
    for budget, mode, run, p in inputs.pct_losses:
        if run not in PCT_RUNS:
            raise ValueError(f"PCT loss log {p}: run {run!r} is not one of {list(PCT_RUNS)}")
        found.append((3, (budget_key(budget), mode_key(mode), PCT_RUNS.index(run)), f"pct/{budget}/{mode}/{run}", p))
    return [(name, p) for _, _, name, p in sorted(found) if p is not None]


def loss_figures(inputs: ReportInputs, add) -> None:
    """Add (with add(name, category, caption, rgb)) a loss_<name> curve of each training log of _loss_logs."""
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


def metric_figures(inputs: ReportInputs, add) -> None:
    """Add (with add(name, category, caption, rgb)) the metrics_instance, metrics_semantic and metrics_semi
    charts of the metric rows given (each only where it has rows)."""
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
        budgets = sorted({budget for _, budget in semi}, key=budget_key)
        kinds = {budget: budget_kind(budget) for budget in budgets}
        ordered = sorted(semi, key=lambda rb: (rb[0]["mode"] == "ctr", model_rank(rb[0]["variant"]), rb[0]["dataset"]))
        per_budget = [{r["variant"] + ("+ctr" if r["mode"] == "ctr" else "") + suffix(r): r["value"]
                       for r, b in ordered if b == budget} for budget in budgets]
        size = (_chart_width([k for d in per_budget for k in d]), CHART_SIZE[1])
        charts = [viz.bar_chart(values, title=f"mIoU (%) at {budget_words(budget)}", ylabel="mIoU", size=size)
                  for budget, values in zip(budgets, per_budget)]
        groups = [f"label {kind} " + ", ".join(budget_text(b) for b in budgets if kinds[b] == kind)
                  for kind in ("ratio", "count") if kind in kinds.values()]
        each = kinds[budgets[0]] if len(groups) == 1 else "label budget"
        add("metrics_semi.png", "metrics",
            f"Semi/weakly supervised mIoU (%) per model at {' and '.join(groups)}, one chart per {each}.",
            _stack(charts))
    else:
        log.info("report: no semi/weak (label ratio) metrics")
