"""The report figures draw the files the DAG gives them (report_inputs in rules/common.smk), never what lies in
the results folder: a variant the config no longer runs leaves the report, though its files stay on disk."""

from __future__ import annotations

import json

import pytest

from .conftest import snakemake

pytestmark = pytest.mark.workflow

# tiny.yaml without STEGO, PCT and self-training rounds, in one shard: the report needs only the instance branch
SMALL = """
freemask: {shard_size: 8}
exemplar: {counts: [2, 3], rounds: 0}
selftrain: {rounds: 0}
stego: {enabled: false}
pct: {enabled: false}
report: {n_images: 1}
"""


def _ok(proc):
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def _report(workflow_dir, *configs: str) -> list[dict]:
    _ok(snakemake(workflow_dir, "results/tiny/report", "--cores", "2", "--configfile", "tiny.yaml", *configs))
    return json.loads((workflow_dir / "results" / "tiny" / "report" / "index.json").read_text())


def test_removed_exemplar_count_leaves_the_report(workflow_dir):
    (workflow_dir / "small.yaml").write_text(SMALL)
    res = workflow_dir / "results" / "tiny"
    figures = _report(workflow_dir, "small.yaml")
    files = {f["file"] for f in figures}
    captions = {f["file"]: f["caption"] for f in figures}
    assert {"exemplars_n2.png", "exemplars_n3.png", "loss_solo_exemplar_n3_round0.png"} <= files
    assert "exemplar_n3 r0" in captions["masks_1.png"]  # its predictions are a panel of the mask strips
    # Free Mask, freesolo, exemplar_n2 and exemplar_n3 round 0: one bar each
    assert "of 4 instance stages" in captions["metrics_instance.png"]

    (workflow_dir / "fewer.yaml").write_text("exemplar: {counts: [2]}\n")
    figures = _report(workflow_dir, "small.yaml", "fewer.yaml")
    # exemplar_n3's files are still in the results folder ...
    for path in ("exemplar/n3/pool", "solo/exemplar_n3/round0/index.parquet", "solo/exemplar_n3/round0/loss.csv",
                 "eval/exemplar_n3/round0/metrics.parquet"):
        assert (res / path).exists(), path
    # ... but the report, like the metrics table, no longer shows it
    assert "exemplar_n3" not in (res / "tables" / "metrics.md").read_text()
    assert not [f for f in figures if "n3" in f["file"] or "exemplar_n3" in f["caption"]], figures
    assert {"exemplars_n2.png", "loss_solo_exemplar_n2_round0.png"} <= {f["file"] for f in figures}
    captions = {f["file"]: f["caption"] for f in figures}
    assert "exemplar_n2 r0" in captions["masks_1.png"]
    assert "of 3 instance stages" in captions["metrics_instance.png"]  # no exemplar_n3 metric bar
    pngs = sorted(p.name for p in (res / "report").iterdir() if p.suffix == ".png")
    assert pngs == sorted(f["file"] for f in figures)
