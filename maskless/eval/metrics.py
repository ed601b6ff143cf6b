"""The metrics contract: one parquet row per (experiment, method, variant, round, budget, mode, dataset,
iou_type, metric).

Columns (DESIGN.md, "Contracts between stages"); what was scored is said by explicit columns, never by an
encoded name, and no reader parses one:
    experiment str      experiment name (results/<experiment>/...; results/<exp>/seed<k> for a seed's run)
    method     str      what made the predictions (METHODS, below)
    variant    str      which one of the method's (below); "" where the method has none
    round      int32    self-training round (0 when the method has no rounds)
    budget     str      PCT's label budget as a number: the ratio of pct.ratios ("0.125") or the count of
                        pct.counts ("92"); the oracle's "1" (every training image labelled); "" elsewhere
    mode       str      a setting of the same model (below); "" where the method has none
    dataset    str      evaluation dataset name
    seed       int64    the run's training seed (config `seed`, or k of results/<exp>/seed<k>)
    iou_type   str      "segm" / "bbox" (COCO instance metrics) or "semantic" (mIoU, pixel accuracy)
    metric     str      e.g. "AP", "AP50", "AR100", "mIoU"
    value      float64  in percent; NaN where the metric is undefined (e.g. APs with no small GT object)

The vocabulary (checked on write and read: a row outside it is an error naming the row and the column):
    method     variant                         mode         budget  written by
    freemask   ""                              ""           ""      eval_instances: Free Mask's coarse masks
    <name>     ""                              ""           ""      eval_instances: another coarse-mask
                                                                    extractor's (the Snakefile's EXTRACTORS; a
                                                                    lowercase identifier outside METHODS)
    freesolo   ""                              ""           ""      eval_solo: SOLO on Free Mask's masks (rounds)
    exemplar   exemplar count, "8"             ""           ""      eval_solo: Exemplar-FreeSOLO (rounds)
    oracle     ""                              ""           ""      eval_solo: SOLO on the ground-truth masks
    constant   ""                              ""           ""      stego_eval: background everywhere
    kmeans     ""                              ""           ""      stego_eval: k-means on the raw features
    stego      cluster | linear (the probe)    plain | crf  ""      stego_eval: STEGO, without / with dense CRF
    pct        strong_only | pct_hybrid |      plain | ctr  number  pct_eval: the PCT family of a label budget,
               pct_pseudo | pct_labels |                            without / with Contextrast (ctr); the
               pct_retrain (maskless.pct.stage)                     oracle is strong_only, plain, budget "1"

Tables show a line's what-was-scored as one label, `stage_label`, derived from the columns in that one
function ("freemask", "exemplar_n8", "stego_cluster_crf", "pct_retrain+ctr@0.125"); it is display text only,
never read back. Tables are rendered from the rows by `metrics_markdown`, byte-for-byte deterministic for the
same rows, so a table changes only when a number does.
"""

from __future__ import annotations

import logging
import math
import os
import re

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
        ("method", pa.string()),
        ("variant", pa.string()),
        ("round", pa.int32()),
        ("budget", pa.string()),
        ("mode", pa.string()),
        ("dataset", pa.string()),
        ("seed", pa.int64()),
        ("iou_type", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)
IOU_TYPES = ("segm", "bbox", "semantic")
# What a row is of; with iou_type and metric it names one value (no two rows share all of these).
KEY = ("experiment", "method", "variant", "round", "budget", "mode", "dataset")

# The vocabulary (module doc), in pipeline order: tables list methods in this order.
METHODS = ("freemask", "freesolo", "exemplar", "oracle", "constant", "kmeans", "stego", "pct")
# Another coarse-mask extractor's rows carry its name as the method (listed right after Free Mask's).
EXTRACTOR_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Semi/weak models (maskless.pct.stage), the variants of method "pct", in pipeline order.
RATIO_MODELS = ("strong_only", "pct_hybrid", "pct_pseudo", "pct_labels", "pct_retrain")
VARIANTS = {"stego": ("cluster", "linear"), "pct": RATIO_MODELS}  # exemplar: a count; others: ""
MODES = {"stego": ("plain", "crf"), "pct": ("plain", "ctr")}  # others: ""


def metric_rows(
    results: dict[str, dict[str, float]],
    *,
    experiment: str,
    method: str,
    variant: str = "",
    round: int = 0,
    budget: str = "",
    mode: str = "",
    dataset: str,
    seed: int,
) -> list[dict]:
    """Flatten {iou_type: {metric: value}} into schema rows, in the order the dicts give."""
    key = {"experiment": str(experiment), "method": str(method), "variant": str(variant), "round": int(round),
           "budget": str(budget), "mode": str(mode), "dataset": str(dataset), "seed": int(seed)}
    return [key | {"iou_type": str(iou_type), "metric": str(metric), "value": float(value)}
            for iou_type, values in results.items() for metric, value in values.items()]


