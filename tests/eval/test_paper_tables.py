"""Paper-style tables (markdown, CSV, LaTeX) rendered from metric rows."""

from __future__ import annotations

import math
import random

import pytest

from maskless.eval.metrics import RATIO_MODELS, metric_rows
from maskless.eval.paper_tables import MODEL_LABELS, paper_tables, write_paper_tables


def _rows() -> list[dict]:
    """One experiment, one dataset: instance methods x rounds (segm, one bbox line, a NaN), two semantic
    methods, semi rows at two budgets (a ctr line with a missing cell, an Acc row that no table shows)."""
    rows = []

    def add(method, rnd, results, **columns):
        rows.extend(metric_rows(results, experiment="exp", method=method, round=rnd, dataset="coco", seed=0,
                                **columns))

    def pct(model, budget, mode, results):
        add("pct", 0, results, variant=model, budget=budget, mode=mode)

    add("freesolo", 1, {"segm": {"AP": 10.04, "AP50": 20.26, "APs": math.nan}, "bbox": {"AP": 11.0, "AR100": 30.01}})
    add("exemplar", 1, {"segm": {"AP": 12.5, "AP50": 25.0}}, variant="8")
    add("freesolo", 0, {"segm": {"AP": 8.0, "AP50": 15.0}})
    add("freemask", 0, {"segm": {"AP": 3.14, "AP50": 7.56}})
    add("stego", 0, {"semantic": {"mIoU": 28.2, "Acc": 61.0}}, variant="cluster", mode="crf")
    add("kmeans", 0, {"semantic": {"mIoU": 11.11}})
    pct("pct_hybrid", "0.5", "plain", {"semantic": {"mIoU": 45.56}})
    pct("pct_hybrid", "0.125", "plain", {"semantic": {"mIoU": 35.0}})
    pct("strong_only", "0.125", "ctr", {"semantic": {"mIoU": 32.46}})
    pct("strong_only", "0.5", "plain", {"semantic": {"mIoU": 40.0}})
    pct("strong_only", "0.125", "plain", {"semantic": {"mIoU": 30.0, "Acc": 70.0}})
    return rows


# Hand-written: lines in pipeline order (freemask, freesolo r0, r1, exemplar; k-means before STEGO; models
# in RATIO_MODELS order, each without then with Contextrast); one decimal (3.14 -> 3.1, 7.56 -> 7.6,
# 10.04 -> 10.0, 20.26 -> 20.3, 30.01 -> 30.0, 11.11 -> 11.1, 32.46 -> 32.5, 45.56 -> 45.6); NaN (freesolo r1
# APs) and absent metrics "-" in markdown/LaTeX, empty in CSV; ratio columns 0.125 < 0.5; the semi Acc row
# is not shown; no experiment/dataset columns (one of each).
INSTANCE_HEADER_MD = (
    "| Method | Round | AP | AP50 | AP75 | APs | APm | APl | AR1 | AR10 | AR100 |\n"
    "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
)
GOLDEN_MD = {
    "instance_segm": INSTANCE_HEADER_MD
    + "| Free Mask | 0 | 3.1 | 7.6 | - | - | - | - | - | - | - |\n"
    "| FreeSOLO | 0 | 8.0 | 15.0 | - | - | - | - | - | - | - |\n"
    "| FreeSOLO | 1 | 10.0 | 20.3 | - | - | - | - | - | - | - |\n"
    "| Exemplar-FreeSOLO (8 exemplars) | 1 | 12.5 | 25.0 | - | - | - | - | - | - | - |\n",
    "instance_bbox": INSTANCE_HEADER_MD + "| FreeSOLO | 1 | 11.0 | - | - | - | - | - | - | - | 30.0 |\n",
    "semantic": "| Method | mIoU | Acc |\n"
    "|:--|--:|--:|\n"
    "| k-means (raw features) | 11.1 | - |\n"
    "| STEGO cluster probe + CRF | 28.2 | 61.0 |\n",
    "semi": "| Method | 0.125 | 0.5 |\n"
    "|:--|--:|--:|\n"
    "| Strong only | 30.0 | 40.0 |\n"
    "| Strong only + Contextrast | 32.5 | - |\n"
    "| PCT Hybrid-Net | 35.0 | 45.6 |\n",
}

INSTANCE_HEADER_CSV = "Method,Round,AP,AP50,AP75,APs,APm,APl,AR1,AR10,AR100\n"
GOLDEN_CSV = {
    "instance_segm": INSTANCE_HEADER_CSV
    + "Free Mask,0,3.1,7.6,,,,,,,\n"
    "FreeSOLO,0,8.0,15.0,,,,,,,\n"
    "FreeSOLO,1,10.0,20.3,,,,,,,\n"
    "Exemplar-FreeSOLO (8 exemplars),1,12.5,25.0,,,,,,,\n",
    "instance_bbox": INSTANCE_HEADER_CSV + "FreeSOLO,1,11.0,,,,,,,,30.0\n",
    "semantic": "Method,mIoU,Acc\n"
    "k-means (raw features),11.1,\n"
    "STEGO cluster probe + CRF,28.2,61.0\n",
    "semi": "Method,0.125,0.5\n"
    "Strong only,30.0,40.0\n"
    "Strong only + Contextrast,32.5,\n"
    "PCT Hybrid-Net,35.0,45.6\n",
}

