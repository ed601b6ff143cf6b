"""Model FLOP utilisation (MFU) of every training step and of Free Mask inference, against this machine's
own peak measured in the same run (issue 14 item 1).

    .venv/bin/python bench/mfu.py [--threads 2] [--steps 10] [--warmup 3] [--only solo] [--config configs/coco-full.yaml]
                                  [--images 64] [--backbone results/.../backbone.pt] [--profile solo]
                                  [--device cpu|cuda]

Per workload (the demo's sizes: batch sizes, input sizes, arch and model widths from --config, the rest from
maskless/config.schema.yaml's defaults):

- densecl        DenseCL step (maskless.pretrain): both views through the query encoder and the momentum key
                 encoder, global + dense InfoNCE, backward, SGD. Data: StepBatches (crops and colour jitter).
- solo           FreeSOLO SOLOv2 step (maskless.solo.train): the loop's own build_training and solo_step. Data:
                 make_batch (augmentation, copy-paste, target assignment).
- solo_eec       The same with Exemplar-FreeSOLO's EEC term (solo.eec, a pool of exemplar.counts[0] random
                 crops of exemplar.refine.side px). Pool refresh steps are left out of the timed steps;
- eec_refresh    ... they are their own row: the pool embeddings recomputed (every eec.refresh_every steps).
- stego          STEGO head + probes step (maskless.stego.train): step_batch, train_losses, Adam, on frozen
                 features of the stego.layer at stego.input_size (random, as the step's cost does not depend on
                 their values). Data: step_batch and the feature gather.
- pct_pair       PCT step (maskless.pct.train): Hybrid-Net and Pseudo-Net on half strong / half weak images,
                 pct_losses, SGD. Data: StepBatches (resize, flip, crop, label maps).
- pct_retrain    A single DeepLabv3+ on pixel labels (the strong-only baseline and the retrain share it).
- freemask       One Free Mask inference batch (freemask.batch_size images at freemask.input_size):
                 backbone forward + free_mask per image, under inference_mode. Data: load_resized.
- freemask_fwd   The backbone forward of that batch alone (issue target: freemask <= 1.15 x this).

Each row comes from the library's own classes, loss functions and step functions, called as the loops call
them; where a method's step is a closure (DenseCL, STEGO, PCT) the step is rebuilt here from the
loop's modules and loss functions with the loop's maths, host syncs included (the finite checks read every
term). They use the trainers' building blocks (solo.train.build_training, stego.train.build_modules,
pct.train.make_optimizer/check_outputs/batch_to): when the library changes them a row may fail; it then
shows its error in the table and the other rows still run. Images: a synthetic dataset generated into a
temp folder (--images images at the config's synthetic size), ground-truth instance masks standing in for
the coarse masks. Backbone: random initialisation unless --backbone (a DenseCL checkpoint) is given; only
Free Mask's cost depends on it (how many queries pass the maskness filter).

Measured:
- Step time: --warmup steps, then --steps timed steps. A step is its data part (building the batch in the
  training process, as every loop does at num_workers 0) plus its compute part. "ms / step" is the median of
  the sums; "data share" the median data time over it (target < 5%).
- FLOPs of those same timed steps (their batches again, after the timing: counting slows a step down),
  counted with torch.utils.flop_counter.FlopCounterMode: forward + backward (the optimizer step runs inside
  the counter too, but it counts only matmuls, bmm, convolutions and their backward - no elementwise op,
  normalisation, reduction or optimizer update): the model's matmul/conv work, the usual MFU numerator.
  "GFLOP / step" is their mean (SOLO's and Free Mask's vary with the batch: the range is in the notes).
  GFLOP/s = mean FLOPs / median step time.
- Peaks: a large 3x3 conv (batch 8, 128 -> 128 channels at 56 x 56, forward, no grad) and a 2048^3 matmul,
  counted with the same FlopCounterMode, each the median of 10 calls after 5 warm-up calls, at the same
  thread count in this process: once before the first row and again after every row. The peak is the best
  of these medians (what the machine does when nothing else runs); MFU = GFLOP/s / peak (target: >= 50%
  of the conv peak on CPU). The conv figure measured around each row (mean of the one before and the one
  after) and the load average after it say how busy the shared machine was meanwhile: on a machine shared
  with other jobs a row's time, and so its MFU, can be several times worse than on an idle one.
  On glibc the conv peak also depends on the allocator: large outputs freed and allocated again can be
  returned to the system and page-faulted back on every call (MALLOC_MMAP_THRESHOLD_ and
  MALLOC_TRIM_THRESHOLD_ change that; BENCHMARKS.md has the measured effect).
- --profile NAME: torch.profiler on one step of that workload, top ops by self CPU time.

CUDA (--device cuda): the loops run as they do there (fp16 autocast where their amp is on), every timing is
bracketed by torch.cuda.synchronize, and the peaks are measured in float16 and bfloat16; MFU is given
against the float16 peaks. That path has never run: the machine this was written on has no GPU.

Prints a markdown table and the command. Not a test (tests/test_bench_mfu.py checks the FLOP counting).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from maskless.config import bench_config

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
from mfu_workloads import BUILDERS, Setup, Workload, stego  # noqa: E402,F401 (bench/mfu_workloads.py; stego: tests)

WORKLOADS = ("densecl", "solo", "solo_eec", "eec_refresh", "stego", "pct_pair", "pct_retrain", "freemask",
             "freemask_fwd")
CONV_PEAK = {"batch": 8, "channels": 128, "size": 56}
MATMUL_PEAK = 2048
# On CUDA the CPU's sizes leave most of the GPU idle (launch-bound): the peaks there use a conv and a matmul
# large enough to fill an H100/H200-class GPU.
CONV_PEAK_CUDA = {"batch": 64, "channels": 256, "size": 64}
MATMUL_PEAK_CUDA = 8192


def synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of fn() as torch.utils.flop_counter.FlopCounterMode counts them (matmuls and convolutions,
    forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def conv_flops_by_hand(batch: int, cin: int, cout: int, k: int, h_out: int, w_out: int) -> int:
    """2 x Cin x Cout x k x k x H_out x W_out x B: a multiply and an add per weight per output pixel."""
    return 2 * cin * cout * k * k * h_out * w_out * batch


def time_median(fn: Callable[[], Any], dev: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    synchronize(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_sizes(dev: torch.device) -> tuple[dict, int]:
    return (CONV_PEAK_CUDA, MATMUL_PEAK_CUDA) if dev.type == "cuda" else (CONV_PEAK, MATMUL_PEAK)


def measure_peaks(dev: torch.device, dtype: torch.dtype, repeats: int = 10, warmup: int = 5) -> dict[str, dict]:
    """GFLOP/s of a large 3x3 conv and a large matmul at `dtype`, FLOPs from FlopCounterMode."""
    conv, m = peak_sizes(dev)
    b, c, s = conv["batch"], conv["channels"], conv["size"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, s, s, generator=gen).to(dev, dtype)
    w = torch.randn(c, c, 3, 3, generator=gen).to(dev, dtype)
    a = torch.randn(m, m, generator=gen).to(dev, dtype)
    bm = torch.randn(m, m, generator=gen).to(dev, dtype)
    out = {}
    with torch.no_grad():
        for name, fn in (("conv", lambda: F.conv2d(x, w, padding=1)), ("matmul", lambda: a @ bm)):
            flops = count_flops(fn)
            sec = time_median(fn, dev, repeats, warmup)
            out[name] = {"flops": flops, "seconds": sec, "gflops": flops / sec / 1e9}
    return out


def measure(wl: Workload, dev: torch.device, steps: int, warmup: int) -> dict:
    """Warm-up, then `steps` timed steps, then the FLOPs of those same steps (same batches; counting slows a
    step down, so it is never timed) -> FLOPs per step (mean, min, max), median step and data seconds."""
    for i in range(warmup):
        wl.step(wl.data(i), i)
    timed = range(warmup, warmup + steps)
    totals, datas = [], []
    for i in timed:
        synchronize(dev)
        t0 = time.perf_counter()
        inputs = wl.data(i)
        t1 = time.perf_counter()
        wl.step(inputs, i)
        synchronize(dev)
        t2 = time.perf_counter()
        totals.append(t2 - t0)
        datas.append(t1 - t0)
    flops = []
    for i in timed:
        inputs = wl.data(i)
        flops.append(count_flops(lambda: wl.step(inputs, i)))
    return {"flops": statistics.mean(flops), "flops_min": min(flops), "flops_max": max(flops),
            "seconds": statistics.median(totals), "data_seconds": statistics.median(datas)}


def profile_step(wl: Workload, dev: torch.device, warmup: int, rows: int = 15) -> str:
    """Top ops by self CPU time of one step (after warm-up), data part included."""
    from torch.profiler import ProfilerActivity, profile

    for i in range(warmup):
        wl.step(wl.data(i), i)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        wl.step(wl.data(warmup), warmup)
        synchronize(dev)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


# ---------------------------------------------------------------- report


def _host() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{cpu}, {os.cpu_count()} CPUs, load average {load}"


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "maskless"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        return rev + (" (maskless/ has uncommitted changes)" if dirty else "")
    return "unknown"


def table(results: list[dict], peaks: dict[str, float]) -> str:
    """Markdown table; MFU against the run's peaks (the best median of its peak measurements). The conv
    figure measured next to each row (mean of before and after) shows how busy the machine was then."""
    lines = ["| model | batch | GFLOP / step | ms / step | GFLOP/s | MFU vs conv peak | MFU vs matmul peak | "
             "data share (ms) | conv GFLOP/s around the row (load) | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | | | | | | | | | failed: {r['error']} |")
            continue
        rate = r["flops"] / r["seconds"] / 1e9
        share = (f"{100 * r['data_seconds'] / r['seconds']:.1f}% ({1e3 * r['data_seconds']:.0f})" if r["has_data"]
                 else "-")
        note = r["note"]
        if r["flops_max"] > r["flops_min"]:
            note += f"; FLOPs vary with the batch, {r['flops_min'] / 1e9:.2f}-{r['flops_max'] / 1e9:.2f}"
        lines.append(f"| {r['name']} | {r['batch']} | {r['flops'] / 1e9:.2f} | {1e3 * r['seconds']:.0f} | "
                     f"{rate:.1f} | {100 * rate / peaks['conv']:.0f}% | {100 * rate / peaks['matmul']:.0f}% | "
                     f"{share} | {r['conv_around']:.0f} ({r.get('load', float('nan')):.1f}) | {note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per workload (median)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", nargs="+", choices=WORKLOADS, default=None)
    ap.add_argument("--config", nargs="+", default=[], help="config files loaded after config.yaml (as "
                    "snakemake --configfile does); their sizes and widths are measured on config.yaml's synthetic "
                    "images and random weights, so a config with data paths (configs/coco-full.yaml) runs anywhere")
    ap.add_argument("--images", type=int, default=64, help="synthetic images generated for the data parts")
    ap.add_argument("--backbone", default=None, help="DenseCL checkpoint (default: random initialisation)")
    ap.add_argument("--profile", choices=WORKLOADS, default=None, help="also profile one step of this workload")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    from maskless.io import set_threads

    set_threads(args.threads)
    dev = torch.device(args.device)
    cfg = bench_config(str(BENCH.parent / "config.yaml"), *args.config)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    if dev.type == "cuda":
        bf16 = measure_peaks(dev, torch.bfloat16)
        print(f"peak bfloat16: conv {bf16['conv']['gflops']:.0f} GFLOP/s, matmul {bf16['matmul']['gflops']:.0f} GFLOP/s")
    measure_peaks(dev, dtype)  # a throwaway: the first measurement of a process runs low
    measured = [measure_peaks(dev, dtype)]
    names = args.only or list(WORKLOADS)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(cfg, dev, Path(tmp), args.images, args.backbone)
        for name in names:
            t0 = time.perf_counter()
            try:
                wl = BUILDERS[name](setup)
                r = measure(wl, dev, args.steps, args.warmup)
                measured.append(measure_peaks(dev, dtype))
                around = (measured[-2]["conv"]["gflops"] + measured[-1]["conv"]["gflops"]) / 2
                results.append({"name": name, "batch": wl.batch, "has_data": wl.has_data, "note": wl.note, **r,
                                "conv_around": around, "load": os.getloadavg()[0]})
            except Exception as e:  # one broken workload must not hide the others' figures
                results.append({"name": name, "error": f"{type(e).__name__}: {e}".replace("|", "/")[:200]})
            print(f"# {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        if args.profile:
            print(f"\nProfile of one {args.profile} step (top ops by self CPU time):\n")
            print(profile_step(BUILDERS[args.profile](setup), dev, args.warmup))
    peaks = {k: max(m[k]["gflops"] for m in measured) for k in ("conv", "matmul")}
    listed = {k: ", ".join(f"{m[k]['gflops']:.0f}" for m in measured) for k in ("conv", "matmul")}
    print(f"\nhost: {_host()}; torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}; "
          f"commit {_commit()}; {time.strftime('%Y-%m-%d %H:%M')}")
    conv, mm = peak_sizes(dev)
    print(f"peaks ({str(dtype)[6:]}): 3x3 conv {conv['batch']}x{conv['channels']}->{conv['channels']} "
          f"at {conv['size']}x{conv['size']} ({measured[0]['conv']['flops'] / 1e9:.2f} GFLOP) "
          f"{peaks['conv']:.1f} GFLOP/s, matmul {mm}^3 ({measured[0]['matmul']['flops'] / 1e9:.2f} GFLOP) "
          f"{peaks['matmul']:.1f} GFLOP/s: the best of {len(measured)} measurements (each the median of 10 calls "
          f"after 5 warm-up calls; one before the first row, one after every row): conv {listed['conv']}, "
          f"matmul {listed['matmul']}\n")
    print(table(results, peaks))
    print("\ncommand:", " ".join([".venv/bin/python", *sys.argv]))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
