"""Mask store size and read latency on realistic masks, against the same masks as COCO RLE JSON.

    .venv/bin/python bench/store.py [--images 64] [--shard-size 32] [--reads 300] [--seed 0]
                                    [--coco ../shared/data/coco-tiny/instances.json]

Mask sets: (1, 2) Free Mask-like output at 160x160 (the synthetic default) and 480x640 (COCO-sized), 20 masks
per image: a soft map on a stride-32 grid (a Gaussian bump plus noise, min-max normalised as Free Mask
does), bilinear-upsampled and thresholded at 0.5, so smooth blobs, sometimes in several pieces; (3) the
coco-tiny ground-truth masks (polygons and RLE decoded with pycocotools), all instances of each image.
Embeddings: 128-d ReLU'd Gaussian noise (float32), a stand-in for Free Mask's pooled features.

Figures per set: store bytes per mask without embeddings (every file of the shard stores except the
embeddings array: bits, offsets, boxes, scores, areas, ids, image table, zarr metadata and shard indexes)
and with them; the packed bits alone; the export_coco results file (image_id, category_id, segmentation
RLE, score) per mask and the ratio store / JSON (target <= 0.5); read latency of one image: MaskStore opened
once and every shard's reader opened by one warm-up get, then .get(id) on random images (target < 5 ms);
read_image(path, id), which opens the store each time. Every read is checked against the written masks.
Prints a markdown table and the command; not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from maskless.data.manifest import write_manifest
from maskless.coco_export import export_coco
from maskless.store import ImageMasks, MaskStore, build_index, read_image
from maskless.store_writer import write_shard

EMB_DIM = 128


def freemask_like(rng: np.random.Generator, n: int, h: int, w: int, stride: int = 32) -> np.ndarray:
    """(n, h, w) bool: soft maps on a stride-32 grid, upsampled bilinearly and thresholded at 0.5."""
    import cv2

    gh, gw = max(2, -(-h // stride)), max(2, -(-w // stride))
    yy, xx = np.mgrid[0:gh, 0:gw]  # (gh, gw)
    out = np.zeros((n, h, w), bool)
    for i in range(n):
        while not out[i].any():
            cy, cx, s = rng.uniform(0, gh), rng.uniform(0, gw), rng.uniform(0.5, max(gh, gw) / 3)
            field = 0.7 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)) + 0.3 * rng.random((gh, gw))
            field = (field - field.min()) / (field.max() - field.min())  # per-query min-max, as Free Mask
            out[i] = cv2.resize(field.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    return out


def synthetic_set(rng, n_images: int, h: int, w: int) -> list[ImageMasks]:
    return [ImageMasks(i + 1, h, w, freemask_like(rng, 20, h, w), rng.random(20),
                       np.maximum(rng.normal(size=(20, EMB_DIM)), 0)) for i in range(n_images)]


def coco_set(rng, path: str) -> list[ImageMasks]:
    from pycocotools import mask as mask_util

    data = json.loads(Path(path).read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    per_image: dict[int, list[np.ndarray]] = {i: [] for i in sizes}
    for ann in data["annotations"]:
        h, w = sizes[ann["image_id"]]
        seg = ann["segmentation"]
        if isinstance(seg, list):  # polygons: one RLE per polygon, merged
            rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
        else:
            rle = mask_util.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
        per_image[ann["image_id"]].append(mask_util.decode(rle).astype(bool))
    out = []
    for i, masks in sorted(per_image.items()):
        h, w = sizes[i]
        m = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        out.append(ImageMasks(i, h, w, m, rng.random(len(m)), np.maximum(rng.normal(size=(len(m), EMB_DIM)), 0)))
    return out


def dir_bytes(path: Path, skip: str | None = None) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and (skip is None or skip not in f.parts))


def write_set(tmp: Path, images: list[ImageMasks], shard_size: int) -> tuple[str, list[Path], float]:
    shards, t0 = [], time.perf_counter()
    for k in range(0, len(images), shard_size):
        shards.append(tmp / "shards" / f"{k // shard_size}.zarr")
        write_shard(str(shards[-1]), images[k : k + shard_size], embedding_dim=EMB_DIM)
    seconds = time.perf_counter() - t0
    index = str(tmp / "masks.parquet")
    build_index([str(p) for p in shards], index)
    return index, shards, seconds


def json_bytes(tmp: Path, index: str, images: list[ImageMasks]) -> int:
    recs = [{"id": im.image_id, "file_name": f"{im.image_id}.jpg", "path": f"/x/{im.image_id}.jpg",
             "width": im.width, "height": im.height, "split": "train", "hash": ""} for im in images]
    write_manifest(tmp / "manifest.parquet", recs)
    export_coco(index=index, manifest=str(tmp / "manifest.parquet"), out_json=str(tmp / "results.json"))
    return (tmp / "results.json").stat().st_size


def check(got: ImageMasks, want: ImageMasks) -> None:
    order = np.argsort(-want.scores, kind="stable")
    if not (np.array_equal(got.masks, want.masks[order]) and np.allclose(got.embeddings, want.embeddings[order])):
        raise AssertionError(f"image {want.image_id}: the store returned different masks or embeddings")


def timed(fn, ids: list[int], by_id: dict[int, ImageMasks]) -> tuple[float, float]:
    times = []
    for i in ids:
        t0 = time.perf_counter()
        got = fn(i)
        times.append(time.perf_counter() - t0)
        check(got, by_id[i])
    return float(np.median(times)) * 1e3, float(np.percentile(times, 95)) * 1e3


def measure(name: str, images: list[ImageMasks], args, rng) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        index, shards, write_s = write_set(tmp, images, args.shard_size)
        n = sum(len(im.scores) for im in images)
        no_emb = sum(dir_bytes(p, skip="embeddings") for p in shards)
        total = sum(dir_bytes(p) for p in shards)
        bits = sum(dir_bytes(p / "bits") for p in shards)
        js = json_bytes(tmp, index, images)
        by_id = {im.image_id: im for im in images}
        ids = rng.choice(sorted(by_id), size=args.reads).tolist()
        store = MaskStore(index)
        for k in range(0, len(images), args.shard_size):  # open every shard's reader once
            store.get(images[k].image_id)
        get_ms = timed(store.get, ids, by_id)
        path_of = {i: store.shard_of(i) for i in by_id}
        read_ms = timed(lambda i: read_image(path_of[i], i), ids[: max(1, args.reads // 3)], by_id)
    return {"set": name, "images": len(images), "n": n, "no_emb": no_emb / n, "emb": total / n, "bits": bits / n,
            "json": js / n, "ratio": no_emb / js, "get": get_ms, "read": read_ms, "write_s": write_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64, help="images per synthetic set")
    ap.add_argument("--shard-size", type=int, default=32, help="images per shard store (config default 32)")
    ap.add_argument("--reads", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coco", default=str(Path(__file__).resolve().parents[2] / "shared/data/coco-tiny/instances.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    sets = [("Free Mask-like 160x160", lambda: synthetic_set(rng, args.images, 160, 160)),
            ("Free Mask-like 480x640", lambda: synthetic_set(rng, args.images, 480, 640))]
    if Path(args.coco).is_file():
        sets.append(("coco-tiny ground truth", lambda: coco_set(rng, args.coco)))
    else:
        print(f"skipped 1 mask set: coco-tiny ground truth ({args.coco} not found)")
    rows = [measure(name, make(), args, rng) for name, make in sets]
    print("| mask set | images | masks | store B/mask (no emb) | with emb | bits only | RLE JSON B/mask "
          "| store/JSON | MaskStore.get ms (median / p95) | read_image ms (median / p95) | write s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['images']} | {r['n']} | {r['no_emb']:.0f} | {r['emb']:.0f} | {r['bits']:.0f} "
              f"| {r['json']:.0f} | {r['ratio']:.2f} | {r['get'][0]:.2f} / {r['get'][1]:.2f} "
              f"| {r['read'][0]:.2f} / {r['read'][1]:.2f} | {r['write_s']:.2f} |")
    print(f"\nshards of {args.shard_size} images; {args.reads} random gets per set; embeddings {EMB_DIM}-d float32")
    print("command: .venv/bin/python " + " ".join(["bench/store.py"] + sys.argv[1:]))


if __name__ == "__main__":
    main()
