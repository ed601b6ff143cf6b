"""Free Mask cost over the backbone forward alone, and peak memory of a shard job at 1x and 4x images.

    .venv/bin/python bench/freemask.py [--images N] [--input-size 320] [--level res5] [--arch resnet18]
                                       [--coco ../shared/data/coco-tiny] [--backbone results/<exp>/pretrain/backbone.pt]
                                       [--against <git revision>]

Throughput: the same prepared images go through (a) the backbone forward alone and (b) the forward plus
free_mask (queries, cosine, normalisation, Matrix NMS, upsampling, filters, embeddings); the overhead is
(b - a) / a, measured in one run (target: at most 15%), and (b) split into query_masks (queries, the cosine
product, normalisation, maskness), matrix_nms_top_k and the rest; with --against REV, (e) free_mask as it
was at git revision REV (its maskless/freemask.py and maskless/ops/matrix_nms.py) on the same features,
before (b) on every other image and after (d) on the rest, its output checked equal: the before/after
ratio of a speed change, measured where it runs; (c), on the same features in the same loop, free_mask
with the full N x N Matrix NMS and a sort (maskless.ops.matrix_nms.matrix_nms) in place of its top-k one
(matrix_nms_top_k: the same output, checked here too); (d) the top-k one with the mask intersections as a
float product instead of the int8 one (maskless.ops.matrix_nms.intersections; the same output, checked). Memory: run_freemask_shard on a single shard of N and
4N images in fresh subprocesses, peak RSS of each (target: flat). Random-init backbone unless --backbone: the
forward's cost does not depend on the weights, but how many queries pass the maskness filter (and so the
Matrix NMS's size) does. Prints figures and the command; not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def make_manifest(tmp: Path, n: int, coco: str | None) -> str:
    from maskless.data.ingest import ingest
    from maskless.data.synthetic import SyntheticParams, generate

    if coco:
        images, ann = f"{coco}/images", f"{coco}/instances.json"
    else:
        generate(str(tmp / "syn"), SyntheticParams(num_images=n, seed=1))
        images, ann = str(tmp / "syn" / "images"), str(tmp / "syn" / "instances.json")
    out = str(tmp / f"manifest_{n}.parquet")
    ingest(kind="coco", images=images, annotations=ann, manifest_out=out, gt_out=None, max_images=n)
    return out


def free_mask_at(rev: str):
    """free_mask as it was at git revision `rev`: its freemask.py with its matrix_nms.py (the rest of maskless
    as it is now), loaded from `git show` as separate modules."""
    import types

    root = Path(__file__).resolve().parent.parent
    mods = {}
    for name, path in (("matrix_nms", "maskless/ops/matrix_nms.py"), ("freemask", "maskless/freemask.py")):
        src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True, check=True)
        mod = types.ModuleType(f"at_{rev}_{name}")
        sys.modules[mod.__name__] = mod  # dataclasses look their module up there
        exec(compile(src.stdout, f"{rev}:{path}", "exec"), mod.__dict__)
        mods[name] = mod
    for key, value in list(vars(mods["freemask"]).items()):  # its Matrix NMS functions from the same revision
        if getattr(value, "__module__", None) == "maskless.ops.matrix_nms" and hasattr(mods["matrix_nms"], key):
            setattr(mods["freemask"], key, getattr(mods["matrix_nms"], key))
    return mods["freemask"].free_mask


def throughput(manifest: str, args) -> None:
    from maskless.data.manifest import read_manifest
    from maskless.data.images import load_resized
    import maskless.freemask as fm
    from maskless.freemask import FreeMaskParams, free_mask
    from maskless.models.backbones import load_any_backbone
    from maskless.models.resnet import build_resnet, normalize
    import maskless.ops.matrix_nms as nms
    from maskless.ops.matrix_nms import matrix_nms

    def full_top_k(masks, scores, k, *, kernel, sigma, areas):
        decayed = matrix_nms(masks, scores, kernel=kernel, sigma=sigma, areas=areas)
        top = torch.argsort(decayed, descending=True, stable=True)[:k]
        return top, decayed[top]

    params = FreeMaskParams(feature_level=args.level, input_size=args.input_size)
    model = (load_any_backbone(args.backbone) if args.backbone else build_resnet(args.arch)).eval()
    prepared = [load_resized(r, params.input_size) for r in read_manifest(manifest)]
    xs = [(normalize(torch.from_numpy(img).permute(2, 0, 1)[None]), hw) for img, hw in prepared]
    t_fwd = t_fm = t_full = t_float = t_old = 0.0
    top_k = fm.matrix_nms_top_k
    old_free_mask = free_mask_at(args.against) if args.against else None
    parts = {"query_masks": 0.0, "matrix_nms_top_k": 0.0}  # inside (b): where free_mask's time goes

    def timed(name, fn):
        def run(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[name] += time.perf_counter() - t
        return run

    with torch.inference_mode():
        model(xs[0][0])  # warm-up
        for i, (x, hw) in enumerate(xs):
            t0 = time.perf_counter()
            feats = model(x)[params.feature_level][0]
            t_fwd += time.perf_counter() - t0
            if old_free_mask is not None and i % 2 == 0:
                t = time.perf_counter()
                old = old_free_mask(feats, hw, params)
                t_old += time.perf_counter() - t
            t1 = time.perf_counter()
            qm, fm.query_masks = fm.query_masks, timed("query_masks", fm.query_masks)
            fm.matrix_nms_top_k = timed("matrix_nms_top_k", top_k)
            try:
                out = free_mask(feats, hw, params)
            finally:
                fm.query_masks, fm.matrix_nms_top_k = qm, top_k
            t2 = time.perf_counter()
            fm.matrix_nms_top_k = full_top_k
            try:
                ref = free_mask(feats, hw, params)
            finally:
                fm.matrix_nms_top_k = top_k
            t3 = time.perf_counter()
            bits, nms._BITS = nms._BITS, ()  # the intersections as a float product, as before the int8 one
            try:
                as_float = free_mask(feats, hw, params)
            finally:
                nms._BITS = bits
            t4 = time.perf_counter()
            if old_free_mask is not None and i % 2 == 1:
                old = old_free_mask(feats, hw, params)
                t_old += time.perf_counter() - t4
            for other in (ref, as_float) + ((old,) if old_free_mask is not None else ()):
                assert all((getattr(out, f) == getattr(other, f)).all() for f in ("masks", "scores", "embeddings"))
            t_fm, t_full = t_fm + (t2 - t1), t_full + (t3 - t2)
            t_float += t4 - t3
    n = len(xs)
    print(f"images: {n}, input short side {args.input_size}, {args.arch} {args.level}, threads {torch.get_num_threads()}")
    print(f"backbone forward alone: {n / t_fwd:.2f} img/s ({1000 * t_fwd / n:.1f} ms/img)")
    print(f"forward + free_mask:    {n / (t_fwd + t_fm):.2f} img/s (free_mask {1000 * t_fm / n:.1f} ms/img)")
    print(f"free_mask overhead over the forward: {100 * t_fm / t_fwd:.1f}%")
    rest = t_fm - sum(parts.values())
    print("of which " + ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in parts.items()) +
          f", the rest {1000 * rest / n:.1f} ms/img")
    print(f"with the full N x N Matrix NMS instead (same output): free_mask {1000 * t_full / n:.1f} ms/img, "
          f"overhead {100 * t_full / t_fwd:.1f}%")
    print(f"with the mask intersections as a float product instead of int8 (same output): free_mask "
          f"{1000 * t_float / n:.1f} ms/img, overhead {100 * t_float / t_fwd:.1f}%")
    if old_free_mask is not None:
        print(f"free_mask at {args.against} (same output): {1000 * t_old / n:.1f} ms/img, overhead "
              f"{100 * t_old / t_fwd:.1f}%; this version is {t_old / t_fm:.2f}x as fast")


def shard_job(manifest: str, n: int, args) -> None:
    """Child process: one shard holding all n images; prints peak RSS in MB as JSON."""
    from maskless.freemask import FreeMaskParams, run_freemask_shard
    from maskless.models.resnet import build_resnet
    from maskless.models.weights import save_backbone

    tmp = Path(tempfile.mkdtemp())
    save_backbone(str(tmp / "w.pt"), build_resnet(args.arch), args.arch, {})
    params = FreeMaskParams(feature_level=args.level, input_size=args.input_size)
    run_freemask_shard(manifest=manifest, weights=str(tmp / "w.pt"), shard=0, shard_size=n,
                       out_store=str(tmp / "s.zarr"), params=params, device="cpu")
    print(json.dumps({"images": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--input-size", type=int, default=320)
    ap.add_argument("--level", default="res5")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--coco", default=None, help="a COCO-format folder (images/, instances.json)")
    ap.add_argument("--backbone", default=None, help="trained backbone weights (default: random init)")
    ap.add_argument("--against", default=None, help="also time free_mask as at this git revision (same output)")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--manifest", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return shard_job(args.manifest, args.child, args)
    tmp = Path(tempfile.mkdtemp())
    print("command: .venv/bin/python " + " ".join(sys.argv))
    counts = [args.images, 4 * args.images] if not args.coco else [min(args.images, 12), min(4 * args.images, 50)]
    manifests = {n: make_manifest(tmp, n, args.coco) for n in counts}
    throughput(manifests[counts[0]], args)
    for n in counts:
        cmd = [sys.executable, __file__, "--child", str(n), "--manifest", manifests[n], "--arch", args.arch,
               "--level", args.level, "--input-size", str(args.input_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(f"peak RSS of one shard job over {n} images: {json.loads(out)['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
