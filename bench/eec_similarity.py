"""How a trained Exemplar-FreeSOLO's instances relate to its exemplar pool (issue 15 item 3): the cosine
similarities the EEC term thresholds, raw and centred on the pool mean.

    .venv/bin/python bench/eec_similarity.py RUN [--variant exemplar_n8] [--batches 4]

RUN is a results folder of a finished run with an Exemplar-FreeSOLO variant (e.g.
results/synthetic-claims/seed0): its round-0 model (SOLO + EEC head), its exemplar pool and the training
images' batches (the first `--batches` steps' batches, as training draws them) give the positives'
mask-pooled embeddings (maskless.solo.eec_train, in eval mode). Prints the quantiles of the
instance-exemplar cosines, the per-instance spread, how many instances have a positive and a negative at
fixed alpha/beta, which exemplar is each instance's nearest, and the mean instance-instance cosine. Not a
test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from maskless.data.manifest import read_manifest
from maskless.solo.eec import EECParams, center_embeddings, mask_pooled_embeddings
from maskless.solo.exemplar_pool import ExemplarPool
from maskless.models.resnet import normalize
from maskless.solo.data import SampleSource, make_batch, mask_counts, select_images
from maskless.solo.eec_train import EECState
from maskless.solo.losses import gather_positives, mask_logits
from maskless.solo.predict import load_solo
from maskless.solo.train import EARLIER_COPY_PASTE, params_from_config
from maskless.store import MaskStore

THRESHOLDS = ((0.5, 0.1), (0.3, 0.0))
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--variant", default="exemplar_n8")
    ap.add_argument("--batches", type=int, default=4)
    args = ap.parse_args(argv)
    run = Path(args.run)
    torch.set_num_threads(2)
    weights = run / f"solo/{args.variant}/round0/model.pt"
    model, params = load_solo(str(weights))
    meta = json.loads(Path(f"{weights}.params.json").read_text())["params"]
    pool = ExemplarPool.load(str(run / f"exemplar/{args.variant.split('_')[-1]}/pool"))
    eec = EECParams(**params["eec"])
    state = EECState(eec, kernel_dim=params["model"]["kernel_dim"], gn_groups=params["model"]["gn_groups"],
                     crops=pool.crops, masks=pool.masks)
    state.head.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["eec_head"])
    state.refresh(model, freeze_backbone_bn=True)
    pool_emb = state.pool_emb  # (P, E)
    solo = {**EARLIER_COPY_PASTE, **meta["solo"]}  # copy-paste keys the run predates: what it did
    train = params_from_config(solo, arch=meta["arch"], emb_dim=meta["emb_dim"], seed=int(meta["seed"]))
    index = str(run / "freemask/train/index.parquet")
    rows, _ = select_images(read_manifest(str(run / "data/train/manifest.parquet")), mask_counts(index))
    source = SampleSource(rows, MaskStore(index), train.input_size * train.scale_jitter[1])
    embs = []
    model.eval()
    state.head.eval()
    with torch.no_grad():
        for step in range(args.batches):
            images, targets, _ = make_batch(source, step, train, train.solo_geometry())
            out = model(normalize(images))
            pos = gather_positives(out, targets)
            feat = out["mask_feat"]
            masks = torch.cat([torch.sigmoid(mask_logits(k, feat[b])) for b, k in enumerate(pos.kernels)])
            image_of = torch.cat([torch.full((len(k),), b, dtype=torch.long) for b, k in enumerate(pos.kernels)])
            emb, ok = mask_pooled_embeddings(state.head(feat), masks, image_of)
            embs.append(emb[ok])
    inst = torch.cat(embs)  # (N, E)
    off_diagonal = ~torch.eye(len(inst), dtype=torch.bool)
    print(f"{run} {args.variant}: {len(inst)} instances of {args.batches} batches, pool of {len(pool_emb)}; "
          f"mean instance-instance cosine {float((inst @ inst.T)[off_diagonal].mean()):.2f}; nearest exemplar "
          f"counts {torch.bincount((inst @ pool_emb.T).argmax(1), minlength=len(pool_emb)).tolist()}\n")
    print("| cosines | " + " | ".join(f"q{int(q * 100)}" for q in QUANTILES) + " | per-instance max - min | "
          + " | ".join(f"with + and - at {a}/{b}" for a, b in THRESHOLDS) + " |")
    print("|---|" + "--:|" * (len(QUANTILES) + 1 + len(THRESHOLDS)))
    centred = center_embeddings(inst, torch.ones(len(inst), dtype=torch.bool), pool_emb)
    for name, (e, p) in (("raw", (inst, pool_emb)), ("centred", centred)):
        sim = e @ p.T  # (N, P)
        qs = torch.quantile(sim.flatten(), torch.tensor(QUANTILES)).tolist()
        both = [float(((sim > a).any(1) & (sim < b).any(1)).float().mean()) for a, b in THRESHOLDS]
        print(f"| {name} | " + " | ".join(f"{q:.2f}" for q in qs) + f" | {float((sim.amax(1) - sim.amin(1)).mean()):.2f} | "
              + " | ".join(f"{100 * x:.0f}%" for x in both) + " |")
    print(f"\n.venv/bin/python bench/eec_similarity.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
