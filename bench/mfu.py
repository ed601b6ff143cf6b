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
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from maskless.config import bench_config

from maskless.params import from_config, section_params

BENCH = Path(__file__).resolve().parent
WORKLOADS = ("densecl", "solo", "solo_eec", "eec_refresh", "stego", "pct_pair", "pct_retrain", "freemask",
             "freemask_fwd")
CONV_PEAK = {"batch": 8, "channels": 128, "size": 56}
MATMUL_PEAK = 2048
# On CUDA the CPU's sizes leave most of the GPU idle (launch-bound): the peaks there use a conv and a matmul
# large enough to fill an H100/H200-class GPU.
CONV_PEAK_CUDA = {"batch": 64, "channels": 256, "size": 64}
MATMUL_PEAK_CUDA = 8192


@dataclass
class Workload:
    """One measurable step. data(i) builds the inputs of step i (timed as data), step(inputs, i) runs it."""

    name: str
    batch: int
    step: Callable[[Any, int], Any]
    data: Callable[[int], Any] = lambda i: None
    has_data: bool = False
    note: str = ""


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


# ---------------------------------------------------------------- shared set-up


class Setup:
    """Config, device and the synthetic dataset (made on first use, in a temp folder)."""

    def __init__(self, cfg: dict, dev: torch.device, tmp: Path, n_images: int, backbone: str | None):
        self.cfg, self.dev, self.tmp, self.n_images = cfg, dev, tmp, n_images
        self._backbone, self._dataset = backbone, None

    @property
    def arch(self) -> str:
        return self.cfg["pretrain"]["arch"]

    def amp(self, section: dict) -> bool:
        return bool(section.get("amp", True)) and self.dev.type == "cuda"

    def dataset(self) -> dict:
        """Synthetic images at the config's size: manifest rows, instances JSON, the images' folder."""
        if self._dataset is None:
            from maskless.data.ingest import ingest
            from maskless.data.manifest import read_manifest
            from maskless.data.synthetic import SyntheticParams, generate

            syn = self.cfg["synthetic"]
            root = self.tmp / "syn"
            generate(str(root), SyntheticParams(num_images=self.n_images, height=syn["height"], width=syn["width"],
                                                num_categories=syn["num_categories"], seed=1))
            manifest = str(self.tmp / "manifest.parquet")
            ingest(kind="coco", images=str(root / "images"), annotations=str(root / "instances.json"),
                   manifest_out=manifest, gt_out=None)
            self._dataset = {"root": root, "manifest": manifest, "rows": read_manifest(manifest),
                             "instances": str(root / "instances.json")}
        return self._dataset

    def backbone(self) -> str:
        """The --backbone checkpoint, or a random-initialised one of the config's arch."""
        if self._backbone is None:
            from maskless.models.resnet import build_resnet
            from maskless.models.weights import save_backbone

            torch.manual_seed(0)
            self._backbone = str(self.tmp / "backbone.pt")
            net = build_resnet(self.arch)
            if self.dev.type == "cuda":  # fp16 overflows a random ResNet-101's activations (solo_train.py)
                if str(BENCH) not in sys.path:
                    sys.path.insert(0, str(BENCH))
                from solo_train import calibrate_batchnorm  # bench/solo_train.py

                calibrate_batchnorm(net)
            save_backbone(self._backbone, net, self.arch, {})
        return self._backbone


def _values(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """The loops' host sync: every term read as a float for the finite check and the loss log."""
    values = {k: float(v.detach()) for k, v in terms.items()}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite terms {bad}")
    return values


# ---------------------------------------------------------------- workloads


def densecl(s: Setup) -> Workload:
    from maskless.models.resnet import normalize
    from maskless.pretrain.densecl import DenseCL, DenseCLParams
    from maskless.pretrain.train import CACHE_SHORT_SIDE_FACTOR, ImageSource, StepBatches, lr_at

    section = section_params(s.cfg, "pretrain")
    params = from_config(DenseCLParams, section, "pretrain", seed=0)
    data = StepBatches(ImageSource(s.dataset()["rows"], math.ceil(CACHE_SHORT_SIDE_FACTOR * params.crop_size)),
                       params)
    torch.manual_seed(0)
    model = DenseCL.from_params(params).to(s.dev).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr_at(0, params),
                          momentum=params.momentum, weight_decay=params.weight_decay)
    use_amp = s.amp(section)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    def step(views, i):
        for group in opt.param_groups:
            group["lr"] = lr_at(i % params.steps, params)
        view_q, view_k = (normalize(v.to(s.dev, non_blocking=True)) for v in views)
        with torch.autocast(device_type=s.dev.type, dtype=torch.float16, enabled=use_amp):
            out = model(view_q, view_k)
        _values(out)
        opt.zero_grad(set_to_none=True)
        scaler.scale(out["loss"]).backward()
        scaler.step(opt)
        scaler.update()

    return Workload("densecl", params.batch_size, step, lambda i: data[i % params.steps], True,
                    f"crop {params.crop_size}, two views, queue {params.queue_size}")


