"""SOLO round 0's first steps on a finished run's inputs (issue 15, the collapse of seed 1): how the mask
logits of the positives move, step by step, under a change of settings.

    .venv/bin/python bench/solo_collapse.py RUN [--steps 30] [--masks gt] [--largest-component] [--set KEY=JSON ...]

RUN is a results folder of a finished run (e.g. results/synthetic-claims/seed1): its manifest, Free Mask
index, pretrained backbone and round-0 SOLO settings (solo/freesolo/round0/model.pt.params.json) are used;
`--set loss.loss_pair=0` (a dotted key of the solo section, a JSON value) changes one setting and
`--masks gt` trains on the ground-truth masks (data/gt_masks, the oracle's) instead of Free Mask's;
`--largest-component` keeps each coarse mask's largest 8-connected component as it is loaded (what
freemask.keep_largest_component does at extraction). Trains `--steps` steps (the schedule's steps are set to
that number: with a warm-up of at least as many steps the learning rates are the full run's) into a
temporary folder and prints, every 5 steps: mask_fg (share of the positives' mask pixels with logit > 0),
the mean and mean absolute logit, the pairwise and max-projection terms. A collapse shows as mask_fg near 1
with a large positive mean logit. Not a test; CPU, amp off.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import maskless.solo.data as solo_data
import maskless.solo.losses as solo_losses
from maskless.ops.masks import largest_component
from maskless.solo.train import EARLIER_COPY_PASTE, params_from_config, train_solo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--masks", choices=("freemask", "gt"), default="freemask")
    ap.add_argument("--largest-component", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    run = Path(args.run)
    meta = json.loads((run / "solo/freesolo/round0/model.pt.params.json").read_text())["params"]
    solo = {**EARLIER_COPY_PASTE, **copy.deepcopy(meta["solo"])}  # keys the run predates: what it did
    for item in args.set:
        key, value = item.split("=", 1)
        node, *path = solo, *key.split(".")
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = json.loads(value)
    solo.update(steps=args.steps, amp=False)
    params = params_from_config(solo, arch=meta["arch"], emb_dim=meta["emb_dim"], seed=int(meta["seed"]))

    stats: list[tuple[float, float, float]] = []  # per mask_logits call: fg share, mean, mean |x|
    original_logits = solo_losses.mask_logits

    def spy(kernels, mask_feat):
        x = original_logits(kernels, mask_feat)
        with torch.no_grad():
            stats.append((float((x > 0).float().mean()), float(x.mean()), float(x.abs().mean())))
        return x

    solo_losses.mask_logits = spy
    if args.largest_component:
        load = solo_data.SampleSource._load

        def load_largest(self, i):
            image, masks, emb = load(self, i)
            return image, (np.stack([largest_component(m) for m in masks]) if len(masks) else masks), emb

        solo_data.SampleSource._load = load_largest
    with tempfile.TemporaryDirectory() as tmp:
        index = run / ("freemask/train" if args.masks == "freemask" else "data/gt_masks") / "index.parquet"
        train_solo(manifest=str(run / "data/train/manifest.parquet"), masks_index=str(index),
                   backbone=str(run / "pretrain/backbone.pt"), out_weights=f"{tmp}/w.pt", state_dir=f"{tmp}/s",
                   params=params, device="cpu", threads=args.threads, loss_log=f"{tmp}/loss.csv",
                   log_every=10**9)
        rows = list(csv.DictReader(open(f"{tmp}/loss.csv")))
    per_step = np.array(stats).reshape(args.steps, -1, 3).mean(1)  # (steps, 3): one call per image
    print(f"| step | mask_fg | mean logit | mean abs logit | pair | max |  ({run}, {' '.join(args.set) or 'as run'}, {args.masks} masks"
          f"{', largest component' if args.largest_component else ''})")
    print("|--:|--:|--:|--:|--:|--:|")
    for s in sorted({*range(0, args.steps, 5), args.steps - 1}):
        fg, mean, absmean = per_step[s]
        print(f"| {s + 1} | {fg:.3f} | {mean:+.2f} | {absmean:.2f} | {float(rows[s]['loss_pair']):.4f} | "
              f"{float(rows[s]['loss_max']):.3f} |")
    print(f"\n.venv/bin/python bench/solo_collapse.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
