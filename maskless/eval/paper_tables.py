"""Paper-style tables rendered from metric rows (maskless.eval.metrics), each as markdown, CSV and LaTeX.

Tables (named as in the output files):
    instance_segm, instance_bbox   unsupervised instance segmentation (iou_type "segm" = mask, "bbox" = box):
                                   method, round, then the COCO summary metrics (INSTANCE_METRICS).
    semantic                       unsupervised semantic segmentation (constant, k-means, STEGO probes): method,
                                   mIoU, Acc (and obj_mIoU, obj_Acc where the rows have them).
    semi                           semi/weakly supervised (method "pct"): one line per model (variant) and
                                   Contextrast yes/no (mode), one column of mIoU per label budget.

Layout rules:
    * Experiment and dataset columns come first, only when the table's rows hold more than one experiment
      or more than one dataset; lines are then grouped by experiment, then dataset.
    * The semantic and semi tables get a round column only when their rows hold more than one round (the
      instance tables always have one), so that no two lines are indistinguishable.
    * Lines are labelled from the rows' columns (method_label, model_label) and come in pipeline order
      (maskless.eval.metrics.row_rank, then round; models in RATIO_MODELS order, each without then with
      Contextrast).
    * Values with one decimal (`fmt_value`); NaN (undefined) or absent values are "-" in markdown and LaTeX and
      empty in CSV. Rows whose metric is not a column of their table are left out (counted in the log).

The bytes depend only on the set of rows, not on their order.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from pathlib import Path

from maskless.eval.metrics import (
    INSTANCE_METRICS,
    SEMANTIC_METRICS,
    _check_rows,
    budget_columns,
    fmt_value,
    model_rank,
    row_rank,
    semantic_columns,
)
from maskless.io import write_text_atomic

log = logging.getLogger(__name__)

TABLES = ("instance_segm", "instance_bbox", "semantic", "semi")
FORMATS = ("md", "csv", "tex")

# Labels of the unsupervised methods by (method, variant, mode) (maskless.eval.metrics); exemplar's by count.
METHOD_LABELS = {
    ("freemask", "", ""): "Free Mask",
    ("freesolo", "", ""): "FreeSOLO",
    ("oracle", "", ""): "SOLO on the ground truth (oracle)",
    ("constant", "", ""): "Background everywhere (trivial)",
    ("kmeans", "", ""): "k-means (raw features)",
    ("stego", "cluster", "plain"): "STEGO cluster probe",
    ("stego", "cluster", "crf"): "STEGO cluster probe + CRF",
    ("stego", "linear", "plain"): "STEGO linear probe",
    ("stego", "linear", "crf"): "STEGO linear probe + CRF",
}

# Semi/weak models (RATIO_MODELS, the variants of method "pct") and the suffix of their Contextrast mode.
MODEL_LABELS = {
    "strong_only": "Strong only",
    "pct_hybrid": "PCT Hybrid-Net",
    "pct_pseudo": "PCT Pseudo-Net (tags)",
    "pct_labels": "PCT pseudo labels (weak images)",
    "pct_retrain": "PCT retrained",
}
CONTEXTRAST = " + Contextrast"
SEMI_METRIC = "mIoU"


def method_label(row: dict) -> str:
    """Paper label of an unsupervised method's row."""
    if row["method"] == "exemplar":
        count = int(row["variant"])
        return f"Exemplar-FreeSOLO ({count} exemplar{'' if count == 1 else 's'})"
    return METHOD_LABELS[(row["method"], row["variant"], row["mode"])]


def model_label(model: str, ctr: bool) -> str:
    """Paper label of a semi/weak model, with " + Contextrast" when ctr."""
    return MODEL_LABELS[model] + (CONTEXTRAST if ctr else "")


# A table before formatting: header, how many leading (left-aligned) text columns, body lines whose cells
# are text (str) or a value (float, None when absent).
_Grid = tuple[list[str], int, list[list]]


def _grid(lines: dict[tuple, tuple[str, tuple, dict]], columns: list[str], *, always_round: bool) -> _Grid:
    """lines: {(experiment, dataset, ident, round): (label, rank, {column: value})}."""
    wide = len({k[0] for k in lines}) > 1 or len({k[1] for k in lines}) > 1
    with_round = always_round or len({k[3] for k in lines}) > 1
    header = (["Experiment", "Dataset"] if wide else []) + ["Method"] + (["Round"] if with_round else []) + columns
    body = []
    for key in sorted(lines, key=lambda k: (str(k[0]), str(k[1]), lines[k][1], int(k[3]))):
        experiment, dataset, _, rnd = key
        label, _, cells = lines[key]
        body.append(
            ([str(experiment), str(dataset)] if wide else [])
            + [label]
            + ([str(int(rnd))] if with_round else [])
            + [cells.get(c) for c in columns]
        )
    return header, (3 if wide else 1), body


