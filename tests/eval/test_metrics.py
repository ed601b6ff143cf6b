"""The metrics parquet contract and the markdown tables rendered from it."""

from __future__ import annotations

import math
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from maskless.eval.metrics import SCHEMA, metric_rows, metrics_markdown, read_metrics, stage_label, write_metrics


def _rows() -> list[dict]:
    """Two (experiment, method, variant, round, budget, mode, dataset) keys, segm and bbox, plus a semantic
    row (its own columns)."""
    rows = metric_rows(
        {"segm": {"AP": 4.349, "AP50": 9.85, "APs": math.nan}, "bbox": {"AP": 5.0, "AP50": 0.04}},
        experiment="exp", method="freesolo", round=1, dataset="coco", seed=0,
    )
    rows += metric_rows(
        {"segm": {"AP": 12.25, "AP50": 21.96, "APs": 0.0}, "semantic": {"mIoU": 33.3}},
        experiment="exp", method="freemask", round=0, dataset="coco", seed=0,
    )
    return rows


GOLDEN = """\
### segm

| experiment | stage | round | dataset | AP | AP50 | APs |
|:--|:--|--:|:--|--:|--:|--:|
| exp | freemask | 0 | coco | 12.2 | 22.0 | 0.0 |
| exp | freesolo | 1 | coco | 4.3 | 9.8 | - |

### bbox

| experiment | stage | round | dataset | AP | AP50 | APs |
|:--|:--|--:|:--|--:|--:|--:|
| exp | freesolo | 1 | coco | 5.0 | 0.0 | - |

### semantic

| experiment | stage | round | dataset | mIoU | Acc |
|:--|:--|--:|:--|--:|--:|
| exp | freemask | 0 | coco | 33.3 | - |
"""


def test_metric_rows_flatten_in_order():
    rows = metric_rows({"segm": {"AP": 1.0, "AR100": 2.0}}, experiment="e", method="exemplar", variant="8",
                       round=2, dataset="d", seed=3)
    key = {"experiment": "e", "method": "exemplar", "variant": "8", "round": 2, "budget": "", "mode": "",
           "dataset": "d", "seed": 3, "iou_type": "segm"}
    assert rows == [key | {"metric": "AP", "value": 1.0}, key | {"metric": "AR100", "value": 2.0}]
    assert list(rows[0]) == SCHEMA.names