def _vocabulary_error(row: dict) -> str | None:
    """What is wrong with a row's method, variant, budget and mode (the module doc's vocabulary), or None."""
    method, variant, budget, mode = (row[k] for k in ("method", "variant", "budget", "mode"))
    if method not in METHODS and not EXTRACTOR_NAME.fullmatch(method):
        return f"method {method!r} is neither one of {list(METHODS)} nor a coarse-mask extractor's name"
    if method == "exemplar":
        if not re.fullmatch(r"[1-9][0-9]*", variant):
            return f"variant {variant!r} of method 'exemplar' is not an exemplar count such as '8'"
    elif variant not in VARIANTS.get(method, ("",)):
        return f"variant {variant!r} of method {method!r} is not one of {list(VARIANTS.get(method, ('',)))}"
    if mode not in MODES.get(method, ("",)):
        return f"mode {mode!r} of method {method!r} is not one of {list(MODES.get(method, ('',)))}"
    if method != "pct":
        return f"budget {budget!r} of method {method!r}: only method 'pct' has a label budget" if budget else None
    try:
        ok = math.isfinite(float(budget)) and float(budget) > 0
    except ValueError:
        ok = False
    return None if ok else f"budget {budget!r} of method 'pct' is not a positive number such as '0.125' or '92'"


def _check_rows(rows: list[dict], where: str) -> None:
    """Missing keys, a method / variant / budget / mode outside the vocabulary, unknown iou_type, two seeds
    of one experiment and duplicate (key, iou_type, metric) are errors naming `where`."""
    seen, seeds = set(), {}
    for i, row in enumerate(rows):
        missing = [n for n in SCHEMA.names if n not in row]
        if missing:
            raise ValueError(f"metrics {where}: row {i} lacks keys {missing}")
        if row["iou_type"] not in IOU_TYPES:
            raise ValueError(f"metrics {where}: row {i} has iou_type {row['iou_type']!r}, expected one of {IOU_TYPES}")
        wrong = _vocabulary_error(row)
        if wrong:
            raise ValueError(f"metrics {where}: row {i}: {wrong}")
        if seeds.setdefault(row["experiment"], row["seed"]) != row["seed"]:
            raise ValueError(f"metrics {where}: experiment {row['experiment']!r} has rows of seed "
                             f"{seeds[row['experiment']]} and of seed {row['seed']}")
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
    """All rows of all files, in file order then row order; a file without the schema's columns is an error
    (one of the schema before explicit columns, with its `stage` string, says to rerun its eval rule)."""
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError(f"read_metrics takes a list of paths, got the single path {paths!r}")
    rows: list[dict] = []
    for path in paths:
        table = pq.read_table(path)
        missing = [n for n in SCHEMA.names if n not in table.column_names]
        if missing and "stage" in table.column_names:
            raise ValueError(
                f"metrics file {path} has the old schema (a 'stage' column, no columns {missing}): it was "
                "written before metric rows had explicit columns; rerun the eval rule that wrote it (a plain "
                "snakemake run does, as the rule's script and params changed; else --forcerun that rule)")
        if missing:
            raise ValueError(f"metrics file {path} lacks columns {missing}")
        rows.extend(table.select(SCHEMA.names).cast(SCHEMA).to_pylist())
    _check_rows(rows, "read from " + ", ".join(str(p) for p in paths))
    return rows


def stage_label(method: str, variant: str = "", budget: str = "", mode: str = "") -> str:
    """The display label of what a row scored, made from its columns: "freemask", "exemplar_n8",
    "stego_cluster_crf", "pct_retrain+ctr@0.125", "strong_only@1". Display only: nothing parses it."""
    if method == "exemplar":
        return f"exemplar_n{variant}"
    if method == "stego":
        return f"stego_{variant}{'_crf' if mode == 'crf' else ''}"
    if method == "pct":
        return f"{variant}{'+ctr' if mode == 'ctr' else ''}@{budget}"
    return method


def row_label(row: dict) -> str:
    """stage_label of a row."""
    return stage_label(row["method"], row["variant"], row["budget"], row["mode"])


