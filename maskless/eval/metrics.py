"""The metrics contract: one parquet row per (experiment, stage, round, dataset, iou_type, metric).

Columns (DESIGN.md, "Contracts between stages"):
    experiment str      experiment name (results/<experiment>/...)
    stage      str      pipeline stage that produced the predictions (freemask, solo, ...)
    round      int32    self-training round (0 when the stage has no rounds)
    dataset    str      evaluation dataset name
    iou_type   str      "segm" / "bbox" (COCO instance metrics) or "semantic" (mIoU, pixel accuracy)
    metric     str      e.g. "AP", "AP50", "AR100", "mIoU"
    value      float64  in percent; NaN where the metric is undefined (e.g. APs with no small GT object)

Paper tables are rendered from these rows by `metrics_markdown`, byte-for-byte deterministic for the same
rows, so a table changes only when a number does.
"""

from __future__ import annotations

import logging
import math
import os

import pyarrow as pa
import pyarrow.parquet as pq

from maskless.io import write_parquet_atomic

log = logging.getLogger(__name__)

# The COCO summary metrics reported for every instance output (METHODS.md, "Evaluation").
INSTANCE_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
# Semantic outputs (STEGO, PCT): mean IoU over classes and pixel accuracy, after Hungarian matching for
# unsupervised clusters (maskless.eval.semantic); STEGO's rows add both on the object pixels alone.
SEMANTIC_METRICS = ("mIoU", "Acc", "obj_mIoU", "obj_Acc")
OPTIONAL_SEMANTIC = ("obj_mIoU", "obj_Acc")  # a table shows these columns only when some row has them


def semantic_columns(rows: list[dict]) -> tuple[str, ...]:
    """The semantic table's columns for `rows`: mIoU, Acc, and the optional ones some row holds."""
    present = {r["metric"] for r in rows}
    return tuple(m for m in SEMANTIC_METRICS if m not in OPTIONAL_SEMANTIC or m in present)