INSTANCE_HEADER_TEX = (
    "\\begin{tabular}{lrrrrrrrrrr}\n"
    "\\toprule\n"
    "Method & Round & AP & AP50 & AP75 & APs & APm & APl & AR1 & AR10 & AR100 \\\\\n"
    "\\midrule\n"
)
TEX_END = "\\bottomrule\n\\end{tabular}\n"
GOLDEN_TEX = {
    "instance_segm": INSTANCE_HEADER_TEX
    + "Free Mask & 0 & 3.1 & 7.6 & - & - & - & - & - & - & - \\\\\n"
    "FreeSOLO & 0 & 8.0 & 15.0 & - & - & - & - & - & - & - \\\\\n"
    "FreeSOLO & 1 & 10.0 & 20.3 & - & - & - & - & - & - & - \\\\\n"
    "Exemplar-FreeSOLO (8 exemplars) & 1 & 12.5 & 25.0 & - & - & - & - & - & - & - \\\\\n"
    + TEX_END,
    "instance_bbox": INSTANCE_HEADER_TEX + "FreeSOLO & 1 & 11.0 & - & - & - & - & - & - & - & 30.0 \\\\\n" + TEX_END,
    "semantic": "\\begin{tabular}{lrr}\n"
    "\\toprule\n"
    "Method & mIoU & Acc \\\\\n"
    "\\midrule\n"
    "k-means (raw features) & 11.1 & - \\\\\n"
    "STEGO cluster probe + CRF & 28.2 & 61.0 \\\\\n" + TEX_END,
    "semi": "\\begin{tabular}{lrr}\n"
    "\\toprule\n"
    "Method & 0.125 & 0.5 \\\\\n"
    "\\midrule\n"
    "Strong only & 30.0 & 40.0 \\\\\n"
    "Strong only + Contextrast & 32.5 & - \\\\\n"
    "PCT Hybrid-Net & 35.0 & 45.6 \\\\\n" + TEX_END,
}


def test_golden_tables():
    tables = paper_tables(_rows())
    assert list(tables) == ["instance_segm", "instance_bbox", "semantic", "semi"]
    for name, texts in tables.items():
        assert list(texts) == ["md", "csv", "tex"]
        assert texts["md"] == GOLDEN_MD[name], name
        assert texts["csv"] == GOLDEN_CSV[name], name
        assert texts["tex"] == GOLDEN_TEX[name], name


def test_same_bytes_for_any_row_order():
    rows = _rows()
    want = paper_tables(rows)
    for seed in range(3):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        assert shuffled != rows
        assert paper_tables(shuffled) == want
    assert paper_tables(rows[::-1]) == want


def test_only_tables_with_rows():
    semantic = [r for r in _rows() if r["method"] == "kmeans"]
    assert list(paper_tables(semantic)) == ["semantic"]
    assert paper_tables([]) == {}
    # a row whose metric is no column of its table makes no table
    assert paper_tables(metric_rows({"semantic": {"Acc": 1.0}}, experiment="e", method="pct", variant="strong_only",
                                    budget="0.5", mode="plain", dataset="d", seed=0)) == {}


def test_text_cells_are_escaped_in_latex_only():
    """A dataset name with LaTeX's special characters (shown with a second dataset; "a..." sorts before
    "coco") is escaped in LaTeX, in one pass."""
    rows = _rows() + metric_rows({"segm": {"AP": 1.0}}, experiment="exp", method="freemask", dataset="a_50%#&",
                                 seed=0)
    table = paper_tables(rows)["instance_segm"]
    assert table["tex"].splitlines()[4] == ("exp & a\\_50\\%\\#\\& & Free Mask & 0 & 1.0 & "
                                           "- & - & - & - & - & - & - & - \\\\")
    assert table["md"].splitlines()[2] == "| exp | a_50%#& | Free Mask | 0 | 1.0 | - | - | - | - | - | - | - | - |"
    assert table["csv"].splitlines()[1] == "exp,a_50%#&,Free Mask,0,1.0,,,,,,,,"