def _solo(s: Setup, with_eec: bool) -> tuple[Any, ...]:
    """The SOLO loop's model, optimizer and batch maker (maskless.solo.train), optionally with EEC."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from solo_train import coarse_masks_from_gt  # bench/solo_train.py
    from maskless.solo.data import SampleSource, make_batch
    from maskless.solo.train import build_training, params_from_config
    from maskless.store import MaskStore

    ds = s.dataset()
    cfg = s.cfg
    emb_dim = cfg["freemask"]["embedding_dim"]
    eec = cfg["exemplar"]["eec"] if with_eec else None
    params = params_from_config(section_params(cfg, "solo"), arch=s.arch, emb_dim=emb_dim, seed=0, eec=eec)
    index = ds.get("solo_index")
    if index is None:
        index = ds["solo_index"] = coarse_masks_from_gt(ds["instances"], ds["manifest"], s.tmp, emb_dim)
    source = SampleSource(ds["rows"], MaskStore(index), params.input_size * params.scale_jitter[1])
    pool = None
    if with_eec:
        n, side = cfg["exemplar"]["counts"][0], cfg["exemplar"]["refine"]["side"]
        rng = np.random.default_rng(0)
        pool = SimpleNamespace(crops=rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
                               masks=rng.random((n, side, side)) < 0.4)
    model, eec_state, _, trainable, opt = build_training(s.backbone(), params, s.dev, None, pool)
    geometry = params.solo_geometry()

    def data(i):
        return make_batch(source, i, params, geometry)[:2]

    return params, model, eec_state, trainable, opt, data


def solo(s: Setup, with_eec: bool = False) -> Workload:
    from maskless.solo.train import lr_at, solo_step

    params, model, eec, trainable, opt, data = _solo(s, with_eec)
    use_amp = s.amp({"amp": params.amp})
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if eec is not None:  # what step 1 does; the timed steps below are never refresh steps
        eec.refresh(model, freeze_backbone_bn=params.freeze_backbone_bn)

    def step(batch, i):
        n = i + 2  # 1-based loop step, past step 1 (EEC refresh) and the pairwise warm-up's start
        while eec is not None and eec.refresh_due(n):
            n += 1
        for group in opt.param_groups:
            group["lr"] = lr_at((n - 1) % params.steps, params)
        losses = solo_step(model, batch, n, params, s.dev, use_amp, eec)
        _values(losses)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if params.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
        scaler.step(opt)
        scaler.update()

    note = f"input {params.input_size}, grids {list(params.model.grids)}"
    if eec is not None:
        note += f", EEC pool {len(eec.crops)} x {eec.crops.shape[1]} px"
    return Workload("solo_eec" if with_eec else "solo", params.batch_size, step, data, True, note)


def eec_refresh(s: Setup) -> Workload:
    params, model, eec, *_ = _solo(s, True)

    def step(_, i):
        eec.refresh(model, freeze_backbone_bn=params.freeze_backbone_bn)

    return Workload("eec_refresh", len(eec.crops), step,
                    note=f"once every {params.eec.refresh_every} steps (pool embeddings, no grad)")


def stego(s: Setup) -> Workload:
    from maskless.models.resnet import build_resnet
    from maskless.stego.knn import compute_knn, pool_features
    from maskless.stego.train import StegoTrainParams, build_modules, step_batch, train_losses

    st = s.cfg["stego"]
    params = from_config(StegoTrainParams, st["train"], "stego.train", seed=0)
    size, n, n_classes = st["input_size"], max(s.n_images, params.batch_size), s.cfg["synthetic"]["num_categories"] + 1
    with torch.no_grad():
        c, h, w = build_resnet(s.arch).eval()(torch.zeros(1, 3, size, size))[st["layer"]].shape[1:]
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(n, c, h, w, generator=gen)
    knn = compute_knn(pool_features(features), st["knn_k"])
    labels = torch.randint(0, n_classes, (n, size, size), generator=gen)
    modules, opt = build_modules(c, n_classes, params, s.dev)

    def data(i):
        batch = step_batch(i, n, knn, params)
        return (batch, features[batch["idx"]].to(s.dev), features[batch["knn"]].to(s.dev),
                labels[batch["idx"]].to(s.dev))

    def step(inputs, i):
        batch, feats, feats_knn, lab = inputs
        torch.manual_seed(params.seed * 1_000_003 + i + 1)
        losses = train_losses(modules, feats, feats_knn, batch, params, lab)
        _values(losses)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()

    return Workload("stego", params.batch_size, step, data, True,
                    f"{st['layer']} features {c} x {h} x {w}, {params.neg_samples} random partners")


def _pct_data(s: Setup) -> dict:
    """Synthetic images, label maps, tags and the class count; every 8th image strong, as a split would."""
    from maskless.data.images import load_rgb
    from maskless.data.semantic import num_classes, synthetic_labels
    from maskless.pct.split import tag_matrix, tags_from_label_map

    ds = s.dataset()
    if "pct" not in ds:
        names = [Path(r["path"]).name for r in ds["rows"]]
        images = [load_rgb(r["path"]) for r in ds["rows"]]
        labels = synthetic_labels(ds["root"], names)
        k = num_classes(ds["instances"])
        ds["pct"] = {"images": images, "labels": labels, "k": k,
                     "present": tag_matrix([tags_from_label_map(lab) for lab in labels], k)}
    return ds["pct"]


def _pct_step(s: Setup, params, nets: list, losses: Callable, use_amp: bool) -> Callable:
    """The shared PCT loop's step (maskless.pct.train._fit) around `losses(batch, step) -> (terms, stats)`."""
    from maskless.pct.train import lr_at, make_optimizer

    opt = make_optimizer(nets, params)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    for net in nets:
        net.train()

    def step(batch, i):
        for group in opt.param_groups:
            group["lr"] = lr_at(i % params.steps, params) * group["lr_mult"]
        with torch.autocast(device_type=s.dev.type, dtype=torch.float16, enabled=use_amp):
            terms, _ = losses(batch, i + 1)
        _values(terms)
        opt.zero_grad(set_to_none=True)
        scaler.scale(sum(terms.values())).backward()
        if params.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for n in nets for p in n.parameters()], params.grad_clip)
        scaler.step(opt)
        scaler.update()

    return step


