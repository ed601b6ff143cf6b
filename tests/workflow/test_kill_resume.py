"""A killed pretraining job resumes from its last checkpoint and ends with the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from .conftest import copy_workflow, snakemake

pytestmark = pytest.mark.workflow

TARGET = "results/tiny/pretrain/backbone.pt"
SLOW = "pretrain:\n  steps: 12\n  checkpoint_every: 2\n"


def _weights(workdir):
    return torch.load(workdir / TARGET, weights_only=True)["state_dict"]


def test_sigkill_then_rerun_gives_the_uninterrupted_weights(tmp_path):
    straight, killed = copy_workflow(tmp_path / "a"), copy_workflow(tmp_path / "b")
    for wd in (straight, killed):
        (wd / "slow.yaml").write_text(SLOW)
    args = [TARGET, "--cores", "1", "--configfile", "tiny.yaml", "slow.yaml"]

    proc = snakemake(straight, *args)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # Start the same run and kill the whole process group once a checkpoint exists (a job killed hard).
    state = killed / "results" / "tiny" / "_state" / "pretrain" / "densecl_last.pt"
    job = subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=killed, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not state.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.exists(), "no checkpoint appeared before the job ended"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (killed / TARGET).exists()

    # A hard kill of Snakemake itself leaves its lock: the documented recovery is --unlock, then a rerun.
    assert snakemake(killed, *args, "--unlock").returncode == 0
    proc = snakemake(killed, *args, "--rerun-incomplete")
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (killed / "results" / "tiny" / "logs" / "pretrain.log").read_text()
    assert "resum" in log.lower(), log[-2000:]

    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