SCHEMA = pa.schema(
    [
        ("experiment", pa.string()),
        ("stage", pa.string()),
        ("round", pa.int32()),
        ("dataset", pa.string()),
        ("iou_type", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)
IOU_TYPES = ("segm", "bbox", "semantic")
KEY = ("experiment", "stage", "round", "dataset")


def metric_rows(
    results: dict[str, dict[str, float]], *, experiment: str, stage: str, round: int, dataset: str
) -> list[dict]:
    """Flatten {iou_type: {metric: value}} into schema rows, in the order the dicts give."""
    rows = []
    for iou_type, values in results.items():
        for metric, value in values.items():
            rows.append(
                {
                    "experiment": str(experiment),
                    "stage": str(stage),
                    "round": int(round),
                    "dataset": str(dataset),
                    "iou_type": str(iou_type),
                    "metric": str(metric),
                    "value": float(value),
                }
            )
    return rows


def _check_rows(rows: list[dict], where: str) -> None:
    """Missing keys, unknown iou_type and duplicate (key, iou_type, metric) are errors naming `where`."""
    seen = set()
    for i, row in enumerate(rows):
        missing = [n for n in SCHEMA.names if n not in row]
        if missing:
            raise ValueError(f"metrics {where}: row {i} lacks keys {missing}")
        if row["iou_type"] not in IOU_TYPES:
            raise ValueError(f"metrics {where}: row {i} has iou_type {row['iou_type']!r}, expected one of {IOU_TYPES}")
        ident = tuple(row[k] for k in KEY) + (row["iou_type"], row["metric"])
        if ident in seen:
            raise ValueError(f"metrics {where}: duplicate row for {ident}")
        seen.add(ident)


def write_metrics(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write rows (dicts with the SCHEMA's keys) to a parquet file, atomically."""
    _check_rows(rows, str(path))
    table = pa.Table.from_pylist([{k: r[k] for k in SCHEMA.names} for r in rows], schema=SCHEMA)
    write_parquet_atomic(path, table)


def read_metrics(paths: list[str | os.PathLike]) -> list[dict]:
    """All rows of all files, in file order then row order; a file without the schema's columns is an error."""
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError(f"read_metrics takes a list of paths, got the single path {paths!r}")
    rows: list[dict] = []
    for path in paths:
        table = pq.read_table(path)
        missing = [n for n in SCHEMA.names if n not in table.column_names]
        if missing:
            raise ValueError(f"metrics file {path} lacks columns {missing}")
        rows.extend(table.select(SCHEMA.names).cast(SCHEMA).to_pylist())
    _check_rows(rows, "read from " + ", ".join(str(p) for p in paths))
    return rows


def fmt_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


# Pipeline order of the stages in tables: coarse masks, then the segmenters trained on them; exemplar
# variants by their count (exemplar_n2 before exemplar_n10); stages not listed after these, by name.
STAGE_ORDER = ("freemask", "freesolo", "exemplar", "oracle", "constant", "kmeans", "stego")


def stage_rank(stage: str) -> tuple:
    family, _, count = stage.partition("_n")
    if family in STAGE_ORDER:
        return (STAGE_ORDER.index(family), int(count) if count.isdigit() else -1, stage)
    return (len(STAGE_ORDER), 0, stage)


def _table(iou_type: str, rows: list[dict], metrics: tuple[str, ...]) -> str:
    cells: dict[tuple, dict[str, float]] = {}
    for row in rows:
        cells.setdefault(tuple(row[k] for k in KEY), {})[row["metric"]] = row["value"]
    lines = [
        f"### {iou_type}",
        "",
        "| " + " | ".join(KEY + tuple(metrics)) + " |",
        "|" + "|".join([":--", ":--", "--:", ":--"] + ["--:"] * len(metrics)) + "|",
    ]
    for key in sorted(cells, key=lambda k: (str(k[0]), stage_rank(str(k[1])), int(k[2]), str(k[3]))):
        values = [fmt_value(cells[key].get(m)) for m in metrics]
        lines.append("| " + " | ".join([str(k) for k in key] + values) + " |")
    return "\n".join(lines) + "\n"


def metrics_markdown(rows: list[dict], *, metrics: tuple[str, ...] = INSTANCE_METRICS) -> str:
    """Markdown: one table per iou_type, one line per (experiment, stage, round, dataset), one column per
    metric in `metrics` (SEMANTIC_METRICS for the semantic table); values with 1 decimal, NaN (undefined)
    and absent values as "-".

    iou_types come in the order segm, bbox, semantic; lines sorted by their key. Rows whose metric is not
    in `metrics` are left out (counted in the log); an iou_type with none of `metrics` gets no table.
    """
    _check_rows(rows, "for the markdown table")
    columns = {t: semantic_columns(rows) if t == "semantic" else tuple(metrics) for t in IOU_TYPES}
    shown = [r for r in rows if r["metric"] in columns[r["iou_type"]]]
    if len(shown) < len(rows):
        n_hidden = len(rows) - len(shown)
        log.info("markdown table: %d of %d metric rows not in the requested columns, not shown", n_hidden, len(rows))
    by_type: dict[str, list[dict]] = {}
    for row in shown:
        by_type.setdefault(row["iou_type"], []).append(row)
    ratio_rows = [r for r in by_type.get("semantic", []) if split_ratio_stage(r["stage"]) is not None]
    if ratio_rows:
        by_type["semantic"] = [r for r in by_type["semantic"] if split_ratio_stage(r["stage"]) is None]
        if not by_type["semantic"]:
            del by_type["semantic"]
    if not by_type and not ratio_rows:
        return "(no metrics)\n"
    tables = [_table(t, by_type[t], columns[t]) for t in sorted(by_type, key=IOU_TYPES.index)]
    tables += [ratio_table(ratio_rows, m) for m in SEMANTIC_METRICS if any(r["metric"] == m for r in ratio_rows)]
    return "\n".join(tables)


# Semi/weakly supervised rows (maskless.pct.stage): stage "<model>[+ctr]@<label ratio>", rendered as one
# table per metric with a column per label ratio, models in pipeline order, without Contextrast first.
RATIO_MODELS = ("strong_only", "pct_hybrid", "pct_pseudo", "pct_labels", "pct_retrain")


def split_ratio_stage(stage: str) -> tuple[str, bool, float, str] | None:
    """(model, with Contextrast, ratio, ratio text) of a stage "<model>[+ctr]@<ratio>", else None."""
    name, at, ratio = stage.partition("@")
    if not at:
        return None
    try:
        value = float(ratio)
    except ValueError:
        return None
    ctr = name.endswith("+ctr")
    return name.removesuffix("+ctr"), ctr, value, ratio


def _model_rank(model: str) -> tuple:
    return (RATIO_MODELS.index(model), "") if model in RATIO_MODELS else (len(RATIO_MODELS), model)


def ratio_table(rows: list[dict], metric: str) -> str:
    """Markdown: one line per (experiment, model, Contextrast, dataset), one column per label ratio."""
    cells: dict[tuple, dict[str, float]] = {}
    ratios: dict[str, float] = {}
    for row in rows:
        parsed = split_ratio_stage(row["stage"])
        if parsed is None or row["metric"] != metric:
            continue
        model, ctr, value, text = parsed
        ratios[text] = value
        cells.setdefault((row["experiment"], model, ctr, row["dataset"]), {})[text] = row["value"]
    cols = sorted(ratios, key=lambda t: (ratios[t], t))
    lines = [
        f"### semi/weak {metric} per label ratio (held-out images)",
        "",
        "| experiment | model | contextrast | dataset | " + " | ".join(cols) + " |",
        "|" + "|".join([":--", ":--", ":--", ":--"] + ["--:"] * len(cols)) + "|",
    ]
    for key in sorted(cells, key=lambda k: (str(k[0]), k[2], _model_rank(k[1]), str(k[3]))):
        exp, model, ctr, dataset = key
        values = [fmt_value(cells[key].get(c)) for c in cols]
        lines.append("| " + " | ".join([str(exp), model, "yes" if ctr else "no", str(dataset)] + values) + " |")
    return "\n".join(lines) + "\n"
