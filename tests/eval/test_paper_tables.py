"""Paper-style tables (markdown, CSV, LaTeX) rendered from metric rows."""

from __future__ import annotations

import math
import random

import pytest

from maskless.eval.metrics import RATIO_MODELS, metric_rows
from maskless.eval.paper_tables import MODEL_LABELS, paper_tables, write_paper_tables


def _rows() -> list[dict]:
    """One experiment, one dataset: instance stages x rounds (segm, one bbox line, a NaN), two semantic
    stages, semi rows at two ratios (a ctr line with a missing cell, an Acc row that no table shows)."""
    rows = []

    def add(stage, rnd, results):
        rows.extend(metric_rows(results, experiment="exp", stage=stage, round=rnd, dataset="coco"))

    add("freesolo", 1, {"segm": {"AP": 10.04, "AP50": 20.26, "APs": math.nan}, "bbox": {"AP": 11.0, "AR100": 30.01}})
    add("exemplar_n8", 1, {"segm": {"AP": 12.5, "AP50": 25.0}})
    add("freesolo", 0, {"segm": {"AP": 8.0, "AP50": 15.0}})
    add("freemask", 0, {"segm": {"AP": 3.14, "AP50": 7.56}})
    add("stego_cluster_crf", 0, {"semantic": {"mIoU": 28.2, "Acc": 61.0}})
    add("kmeans", 0, {"semantic": {"mIoU": 11.11}})
    add("pct_hybrid@0.5", 0, {"semantic": {"mIoU": 45.56}})
    add("pct_hybrid@0.125", 0, {"semantic": {"mIoU": 35.0}})
    add("strong_only+ctr@0.125", 0, {"semantic": {"mIoU": 32.46}})
    add("strong_only@0.5", 0, {"semantic": {"mIoU": 40.0}})
    add("strong_only@0.125", 0, {"semantic": {"mIoU": 30.0, "Acc": 70.0}})
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
    semantic = [r for r in _rows() if r["stage"] == "kmeans"]
    assert list(paper_tables(semantic)) == ["semantic"]
    assert paper_tables([]) == {}
    # a row whose metric is no column of its table makes no table
    assert paper_tables(metric_rows({"semantic": {"Acc": 1.0}}, experiment="e", stage="strong_only@0.5",
                                    round=0, dataset="d")) == {}


def test_unknown_stage_is_escaped_in_latex_and_sorts_last():
    """An unknown stage keeps its raw name (escaped in LaTeX only) and comes after the known ones, although
    "a_50%" sorts first by name."""
    rows = _rows() + metric_rows({"segm": {"AP": 1.0}}, experiment="exp", stage="a_50%", round=0, dataset="coco")
    table = paper_tables(rows)["instance_segm"]
    assert table["tex"].splitlines()[-3] == "a\\_50\\% & 0 & 1.0 & - & - & - & - & - & - & - & - \\\\"
    assert table["md"].splitlines()[-1] == "| a_50% | 0 | 1.0 | - | - | - | - | - | - | - | - |"
    assert table["csv"].splitlines()[-1] == "a_50%,0,1.0,,,,,,,,"
    rows += metric_rows({"semantic": {"mIoU": 2.0}}, experiment="exp", stage="x#1&y", round=0, dataset="coco")
    assert paper_tables(rows)["semantic"]["tex"].splitlines()[-3] == "x\\#1\\&y & 2.0 & - \\\\"


def test_experiment_and_dataset_columns_only_with_several():
    """A second experiment adds Experiment and Dataset columns (first, left-aligned; lines grouped by
    experiment) to the tables that hold both, not to the others."""
    rows = _rows() + metric_rows({"segm": {"AP": 5.0}}, experiment="exp2", stage="freemask", round=0,
                                 dataset="coco")
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
    rows = _rows() + metric_rows({"semantic": {"mIoU": 1.0}}, experiment="exp", stage="kmeans", round=0,
                                 dataset="cocostuff")
    assert paper_tables(rows)["semantic"]["csv"] == (
        "Experiment,Dataset,Method,mIoU,Acc\n"
        "exp,coco,k-means (raw features),11.1,\n"
        "exp,coco,STEGO cluster probe + CRF,28.2,61.0\n"
        "exp,cocostuff,k-means (raw features),1.0,\n"
    )


def test_semantic_methods_in_pipeline_order_and_round_column_when_rounds_differ():
    stages = ["zz_other", "stego_linear_crf", "stego_linear", "stego_cluster_crf", "stego_cluster", "kmeans"]
    rows = []
    for stage in stages:
        rows += metric_rows({"semantic": {"mIoU": 1.0}}, experiment="e", stage=stage, round=0, dataset="d")
    methods = [line.split(",")[0] for line in paper_tables(rows)["semantic"]["csv"].splitlines()[1:]]
    assert methods == ["k-means (raw features)", "STEGO cluster probe", "STEGO cluster probe + CRF",
                       "STEGO linear probe", "STEGO linear probe + CRF", "zz_other"]
    rows += metric_rows({"semantic": {"mIoU": 2.0}}, experiment="e", stage="kmeans", round=1, dataset="d")
    assert paper_tables(rows)["semantic"]["csv"].splitlines()[:3] == [
        "Method,Round,mIoU,Acc", "k-means (raw features),0,1.0,", "k-means (raw features),1,2.0,"]


def test_semi_ratios_sort_numerically_and_models_follow_ratio_models():
    assert list(MODEL_LABELS) == list(RATIO_MODELS)
    rows = []
    for stage in ["strong_only@0.5", "strong_only@0.0625", "strong_only@1e-05", "mystery+ctr@0.5"]:
        rows += metric_rows({"semantic": {"mIoU": 1.0}}, experiment="e", stage=stage, round=0, dataset="d")
    assert paper_tables(rows)["semi"]["md"] == (
        "| Method | 1e-05 | 0.0625 | 0.5 |\n"  # by value; by name 1e-05 would come last
        "|:--|--:|--:|--:|\n"
        "| Strong only | 1.0 | 1.0 | 1.0 |\n"
        "| mystery + Contextrast | - | - | 1.0 |\n"
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
