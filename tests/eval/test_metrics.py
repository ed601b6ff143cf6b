"""The metrics parquet contract and the markdown tables rendered from it."""

from __future__ import annotations

import math
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from maskless.eval.metrics import SCHEMA, metric_rows, metrics_markdown, read_metrics, write_metrics


def _rows() -> list[dict]:
    """Two (experiment, stage, round, dataset) keys, segm and bbox, plus a semantic row (its own columns)."""
    rows = metric_rows(
        {"segm": {"AP": 4.349, "AP50": 9.85, "APs": math.nan}, "bbox": {"AP": 5.0, "AP50": 0.04}},
        experiment="exp", stage="solo", round=1, dataset="coco",
    )
    rows += metric_rows(
        {"segm": {"AP": 12.25, "AP50": 21.96, "APs": 0.0}, "semantic": {"mIoU": 33.3}},
        experiment="exp", stage="freemask", round=0, dataset="coco",
    )
    return rows


GOLDEN = """\
### segm

| experiment | stage | round | dataset | AP | AP50 | APs |
|:--|:--|--:|:--|--:|--:|--:|
| exp | freemask | 0 | coco | 12.2 | 22.0 | 0.0 |
| exp | solo | 1 | coco | 4.3 | 9.8 | - |

### bbox

| experiment | stage | round | dataset | AP | AP50 | APs |
|:--|:--|--:|:--|--:|--:|--:|
| exp | solo | 1 | coco | 5.0 | 0.0 | - |

### semantic

| experiment | stage | round | dataset | mIoU | Acc |
|:--|:--|--:|:--|--:|--:|
| exp | freemask | 0 | coco | 33.3 | - |
"""


def test_metric_rows_flatten_in_order():
    rows = metric_rows({"segm": {"AP": 1.0, "AR100": 2.0}}, experiment="e", stage="s", round=2, dataset="d")
    key = {"experiment": "e", "stage": "s", "round": 2, "dataset": "d", "iou_type": "segm"}
    assert rows == [key | {"metric": "AP", "value": 1.0}, key | {"metric": "AR100", "value": 2.0}]


def test_markdown_golden():
    """Hand-written expected table: segm before bbox, lines sorted by stage (freemask < solo), 1 decimal
    with Python's round-half-even on the binary value (12.25 -> 12.2, 9.85 -> 9.8 as 9.85 is stored as
    9.8499..., 21.96 -> 22.0, 0.04 -> 0.0), NaN and a metric absent for a line as "-", the semantic row
    in a table of its own with the semantic columns (mIoU, Acc; Acc absent -> "-")."""
    assert metrics_markdown(_rows(), metrics=("AP", "AP50", "APs")) == GOLDEN


def test_markdown_is_deterministic_under_row_order():
    rows = _rows()
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != rows
    assert metrics_markdown(shuffled, metrics=("AP", "AP50", "APs")) == GOLDEN


def test_markdown_without_rows():
    assert metrics_markdown([]) == "(no metrics)\n"


def test_markdown_rejects_duplicates_and_unknown_iou_type():
    rows = _rows()
    with pytest.raises(ValueError, match="duplicate row"):
        metrics_markdown(rows + rows[:1])
    with pytest.raises(ValueError, match="iou_type 'mask'"):
        metrics_markdown([dict(rows[0], iou_type="mask")])


def test_parquet_round_trip(tmp_path):
    """Rows come back equal (NaN compared as NaN), round as int32, across two files in order."""
    rows = _rows()
    a, b = tmp_path / "a.parquet", tmp_path / "sub" / "b.parquet"
    write_metrics(a, rows[:5])
    write_metrics(b, rows[5:])
    assert pq.read_schema(a).equals(SCHEMA)
    back = read_metrics([str(a), str(b)])
    assert len(back) == len(rows)
    for got, want in zip(back, rows):
        assert {k: v for k, v in got.items() if k != "value"} == {k: v for k, v in want.items() if k != "value"}
        assert got["value"] == want["value"] or (math.isnan(got["value"]) and math.isnan(want["value"]))
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic write left no temp file


def test_empty_metrics_file(tmp_path):
    write_metrics(tmp_path / "e.parquet", [])
    assert read_metrics([tmp_path / "e.parquet"]) == []


def test_read_metrics_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"experiment": ["e"], "value": [1.0]}), bad)
    with pytest.raises(ValueError, match=r"bad.parquet lacks columns \['stage', 'round'"):
        read_metrics([str(bad)])
    with pytest.raises(TypeError, match="list of paths"):
        read_metrics(str(bad))


def test_write_metrics_rejects_incomplete_rows(tmp_path):
    row = _rows()[0]
    del row["round"]
    with pytest.raises(ValueError, match=r"row 0 lacks keys \['round'\]"):
        write_metrics(tmp_path / "m.parquet", [row])
    assert not (tmp_path / "m.parquet").exists()


def test_tables_list_stages_in_pipeline_order():
    """freemask, freesolo rounds 0 and 1, exemplar_n2 before exemplar_n10 (numeric), then other stages."""
    from maskless.eval.metrics import metric_rows, metrics_markdown

    rows = []
    for stage, rnd in [("zeta", 0), ("exemplar_n10", 0), ("freesolo", 1), ("exemplar_n2", 0), ("freesolo", 0),
                       ("freemask", 0)]:
        rows += metric_rows({"segm": {"AP": 1.0}}, experiment="e", stage=stage, round=rnd, dataset="d")
    lines = [ln for ln in metrics_markdown(rows).splitlines() if ln.startswith("| e |")]
    assert [ln.split(" | ")[1:3] for ln in lines] == [["freemask", "0"], ["freesolo", "0"], ["freesolo", "1"],
                                                       ["exemplar_n2", "0"], ["exemplar_n10", "0"], ["zeta", "0"]]


def test_semantic_rows_get_their_own_columns():
    """A semantic row shows mIoU and Acc, not the COCO columns; instance tables are unchanged."""
    from maskless.eval.metrics import metric_rows, metrics_markdown

    rows = metric_rows({"semantic": {"mIoU": 12.34, "Acc": 56.78}}, experiment="e", stage="stego_cluster",
                       round=0, dataset="d")
    rows += metric_rows({"segm": {"AP": 1.0}}, experiment="e", stage="freemask", round=0, dataset="d")
    text = metrics_markdown(rows)
    assert "| experiment | stage | round | dataset | mIoU | Acc |" in text
    assert "| e | stego_cluster | 0 | d | 12.3 | 56.8 |" in text
    assert text.index("### segm") < text.index("### semantic")