def _pct_mode(s: Setup) -> str:
    return "ctr" if s.cfg["pct"]["contextrast"][0] else "plain"


def pct_pair(s: Setup) -> Workload:
    from maskless.models.resnet import normalize
    from maskless.pct.losses import DynamicEvaluation
    from maskless.pct.model import build_segnet
    from maskless.pct.stage import train_params
    from maskless.pct.terms import pct_losses
    from maskless.pct.train import batch_to, check_outputs
    from maskless.pct.train_data import StepBatches

    d = _pct_data(s)
    params = train_params(s.cfg["pct"], kind="pct", mode=_pct_mode(s), arch=s.arch, num_classes=d["k"], seed=0)
    strong = list(range(0, len(d["images"]), 8))
    weak = [i for i in range(len(d["images"])) if i not in set(strong)]
    labels = [lab if i in set(strong) else None for i, lab in enumerate(d["labels"])]
    half = params.batch_size // 2
    batches = StepBatches(d["images"], labels, d["present"], strong, weak, half, half, params)
    backbone = s.backbone()
    torch.manual_seed(0)
    hybrid = build_segnet(params.model, backbone).to(s.dev)
    torch.manual_seed(1)
    pseudo = build_segnet(params.model, backbone).to(s.dev)
    dyn = DynamicEvaluation(d["k"], momentum=params.ema_momentum, power=params.iou_power,
                            unseen_iou=params.unseen_iou).to(s.dev)

    def losses(b, i):
        b = batch_to(b, s.dev)
        x = normalize(b.images)
        ho = hybrid(x, embeddings=params.use_contextrast)
        po = pseudo(x, embeddings=params.use_contextrast)
        check_outputs({"hybrid logits": ho["logits"], "pseudo logits": po["logits"]}, "PCT", i)
        with torch.autocast(device_type=s.dev.type, enabled=False):
            return pct_losses(ho, po, b, dyn, params)

    step = _pct_step(s, params, [hybrid, pseudo], losses, s.amp({"amp": params.amp}))
    return Workload("pct_pair", params.batch_size, step, lambda i: batches[i % params.steps], True,
                    f"two nets, crop {params.input_size}, {half} strong + {half} weak, mode {_pct_mode(s)}")


