"""Several training seeds from one config (config `seeds`): each seed's run under results/<exp>/seed<k>/ with
its own seed, one generated dataset, the oracle variant's ground-truth masks and the claims table."""

from __future__ import annotations

import pytest
import torch

from .conftest import snakemake

pytestmark = pytest.mark.workflow


def _ok(proc):
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def test_seed_runs_share_the_data_and_differ_by_seed(workflow_dir):
    (workflow_dir / "seeds.yaml").write_text("experiment: s\nseeds: [1, 2]\noracles: true\n")
    cfg = ("--configfile", "tiny.yaml", "seeds.yaml")
    plan = _ok(snakemake(workflow_dir, "-n", "--cores", "1", *cfg)).stdout
    assert "results/s/tables/claims.md" in plan and "results/s/seed2/data/train/manifest.parquet" in plan
    assert plan.count("rule synthetic:") == 1  # one dataset for both seeds
    # PCT's oracle: the strong-only net with every training image labelled, scored for the claims table
    assert "results/s/seed2/eval/pct/ratio1/oracle/metrics.parquet" in plan
    assert "results/s/seed2/pct/ratio1/plain/strong_only/model.pt" in plan
    backbones = [f"results/s/seed{k}/pretrain/backbone.pt" for k in (1, 2)]
    oracle = "results/s/seed1/data/gt_masks/index.parquet"
    _ok(snakemake(workflow_dir, *backbones, oracle, "--cores", "2", *cfg))
    weights = [torch.load(workflow_dir / p, weights_only=True) for p in backbones]
    first = next(k for k, v in weights[0]["state_dict"].items() if v.is_floating_point())
    assert not torch.equal(weights[0]["state_dict"][first], weights[1]["state_dict"][first])  # seed 1 vs seed 2
    log = (workflow_dir / "results/s/seed2/logs/pretrain.log").read_text()
    assert "'seed': 2" in log
    assert (workflow_dir / oracle).is_file()
    # the oracle SOLO variant trains on those masks; the plain experiment is not one of this config's runs
    plan = _ok(snakemake(workflow_dir, "-n", "--cores", "1", "results/s/seed1/solo/oracle/round0/model.pt", *cfg)).stdout
    assert "rule solo_train:" in plan and oracle in plan.split("rule solo_train:")[1].split("\n\n")[0]
    assert snakemake(workflow_dir, "-n", "--cores", "1", "results/s/pretrain/backbone.pt", *cfg).returncode != 0
