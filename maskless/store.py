"""The mask store (DESIGN.md "Mask store"): coarse masks in zarr v3 shards, a parquet index, COCO export.

One store (a zarr v3 directory) per manifest shard, written whole by one job (one writer per store: two
writers on one zarr shard lose data), into a temp folder renamed into place, so a killed job leaves no
store at the final path. Layout, N masks of M images, images sorted by id:

    bits         uint8 (sum of bytes,)  np.packbits of each box-cropped mask, concatenated (ops.masks.pack_mask)
    bit_offsets  int64 (N + 1,)         mask i is bits[bit_offsets[i]:bit_offsets[i + 1]]
    boxes        float32 (N, 4)         COCO xywh, integer-valued
    scores       float32 (N,)           sorted descending within an image
    areas        int64 (N,)             pixel counts
    image_ids    int64 (N,)
    embeddings   float32 (N, D)         zeros where the image has none (img_has_embedding = 0)
    img_ids, img_start, img_count       int64 (M,): masks of image img_ids[k] are rows start .. start + count
    img_height, img_width               int32 (M,); images with zero masks are listed too
    img_has_embedding                   uint8 (M,)
    attrs: format, format_version, embedding_dim, n_images, n_masks, and the caller's attrs (e.g. params).

Per-row arrays use small chunks grouped by the zarr v3 sharding codec into few files, so reading one image
decodes only the chunks its rows touch (random access) while a shard stays a handful of files.

The parquet index (build_index) has one row per mask (image_id, shard, index, score, x, y, w, h, area). The
per-image table (every image, with zero masks or not: image_id, shard number, height, width, count) lives in
the same file's schema metadata under "maskless.images" as JSON, so one file says which shard holds any
image. Shard paths are stored relative to the index's folder (the results tree can be moved).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from maskless.io import write_json_atomic, write_parquet_atomic
from maskless.ops.masks import boxes_xywh, encode_rles, pack_mask, unpack_mask

log = logging.getLogger(__name__)

FORMAT = "maskless-maskstore"
FORMAT_VERSION = 1
INDEX_META_KEY = b"maskless.images"
ROW_CHUNK = 256  # mask rows per chunk: one image's masks touch one or two chunks
ROWS_PER_SHARD = 64  # chunks per zarr shard file
BITS_CHUNK = 1 << 16  # bytes of packed masks per chunk


@dataclass
class ImageMasks:
    """The masks of one image: masks (N, H, W) bool, scores (N,), embeddings (N, D) or None."""

    image_id: int
    height: int
    width: int
    masks: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.image_id, self.height, self.width = int(self.image_id), int(self.height), int(self.width)
        masks = np.asarray(self.masks, dtype=bool)
        if masks.size == 0:
            masks = masks.reshape(0, self.height, self.width)
        if masks.ndim != 3 or masks.shape[1:] != (self.height, self.width):
            raise ValueError(f"image {self.image_id}: masks must be (N, {self.height}, {self.width}), "
                             f"got {masks.shape}")
        self.masks = masks
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        n = self.masks.shape[0]
        if self.scores.shape[0] != n:
            raise ValueError(f"image {self.image_id}: {n} masks but {self.scores.shape[0]} scores")
        if self.embeddings is not None:
            self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
            if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
                raise ValueError(f"image {self.image_id}: embeddings must be ({n}, D), got {self.embeddings.shape}")


@contextlib.contextmanager
def _atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path` (an old store is removed after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the store the usual permissions
    try:
        yield tmp
        if path.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _create(group, name: str, data: np.ndarray, chunk: int, per_shard: int) -> None:
    from zarr.codecs import ZstdCodec

    chunks = (chunk,) + data.shape[1:]
    shards = (chunk * per_shard,) + data.shape[1:]
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks, shards=shards,
                             compressors=ZstdCodec(level=3))
    if data.size:
        arr[...] = data


def _pack_all(images: list[ImageMasks], embedding_dim: int) -> dict[str, np.ndarray]:
    """Concatenate every image's packed masks and per-mask values into the store's arrays."""
    bits, offsets, boxes, scores, areas, ids, embs = [], [0], [], [], [], [], []
    for im in images:
        order = np.argsort(-im.scores, kind="stable")  # scores descending within an image
        for k in order:
            b, box = pack_mask(im.masks[k])
            bits.append(b)
            offsets.append(offsets[-1] + b.size)
            boxes.append(box)
        scores.append(im.scores[order])
        areas.append(im.masks[order].sum(axis=(1, 2), dtype=np.int64))
        ids.append(np.full(len(order), im.image_id, dtype=np.int64))
        if im.embeddings is None:
            embs.append(np.zeros((len(order), embedding_dim), np.float32))
        elif im.embeddings.shape[1] != embedding_dim:
            raise ValueError(f"image {im.image_id}: embeddings have dim {im.embeddings.shape[1]}, "
                             f"store embedding_dim is {embedding_dim}")
        else:
            embs.append(im.embeddings[order])
    counts = np.array([len(im.scores) for im in images], dtype=np.int64)
    return {
        "bits": np.concatenate(bits) if bits else np.zeros(0, np.uint8),
        "bit_offsets": np.asarray(offsets, dtype=np.int64),
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "scores": np.concatenate(scores) if scores else np.zeros(0, np.float32),
        "areas": np.concatenate(areas) if areas else np.zeros(0, np.int64),
        "image_ids": np.concatenate(ids) if ids else np.zeros(0, np.int64),
        "embeddings": np.concatenate(embs) if embs else np.zeros((0, embedding_dim), np.float32),
        "img_ids": np.array([im.image_id for im in images], dtype=np.int64),
        "img_start": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(images) else counts,
        "img_count": counts,
        "img_height": np.array([im.height for im in images], dtype=np.int32),
        "img_width": np.array([im.width for im in images], dtype=np.int32),
        "img_has_embedding": np.array([im.embeddings is not None for im in images], dtype=np.uint8),
    }


def write_shard(path: str, images: list[ImageMasks], *, embedding_dim: int, attrs: dict | None = None) -> None:
    """Write one shard store at `path` (replacing any old one, atomically). Images are stored by id."""
    import zarr

    if embedding_dim < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim} (store {path})")
    images = sorted(images, key=lambda im: im.image_id)
    ids = [im.image_id for im in images]
    dup = sorted({i for i, j in zip(ids, ids[1:]) if i == j})
    if dup:
        raise ValueError(f"duplicate image ids {dup[:10]} in mask store {path}")
    arrays = _pack_all(images, embedding_dim)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "embedding_dim": int(embedding_dim),
            "n_images": len(images), "n_masks": int(arrays["scores"].size), **(attrs or {})}
    with _atomic_dir(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name, data in arrays.items():
            if name == "bits":
                _create(group, name, data, BITS_CHUNK, ROWS_PER_SHARD)
            else:
                _create(group, name, data, ROW_CHUNK, ROWS_PER_SHARD)
        group.attrs.update(meta)


class ShardReader:
    """Read access to one shard store; loads only the per-image index up front.

    `store` is a path or any zarr StoreLike (tests pass a byte-counting wrapper).
    """

    def __init__(self, store, where: str | None = None) -> None:
        import zarr

        self.where = str(where if where is not None else store)
        if isinstance(store, (str, os.PathLike)) and not Path(store).is_dir():
            raise FileNotFoundError(f"mask store {self.where} does not exist")
        self.group = zarr.open_group(store, mode="r")
        self.attrs = dict(self.group.attrs)
        if self.attrs.get("format") != FORMAT:
            raise ValueError(f"{self.where} is not a maskless mask store (attrs format={self.attrs.get('format')!r})")
        if self.attrs.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"mask store {self.where} has format_version {self.attrs.get('format_version')}, "
                             f"this code reads {FORMAT_VERSION}")
        self.index = {k: self.group[k][:] for k in
                      ("img_ids", "img_start", "img_count", "img_height", "img_width", "img_has_embedding")}

    def image_ids(self) -> np.ndarray:
        return self.index["img_ids"]

    def _row(self, image_id: int) -> int:
        ids = self.index["img_ids"]
        k = int(np.searchsorted(ids, image_id))
        if k >= ids.size or ids[k] != image_id:
            raise KeyError(f"image id {image_id} is not in mask store {self.where}")
        return k

    def get(self, image_id: int) -> ImageMasks:
        """One image's masks, reading only its slices of the per-mask arrays."""
        k = self._row(int(image_id))
        s, n = int(self.index["img_start"][k]), int(self.index["img_count"][k])
        g = self.group
        offsets = g["bit_offsets"][s : s + n + 1] if n else np.zeros(1, np.int64)
        bits = g["bits"][int(offsets[0]) : int(offsets[-1])] if n else np.zeros(0, np.uint8)
        fields = {"boxes": g["boxes"][s : s + n], "scores": g["scores"][s : s + n],
                  "embeddings": g["embeddings"][s : s + n]}
        return self._assemble(k, bits, offsets - offsets[0], fields)

    def _assemble(self, k: int, bits: np.ndarray, offsets: np.ndarray, fields: dict) -> ImageMasks:
        h, w = int(self.index["img_height"][k]), int(self.index["img_width"][k])
        n = fields["scores"].shape[0]
        masks = np.zeros((n, h, w), dtype=bool)
        for i in range(n):
            masks[i] = unpack_mask(bits[offsets[i] : offsets[i + 1]], fields["boxes"][i], h, w)
        emb = fields["embeddings"] if self.index["img_has_embedding"][k] else None
        return ImageMasks(int(self.index["img_ids"][k]), h, w, masks, fields["scores"], emb)

    def iter_images(self) -> Iterator[ImageMasks]:
        """Every image in id order, reading each array once (for exports)."""
        g = self.group
        bits, offsets = g["bits"][:], g["bit_offsets"][:]
        rows = {"boxes": g["boxes"][:], "scores": g["scores"][:], "embeddings": g["embeddings"][:]}
        for k in range(self.index["img_ids"].size):
            s, n = int(self.index["img_start"][k]), int(self.index["img_count"][k])
            yield self._assemble(k, bits, offsets[s : s + n + 1], {f: v[s : s + n] for f, v in rows.items()})

    def mask_table(self) -> dict[str, np.ndarray]:
        """Per-mask values without the masks: image_ids, scores, boxes, areas."""
        return {k: self.group[k][:] for k in ("image_ids", "scores", "boxes", "areas")}


