"""Peak RSS of each rule of ingest -> Free Mask -> index + COCO export -> COCO eval, and of the STEGO k-means
baseline, on N tiny synthetic images (issue 17: memory must grow with the work in flight, not the dataset).

    .venv/bin/python bench/scale.py [--sizes 1000 5000 20000] [--quick] [--shard-size 64] [--work DIR]
                                    [--keep] [--mem-limit-gb 8] [--rules ingest freemask_shard ...]

Per N: the synthetic generator writes N images of 64x64 px (seed 1) and a random-init ResNet-18 checkpoint
(memory does not depend on the weights); then every measured step runs in a fresh child process, and its
peak RSS is the kernel's ru_maxrss of that child (os.wait4), imports included. The rules run their own
stage scripts (stages/*.py, taken from the tree whose `maskless` is imported, so PYTHONPATH=<old checkout>
measures old code) with a stand-in `snakemake` object holding the rule's inputs, outputs and params:

  ingest                  maskless.data.ingest.ingest, kind coco (the generator's images and instances.json),
                          what stages/ingest.py calls (a library call, so old and new checkouts run the same)
  freemask_shard          stages/freemask_shard.py on shard 0 (res3, input 64, shard_size images: one job)
  freemask_index          stages/mask_index.py: the index over all shards, COCO results and annotations
  eval_instances          stages/eval_instances.py on the results (pycocotools, segm and bbox)
  kmeans_baseline         maskless.stego.baseline.kmeans_baseline on seeded random (N, 128, 8, 8) features
                          (ResNet-18 res3 of a 64 px input) to (N, 64, 64) maps, K = 5: the k-means part of
                          rule stego_eval, which also holds the images and features of the whole set

Library rows break freemask_index down (build_index, export_coco results, export_coco annotations) and
`freemask (other shards)` runs the remaining shards' stage script one after another in one process (a leak
across shards would show there). Each child runs under an address-space limit (--mem-limit-gb) so a step
that would grow past it fails to allocate instead of pressing on a shared machine; it is reported as
"> limit". Prints a markdown table (peak MiB, and the growth over the child's RSS when its work started)
and the command; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

SIDE = 64  # image side in pixels
FEATURE_SHAPE = (128, 8, 8)  # ResNet-18 res3 of a 64 px input: the k-means baseline's input per image
# As the demo config, but min_maskness 0: random weights give low maskness, and the top_k = 20 masks per image
# that a trained backbone gives are the load the index, export and eval should carry.
FREEMASK = {"feature_level": "res3", "input_size": SIDE, "drop_top_fraction": 0.0, "min_maskness": 0.0}
RULES = ("synthetic", "ingest", "freemask_shard", "freemask_rest", "freemask_index", "build_index", "export_results",
         "export_annotations", "eval_instances", "kmeans_baseline")  # in the order they run
NEEDS = {"ingest": ["synthetic"], "freemask_shard": ["ingest"], "freemask_rest": ["ingest"],
         "freemask_index": ["freemask_shard", "freemask_rest"], "build_index": ["freemask_shard", "freemask_rest"],
         "export_results": ["freemask_index"], "export_annotations": ["freemask_index"],
         "eval_instances": ["freemask_index"]}
LABELS = {"synthetic": "synthetic data (not a measured rule)", "freemask_rest": "freemask (other shards, one process)",
          "build_index": "  build_index alone", "export_results": "  export_coco results alone",
          "export_annotations": "  export_coco annotations alone"}


# --- children: one step each, in a fresh process ---------------------------------------------------------


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _paths(work: Path) -> SimpleNamespace:
    return SimpleNamespace(images=str(work / "syn" / "images"), instances=str(work / "syn" / "instances.json"),
                           manifest=str(work / "manifest.parquet"), gt=str(work / "instances_gt.json"),
                           weights=str(work / "backbone.pt"), shards=work / "shards", index=str(work / "index.parquet"),
                           results=str(work / "results.json"), annotations=str(work / "annotations.json"))


def _smk(rule: str, work: Path, *, input: dict, output: dict, params: dict, wildcards: dict | None = None,
         threads: int = 1) -> SimpleNamespace:
    """A stand-in for the `snakemake` object a rule's script receives."""
    from snakemake.iocontainers import Namedlist

    return SimpleNamespace(input=Namedlist(fromdict=input), output=Namedlist(fromdict=output),
                           params=Namedlist(fromdict=params), wildcards=Namedlist(fromdict=wildcards or {}),
                           log=Namedlist(fromdict={"log": str(work / "logs" / f"{rule}.log")}), threads=threads,
                           rule=rule, config={"seed": 0}, resources=Namedlist())


