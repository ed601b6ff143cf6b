"""SOLO training throughput (images/s) and the fraction of step time spent preparing data.

    .venv/bin/python bench/solo_train.py [--steps 30] [--images 64] [--device cpu|cuda] [--threads 2]
                                         [--config configs/coco-full.yaml] [--coco ../shared/data/coco-tiny]
                                         [--compare-prefetch | --compare-workers N]

Trains with the config's `solo` section (the demo's settings: batch, input size, model widths) for --steps
steps on a synthetic dataset generated at the config's image size (or coco-tiny's photographs), with the
ground-truth instance masks standing in for the coarse masks: the cost of a step depends on the image size
and the number of instances, not on where the masks came from. Random-initialised backbone. Data time is
everything before the forward pass (reading, caching, augmentation, copy-paste, target assignment); the
target is under 10% of step time (issue 14: 5%). On CUDA the peak GPU memory is printed too.
--compare-prefetch trains four times on the same data, alternating batches made in the loop and made one
step ahead in a thread (maskless.train.prefetch; by default only on CUDA, solo.train.PREFETCH_DEVICES), and
prints each run's figures: the ratio comes from one process. --compare-workers N does the same with the
batches made in the training process and by N spawned worker processes (solo.num_workers). Prints figures
and the command; not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def _decode(seg, h: int, w: int) -> np.ndarray:
    """(H, W) bool of a COCO segmentation: polygons or an RLE (compressed or not)."""
    from pycocotools import mask as mask_utils

    from maskless.ops.masks import decode_rle

    if isinstance(seg, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w))).astype(bool)
    return decode_rle(seg)


def coarse_masks_from_gt(instances: str, manifest: str, out_dir: Path, emb_dim: int) -> str:
    """The ground-truth masks of every image as one mask store (random unit embeddings) -> index path."""
    from maskless.data.manifest import read_manifest
    from maskless.store import ImageMasks, build_index
    from maskless.store_writer import write_shard

    gt = json.loads(Path(instances).read_text())
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    rng = np.random.default_rng(0)
    images = []
    for r in read_manifest(manifest):
        h, w = int(r["height"]), int(r["width"])
        anns = [a for a in by_image.get(int(r["id"]), []) if not a.get("iscrowd")]
        masks = [_decode(a["segmentation"], h, w) for a in anns]
        masks = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        emb = rng.normal(size=(len(masks), emb_dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-9
        images.append(ImageMasks(int(r["id"]), h, w, masks, np.ones(len(masks)), emb))
    write_shard(str(out_dir / "gt.zarr"), images, embedding_dim=emb_dim)
    build_index([str(out_dir / "gt.zarr")], str(out_dir / "gt.parquet"))
    return str(out_dir / "gt.parquet")


def calibrate_batchnorm(net: torch.nn.Module, batches: int = 2, size: int = 224) -> None:
    """BatchNorm running statistics from a few noise batches (cumulative average), in place. A random
    ResNet-101's frozen BN (mean 0, var 1) lets res4 activations reach ~2e5 at 800 px, past float16's 65504:
    under CUDA's fp16 autocast SOLO's first step was all NaN (BENCHMARKS.md "On a GPU"). A pretrained
    backbone has real statistics; so, roughly, has this one. Used on CUDA only: the CPU figures in
    BENCHMARKS.md were measured without it (float32 does not overflow)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(0)
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            net(torch.randn(4, 3, size, size, generator=gen))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    net.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", nargs="+", default=[], help="config files over config.yaml (its data kept; as "
                    "bench/mfu.py: configs/coco-full.yaml's sizes on synthetic images)")
    ap.add_argument("--coco", default=None, help="coco-tiny folder instead of synthetic images")
    ap.add_argument("--compare-prefetch", action="store_true",
                    help="runs without, with, without, with the batch prefetch thread")
    ap.add_argument("--compare-workers", type=int, default=0, metavar="N",
                    help="runs in-process, with N batch worker processes (solo.num_workers), in-process, with N")
    args = ap.parse_args()

    from maskless.config import bench_config
    from maskless.data.ingest import ingest
    from maskless.data.synthetic import SyntheticParams, generate
    from maskless.io import setup_logging
    from maskless.models.resnet import build_resnet
    from maskless.models.weights import save_backbone
    from maskless.params import section_params
    import maskless.solo.train as solo_train
    from maskless.solo.train import params_from_config, train_solo

    setup_logging(None)
    cfg = bench_config(str(Path(__file__).resolve().parent.parent / "config.yaml"), *args.config)
    emb_dim = cfg["freemask"]["embedding_dim"]
    params = params_from_config(section_params(cfg, "solo"), arch=cfg["pretrain"]["arch"], emb_dim=emb_dim, seed=0,
                                steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        if args.coco:
            images, ann = f"{args.coco}/images", f"{args.coco}/instances.json"
        else:
            syn = cfg["synthetic"]
            generate(str(tmp / "syn"), SyntheticParams(num_images=args.images, height=syn["height"],
                                                       width=syn["width"], seed=1))
            images, ann = str(tmp / "syn" / "images"), str(tmp / "syn" / "instances.json")
        manifest = str(tmp / "manifest.parquet")
        ingest(kind="coco", images=images, annotations=ann, manifest_out=manifest, gt_out=None,
               max_images=args.images)
        index = coarse_masks_from_gt(ann, manifest, tmp, emb_dim)
        net = build_resnet(params.model.arch)
        if args.device.startswith("cuda"):
            calibrate_batchnorm(net)
        save_backbone(str(tmp / "backbone.pt"), net, params.model.arch, {})
        devices = solo_train.PREFETCH_DEVICES
        runs = [("default", devices, 0)]
        if args.compare_prefetch:
            runs = [("plain", (), 0), ("prefetch", ("cpu", "cuda"), 0)] * 2
        elif args.compare_workers:
            runs = [("in-process", devices, 0), (f"{args.compare_workers} workers", devices, args.compare_workers)] * 2
        for i, (name, on, workers) in enumerate(runs):
            solo_train.PREFETCH_DEVICES = on
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            s = train_solo(manifest=manifest, masks_index=index, backbone=str(tmp / "backbone.pt"),
                           out_weights=str(tmp / f"solo{i}.pt"), state_dir=str(tmp / f"state{i}"),
                           params=dataclasses.replace(params, num_workers=workers),
                           device=args.device, threads=args.threads, log_every=10)
            batch = params.batch_size * (2 if params.views == "both" else 1)
            figures = {"batches": name, "device": s["device"], "steps": s["steps_done"], "batch": batch,
                       "input_size": params.input_size,
                       "images_per_s": round(s["steps_done"] * batch / s["seconds"], 2),
                       "data_fraction_pct": round(100 * s["data_fraction"], 1),
                       "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
            if args.device.startswith("cuda"):
                figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
            print(json.dumps(figures))
        solo_train.PREFETCH_DEVICES = devices
    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