def read_image(path: str, image_id: int) -> ImageMasks:
    """Random access to one image's masks in a shard store (KeyError naming id and store if absent)."""
    return ShardReader(path).get(image_id)


def build_index(shard_paths: list[str], out_parquet: str) -> None:
    """Parquet index of shard stores: one row per mask, plus the per-image table in the schema metadata."""
    import pyarrow as pa

    if not shard_paths:
        raise ValueError(f"build_index needs at least one shard store (index {out_parquet})")
    base = Path(out_parquet).resolve().parent
    rel = [os.path.relpath(Path(p).resolve(), base) for p in shard_paths]
    cols: dict[str, list] = {k: [] for k in ("image_id", "shard", "index", "score", "x", "y", "w", "h", "area")}
    images = {"image_id": [], "shard": [], "height": [], "width": [], "count": []}
    owner: dict[int, str] = {}
    for s, path in enumerate(shard_paths):
        reader = ShardReader(path)
        for img in reader.image_ids().tolist():
            if img in owner:
                raise ValueError(f"image id {img} is in two mask stores: {owner[img]} and {path}")
            owner[img] = path
        t = reader.mask_table()
        n = t["scores"].size
        cols["image_id"].append(t["image_ids"])
        cols["shard"].append(np.full(n, rel[s], dtype=object))
        cols["index"].append(np.arange(n, dtype=np.int64))
        cols["score"].append(t["scores"])
        for j, name in enumerate("xywh"):
            cols[name].append(t["boxes"][:, j])
        cols["area"].append(t["areas"])
        for key, src in (("image_id", "img_ids"), ("height", "img_height"), ("width", "img_width"),
                         ("count", "img_count")):
            images[key] += reader.index[src].tolist()
        images["shard"] += [s] * reader.image_ids().size
    types = {"image_id": pa.int64(), "shard": pa.string(), "index": pa.int64(), "score": pa.float32(),
             "x": pa.float32(), "y": pa.float32(), "w": pa.float32(), "h": pa.float32(), "area": pa.int64()}
    arrays = {k: pa.array(np.concatenate(v) if v else np.zeros(0), type=types[k]) for k, v in cols.items()}
    table = pa.table(arrays)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "shards": rel, **images}
    table = table.replace_schema_metadata({INDEX_META_KEY: json.dumps(meta, separators=(",", ":")).encode()})
    write_parquet_atomic(out_parquet, table)
    log.info("mask index %s: %d shards, %d images, %d masks", out_parquet, len(rel), len(owner), table.num_rows)