def test_markdown_golden():
    """Hand-written expected table: segm before bbox, lines in pipeline order (freemask < freesolo), 1 decimal
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
    with pytest.raises(ValueError, match=r"bad.parquet lacks columns \['method', 'variant', 'round'"):
        read_metrics([str(bad)])
    with pytest.raises(TypeError, match="list of paths"):
        read_metrics(str(bad))


def test_old_schema_file_says_to_rerun_its_eval_rule(tmp_path):
    """A file written before the explicit columns (stage "pct_hybrid+ctr@0.125") is not read compatibly: the
    error names it and says to rerun the eval rule."""
    old = tmp_path / "eval" / "pct" / "metrics.parquet"
    old.parent.mkdir(parents=True)
    pq.write_table(pa.table({"experiment": ["e"], "stage": ["pct_hybrid+ctr@0.125"], "round": [0],
                             "dataset": ["d"], "iou_type": ["semantic"], "metric": ["mIoU"], "value": [1.0]}), old)
    with pytest.raises(ValueError, match=r"eval/pct/metrics.parquet has the old schema \(a 'stage' column, no "
                                         r"columns \['method', 'variant', 'budget', 'mode', 'seed'\]\).*rerun the "
                                         r"eval rule that wrote it"):
        read_metrics([str(old)])


def test_write_metrics_rejects_incomplete_rows(tmp_path):
    row = _rows()[0]
    del row["round"]
    with pytest.raises(ValueError, match=r"row 0 lacks keys \['round'\]"):
        write_metrics(tmp_path / "m.parquet", [row])
    assert not (tmp_path / "m.parquet").exists()


@pytest.mark.parametrize("columns, message", [
    (dict(method="SOLO v2"), r"method 'SOLO v2' is neither one of \['freemask', 'freesolo', 'exemplar'"),
    (dict(method="maskcut", variant="8"), r"variant '8' of method 'maskcut' is not one of \[''\]"),
    (dict(method="exemplar", variant="n8"), r"variant 'n8' of method 'exemplar' is not an exemplar count"),
    (dict(method="exemplar", variant="0"), r"variant '0' of method 'exemplar' is not an exemplar count"),
    (dict(method="freesolo", variant="8"), r"variant '8' of method 'freesolo' is not one of \[''\]"),
    (dict(method="stego", variant="cluster_crf", mode="plain"), r"variant 'cluster_crf' of method 'stego'"),
    (dict(method="stego", variant="cluster"), r"mode '' of method 'stego' is not one of \['plain', 'crf'\]"),
    (dict(method="pct", variant="pct_hybrid", budget="0.5", mode="crf"), r"mode 'crf' of method 'pct'"),
    (dict(method="pct", variant="hybrid", budget="0.5", mode="plain"), r"variant 'hybrid' of method 'pct'"),
    (dict(method="pct", variant="pct_hybrid", budget="ratio0.5", mode="plain"),
     r"budget 'ratio0.5' of method 'pct' is not a positive number"),
    (dict(method="pct", variant="pct_hybrid", mode="plain"), r"budget '' of method 'pct' is not a positive number"),
    (dict(method="kmeans", budget="0.5"), r"budget '0.5' of method 'kmeans': only method 'pct' has a label budget"),
])
def test_rows_outside_the_vocabulary_are_errors(tmp_path, columns, message):
    """Each column of the vocabulary (module doc) checked on write, naming the row and the column."""
    rows = _rows() + metric_rows({"semantic": {"mIoU": 1.0}}, experiment="exp", dataset="coco", seed=0, **columns)
    with pytest.raises(ValueError, match=rf"m.parquet: row 9: {message}"):
        write_metrics(tmp_path / "m.parquet", rows)
    assert not (tmp_path / "m.parquet").exists()


def test_one_seed_per_experiment_and_rows_of_two_seeds_read_back(tmp_path):
    """The seed column: one seed per experiment (a second is an error naming both), any seeds across them."""
    rows = _rows() + metric_rows({"segm": {"AP": 1.0}}, experiment="exp", method="oracle", dataset="coco", seed=1)
    with pytest.raises(ValueError, match="experiment 'exp' has rows of seed 0 and of seed 1"):
        write_metrics(tmp_path / "m.parquet", rows)
    other = metric_rows({"segm": {"AP": 1.0}}, experiment="exp/seed1", method="oracle", dataset="coco", seed=1)
    write_metrics(tmp_path / "m.parquet", _rows() + other)
    assert {(r["experiment"], r["seed"]) for r in read_metrics([tmp_path / "m.parquet"])} == {("exp", 0),
                                                                                              ("exp/seed1", 1)}


def test_stage_labels_come_from_the_columns():
    """The one label of a line, made from the columns (the text tables show; nothing parses it back)."""
    assert stage_label("freemask") == "freemask" and stage_label("oracle") == "oracle"
    assert stage_label("exemplar", "8") == "exemplar_n8"
    assert stage_label("stego", "cluster", mode="plain") == "stego_cluster"
    assert stage_label("stego", "linear", mode="crf") == "stego_linear_crf"
    assert stage_label("pct", "pct_retrain", "0.125", "ctr") == "pct_retrain+ctr@0.125"
    assert stage_label("pct", "strong_only", "1", "plain") == "strong_only@1"


def _instance(method, variant="", round=0):
    return metric_rows({"segm": {"AP": 1.0}}, experiment="e", method=method, variant=variant, round=round,
                       dataset="d", seed=0)


def test_tables_list_methods_in_pipeline_order():
    """freemask, freesolo rounds 0 and 1, exemplar n2 before n10 (by count, though "10" < "2" as text), then
    the oracle."""
    rows = []
    for method, variant, rnd in [("oracle", "", 0), ("exemplar", "10", 0), ("freesolo", "", 1), ("maskcut", "", 0),
                                 ("exemplar", "2", 0), ("freesolo", "", 0), ("freemask", "", 0)]:
        rows += _instance(method, variant, rnd)
    lines = [ln for ln in metrics_markdown(rows).splitlines() if ln.startswith("| e |")]
    # another coarse-mask extractor's rows (its name as the method) right after Free Mask's
    assert [ln.split(" | ")[1:3] for ln in lines] == [["freemask", "0"], ["maskcut", "0"], ["freesolo", "0"],
                                                       ["freesolo", "1"], ["exemplar_n2", "0"], ["exemplar_n10", "0"],
                                                       ["oracle", "0"]]


def test_semantic_rows_get_their_own_columns():
    """A semantic row shows mIoU and Acc, not the COCO columns; instance tables are unchanged; STEGO's
    probes without then with CRF, after the baselines."""
    rows = []
    for method, variant, mode in [("stego", "linear", "plain"), ("stego", "cluster", "crf"),
                                  ("stego", "cluster", "plain"), ("kmeans", "", ""), ("constant", "", "")]:
        rows += metric_rows({"semantic": {"mIoU": 12.34, "Acc": 56.78}}, experiment="e", method=method,
                            variant=variant, mode=mode, dataset="d", seed=0)
    rows += _instance("freemask")
    text = metrics_markdown(rows)
    assert "| experiment | stage | round | dataset | mIoU | Acc |" in text
    assert "| e | stego_cluster | 0 | d | 12.3 | 56.8 |" in text
    assert text.index("### segm") < text.index("### semantic")
    semantic = text.split("### semantic")[1].splitlines()[4:]
    assert [ln.split(" | ")[1] for ln in semantic] == ["constant", "kmeans", "stego_cluster", "stego_cluster_crf",
                                                       "stego_linear"]
