"""Start-up cost of the PCT training loops on a fake VOC-like tree: everything run_pct_train does before the
first training step (reading the split and manifest, checking images and label maps, the resume
fingerprint), with the network build stubbed out and the loop stopped at its entry.

    .venv/bin/python bench/pct_data.py [--images 300] [--strong 43] [--size 500x375] [--threads 1] [--root DIR]

Per kind (strong_only, pct, retrain) it prints the seconds to the loop's entry (best of --repeat), how many
images and label maps were decoded on the way, and the peak of traced Python/numpy memory (tracemalloc, a
separate run). The tree (JPEG images with random rectangles, grey label PNGs with VOC's 255 borders, the
retrain's pseudo labels) is written once under --root and reused. Not a test: prints figures only.

To compare with another version of maskless/pct (e.g. the last commit), put that version first on the path:
    git archive HEAD maskless | tar -x -C /tmp/before && PYTHONPATH=/tmp/before .venv/bin/python bench/pct_data.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np


class _AtLoop(Exception):
    pass


def make_tree(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> dict:
    """VOC layout under root/VOCdevkit/VOC2012 (n train images, n // 10 val), skipped when already there."""
    voc = root / "VOCdevkit" / "VOC2012"
    images, labels, sets = voc / "JPEGImages", voc / "SegmentationClassAug", voc / "ImageSets" / "Segmentation"
    stems = [f"2008_{i:06d}" for i in range(n + max(1, n // 10))]
    paths = {"images": images, "labels": labels, "train_list": sets / "train_aug.txt", "val_list": sets / "val.txt"}
    if (sets / "val.txt").is_file() and len(list(images.glob("*.jpg"))) == len(stems):
        return paths
    for d in (images, labels, sets):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for stem in stems:
        img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 90)], axis=2).astype(np.uint8)
        img = cv2.add(img, rng.integers(0, 40, img.shape, dtype=np.uint8))
        lab = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            c = int(rng.integers(1, 21))
            y0, x0 = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
            y1, x1 = y0 + int(rng.integers(20, h - y0)), x0 + int(rng.integers(20, w - x0))
            lab[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = 255
            lab[y0:y1, x0:x1] = c
            img[y0:y1, x0:x1] = (20 + 10 * c, 200 - 8 * c, 120)
        assert cv2.imwrite(str(images / f"{stem}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        assert cv2.imwrite(str(labels / f"{stem}.png"), lab)
    (sets / "train_aug.txt").write_text("".join(f"{s}\n" for s in stems[:n]))
    (sets / "val.txt").write_text("".join(f"{s}\n" for s in stems[n:]))
    return paths


def prepare(root: Path, n: int, size: tuple[int, int], strong: int, threads: int) -> dict:
    from maskless.data.voc import run_pct_data
    from maskless.pct.labels import read_label_source
    from maskless.pct.stage import SplitParams, read_split, run_pct_split

    tree = make_tree(root, n, size)
    out = root / "pct"
    manifest, labels = out / "manifest.parquet", out / "labels.json"
    if not labels.is_file():
        classes = ["background"] + [f"c{i}" for i in range(1, 21)]
        run_pct_data(data={**{k: str(v) for k, v in tree.items()}, "tags": None, "classes": classes,
                           "num_classes": None, "ignore_index": 255},
                     manifest=str(manifest), labels=str(labels), threads=threads)
    split_path = out / f"count{strong}" / "split.json"
    if not split_path.is_file():
        run_pct_split(manifest=str(manifest), gt=str(labels), out=str(split_path), params=SplitParams(count=strong))
    pseudo = out / f"count{strong}" / "pseudo"
    if not pseudo.is_dir():  # the retrain's pseudo labels: the weak images' own masks
        pseudo.mkdir(parents=True)
        src = read_label_source(str(labels))["images"]
        for i in read_split(str(split_path))["weak"]:
            lab = cv2.imread(src[str(i)]["label"], cv2.IMREAD_UNCHANGED)
            assert cv2.imwrite(str(pseudo / f"{i}.png"), lab)
    return {"manifest": str(manifest), "gt": str(labels), "split_path": str(split_path), "pseudo": str(pseudo)}


def startup(kind: str, paths: dict, threads: int, counts: dict) -> float:
    """Seconds from run_pct_train's call to the training loop's entry."""
    import torch

    import maskless.data.images as images_mod
    import maskless.data.semantic as semantic_mod
    from maskless.pct import train as train_mod
    from maskless.pct.stage import run_pct_train, train_params
    from maskless.config import load_config
    from maskless.params import section_params

    pct = section_params(load_config("config.yaml"), "pct")
    params = train_params(pct, kind=kind, mode="plain", arch="resnet18", num_classes=21, seed=0)

    def at_loop(*args, **kwargs):
        raise _AtLoop

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return fn(*args, **kwargs)
        return wrapped

    saved = (train_mod._fit, train_mod.build_segnet, images_mod.decode_rgb, semantic_mod.read_label_png,
             cv2.imread)
    train_mod._fit = at_loop
    train_mod.build_segnet = lambda *a, **k: torch.nn.Conv2d(3, 21, 1)
    images_mod.decode_rgb = counting("images decoded", saved[2])
    semantic_mod.read_label_png = counting("label PNGs decoded", saved[3])
    cv2.imread = counting("pseudo PNGs decoded", saved[4])  # the stage reads pseudo labels with cv2.imread
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            try:
                run_pct_train(kind=kind, params=params, out=f"{tmp}/m.pt", state_dir=f"{tmp}/s", backbone=None,
                              pseudo=paths["pseudo"] if kind == "retrain" else None, device="cpu",
                              threads=threads, split_path=paths["split_path"], manifest=paths["manifest"],
                              gt=paths["gt"])
            except _AtLoop:
                return time.perf_counter() - t0
            raise RuntimeError("the training loop was never entered")
    finally:
        (train_mod._fit, train_mod.build_segnet, images_mod.decode_rgb, semantic_mod.read_label_png,
         cv2.imread) = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=300, help="training images (plus a tenth as val)")
    ap.add_argument("--strong", type=int, default=43, help="pixel-labelled images (VOC: 1464 of 10582 is 1/7)")
    ap.add_argument("--size", default="500x375", help="WxH of every image")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--root", default=None, help="where the tree is kept (default: a folder under /tmp)")
    args = ap.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    root = Path(args.root or f"/tmp/maskless_bench_pct_data_{args.images}_{args.size}")
    paths = prepare(root, args.images, size, args.strong, args.threads)
    import maskless.pct.train as train_mod

    print(f"command: .venv/bin/python bench/pct_data.py --images {args.images} --strong {args.strong} "
          f"--size {args.size} --threads {args.threads} --repeat {args.repeat} --root {root}")
    print(f"maskless.pct.train from {train_mod.__file__}")
    print(f"{'kind':<12} {'start-up s':>10} {'peak traced MB':>15}  decodes")
    for kind in ("strong_only", "pct", "retrain"):
        counts: dict = {}
        best = min(startup(kind, paths, args.threads, counts) for _ in range(args.repeat))
        tracemalloc.start()
        startup(kind, paths, args.threads, {})
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        per_run = ", ".join(f"{k} {v // args.repeat}" for k, v in sorted(counts.items()))
        print(f"{kind:<12} {best:>10.2f} {peak:>15.1f}  {per_run or 'none'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