class MaskStore:
    """All shards of a mask index: MaskStore(index_parquet).get(image_id) -> ImageMasks."""

    def __init__(self, index_parquet: str) -> None:
        import pyarrow.parquet as pq

        self.index_path = str(index_parquet)
        if not Path(index_parquet).is_file():
            raise FileNotFoundError(f"mask index {index_parquet} does not exist")
        meta = (pq.read_schema(index_parquet).metadata or {}).get(INDEX_META_KEY)
        if meta is None:
            raise ValueError(f"{index_parquet} is not a mask index (no {INDEX_META_KEY.decode()} metadata)")
        meta = json.loads(meta)
        base = Path(index_parquet).resolve().parent
        self.shards = [str(base / p) for p in meta["shards"]]
        self._shard_of = dict(zip(meta["image_id"], meta["shard"]))
        self._readers: dict[int, ShardReader] = {}

    def image_ids(self) -> list[int]:
        return sorted(self._shard_of)

    def __len__(self) -> int:
        return len(self._shard_of)

    def __contains__(self, image_id: int) -> bool:
        return int(image_id) in self._shard_of

    def shard_of(self, image_id: int) -> str:
        if int(image_id) not in self._shard_of:
            raise KeyError(f"image id {image_id} is not in mask index {self.index_path}")
        return self.shards[self._shard_of[int(image_id)]]

    def _reader(self, s: int) -> ShardReader:
        if s not in self._readers:
            self._readers[s] = ShardReader(self.shards[s])
        return self._readers[s]

    def get(self, image_id: int) -> ImageMasks:
        self.shard_of(image_id)
        return self._reader(self._shard_of[int(image_id)]).get(int(image_id))

    def iter_images(self) -> Iterator[ImageMasks]:
        """Every image, shard by shard, each shard read in one pass."""
        for s in range(len(self.shards)):
            yield from self._reader(s).iter_images()