def row_rank(row: dict) -> tuple:
    """Pipeline order of what rows scored: METHODS order; exemplar counts by value (n2 before n10); STEGO's
    probes by name, each without then with CRF; PCT's models in RATIO_MODELS order, plain before ctr, budgets
    by value."""
    method, variant, mode = row["method"], row["variant"], row["mode"]
    count = int(variant) if method == "exemplar" else 0
    model = RATIO_MODELS.index(variant) if method == "pct" else 0
    modes = MODES.get(method, ("",))
    budget = float(row["budget"]) if row["budget"] else 0.0
    rank = METHODS.index(method) if method in METHODS else 0.5  # another extractor: after Free Mask
    return (rank, method, count, model, variant, modes.index(mode), budget, row["budget"])


def fmt_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _table(iou_type: str, rows: list[dict], metrics: tuple[str, ...]) -> str:
    """One line per (experiment, what was scored, round, dataset); its label in the "stage" column."""
    cells: dict[tuple, dict[str, float]] = {}
    firsts: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[k] for k in KEY)
        firsts.setdefault(key, row)
        cells.setdefault(key, {})[row["metric"]] = row["value"]
    lines = [
        f"### {iou_type}",
        "",
        "| " + " | ".join(("experiment", "stage", "round", "dataset") + tuple(metrics)) + " |",
        "|" + "|".join([":--", ":--", "--:", ":--"] + ["--:"] * len(metrics)) + "|",
    ]
    order = sorted(cells, key=lambda k: (str(firsts[k]["experiment"]), row_rank(firsts[k]), int(firsts[k]["round"]),
                                         str(firsts[k]["dataset"])))
    for key in order:
        row = firsts[key]
        values = [fmt_value(cells[key].get(m)) for m in metrics]
        lines.append("| " + " | ".join([str(row["experiment"]), row_label(row), str(row["round"]),
                                        str(row["dataset"])] + values) + " |")
    return "\n".join(lines) + "\n"


def metrics_markdown(rows: list[dict], *, metrics: tuple[str, ...] = INSTANCE_METRICS) -> str:
    """Markdown: one table per iou_type, one line per (experiment, what was scored, round, dataset), one column
    per metric in `metrics` (SEMANTIC_METRICS for the semantic table); values with 1 decimal, NaN (undefined)
    and absent values as "-". PCT's rows (method "pct") get the per-ratio tables instead (ratio_table).

    iou_types come in the order segm, bbox, semantic; lines in pipeline order (row_rank). Rows whose metric
    is not in `metrics` are left out (counted in the log); an iou_type with none of `metrics` gets no table.
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
    ratio_rows = [r for r in by_type.get("semantic", []) if r["method"] == "pct"]
    if ratio_rows:
        by_type["semantic"] = [r for r in by_type["semantic"] if r["method"] != "pct"]
        if not by_type["semantic"]:
            del by_type["semantic"]
    if not by_type and not ratio_rows:
        return "(no metrics)\n"
    tables = [_table(t, by_type[t], columns[t]) for t in sorted(by_type, key=IOU_TYPES.index)]
    tables += [ratio_table(ratio_rows, m) for m in SEMANTIC_METRICS if any(r["metric"] == m for r in ratio_rows)]
    return "\n".join(tables)


def budget_columns(rows: list[dict]) -> list[str]:
    """The label budgets of PCT rows as table columns, by value (1e-05 before 0.0625), then by text."""
    return sorted({r["budget"] for r in rows}, key=lambda b: (float(b), b))


def model_rank(variant: str) -> int:
    """Place of a PCT model (the variant of method "pct") in RATIO_MODELS."""
    return RATIO_MODELS.index(variant)


def ratio_table(rows: list[dict], metric: str) -> str:
    """Markdown of PCT's rows (method "pct"): one line per (experiment, model, Contextrast, dataset), one
    column per label budget."""
    rows = [r for r in rows if r["method"] == "pct" and r["metric"] == metric]
    cells: dict[tuple, dict[str, float]] = {}
    for row in rows:
        cells.setdefault((row["experiment"], row["variant"], row["mode"] == "ctr", row["dataset"]), {})[
            row["budget"]] = row["value"]
    cols = budget_columns(rows)
    lines = [
        f"### semi/weak {metric} per label ratio (held-out images)",
        "",
        "| experiment | model | contextrast | dataset | " + " | ".join(cols) + " |",
        "|" + "|".join([":--", ":--", ":--", ":--"] + ["--:"] * len(cols)) + "|",
    ]
    for key in sorted(cells, key=lambda k: (str(k[0]), k[2], model_rank(k[1]), str(k[3]))):
        exp, model, ctr, dataset = key
        values = [fmt_value(cells[key].get(c)) for c in cols]
        lines.append("| " + " | ".join([str(exp), model, "yes" if ctr else "no", str(dataset)] + values) + " |")
    return "\n".join(lines) + "\n"