def _stage(script: str, smk: SimpleNamespace) -> None:
    import maskless

    runpy.run_path(str(Path(maskless.__file__).resolve().parents[1] / "stages" / script),
                   init_globals={"snakemake": smk})


def _shard_smk(work: Path, p, shard: int, shard_size: int) -> SimpleNamespace:
    return _smk("freemask_shard", work, input={"manifest": p.manifest, "weights": p.weights},
                output={"store": str(p.shards / f"{shard}.zarr")},
                params={"freemask": _freemask_params(), "shard_size": shard_size, "batch_size": 4, "device": "cpu"},
                wildcards={"experiment": "scale", "shard": str(shard)})


def _freemask_params() -> dict:
    from maskless.freemask import FreeMaskParams

    return FreeMaskParams(**FREEMASK).to_dict()


def _shard_paths(p) -> list[str]:
    return sorted((str(s) for s in p.shards.glob("*.zarr")), key=lambda s: int(Path(s).stem))


def _run_step(rule: str, work: Path, n: int, shard_size: int) -> dict:
    """Do one step; return figures beside the peak (counts the table prints)."""
    p = _paths(work)
    n_shards = -(-n // shard_size)
    if rule == "synthetic":
        from maskless.data.synthetic import SyntheticParams, generate
        from maskless.models.resnet import build_resnet
        from maskless.models.weights import save_backbone

        save_backbone(p.weights, build_resnet("resnet18"), "resnet18", {})
        return generate(str(work / "syn"), SyntheticParams(num_images=n, height=SIDE, width=SIDE, seed=1))
    if rule == "ingest":
        from maskless.data.ingest import ingest

        return ingest(kind="coco", images=p.images, annotations=p.instances, manifest_out=p.manifest, gt_out=p.gt)
    if rule == "freemask_shard":
        _stage("freemask_shard.py", _shard_smk(work, p, 0, shard_size))
    elif rule == "freemask_rest":
        for s in range(1, n_shards):
            _stage("freemask_shard.py", _shard_smk(work, p, s, shard_size))
        return {"shards": n_shards - 1}
    elif rule == "freemask_index":
        _stage("mask_index.py", _smk(rule, work, input={"manifest": p.manifest, "shards": _shard_paths(p)},
                                     output={"index": p.index, "results": p.results, "annotations": p.annotations},
                                     params={"max_dets": 100}, wildcards={"experiment": "scale"}))
    elif rule == "build_index":
        from maskless.store import build_index

        build_index(_shard_paths(p), str(work / "lib_index.parquet"))
    elif rule in ("export_results", "export_annotations"):
        from maskless.coco_export import export_coco

        kind = rule.split("_")[1]
        return export_coco(index=p.index, manifest=p.manifest, out_json=str(work / f"lib_{kind}.json"), kind=kind,
                           max_per_image=100 if kind == "results" else None)
    elif rule == "eval_instances":
        _stage("eval_instances.py", _smk(rule, work, input={"gt": p.gt, "predictions": p.results},
                                         output={"metrics": str(work / "metrics.parquet"),
                                                 "table": str(work / "metrics.md")},
                                         params={"dataset": "scale", "max_dets": 100, "method": "freemask",
                                                 "variant": "", "round": 0, "seed": 0},
                                         wildcards={"experiment": "scale", "stage": "freemask"}))
    elif rule == "kmeans_baseline":
        return _kmeans(n)
    return {}


def _kmeans(n: int) -> dict:
    import torch

    from maskless.stego.baseline import KMeansParams, kmeans_baseline

    feats = torch.randn((n, *FEATURE_SHAPE), generator=torch.Generator().manual_seed(0))  # (N, C, h, w)
    maps = kmeans_baseline(feats, (SIDE, SIDE), KMeansParams(n_clusters=5, seed=0))  # (N, H, W)
    return {"features_mb": round(feats.numel() * 4 / 2**20, 1),
            "maps_mb": round(maps.numel() * maps.element_size() / 2**20, 1),
            "cluster_sizes": torch.bincount(maps.flatten(), minlength=5).tolist()}


def child(args) -> None:
    import torch  # noqa: F401 (every stage imports it: count it in the start figure of every step)

    work = Path(args.work)
    start, t0 = _hwm_mb(), time.perf_counter()
    extra = _run_step(args.child, work, args.n, args.shard_size)
    out = {"start_mb": round(start, 1), "seconds": round(time.perf_counter() - t0, 1), **(extra or {})}
    Path(args.out).write_text(json.dumps(out))


# --- parent: spawn the children, collect peaks, print the table --------------------------------------------


def _limit(gb: float):
    def apply() -> None:
        cap = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return apply


def measure(rule: str, work: Path, n: int, args) -> dict:
    """Run one step in a fresh child; its peak RSS from the kernel (os.wait4), its own figures from a file."""
    out = work / f"{rule}.json"
    cmd = [sys.executable, __file__, "--child", rule, "--work", str(work), "--n", str(n),
           "--shard-size", str(args.shard_size), "--out", str(out)]
    with open(work / f"{rule}.stderr", "w") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, preexec_fn=_limit(args.mem_limit_gb))
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss / 1024  # KiB -> MiB
    if proc.returncode != 0:
        tail = (work / f"{rule}.stderr").read_text().strip().splitlines()[-1:]
        failed = "> limit" if any("MemoryError" in t or "memory" in t.lower() for t in tail) else "failed"
        print(f"  {rule} N={n}: {failed} (exit {proc.returncode}; {tail})", flush=True)
        return {"peak_mb": None, "failed": failed}
    res = {"peak_mb": round(peak, 1), **json.loads(out.read_text())}
    print(f"  {rule} N={n}: peak {res['peak_mb']:.0f} MiB, {json.dumps(res)}", flush=True)
    return res


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if r["peak_mb"] is None:
        return r["failed"]
    return f"{r['peak_mb']:.0f} (+{r['peak_mb'] - r['start_mb']:.0f})"