def _coco_records(im: ImageMasks, max_per_image: int | None) -> list[tuple[dict, float, np.ndarray, float]]:
    order = np.argsort(-im.scores, kind="stable")[:max_per_image]
    masks = im.masks[order]
    rles = encode_rles(masks)
    boxes = boxes_xywh(masks)
    areas = masks.sum(axis=(1, 2))
    return [(rles[i], float(im.scores[k]), boxes[i], float(areas[i])) for i, k in enumerate(order)]


def export_coco(*, index: str, manifest: str, out_json: str, kind: str = "results",
                max_per_image: int | None = None) -> dict:
    """Export the indexed masks to COCO JSON (atomic write); returns {"images", "masks"} counts.

    kind "results": [{image_id, category_id: 1, segmentation (RLE, str counts), score}], sorted by score
    within each image and WITHOUT "bbox" (pycocotools would otherwise use box areas for the size ranges).
    kind "annotations": a COCO dataset (images from the manifest, one category "object", annotations with
    id, bbox xywh, area, iscrowd 0, segmentation RLE, score) that any detector can train on.
    """
    from maskless.data.manifest import read_manifest

    if kind not in ("results", "annotations"):
        raise ValueError(f"export_coco kind must be 'results' or 'annotations', got {kind!r}")
    if max_per_image is not None and max_per_image < 1:
        raise ValueError(f"max_per_image must be >= 1 or None, got {max_per_image}")
    records = {int(r["id"]): r for r in read_manifest(manifest)}
    out, anns = [], []
    for im in MaskStore(index).iter_images():
        rec = records.get(im.image_id)
        if rec is None:
            raise ValueError(f"image id {im.image_id} of mask index {index} is not in manifest {manifest}")
        if (int(rec["height"]), int(rec["width"])) != (im.height, im.width):
            raise ValueError(f"image {im.image_id}: masks are {im.height}x{im.width} in {index} but the "
                             f"manifest {manifest} says {rec['height']}x{rec['width']}")
        for rle, score, box, area in _coco_records(im, max_per_image):
            if kind == "results":
                out.append({"image_id": im.image_id, "category_id": 1, "segmentation": rle, "score": score})
            else:
                anns.append({"id": len(anns) + 1, "image_id": im.image_id, "category_id": 1,
                             "bbox": [float(v) for v in box], "area": area, "iscrowd": 0,
                             "segmentation": rle, "score": score})
    if kind == "annotations":
        images = [{"id": int(r["id"]), "file_name": r["file_name"], "width": int(r["width"]),
                   "height": int(r["height"])} for r in records.values()]
        out = {"info": {"description": f"maskless masks from {index}"}, "images": images,
               "categories": [{"id": 1, "name": "object", "supercategory": "object"}], "annotations": anns}
    write_json_atomic(out_json, out)
    n = len(out) if kind == "results" else len(anns)
    log.info("exported %d masks (%s) to %s", n, kind, out_json)
    return {"images": len(records), "masks": n}
