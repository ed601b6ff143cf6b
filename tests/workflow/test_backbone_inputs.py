"""stego.backbone set to a checkpoint path and freemask.backbone to named weights (their file already in the
weights cache, so nothing is fetched), both tiny randomly initialised ViTs in DINO's key layout: `snakemake
-n` shows the STEGO and Free Mask rules taking those files as their backbone input and no pretrain job
(nothing else needs it for these targets); then the tiny config runs them: STEGO trains its few steps on the
ViT's tokens and is scored beside k-means on the same features, and Free Mask extracts masks from them."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from maskless.models.vit import build_vit

from .conftest import snakemake

pytestmark = pytest.mark.workflow


def _jobs(out: str) -> dict[str, str]:
    """rule name -> its `input:` line, from snakemake's dry-run listing."""
    jobs, rule = {}, None
    for line in out.splitlines():
        if line.startswith(("rule ", "checkpoint ")):
            rule = line.split()[1].rstrip(":")
        elif rule and line.strip().startswith("input:"):
            jobs[rule] = line.strip().removeprefix("input:").strip()
        elif rule and not line.strip():
            jobs.setdefault(rule, "")
    return jobs


def test_a_backbone_path_is_the_rules_input(workflow_dir):
    vit = build_vit(patch_size=8, dim=32, depth=1, pos_grid=4)
    torch.save({"module." + k: v for k, v in vit.state_dict().items()}, workflow_dir / "dino_vit.pth")
    (workflow_dir / "weights").mkdir()
    torch.save(vit.state_dict(), workflow_dir / "weights" / "dino_vitbase8_pretrain.pth")  # dino_vitb8's file
    (workflow_dir / "vit.yaml").write_text("stego: {backbone: dino_vit.pth, layer: tokens}\n"
                                           "freemask: {backbone: dino_vitb8, feature_level: tokens}\n")
    targets = ["results/tiny/stego/model.pt", "results/tiny/eval/stego/metrics.parquet",
               "results/tiny/freemask/train/shards/0.zarr"]
    proc = snakemake(workflow_dir, *targets, "-n", "--cores", "1", "--configfile", "tiny.yaml", "vit.yaml")
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = _jobs(proc.stdout + proc.stderr)
    files = {"stego_train": "dino_vit.pth", "stego_eval": "dino_vit.pth",
             "freemask_shard": "weights/dino_vitbase8_pretrain.pth"}
    for rule, path in files.items():
        assert path in jobs[rule].split(", "), (rule, jobs.get(rule))
        assert "pretrain/backbone.pt" not in jobs[rule]
    assert "pretrain" not in jobs  # (the default, stego.backbone: pretrain, runs in test_workflow.py)

    proc = snakemake(workflow_dir, *targets, "--cores", "2", "--configfile", "tiny.yaml", "vit.yaml")
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = workflow_dir / "results" / "tiny"
    ckpt = torch.load(res / "stego" / "model.pt", map_location="cpu", weights_only=True)
    assert ckpt["params"]["features"]["layer"] == "tokens" and ckpt["params"]["steps"] == 3
    rows = pq.read_table(res / "eval" / "stego" / "metrics.parquet").to_pylist()
    assert {("kmeans", ""), ("stego", "cluster")} <= {(r["method"], r["variant"]) for r in rows}
    assert (res / "freemask" / "train" / "shards" / "0.zarr").is_dir() and not (res / "pretrain").exists()
