"""A separate evaluation set (dataset.eval): train on unlabeled image folders, score on a COCO-format set.

The FreeSOLO protocol in miniature (train2017 + unlabeled2017 -> val2017): the training images are two
unlabeled folders of synthetic images, the evaluation set other synthetic images with their COCO JSON.
Kept small (4 training images in one shard, 8 evaluation images in two shards, FreeSOLO round 0 only;
self-training and an exemplar variant as a dry run) so it adds well under a minute to the workflow tests.
"""

from __future__ import annotations

import json
import re
import shutil

import pyarrow.parquet as pq
import pytest

from maskless.data.synthetic import SyntheticParams, generate

from .conftest import snakemake

pytestmark = pytest.mark.workflow


def _ok(proc):
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


EVAL_YAML = """\
experiment: tiny-eval
dataset:
  kind: folder
  name: tiny-train
  images: [unlabeled/train, unlabeled/extra]
  eval: {name: tiny-val, images: val/images, annotations: val/instances.json}
selftrain: {rounds: 0}
exemplar: {counts: []}
stego: {enabled: false}
report: {enabled: false}
"""


def test_eval_set_predicts_and_scores_on_its_own_images(workflow_dir):
    # The evaluation set: 8 synthetic images with their COCO JSON. The training set: 4 other synthetic
    # images (another seed) in two unlabeled folders, read as one dataset.
    tiny = {"height": 64, "width": 64, "objects_per_image": (1, 3)}
    generate(str(workflow_dir / "val"), SyntheticParams(num_images=8, seed=0, **tiny))
    generate(str(workflow_dir / "unlabeled"), SyntheticParams(num_images=4, seed=1, **tiny))
    for folder, ids in (("train", (1, 2)), ("extra", (3, 4))):
        (workflow_dir / "unlabeled" / folder).mkdir()
        for i in ids:
            shutil.move(workflow_dir / "unlabeled" / "images" / f"{i:06d}.png", workflow_dir / "unlabeled" / folder)
    (workflow_dir / "eval.yaml").write_text(EVAL_YAML)
    _ok(snakemake(workflow_dir, "--cores", "2", "--configfile", "tiny.yaml", "eval.yaml"))
    res = workflow_dir / "results" / "tiny-eval"

    # Training manifest: both folders, names relative to their common parent, ids 1..4; no training GT.
    rows = pq.read_table(res / "data" / "train" / "manifest.parquet").to_pylist()
    assert [(r["id"], r["file_name"], r["split"]) for r in rows] == [
        (1, "extra/000003.png", "train"), (2, "extra/000004.png", "train"),
        (3, "train/000001.png", "train"), (4, "train/000002.png", "train")]
    assert not (res / "data" / "train" / "instances_gt.json").exists()
    # Evaluation manifest and GT: the 8 COCO images with their own ids.
    rows = pq.read_table(res / "data" / "eval" / "manifest.parquet").to_pylist()
    assert [(r["id"], r["split"]) for r in rows] == [(i, "eval") for i in range(1, 9)]
    gt = json.loads((res / "data" / "eval" / "instances_gt.json").read_text())
    assert sorted(im["id"] for im in gt["images"]) == list(range(1, 9))

    # Free Mask on both sets (training masks feed SOLO; eval masks are scored): 1 training shard, 2 eval shards.
    assert sorted(p.name for p in (res / "freemask" / "train" / "shards").iterdir()) == ["0.zarr"]
    assert sorted(p.name for p in (res / "freemask" / "eval" / "shards").iterdir()) == ["0.zarr", "1.zarr"]
    # SOLO predicts on the evaluation images only: no self-training round relabels the training images here.
    solo = res / "solo" / "freesolo" / "round0" / "pred"
    assert sorted(p.name for p in (solo / "eval" / "shards").iterdir()) == ["0.zarr", "1.zarr"]
    results = json.loads((solo / "eval" / "results.json").read_text())
    assert {p["image_id"] for p in results} <= set(range(1, 9))
    assert sorted(p.name for p in solo.iterdir()) == ["eval"]

    # Every instance metric row names the evaluation set; the tables exist though the training set has no GT.
    for path, method in (("freemask", "freemask"), ("freesolo/round0", "freesolo")):
        rows = pq.read_table(res / "eval" / path / "metrics.parquet").to_pylist()
        assert rows and {(x["method"], x["round"], x["dataset"]) for x in rows} == {(method, 0, "tiny-val")}
        assert {(x["iou_type"], x["metric"]) for x in rows} >= {("segm", "AP"), ("bbox", "AR100")}
    table = (res / "tables" / "metrics.md").read_text()
    for line in ("| tiny-eval | freemask | 0 | tiny-val |", "| tiny-eval | freesolo | 0 | tiny-val |"):
        assert line in table
    assert not (res / "eval" / "stego").exists() and not (res / "pct").exists()

    dry = _ok(snakemake(workflow_dir, "-n", "--cores", "2", "--configfile", "tiny.yaml", "eval.yaml"))
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # A self-training round relabels the TRAINING images (round 0 predicts on them too), and the new round
    # and an exemplar variant each get their own evaluation-set predictions; Free Mask and round 0 are cached.
    (workflow_dir / "more.yaml").write_text("selftrain: {rounds: 1}\nexemplar: {counts: [2], rounds: 0}\n")
    dry = _ok(snakemake(workflow_dir, "-n", "--cores", "2", "--configfile", "tiny.yaml", "eval.yaml", "more.yaml"))
    out = dry.stdout + dry.stderr
    # One rule per step for both image sets (the {images} wildcard): 1 training + 4 evaluation prediction shards.
    for rule, count in (("solo_predict", 5), ("selftrain_relabel", 1), ("solo_index", 2), ("eval_solo", 2)):
        assert re.search(rf"^{rule}\s+{count}$", out, re.M), (rule, out)
    for path in ("solo/freesolo/round0/pred/train/shards/0.zarr", "solo/freesolo/round1/labels/0.zarr",
                 "solo/freesolo/round1/pred/eval/results.json", "solo/exemplar_n2/round0/pred/eval/results.json"):
        assert f"results/tiny-eval/{path}" in out, path
    assert "solo/freesolo/round1/pred/train" not in out and "rule freemask_shard:" not in out
