"""Self-training relabel rules against the ground truth (issue 15 item 5): which of round 0's predictions
would become round 1's labels, how many, and how many of them are objects.

    .venv/bin/python bench/relabel_sweep.py RUN [RUN ...]

RUN is a results folder of a finished run with a self-training round (e.g. results/synthetic-claims/seed0):
its round-0 predictions on the training images (solo/freesolo/round0/pred/train/index.parquet) are scored against
data/train/instances_gt.json. Rules, each through maskless.selftrain.select_predictions (the width filter and the
per-image cap of the config apply as in the relabel rule):
  fixed t     score >= t (FreeSOLO's rule; the reference t = 0.3)
  top-k k     the k highest-scoring predictions of every image, whatever their score
  quantile q  score >= the q-quantile of all round-0 scores of the run (a fixed threshold chosen per run)
Per rule and run: labels kept, objects, precision and recall at IoU 0.5 (greedy in score order,
maskless.eval.mask_quality) and their F1. Prints a markdown table (mean over the runs, and the range) and the
command; not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from maskless.eval.mask_quality import image_quality, summarize
from maskless.selftrain import RelabelParams, select_predictions
from maskless.store import MaskStore

FIXED = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
TOP_K = (1, 2, 3, 5)
QUANTILES = (0.5, 0.75, 0.9)


def rules(all_scores: np.ndarray, base: RelabelParams) -> dict[str, RelabelParams]:
    out = {f"fixed {t:g}": dataclasses.replace(base, score_thresh=t) for t in FIXED}
    out |= {f"top-k {k}": dataclasses.replace(base, score_thresh=0.0, max_per_image=k) for k in TOP_K}
    for q in QUANTILES:
        t = float(np.quantile(all_scores, q)) if len(all_scores) else 1.0
        out[f"quantile {q:g} (t={t:.3f})"] = dataclasses.replace(base, score_thresh=min(1.0, t))
    return out


def sweep(run: Path, base: RelabelParams) -> dict[str, dict]:
    coco = COCO(str(run / "data" / "train" / "instances_gt.json"))
    store = MaskStore(str(run / "solo" / "freesolo" / "round0" / "pred" / "train" / "index.parquet"))
    images = list(store.iter_images())
    all_scores = np.concatenate([im.scores for im in images]) if images else np.zeros(0)
    out = {}
    for name, params in rules(all_scores, base).items():
        counts = []
        for im in images:
            kept, _ = select_predictions(im, params)
            anns = [a for a in coco.imgToAnns.get(im.image_id, []) if not a.get("iscrowd", 0)]
            objects = (np.stack([coco.annToMask(a).astype(bool) for a in anns]) if anns
                       else np.zeros((0, im.height, im.width), bool))
            counts.append(image_quality(im.masks[kept], objects))
        s = summarize(counts)
        p, r = s["precision50"], s["recall50"]
        s["f1"] = 2 * p * r / (p + r) if p == p and r == r and p + r > 0 else float("nan")
        out[name.split(" (t=")[0]] = s | {"rule": name}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--max-per-image", type=int, default=RelabelParams.max_per_image)
    args = ap.parse_args()
    base = RelabelParams(max_per_image=args.max_per_image)
    per_run = [sweep(run, base) for run in args.runs]
    print(f"`.venv/bin/python {' '.join(sys.argv)}`\n")
    print(f"Round-0 predictions of {len(per_run)} run(s) ({per_run[0]['fixed 0.3']['objects']} objects in the "
          "first); mean over the runs [min, max]:\n")
    print("| rule | labels | precision@0.5 | recall@0.5 | F1 |")
    print("|---|---|---|---|---|")
    for key in per_run[0]:
        cells = []
        for col in ("masks", "precision50", "recall50", "f1"):
            vals = np.array([r[key][col] for r in per_run], float)
            cells.append(f"{np.nanmean(vals):.1f} [{np.nanmin(vals):.1f}, {np.nanmax(vals):.1f}]"
                         if np.isfinite(vals).any() else "-")
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
