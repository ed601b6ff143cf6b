"""Coarse-mask extractors behind one interface (issue 13 item 3): a second extractor is one module, one rule
file and one entry in the Snakefile's EXTRACTORS, and the shared rules give it everything else.

The test extractor (tests/workflow/extractor/colorcc.py: connected components of a colour quantisation) is
added to a private copy of the workflow by exactly those three changes; the run then indexes and exports its
masks, scores them (instance metrics, mask quality) and trains SOLO round 0 on them (solo.masks: colorcc).
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from .conftest import REPO, WORKFLOW_FILES, snakemake
from .extractor.colorcc import color_components

pytestmark = pytest.mark.workflow
HERE = Path(__file__).parent / "extractor"


def test_color_components_by_hand():
    img = np.zeros((8, 10, 3), np.uint8)
    img[1:4, 1:4] = (250, 10, 10)  # a red 3x3 square: one component of 9 px, filling its box
    img[5:7, 2:9] = (10, 250, 10)  # a green 2x7 bar: 14 px
    img[5, 8] = (10, 10, 250)  # one blue pixel inside the bar's box: below min_area
    masks, scores = color_components(img, levels=4, min_area=9, max_fraction=0.5)
    # the black background (80 - 9 - 14 px = 57 > 40 = half the image) is dropped as too large
    assert sorted(int(m.sum()) for m in masks) == [9, 13]
    by_size = {int(m.sum()): s for m, s in zip(masks, scores)}
    assert by_size[9] == pytest.approx(1.0) and by_size[13] == pytest.approx(13 / 14)


def _files(root: Path) -> dict[str, str]:
    out = {}
    for name in WORKFLOW_FILES:
        for p in sorted((root / name).rglob("*")) if (root / name).is_dir() else [root / name]:
            if p.is_file() and "__pycache__" not in p.parts:
                out[p.relative_to(root).as_posix()] = p.read_text(errors="replace")
    return out


def test_a_new_extractor_is_one_module_one_rule_file_one_entry(workflow_dir):
    shutil.copy2(HERE / "colorcc.py", workflow_dir / "rules" / "colorcc.py")
    shutil.copy2(HERE / "colorcc.smk", workflow_dir / "rules" / "colorcc.smk")
    snakefile = workflow_dir / "Snakefile"
    text = snakefile.read_text()
    entry = 'EXTRACTORS = {"freemask": "rules/freemask.smk"}'
    assert text.count(entry) == 1
    snakefile.write_text(text.replace(entry, entry[:-1] + ', "colorcc": "rules/colorcc.smk"}'))

    # The change against the repo's workflow: two new files and one changed line.
    before, after = _files(REPO), _files(workflow_dir)
    assert sorted(set(after) - set(before)) == ["rules/colorcc.py", "rules/colorcc.smk"]
    changed = [k for k in before if before[k] != after[k]]
    assert changed == ["Snakefile"]
    diff = [d for d in difflib.ndiff(before["Snakefile"].splitlines(), after["Snakefile"].splitlines())
            if d[:1] in "+-"]
    assert len(diff) == 2 and "colorcc" in diff[1], diff

    # SOLO's batches from a spawned worker process here: a Snakemake stage script must not re-run in it
    (workflow_dir / "cc.yaml").write_text("solo: {masks: colorcc, num_workers: 1}\nexemplar: {counts: []}\n"
                                          "selftrain: {rounds: 0}\nstego: {enabled: false}\n"
                                          "pct: {enabled: false}\nreport: {enabled: false}\n")
    cfg = ("--configfile", "tiny.yaml", "cc.yaml")
    targets = ["results/tiny/eval/colorcc/metrics.parquet", "results/tiny/eval/masks/colorcc.json",
               "results/tiny/solo/freesolo/round0/model.pt"]
    plan = snakemake(workflow_dir, *targets, "-n", "--cores", "2", *cfg)
    assert plan.returncode == 0, plan.stderr[-4000:]
    out = plan.stdout + plan.stderr
    # SOLO round 0 trains on the extractor config solo.masks names
    job = re.search(r"rule solo_train:\n(.*?)\n\n", out, re.S).group(1)
    assert "results/tiny/colorcc/train/index.parquet" in job and "freemask" not in job, job
    proc = snakemake(workflow_dir, *targets, "--cores", "2", *cfg)
    assert proc.returncode == 0, proc.stderr[-6000:]

    res = workflow_dir / "results" / "tiny"
    assert sorted(p.name for p in (res / "colorcc" / "train" / "shards").iterdir()) == ["0.zarr", "1.zarr"]
    index = pq.read_table(res / "colorcc" / "train" / "index.parquet")
    assert index.num_rows > 0 and len(json.loads((res / "colorcc" / "train" / "results.json").read_text())) > 0
    rows = pq.read_table(res / "eval" / "colorcc" / "metrics.parquet").to_pylist()
    assert {(r["iou_type"], r["metric"]) for r in rows} >= {("segm", "AP"), ("segm", "AR100")}
    quality = json.loads((res / "eval" / "masks" / "colorcc.json").read_text())
    assert quality and "colorcc" in json.dumps(quality)
    assert (res / "solo" / "freesolo" / "round0" / "model.pt").exists()
    train_log = res / "logs" / "solo" / "freesolo" / "round0" / "train.log"
    assert "batches from 1 worker processes" in train_log.read_text()
    assert not (res / "freemask").exists()  # nothing here needed Free Mask


def test_an_unknown_mask_source_is_a_clear_error(workflow_dir):
    (workflow_dir / "bad.yaml").write_text("solo: {masks: maskcut}\n")
    proc = snakemake(workflow_dir, "-n", "--cores", "1", "--configfile", "tiny.yaml", "bad.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config solo.masks: 'maskcut' is not a coarse-mask extractor" in out and "['freemask']" in out, out