def pct_retrain(s: Setup) -> Workload:
    from maskless.models.resnet import normalize
    from maskless.pct.model import build_segnet
    from maskless.pct.stage import train_params
    from maskless.pct.terms import supervised_losses
    from maskless.pct.train import batch_to, check_outputs
    from maskless.pct.train_data import StepBatches

    d = _pct_data(s)
    params = train_params(s.cfg["pct"], kind="retrain", mode=_pct_mode(s), arch=s.arch, num_classes=d["k"],
                          seed=0)
    everything = np.ones((len(d["images"]), d["k"]), dtype=bool)
    batches = StepBatches(d["images"], d["labels"], everything, list(range(len(d["images"]))), [],
                          params.batch_size, 0, params)
    torch.manual_seed(0)
    net = build_segnet(params.model, s.backbone()).to(s.dev)

    def losses(b, i):
        b = batch_to(b, s.dev)
        o = net(normalize(b.images), embeddings=params.use_contextrast)
        check_outputs({"logits": o["logits"]}, "supervised", i)
        with torch.autocast(device_type=s.dev.type, enabled=False):
            return supervised_losses(o, b, params)

    step = _pct_step(s, params, [net], losses, s.amp({"amp": params.amp}))
    return Workload("pct_retrain", params.batch_size, step, lambda i: batches[i % params.steps], True,
                    f"one net, crop {params.input_size} (also the strong-only baseline's step)")


def freemask(s: Setup, backbone_only: bool = False) -> Workload:
    from maskless.data.images import load_resized
    from maskless.freemask import FreeMaskParams, free_mask
    from maskless.models.resnet import normalize
    from maskless.models.weights import load_backbone

    fm = s.cfg["freemask"]
    params = from_config(FreeMaskParams, section_params(s.cfg, "freemask"), "freemask")
    batch_size, rows = fm["batch_size"], s.dataset()["rows"]
    model = load_backbone(s.backbone(), arch=s.arch).to(s.dev).eval()

    def data(i):
        recs = [rows[(i * batch_size + j) % len(rows)] for j in range(batch_size)]
        loaded = [load_resized(r, params.input_size) for r in recs]  # one size: the synthetic images share it
        return np.stack([img for img, _ in loaded]), [hw for _, hw in loaded]

    def step(inputs, i):
        batch, sizes = inputs
        with torch.inference_mode():
            x = normalize(torch.from_numpy(batch).permute(0, 3, 1, 2).to(s.dev))
            feats = model(x)[params.feature_level]
            if not backbone_only:
                for f, hw in zip(feats, sizes):
                    free_mask(f, hw, params)

    name = "freemask_fwd" if backbone_only else "freemask"
    note = f"input {params.input_size}, {params.feature_level}" + (", backbone forward only" if backbone_only else "")
    return Workload(name, batch_size, step, data, True, note)


BUILDERS: dict[str, Callable[[Setup], Workload]] = {
    "densecl": densecl, "solo": solo, "solo_eec": lambda s: solo(s, True), "eec_refresh": eec_refresh,
    "stego": stego, "pct_pair": pct_pair, "pct_retrain": pct_retrain, "freemask": freemask,
    "freemask_fwd": lambda s: freemask(s, True),
}


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
