"""The whole DAG on the tiny synthetic config, on CPU: outputs, metrics, caching, config errors."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
import torch

from .conftest import snakemake

pytestmark = pytest.mark.workflow


def _ok(proc):
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def test_whole_dag_runs_and_caches(workflow_dir):
    _ok(snakemake(workflow_dir, "--cores", "2", "--configfile", "tiny.yaml"))
    res = workflow_dir / "results" / "tiny"

    manifest = pq.read_table(res / "data" / "train" / "manifest.parquet").to_pylist()
    assert [r["id"] for r in manifest] == list(range(1, 9))

    # 8 images in shards of 4: two shard stores, one index over both.
    assert sorted(p.name for p in (res / "freemask" / "train" / "shards").iterdir()) == ["0.zarr", "1.zarr"]
    index = pq.read_table(res / "freemask" / "train" / "index.parquet")
    results = json.loads((res / "freemask" / "train" / "results.json").read_text())
    assert len(results) == index.num_rows
    assert all("bbox" not in r for r in results)

    rows = pq.read_table(res / "eval" / "freemask" / "metrics.parquet").to_pylist()
    got = {(r["iou_type"], r["metric"]) for r in rows}
    for iou in ("segm", "bbox"):
        for m in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"):
            assert (iou, m) in got
    assert {(r["method"], r["variant"], r["round"], r["budget"], r["mode"], r["seed"]) for r in rows} == {
        ("freemask", "", 0, "", "", 0)}
    assert "freemask" in (res / "tables" / "metrics.md").read_text()

    # SOLO round 0 on the Free Mask masks, then one self-training round on its relabelled predictions, for
    # FreeSOLO and for Exemplar-FreeSOLO with a pool mined from 2 exemplar images (tiny.yaml).
    for variant in ("freesolo", "exemplar_n2"):
        for r in (0, 1):
            solo = res / "solo" / variant / f"round{r}"
            assert (solo / "model.pt").exists() and (solo / "loss.csv").exists()
            assert sorted(p.name for p in (solo / "pred" / "train" / "shards").iterdir()) == ["0.zarr", "1.zarr"]
            rows = pq.read_table(res / "eval" / variant / f"round{r}" / "metrics.parquet").to_pylist()
            want = ("freesolo", "") if variant == "freesolo" else ("exemplar", "2")
            assert {(x["method"], x["variant"], x["round"]) for x in rows} == {(*want, r)}
        labels = res / "solo" / variant / "round1" / "labels"
        assert sorted(p.name for p in labels.iterdir()) == ["0.zarr", "1.zarr"]
        assert not (res / "solo" / variant / "round0" / "labels").exists()  # round 0: the Free Mask masks
    assert "loss_eec" in (res / "solo" / "exemplar_n2" / "round0" / "loss.csv").read_text().splitlines()[0]
    assert "loss_eec" not in (res / "solo" / "freesolo" / "round0" / "loss.csv").read_text()
    assert (res / "exemplar" / "n2" / "pool" / "exemplars.parquet").exists()
    # STEGO: the probes with and without CRF and the k-means baseline, as semantic rows.
    rows = pq.read_table(res / "eval" / "stego" / "metrics.parquet").to_pylist()
    assert {(x["method"], x["variant"], x["mode"], x["metric"]) for x in rows} == {
        (*s, m) for s in (("constant", "", ""), ("kmeans", "", ""), ("stego", "cluster", "plain"),
                          ("stego", "cluster", "crf"), ("stego", "linear", "plain"), ("stego", "linear", "crf"))
        for m in ("mIoU", "Acc", "obj_mIoU", "obj_Acc")}
    assert all(0.0 <= x["value"] <= 100.0 for x in rows)
    assert {x["metric"]: x["value"] for x in rows if x["method"] == "constant"}["obj_mIoU"] == 0.0
    # The quality of the masks each round trains on: Free Mask's and each relabel round's.
    quality = (res / "tables" / "mask_quality.md").read_text()
    assert [line.split(" | ")[0] for line in quality.splitlines()[2:]] == [
        "| freemask", "| freesolo_round1", "| exemplar_n2_round1"]
    assert json.loads((res / "eval" / "masks" / "freemask.json").read_text())["masks"] == index.num_rows
    ckpt = torch.load(res / "stego" / "model.pt", map_location="cpu", weights_only=True)
    assert ckpt["params"]["features"]["layer"] == "res3" and ckpt["params"]["features"]["input_size"] == 64
    table = (res / "tables" / "metrics.md").read_text()
    assert "### semantic" in table and "| tiny | stego_cluster | 0 |" in table
    for line in ("| tiny | freesolo | 0 |", "| tiny | freesolo | 1 |", "| tiny | exemplar_n2 | 1 |"):
        assert line in table
    # PCT at label ratio 0.5 without and with Contextrast: the baseline, the pair, pseudo labels of the weak
    # images (8 images: 2 held out, 3 strong, 3 weak), the retrain, and one row per model in the ratio table.
    split = json.loads((res / "pct" / "ratio0.5" / "split.json").read_text())
    assert [len(split[k]) for k in ("eval", "strong", "weak")] == [2, 3, 3]
    for mode in ("plain", "ctr"):
        base = res / "pct" / "ratio0.5" / mode
        assert sorted(p.name for p in (base / "pseudo").glob("*.png")) == sorted(f"{i}.png" for i in split["weak"])
        assert ("ctr_nce" in (base / "retrain" / "loss.csv").read_text().splitlines()[0]) == (mode == "ctr")
        rows = pq.read_table(res / "eval" / "pct" / "ratio0.5" / mode / "metrics.parquet").to_pylist()
        assert {(x["method"], x["variant"], x["budget"], x["mode"]) for x in rows} == {
            ("pct", m, "0.5", mode) for m in ("strong_only", "pct_hybrid", "pct_pseudo", "pct_labels", "pct_retrain")}
        assert f"| tiny | pct_retrain | {'yes' if mode == 'ctr' else 'no'} | synthetic-tiny |" in table
    assert "### semi/weak mIoU per label ratio" in table
    paper = res / "tables" / "paper"
    assert sorted(p.name for p in paper.glob("*.*") if not p.name.startswith(".")) == sorted(
        f"{t}.{f}" for t in ("instance_segm", "instance_bbox", "semantic", "semi") for f in ("md", "csv", "tex"))
    assert "PCT retrained + Contextrast" in (paper / "semi.tex").read_text()
    # The run record (Snakefile onsuccess): config, environment and every job's wall time and peak memory.
    record = json.loads((res / "record.json").read_text())
    assert record["seed"] == 0 and record["config"]["experiment"] == "tiny" and record["environment"]["git"]
    assert {"pretrain", "solo_train"} <= {r for d in record["job_devices"] for r in d["rules"]}
    assert {d["device"]["cuda"] for d in record["job_devices"]} == {False}  # the jobs' own devices
    assert {"pretrain", "pct/ratio0.5/ctr/pct"} <= set(record["families"])
    params = json.loads((res / "pretrain" / "backbone.pt.params.json").read_text())
    assert params["config"]["pretrain"]["steps"] == 4 and params["environment"]["packages"]["torch"]
    # Report figures (last job of the run), then the self-contained HTML report from the finished run.
    figures = json.loads((res / "report" / "index.json").read_text())
    assert {f["category"] for f in figures} == {"masks", "semantic", "losses", "metrics", "exemplars"}
    assert all((res / "report" / f["file"]).is_file() for f in figures)
    _ok(snakemake(workflow_dir, "--cores", "1", "--configfile", "tiny.yaml", "--report", "report.html"))
    html = (workflow_dir / "report.html").read_text()
    assert "masks_1.png" in html and "metrics_semi.png" in html
    assert not re.search(r'(src|href)="https?://', html)  # opens with no network

    # A finished run has nothing left to do (Snakemake owns caching).
    dry = _ok(snakemake(workflow_dir, "-n", "--cores", "2", "--configfile", "tiny.yaml"))
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # Changing a Free Mask param reruns Free Mask and what follows, not pretraining.
    (workflow_dir / "change.yaml").write_text("freemask:\n  top_k: 5\n")
    dry = _ok(snakemake(workflow_dir, "-n", "--cores", "2", "--configfile", "tiny.yaml", "change.yaml"))
    out = dry.stdout + dry.stderr
    assert "freemask_shard" in out and "rule pretrain:" not in out

    # Changing a relabel filter reruns the self-training round, not round 0.
    (workflow_dir / "relabel.yaml").write_text("selftrain:\n  max_per_image: 5\n")
    dry = _ok(snakemake(workflow_dir, "-n", "--cores", "2", "--configfile", "tiny.yaml", "relabel.yaml"))
    out = dry.stdout + dry.stderr
    assert "selftrain_relabel" in out and "solo/freesolo/round1/model.pt" in out
    assert re.search(r"^solo_train\s+2$", out, re.M), out  # round 1 of both variants: round 0 is untouched

    # The report draws what the DAG gives it (report_inputs in rules/common.smk), never what lies in the
    # results folder: a variant the config no longer runs leaves the report, though its files stay on disk.
    assert {"exemplars_n2.png", "loss_solo_exemplar_n2_round0.png"} <= {f["file"] for f in figures}
    assert any("exemplar_n2" in f["caption"] for f in figures)
    (workflow_dir / "fewer.yaml").write_text("exemplar: {counts: []}\n")
    _ok(snakemake(workflow_dir, "results/tiny/report", "--cores", "2", "--configfile", "tiny.yaml", "fewer.yaml"))
    for path in ("exemplar/n2/pool", "solo/exemplar_n2/round1/pred/train/index.parquet", "eval/exemplar_n2/round0/metrics.parquet"):
        assert (res / path).exists(), path
    assert "exemplar_n2" not in (res / "tables" / "metrics.md").read_text()
    figures = json.loads((res / "report" / "index.json").read_text())
    assert not [f for f in figures if "n2" in f["file"] or "exemplar_n2" in f["caption"]], figures
    assert "exemplars" not in {f["category"] for f in figures}
    pngs = sorted(p.name for p in (res / "report").iterdir() if p.suffix == ".png")
    assert pngs == sorted(f["file"] for f in figures)


def test_config_typo_stops_with_key_named(workflow_dir):
    (workflow_dir / "typo.yaml").write_text("pretrain:\n  stpes: 3\n")
    proc = snakemake(workflow_dir, "-n", "--configfile", "tiny.yaml", "typo.yaml")
    assert proc.returncode != 0
    assert "pretrain.stpes" in proc.stdout + proc.stderr


def test_image_folder_without_labels_gives_masks_and_no_eval(workflow_dir):
    """dataset.kind folder: no ground truth, so the DAG stops at the masks and their COCO exports."""
    import cv2
    import numpy as np

    photos = workflow_dir / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        img = (rng.random((48 + 8 * i, 64, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(photos / f"p{i}.png"), img)
    (workflow_dir / "folder.yaml").write_text(
        f"experiment: photos\ndataset: {{kind: folder, name: photos, images: {photos}}}\n"
        # Noise images have no foreground for GrabCut: an exemplar pool would be empty (a clear error).
        "exemplar: {counts: []}\n")
    cfg = ("--configfile", "tiny.yaml", "folder.yaml")
    # The whole DAG plans no evaluation and no ground truth; the masks, their export and STEGO are run.
    plan = _ok(snakemake(workflow_dir, "-n", "--cores", "1", *cfg)).stdout
    assert "rule solo_train:" in plan and "rule masks_index:" in plan and "rule stego_train:" in plan, plan
    assert "rule eval_" not in plan and "rule stego_eval:" not in plan and "instances_gt" not in plan, plan
    _ok(snakemake(workflow_dir, "results/photos/freemask/train/annotations.json", "results/photos/stego/model.pt",
                  "--cores", "2", *cfg))
    res = workflow_dir / "results" / "photos"
    assert [r["id"] for r in pq.read_table(res / "data" / "train" / "manifest.parquet").to_pylist()] == [1, 2, 3, 4, 5]
    assert (res / "freemask" / "train" / "annotations.json").exists()
    assert not (res / "data" / "train" / "instances_gt.json").exists() and not (res / "eval").exists()
    # STEGO trains without labels; its linear probe (an evaluation probe) is skipped with the reason logged.
    assert (res / "stego" / "model.pt").exists()
    assert "linear probe skipped" in (res / "logs" / "stego" / "train.log").read_text()


def test_training_rules_run_data_parallel(workflow_dir):
    """train_processes: 2 on CPU: the pretrain and SOLO rules each spawn two Gloo processes through their stage
    scripts (maskless.dist.launch), rank 0 writes the weights and appends its progress to the rule's log, and
    the pair's parameters are recorded equal at the end."""
    target = "results/tiny/solo/freesolo/round0/model.pt"
    _ok(snakemake(workflow_dir, target, "--cores", "2", "--config", "train_processes=2", "--configfile",
                  "tiny.yaml"))
    logs = workflow_dir / "results" / "tiny" / "logs"
    for log, weights in ((logs / "pretrain.log", "pretrain/backbone.pt"),
                         (logs / "solo" / "freesolo" / "round0" / "train.log", "solo/freesolo/round0/model.pt")):
        text = log.read_text()
        assert "training on 2 processes (gloo backend)" in text, text[-2000:]
        assert "2 processes" in text and re.search(r"step \d+/\d+", text), text[-2000:]
        assert (workflow_dir / "results" / "tiny" / weights).exists()
    assert torch.load(workflow_dir / target, weights_only=True)["params"]["steps"] == 3