def table(results: dict[int, dict[str, dict]], rules: list[str]) -> str:
    sizes = sorted(results)
    lines = ["| rule | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for rule in rules:
        lines.append(f"| {LABELS.get(rule, rule)} | " + " | ".join(_cell(results[n].get(rule)) for n in sizes) + " |")
    return "\n".join(lines)


def _with_needs(rules: list[str]) -> list[str]:
    """The requested rules and every step they need, in run order."""
    todo, stack = set(), list(rules)
    while stack:
        rule = stack.pop()
        if rule not in todo:
            todo.add(rule)
            stack += NEEDS.get(rule, [])
    return [r for r in RULES if r in todo]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--quick", action="store_true", help="sizes 100 and 300, a check that everything runs")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--rules", nargs="+", default=[r for r in RULES if r != "synthetic"], choices=RULES)
    ap.add_argument("--work", default=None, help="folder for the data and outputs (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--mem-limit-gb", type=float, default=8.0, help="address-space limit of each child")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sizes = [100, 300] if args.quick else args.sizes
    root = Path(args.work or tempfile.mkdtemp(prefix="maskless-scale-"))
    print("command: .venv/bin/python " + " ".join(sys.argv), flush=True)
    results: dict[int, dict[str, dict]] = {}
    try:
        for n in sizes:
            work = root / f"n{n}"
            work.mkdir(parents=True, exist_ok=True)
            results[n] = {rule: measure(rule, work, n, args) for rule in _with_needs(args.rules)}
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\npeak RSS MiB of each step's process (growth over its RSS when the step began):\n")
    print(table(results, [r for r in RULES if r in args.rules or r == "synthetic"]))
    print("\ncommand: .venv/bin/python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