def test_experiment_and_dataset_columns_only_with_several():
    """A second experiment adds Experiment and Dataset columns (first, left-aligned; lines grouped by
    experiment) to the tables that hold both, not to the others."""
    rows = _rows() + metric_rows({"segm": {"AP": 5.0}}, experiment="exp2", method="freemask", dataset="coco", seed=1)
    tables = paper_tables(rows)
    segm = tables["instance_segm"]
    assert segm["md"].splitlines()[:2] == [
        "| Experiment | Dataset | Method | Round | AP | AP50 | AP75 | APs | APm | APl | AR1 | AR10 | AR100 |",
        "|:--|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    assert segm["md"].splitlines()[2] == "| exp | coco | Free Mask | 0 | 3.1 | 7.6 | - | - | - | - | - | - | - |"
    assert segm["md"].splitlines()[-1] == "| exp2 | coco | Free Mask | 0 | 5.0 | - | - | - | - | - | - | - | - |"
    assert segm["csv"].splitlines()[0] == "Experiment,Dataset,Method,Round,AP,AP50,AP75,APs,APm,APl,AR1,AR10,AR100"
    assert segm["tex"].startswith("\\begin{tabular}{lllrrrrrrrrrr}\n")
    for name in ("instance_bbox", "semantic", "semi"):
        assert tables[name] == paper_tables(_rows())[name]
    # a second dataset does the same
    rows = _rows() + metric_rows({"semantic": {"mIoU": 1.0}}, experiment="exp", method="kmeans", dataset="cocostuff",
                                 seed=0)
    assert paper_tables(rows)["semantic"]["csv"] == (
        "Experiment,Dataset,Method,mIoU,Acc\n"
        "exp,coco,k-means (raw features),11.1,\n"
        "exp,coco,STEGO cluster probe + CRF,28.2,61.0\n"
        "exp,cocostuff,k-means (raw features),1.0,\n"
    )


def test_semantic_methods_in_pipeline_order_and_round_column_when_rounds_differ():
    rows = []
    for method, variant, mode in [("stego", "linear", "crf"), ("stego", "linear", "plain"), ("stego", "cluster", "crf"),
                                  ("stego", "cluster", "plain"), ("kmeans", "", ""), ("constant", "", "")]:
        rows += metric_rows({"semantic": {"mIoU": 1.0}}, experiment="e", method=method, variant=variant, mode=mode,
                            dataset="d", seed=0)
    methods = [line.split(",")[0] for line in paper_tables(rows)["semantic"]["csv"].splitlines()[1:]]
    assert methods == ["Background everywhere (trivial)", "k-means (raw features)", "STEGO cluster probe",
                       "STEGO cluster probe + CRF", "STEGO linear probe", "STEGO linear probe + CRF"]
    rows += metric_rows({"semantic": {"mIoU": 2.0}}, experiment="e", method="kmeans", round=1, dataset="d", seed=0)
    assert paper_tables(rows)["semantic"]["csv"].splitlines()[2:4] == [
        "k-means (raw features),0,1.0,", "k-means (raw features),1,2.0,"]
    assert paper_tables(rows)["semantic"]["csv"].splitlines()[0] == "Method,Round,mIoU,Acc"


def test_instance_methods_in_pipeline_order():
    """Exemplar counts by value (2 before 10, though "10" < "2" as text), the oracle after them."""
    rows = []
    for method, variant in [("oracle", ""), ("exemplar", "10"), ("exemplar", "2"), ("exemplar", "1"),
                            ("freemask", "")]:
        rows += metric_rows({"segm": {"AP": 1.0}}, experiment="e", method=method, variant=variant, dataset="d", seed=0)
    assert [line.split(",")[0] for line in paper_tables(rows)["instance_segm"]["csv"].splitlines()[1:]] == [
        "Free Mask", "Exemplar-FreeSOLO (1 exemplar)", "Exemplar-FreeSOLO (2 exemplars)",
        "Exemplar-FreeSOLO (10 exemplars)", "SOLO on the ground truth (oracle)"]


def test_semi_budgets_sort_numerically_and_models_follow_ratio_models():
    assert list(MODEL_LABELS) == list(RATIO_MODELS)
    rows = []
    for model, budget, mode in [("strong_only", "0.5", "plain"), ("strong_only", "0.0625", "plain"),
                                ("strong_only", "1e-05", "plain"), ("pct_retrain", "0.5", "ctr"),
                                ("pct_labels", "0.5", "plain")]:
        rows += metric_rows({"semantic": {"mIoU": 1.0}}, experiment="e", method="pct", variant=model, budget=budget,
                            mode=mode, dataset="d", seed=0)
    assert paper_tables(rows)["semi"]["md"] == (
        "| Method | 1e-05 | 0.0625 | 0.5 |\n"  # by value; by name 1e-05 would come last
        "|:--|--:|--:|--:|\n"
        "| Strong only | 1.0 | 1.0 | 1.0 |\n"
        "| PCT pseudo labels (weak images) | - | - | 1.0 |\n"
        "| PCT retrained + Contextrast | - | - | 1.0 |\n"
    )


def test_duplicate_rows_are_errors():
    rows = _rows()
    with pytest.raises(ValueError, match="duplicate row"):
        paper_tables(rows + rows[:1])


def test_write_paper_tables(tmp_path):
    out = tmp_path / "tables"
    paths = write_paper_tables(_rows(), out)
    names = ["instance_segm", "instance_bbox", "semantic", "semi"]
    assert paths == [str(out / f"{n}.{ext}") for n in names for ext in ("md", "csv", "tex")]
    tables = paper_tables(_rows())
    for path in paths:
        name, ext = path.rsplit("/", 1)[1].split(".")
        with open(path, encoding="utf-8", newline="") as f:
            assert f.read() == tables[name][ext]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.rsplit("/", 1)[1] for p in paths)  # no temp files
    assert write_paper_tables([], tmp_path / "empty") == []
