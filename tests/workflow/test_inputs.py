"""The workflow's view of its inputs (issue 17): a changed image set or annotation file reruns ingest and what
follows, an unchanged one reruns nothing, and the image-count checks stop a run before any job."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from .conftest import snakemake

pytestmark = pytest.mark.workflow
MANIFEST = "results/{}/data/train/manifest.parquet"


def _ok(proc):
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def _photo(path, seed):
    img = (np.random.default_rng(seed).random((24, 32, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(path), img)


def _planned(workdir, *configs, target):
    """The rules `snakemake -n` would run for `target` (empty when nothing is to be done)."""
    proc = _ok(snakemake(workdir, target, "-n", "--cores", "1", "--configfile", "tiny.yaml", *configs))
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return []
    return sorted({line.split()[0] for line in out.splitlines() if line.startswith(("ingest ", "ingest\t"))}) or [out]


def test_changed_folder_and_annotations_rerun_ingest(workflow_dir):
    photos = workflow_dir / "photos"
    photos.mkdir()
    for i in range(4):
        _photo(photos / f"p{i}.png", i)
    (workflow_dir / "folder.yaml").write_text(
        f"experiment: photos\ndataset: {{kind: folder, name: photos, images: {photos}}}\n")
    target = MANIFEST.format("photos")
    _ok(snakemake(workflow_dir, target, "--cores", "1", "--configfile", "tiny.yaml", "folder.yaml"))
    assert _planned(workflow_dir, "folder.yaml", target=target) == []  # nothing changed: nothing reruns
    _photo(photos / "p4.png", 4)
    _photo(photos / "p5.png", 5)
    assert _planned(workflow_dir, "folder.yaml", target=target) == ["ingest"]
    _ok(snakemake(workflow_dir, target, "--cores", "1", "--configfile", "tiny.yaml", "folder.yaml"))
    import pyarrow.parquet as pq

    assert pq.read_metadata(workflow_dir / target).num_rows == 6
    assert _planned(workflow_dir, "folder.yaml", target=target) == []

    # A COCO dataset whose instances JSON is cut down in place after a finished run.
    syn = workflow_dir / "data" / "synthetic" / "tiny"
    _ok(snakemake(workflow_dir, "data/synthetic/tiny/instances.json", "--cores", "1", "--configfile", "tiny.yaml"))
    coco = json.loads((syn / "instances.json").read_text())
    ann = workflow_dir / "ann.json"
    ann.write_text(json.dumps(coco))
    (workflow_dir / "coco.yaml").write_text(
        f"experiment: cocox\ndataset: {{kind: coco, name: cocox, images: {syn / 'images'}, annotations: {ann}}}\n")
    target = MANIFEST.format("cocox")
    _ok(snakemake(workflow_dir, target, "--cores", "1", "--configfile", "tiny.yaml", "coco.yaml"))
    assert _planned(workflow_dir, "coco.yaml", target=target) == []
    coco["annotations"] = coco["annotations"][: len(coco["annotations"]) // 2]
    ann.write_text(json.dumps(coco))
    assert _planned(workflow_dir, "coco.yaml", target=target) == ["ingest"]
    _ok(snakemake(workflow_dir, target, "--cores", "1", "--configfile", "tiny.yaml", "coco.yaml"))
    gt = json.loads((workflow_dir / "results" / "cocox" / "data" / "train" / "instances_gt.json").read_text())
    assert len(gt["annotations"]) == len(coco["annotations"])


def test_image_count_checks_stop_before_any_job(workflow_dir):
    # tiny.yaml: 8 synthetic images, stego.knn_k 3, exemplar counts [2].
    (workflow_dir / "few.yaml").write_text("synthetic: {num_images: 3}\nexemplar: {counts: [2, 5]}\n")
    proc = snakemake(workflow_dir, "-n", "--configfile", "tiny.yaml", "few.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "'stego.knn_k' (3) needs at least knn_k + 1 = 4 images" in out
    assert "'exemplar.counts': 5 exemplars asked for but the dataset has 3 images" in out
    assert "2 exemplars" not in out


def test_experiment_wildcard_is_the_configs(workflow_dir):
    """results/<other experiment>/... is not this config's to make (issue 13): no rule matches it."""
    proc = snakemake(workflow_dir, MANIFEST.format("other"), "-n", "--configfile", "tiny.yaml")
    assert proc.returncode != 0 and "No rule to produce results/other/data/train/manifest.parquet" in proc.stderr + proc.stdout
    _ok(snakemake(workflow_dir, MANIFEST.format("tiny"), "-n", "--configfile", "tiny.yaml"))