def _method_lines(rows: list[dict]) -> dict[tuple, tuple[str, tuple, dict]]:
    lines: dict[tuple, tuple[str, tuple, dict]] = {}
    for row in rows:
        key = (row["experiment"], row["dataset"], (row["method"], row["variant"], row["mode"]), int(row["round"]))
        if key not in lines:
            lines[key] = (method_label(row), row_rank(row), {})
        lines[key][2][row["metric"]] = row["value"]
    return lines


def _semi_grid(rows: list[dict]) -> _Grid:
    lines: dict[tuple, tuple[str, tuple, dict]] = {}
    for row in rows:
        model, ctr = row["variant"], row["mode"] == "ctr"
        key = (row["experiment"], row["dataset"], (model, ctr), int(row["round"]))
        if key not in lines:
            lines[key] = (model_label(model, ctr), (model_rank(model), ctr), {})
        lines[key][2][row["budget"]] = row["value"]
    return _grid(lines, budget_columns(rows), always_round=False)


def _split(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows of each table (metric among its columns); the others are counted in the log."""
    parts: dict[str, list[dict]] = {name: [] for name in TABLES}
    for row in rows:
        iou_type, metric = row["iou_type"], row["metric"]
        if iou_type in ("segm", "bbox"):
            name = f"instance_{iou_type}" if metric in INSTANCE_METRICS else None
        elif row["method"] == "pct":
            name = "semi" if metric == SEMI_METRIC else None
        else:
            name = "semantic" if metric in SEMANTIC_METRICS else None
        if name is not None:
            parts[name].append(row)
    n_hidden = len(rows) - sum(len(p) for p in parts.values())
    if n_hidden:
        log.info("paper tables: %d of %d metric rows not in any table's columns, not shown", n_hidden, len(rows))
    return parts


def _text(cell, empty: str) -> str:
    if isinstance(cell, str):
        return cell
    text = fmt_value(cell)
    return empty if text == "-" else text


def _markdown(grid: _Grid) -> str:
    header, n_text, body = grid

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = "|" + "|".join([":--"] * n_text + ["--:"] * (len(header) - n_text)) + "|"
    return "\n".join([line(header), align] + [line([_text(c, "-") for c in cells]) for cells in body]) + "\n"


def _csv(grid: _Grid) -> str:
    header, _, body = grid
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_text(c, "") for c in cells] for cells in body)
    return out.getvalue()


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_TEX_RE = re.compile("|".join(re.escape(c) for c in _TEX_SPECIAL))


def tex_escape(text: str) -> str:
    """Text safe in a LaTeX cell: the special characters escaped, in one pass (no double escaping)."""
    return _TEX_RE.sub(lambda m: _TEX_SPECIAL[m.group()], text)


def _latex(grid: _Grid) -> str:
    header, n_text, body = grid

    def line(cells: list[str]) -> str:
        return " & ".join(tex_escape(c) for c in cells) + r" \\"

    spec = "l" * n_text + "r" * (len(header) - n_text)
    lines = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule", line(header), r"\midrule"]
    lines += [line([_text(c, "-") for c in cells]) for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def paper_tables(rows: list[dict]) -> dict[str, dict[str, str]]:
    """{table name: {"md": ..., "csv": ..., "tex": ...}} for the tables (TABLES order) that have rows."""
    _check_rows(rows, "for the paper tables")
    parts = _split(rows)
    grids: dict[str, _Grid] = {}
    for name in TABLES:
        if not parts[name]:
            continue
        if name == "semi":
            grids[name] = _semi_grid(parts[name])
        else:
            columns = list(semantic_columns(parts[name]) if name == "semantic" else INSTANCE_METRICS)
            grids[name] = _grid(_method_lines(parts[name]), columns, always_round=name != "semantic")
    return {name: {"md": _markdown(g), "csv": _csv(g), "tex": _latex(g)} for name, g in grids.items()}


def write_paper_tables(rows: list[dict], out_dir: str | os.PathLike) -> list[str]:
    """Write <out_dir>/<table>.<md|csv|tex> atomically for the tables that have rows; the paths written, in
    TABLES then FORMATS order."""
    paths = []
    for name, texts in paper_tables(rows).items():
        for fmt in FORMATS:
            path = Path(out_dir) / f"{name}.{fmt}"
            write_text_atomic(path, texts[fmt])
            paths.append(str(path))
    return paths
