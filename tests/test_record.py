"""Reproducibility records (maskless.record, maskless.stage_utils.begin): every field present and right."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from maskless.record import benchmark_rows, environment, family_totals, git_state, job_devices, write_run_record
from maskless.stage_utils import begin

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(root, rel: str, seconds: float, rss: str) -> None:
    path = root / "benchmarks" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCH_HEADER + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t1\n")


def test_git_state_in_and_outside_a_checkout(tmp_path):
    state = git_state()
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and isinstance(state["dirty"], bool)
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_environment_names_versions_and_devices():
    import torch  # a process that computes with torch records its devices

    env = environment()
    assert torch.__version__.startswith(env["packages"]["torch"].split("+")[0])
    assert env["device"]["cuda"] == torch.cuda.is_available() and env["device"]["cpu_count"] >= 1
    assert env["device"]["torch_threads"] == torch.get_num_threads()
    assert env["python"].count(".") == 2 and env["git"]["commit"]


def test_a_process_without_torch_records_no_torch_devices_and_does_not_import_it():
    code = ("import json, sys; from maskless.record import environment; env = environment(); "
            "print(json.dumps([env['device'], 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    device, imported = json.loads(out)
    assert imported is False and device["torch"] == "not imported by this process" and "cuda" not in device


def _sidecar(path: Path, rule: str, host: str, device: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rule": rule, "environment": {"host": host, "device": device}}))


def test_job_devices_are_the_distinct_devices_of_the_jobs(tmp_path):
    gpu = {"cpu_count": 16, "cuda": True, "cuda_devices": ["H200"], "torch_cuda": "12.8", "torch_threads": 8}
    _sidecar(tmp_path / "pretrain" / "backbone.pt.params.json", "pretrain", "node1", gpu)
    _sidecar(tmp_path / "solo" / "a" / "model.pt.params.json", "solo_train", "node1", gpu)
    _sidecar(tmp_path / "solo" / "b" / "model.pt.params.json", "solo_train", "node2", gpu)
    _sidecar(tmp_path / "tables" / "metrics.md.params.json", "tables", "login", {"cpu_count": 4, "torch": "not imported by this process"})
    (tmp_path / "broken.params.json").write_text("{")  # half-written: skipped
    got = job_devices(tmp_path)
    assert got == [{"host": "node1", "device": gpu, "rules": ["pretrain", "solo_train"]},
                   {"host": "node2", "device": gpu, "rules": ["solo_train"]}]


def test_benchmark_rows_group_shard_jobs(tmp_path):
    _bench(tmp_path, "freemask/0.tsv", 2.0, "100.5")
    _bench(tmp_path, "freemask/1.tsv", 3.0, "150.0")
    _bench(tmp_path, "solo/freesolo/round0/pred_3.tsv", 1.5, "NA")
    _bench(tmp_path, "pretrain.tsv", 10.0, "800")
    rows = benchmark_rows(tmp_path)
    assert [r["job"] for r in rows] == ["freemask/0", "freemask/1", "pretrain", "solo/freesolo/round0/pred_3"]
    assert rows[-1]["max_rss_mb"] is None
    totals = family_totals(rows)
    assert totals["freemask"] == {"jobs": 2, "seconds": 5.0, "max_rss_mb": 150.0}
    assert totals["solo/freesolo/round0/pred"]["jobs"] == 1


def test_run_record_holds_every_field(tmp_path):
    _bench(tmp_path, "pretrain.tsv", 10.0, "800")
    path = write_run_record(tmp_path, {"seed": 7, "experiment": "x"})
    rec = json.loads(path.read_text())
    assert {"written", "seed", "config", "environment", "job_devices", "jobs", "families", "total_seconds"} <= set(rec)
    assert rec["seed"] == 7 and rec["config"]["experiment"] == "x" and rec["total_seconds"] == 10.0
    assert {"python", "platform", "host", "packages", "git", "device"} <= set(rec["environment"])


def test_begin_writes_params_config_and_environment_beside_the_output(tmp_path):
    out = tmp_path / "model.pt"
    smk = SimpleNamespace(log=[str(tmp_path / "x.log")], threads=1, params=SimpleNamespace(items=lambda: [("lr", 0.1)]),
                          rule="solo_train", wildcards=SimpleNamespace(items=lambda: [("round", "0")]),
                          output=[str(out)], config={"seed": 3, "solo": {"lr": 0.1}})
    assert begin(smk) == {"lr": 0.1}
    rec = json.loads((tmp_path / "model.pt.params.json").read_text())
    assert rec["rule"] == "solo_train" and rec["wildcards"] == {"round": "0"} and rec["params"] == {"lr": 0.1}
    assert rec["seed"] == 3 and rec["config"]["solo"] == {"lr": 0.1}
    assert rec["environment"]["git"]["commit"] and rec["environment"]["packages"]["numpy"]


@pytest.fixture(autouse=True)
def _restore_logging():
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
