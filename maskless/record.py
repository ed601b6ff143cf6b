"""Reproducibility records.

- Per output: `maskless.stage_utils.begin` writes `<output>.params.json` holding the rule, wildcards,
  params, the resolved config and seed, the git commit of the code (`git_state`), package versions, host
  and device (`environment`).
- Per run: `write_run_record(results/<experiment>)` (the Snakefile's `onsuccess`) gathers every rule's wall
  time and peak memory from Snakemake's `benchmark:` files (`benchmark_rows`) and the devices the jobs
  computed on (`job_devices`, from their sidecars) with the main process's environment into
  `results/<experiment>/record.json`.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path

from maskless.io import write_json_atomic

PACKAGES = ("torch", "numpy", "snakemake", "zarr", "pycocotools", "opencv-python-headless", "pyarrow", "scipy",
            "pyyaml", "jsonschema")
REPO = Path(__file__).resolve().parents[1]


def package_versions() -> dict[str, str | None]:
    """Installed version of each of PACKAGES (None when absent)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(path: str | os.PathLike = REPO) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the git checkout holding `path` (None outside one)."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def device_info() -> dict:
    """CPU count, and torch's devices and threads when this process has imported torch (a stage that computes
    with it always has, before maskless.stage_utils.begin runs). A process that does not use torch - the
    Snakemake main process, the table, index and evaluation stages - records no torch devices: importing
    torch only to describe them cost 1.3 s per job and per `snakemake` call."""
    info: dict = {"cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is None:
        return info | {"torch": "not imported by this process"}
    cuda = torch.cuda.is_available()
    return info | {"cuda": cuda, "cuda_devices": [torch.cuda.get_device_name(i) for i in
                                                  range(torch.cuda.device_count())] if cuda else [],
                   "torch_cuda": torch.version.cuda, "torch_threads": torch.get_num_threads()}


def environment() -> dict:
    """Python, platform, host, package versions, git state and devices of this process."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "host": platform.node(),
            "packages": package_versions(), "git": git_state(), "device": device_info()}


def job_devices(results: str | os.PathLike) -> list[dict]:
    """The distinct (host, device) pairs the jobs recorded in their `<output>.params.json` sidecars (the
    devices the stages computed on: on a cluster not the submitting host's), each with its rules."""
    seen: dict[str, dict] = {}
    for sidecar in sorted(Path(results).rglob("*.params.json")):
        try:
            rec = json.loads(sidecar.read_text())
            env, rule = rec["environment"], rec["rule"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a stage's sidecar, or one being rewritten: the record is a summary
        device = env.get("device") or {}
        if "torch" in device:  # a stage that did not compute with torch
            continue
        key = json.dumps([env.get("host"), device], sort_keys=True)
        entry = seen.setdefault(key, {"host": env.get("host"), "device": device, "rules": []})
        if rule not in entry["rules"]:
            entry["rules"].append(rule)
    return list(seen.values())


def benchmark_rows(results: str | os.PathLike) -> list[dict]:
    """One dict per job from <results>/benchmarks/**/*.tsv: job (path without .tsv), family (shard and
    per-id jobs together: freemask/3 -> freemask), seconds, max_rss_mb (None when Snakemake wrote NA)."""
    bench = Path(results) / "benchmarks"
    out = []
    for tsv in sorted(bench.rglob("*.tsv")):
        rel = tsv.relative_to(bench).with_suffix("")
        parts = list(rel.parts)
        parts[-1] = re.sub(r"_\d+$|^\d+$", "", parts[-1])
        family = "/".join(p for p in parts if p)
        with open(tsv) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                rss = row.get("max_rss", "NA")
                out.append({"job": rel.as_posix(), "family": family, "seconds": float(row["s"]),
                            "max_rss_mb": None if rss in ("NA", "", None) else float(rss)})
    return out


def family_totals(rows: list[dict]) -> dict[str, dict]:
    """family -> {"jobs", "seconds" (sum), "max_rss_mb" (largest)}."""
    acc: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
    for r in rows:
        a = acc[r["family"]]
        a["jobs"] += 1
        a["seconds"] += r["seconds"]
        a["max_rss_mb"] = max(a["max_rss_mb"], r["max_rss_mb"] or 0.0)
    return dict(acc)


def write_run_record(results: str | os.PathLike, config: dict) -> Path:
    """results/<experiment>/record.json: config, seed, environment, and each job's wall time and peak memory."""
    rows = benchmark_rows(results)
    out = Path(results) / "record.json"
    write_json_atomic(out, {"written": time.strftime("%Y-%m-%dT%H:%M:%S"), "seed": config.get("seed"),
                            "config": config, "environment": environment(),
                            "job_devices": job_devices(results), "jobs": rows,
                            "families": family_totals(rows),
                            "total_seconds": round(sum(r["seconds"] for r in rows), 3)}, indent=1)
    return out
