"""The mask store (DESIGN.md "Mask store"): coarse masks in zarr v3 shards and a parquet index.

The writer (ShardWriter, write_shard, its chunk sizes) lives in maskless.store_writer, COCO JSON export of
a store in maskless.coco_export.

One store (a zarr v3 directory) per manifest shard, written whole by one job (one writer per store: two
writers on one zarr shard lose data), into a temp folder renamed into place, so a killed job leaves no
store at the final path. Layout (format_version 2), N masks of M images, images sorted by id, masks by
score descending within an image:

    bits         uint8 (sum of bytes,)  box crops packed by ops.masks.pack_mask_delta, concatenated
    bit_offsets  int64 (N + 1,)         mask i is bits[bit_offsets[i]:bit_offsets[i + 1]]
    boxes        int32 (N, 4)           COCO xywh (the crop's box)
    scores       float32 (N,)
    areas        int64 (N,)             pixel counts
    image_ids    int64 (N,)
    embeddings   float32 (N, D)         zeros where the image has none
    images       int64 (M, 6)           columns IMAGE_COLUMNS: id, first mask row, mask count, height, width,
                                        has_embedding; images with zero masks are listed too
    attrs: format, format_version, bits_encoding, embedding_dim, n_images, n_masks, image_columns, and the
    caller's attrs (e.g. params).

Why this layout (figures in bench/store.py): the row-XOR packing plus zstd over 256 KB chunks stores smooth
coarse masks at a fraction of their COCO RLE JSON size. `bits` and `embeddings` are chunked and grouped by
the zarr v3 sharding codec into one file each, so reading one image decodes only the chunks its masks touch.
The small per-mask arrays are one Blosc-shuffled chunk each, read whole when a reader opens (a few bytes per
mask); a get() then reads the bits and embedding slices in one concurrent zarr call, because each zarr call
costs about a millisecond of event-loop round trips whatever its size.

The parquet index (build_index) has one row per mask (image_id, shard, index, score, x, y, w, h, area). The
per-image table (every image, with zero masks or not: image_id, shard number, height, width, count) lives in
the same file's schema metadata under "maskless.images" as JSON, so one file says which shard holds any
image. Shard paths are stored relative to the index's folder (the results tree can be moved).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from maskless.io import atomic_path
from maskless.ops.masks import unpack_mask_delta

log = logging.getLogger(__name__)

FORMAT = "maskless-maskstore"
FORMAT_VERSION = 2
BITS_ENCODING = "packbits-rowxor-colmajor"  # ops.masks.pack_mask_delta
IMAGE_COLUMNS = ("img_ids", "img_start", "img_count", "img_height", "img_width", "img_has_embedding")
ARRAYS = ("bits", "bit_offsets", "boxes", "scores", "areas", "image_ids", "embeddings", "images")
INDEX_META_KEY = b"maskless.images"


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


class ShardReader:
    """Read access to one shard store.

    Opening reads the metadata and the small per-mask arrays (offsets, boxes, scores, the image table) and
    checks them against each other; get() then reads only the image's bits and embedding slices.
    `store` is a path or any zarr StoreLike (tests pass a byte-counting wrapper).
    """

    def __init__(self, store, where: str | None = None) -> None:
        from zarr.core.sync import sync

        self.where = str(where if where is not None else store)
        if isinstance(store, (str, os.PathLike)) and not Path(store).is_dir():
            raise FileNotFoundError(f"mask store {self.where} does not exist")
        self._sync = sync  # zarr's own event loop: one round trip per call, however many reads it gathers
        self.attrs, self._arrays = sync(self._open(store))
        got = self._read({k: slice(None) for k in ("images", "bit_offsets", "boxes", "scores")})
        images, self.offsets, self.boxes, self.scores = got["images"], got["bit_offsets"], got["boxes"], got["scores"]
        self.boxes = self.boxes.astype(np.int64)
        self.index = {k: images[:, j] for j, k in enumerate(IMAGE_COLUMNS)}
        self._check()

    async def _open(self, store) -> tuple[dict, dict]:
        from zarr.api.asynchronous import open_group

        group = await open_group(store=store, mode="r")
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT:
            raise ValueError(f"{self.where} is not a maskless mask store (attrs format={attrs.get('format')!r})")
        if attrs.get("format_version") != FORMAT_VERSION or attrs.get("bits_encoding") != BITS_ENCODING:
            raise ValueError(f"mask store {self.where} has format_version {attrs.get('format_version')} "
                             f"({attrs.get('bits_encoding')}), this code reads {FORMAT_VERSION} ({BITS_ENCODING}); "
                             "rewrite it by rerunning the stage that made it")

        async def one(name: str):
            try:
                return await group.getitem(name)
            except KeyError:
                raise ValueError(f"mask store {self.where} has no array {name!r}") from None

        return attrs, dict(zip(ARRAYS, await asyncio.gather(*(one(n) for n in ARRAYS))))

    def _read(self, wanted: dict[str, slice]) -> dict[str, np.ndarray]:
        """Read {array name: row slice} in one concurrent zarr call."""
        async def gather():
            return await asyncio.gather(*(self._arrays[name].getitem(sel) for name, sel in wanted.items()))

        return dict(zip(wanted, self._sync(gather()))) if wanted else {}

    def _check(self) -> None:
        """Catch a damaged or hand-edited store at open, not as wrong masks later."""
        n, idx = int(self.attrs["n_masks"]), self.index
        w, h = self.boxes[:, 2], self.boxes[:, 3]
        problems = [
            (self.offsets.shape != (n + 1,), f"bit_offsets has shape {self.offsets.shape}, expected ({n + 1},)"),
            (self.boxes.shape != (n, 4) or self.scores.shape != (n,), "boxes or scores do not have n_masks rows"),
            (idx["img_ids"].size != self.attrs["n_images"], "the image table does not have n_images rows"),
            (self.offsets[-1:].tolist() != [self._arrays["bits"].shape[0]], "bit_offsets do not end at bits' size"),
            (not np.array_equal(np.diff(self.offsets), h * ((w + 7) // 8)),  # ops.masks.delta_nbytes
             "bit_offsets disagree with boxes"),
            (not np.array_equal(idx["img_start"], np.cumsum(idx["img_count"]) - idx["img_count"])
             or idx["img_count"].sum() != n, "the image table's mask rows do not tile the masks"),
            (np.any(np.diff(idx["img_ids"]) <= 0), "image ids are not sorted and unique"),
        ]
        bad = [msg for failed, msg in problems if failed]
        if bad:
            raise ValueError(f"mask store {self.where} is inconsistent: {'; '.join(bad)}")

    def image_ids(self) -> np.ndarray:
        return self.index["img_ids"]

    def _row(self, image_id: int) -> int:
        ids = self.index["img_ids"]
        k = int(np.searchsorted(ids, image_id))
        if k >= ids.size or ids[k] != image_id:
            raise KeyError(f"image id {image_id} is not in mask store {self.where}")
        return k

    def get(self, image_id: int) -> ImageMasks:
        """One image's masks, reading only its bits and embedding slices (one zarr call)."""
        k = self._row(int(image_id))
        s, n = int(self.index["img_start"][k]), int(self.index["img_count"][k])
        o0, o1 = int(self.offsets[s]), int(self.offsets[s + n])
        if n == 0:
            return self._assemble(k, np.zeros(0, np.uint8), o0, np.zeros((0, self.attrs["embedding_dim"]), np.float32))
        wanted = {"bits": slice(o0, o1)}
        if self.index["img_has_embedding"][k]:
            wanted["embeddings"] = slice(s, s + n)
        got = self._read(wanted)
        return self._assemble(k, got["bits"], o0, got.get("embeddings"))

    def _assemble(self, k: int, bits: np.ndarray, bits_start: int, embeddings: np.ndarray | None) -> ImageMasks:
        """Image k from its bits (starting at byte bits_start of the store) and embedding rows (unused when
        the image has none)."""
        s, n = int(self.index["img_start"][k]), int(self.index["img_count"][k])
        h, w = int(self.index["img_height"][k]), int(self.index["img_width"][k])
        masks = np.zeros((n, h, w), dtype=bool)  # (N, H, W)
        off = self.offsets[s : s + n + 1] - bits_start
        for i in range(n):
            unpack_mask_delta(bits[off[i] : off[i + 1]], self.boxes[s + i], h, w, out=masks[i])
        emb = embeddings if self.index["img_has_embedding"][k] else None
        return ImageMasks(int(self.index["img_ids"][k]), h, w, masks, self.scores[s : s + n], emb)

    def iter_images(self, block_bytes: int = 1 << 24) -> Iterator[ImageMasks]:
        """Every image in id order, reading the arrays in blocks of about block_bytes of bits (for exports)."""
        start, count = self.index["img_start"], self.index["img_count"]
        ends = self.offsets[start + count]  # (M,) where each image's bits end
        k = 0
        while k < start.size:
            s0 = int(start[k])
            j = max(k + 1, int(np.searchsorted(ends, self.offsets[s0] + block_bytes, side="right")))
            s1 = int(start[j - 1] + count[j - 1])
            got = self._read({"bits": slice(int(self.offsets[s0]), int(self.offsets[s1])),
                              "embeddings": slice(s0, s1)})
            for i in range(k, j):
                a, b = int(start[i]) - s0, int(start[i] + count[i]) - s0
                yield self._assemble(i, got["bits"], int(self.offsets[s0]), got["embeddings"][a:b])
            k = j

    def mask_table(self) -> dict[str, np.ndarray]:
        """Per-mask values without the masks: image_ids, scores, boxes (float32 xywh), areas."""
        got = self._read({"image_ids": slice(None), "areas": slice(None)})
        return {"image_ids": got["image_ids"], "scores": self.scores, "boxes": self.boxes.astype(np.float32),
                "areas": got["areas"]}


def read_image(path: str, image_id: int) -> ImageMasks:
    """Random access to one image's masks in a shard store (KeyError naming id and store if absent)."""
    return ShardReader(path).get(image_id)


INDEX_TYPES = {"image_id": "int64", "shard": "string", "index": "int64", "score": "float32", "x": "float32",
               "y": "float32", "w": "float32", "h": "float32", "area": "int64"}
INDEX_ROW_GROUP = 1 << 17  # index rows per parquet row group: build_index holds at most about this many


def _image_tables(shard_paths: list[str]) -> dict[str, list]:
    """Every shard's image table as lists (id, shard number, height, width, mask count); ids unique."""
    images: dict[str, list] = {"image_id": [], "shard": [], "height": [], "width": [], "count": []}
    owner: dict[int, int] = {}
    for s, path in enumerate(shard_paths):
        idx = ShardReader(path).index
        for img in idx["img_ids"].tolist():
            if img in owner:
                raise ValueError(f"image id {img} is in two mask stores: {shard_paths[owner[img]]} and {path}")
            owner[img] = s
        for key, src in (("image_id", "img_ids"), ("height", "img_height"), ("width", "img_width"),
                         ("count", "img_count")):
            images[key] += idx[src].tolist()
        images["shard"] += [s] * idx["img_ids"].size
    return images


def _mask_rows(path: str, rel: str, schema) -> "pyarrow.Table":  # noqa: F821
    """One shard's rows of the index: image_id, shard (path relative to the index), index, score, xywh, area."""
    import pyarrow as pa

    t = ShardReader(path).mask_table()
    n = t["scores"].size
    cols = {"image_id": t["image_ids"], "shard": np.full(n, rel, dtype=object), "index": np.arange(n, dtype=np.int64),
            "score": t["scores"], **{name: t["boxes"][:, j] for j, name in enumerate("xywh")}, "area": t["areas"]}
    return pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()}, schema=schema)


def build_index(shard_paths: list[str], out_parquet: str) -> None:
    """Parquet index of shard stores: one row per mask, plus the per-image table in the schema metadata.

    Two passes over the shards, one reader open at a time: the image tables first (they make the schema
    metadata, which the parquet writer takes before any row), then the masks, streamed out in row groups of
    INDEX_ROW_GROUP rows, so memory grows with the images (the metadata, tens of bytes each) and not with
    the masks (issue 17). Below INDEX_ROW_GROUP masks the file is byte for byte one write_table of the
    whole table (as before), and above it holds the same rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not shard_paths:
        raise ValueError(f"build_index needs at least one shard store (index {out_parquet})")
    base = Path(out_parquet).resolve().parent
    rel = [os.path.relpath(Path(p).resolve(), base) for p in shard_paths]
    images = _image_tables(shard_paths)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "shards": rel, **images}
    schema = pa.schema([(k, getattr(pa, v)()) for k, v in INDEX_TYPES.items()],
                       metadata={INDEX_META_KEY: json.dumps(meta, separators=(",", ":")).encode()})
    pending, n_pending, n_written = [], 0, 0
    with atomic_path(out_parquet) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for path, shard in zip(shard_paths, rel):
            pending.append(_mask_rows(path, shard, schema))
            n_pending += pending[-1].num_rows
            if n_pending >= INDEX_ROW_GROUP:
                table = pa.concat_tables(pending).combine_chunks()
                full = n_pending // INDEX_ROW_GROUP * INDEX_ROW_GROUP
                writer.write_table(table.slice(0, full), row_group_size=INDEX_ROW_GROUP)
                pending, n_pending, n_written = [table.slice(full)], n_pending - full, n_written + full
        if n_pending or not n_written:  # an index of no masks is one empty table, as write_table gives
            writer.write_table(pa.concat_tables(pending).combine_chunks(), row_group_size=INDEX_ROW_GROUP)
    log.info("mask index %s: %d shards, %d images, %d masks", out_parquet, len(rel), len(images["image_id"]),
             n_written + n_pending)


class MaskStore:
    """All shards of a mask index: MaskStore(index_parquet).get(image_id) -> ImageMasks.

    Memory stays bounded in the number of shards (issue 17): get() keeps at most max_open shard readers
    open (least recently used closed first; a reader holds its shard's per-mask offsets, boxes and scores,
    ~45 bytes a mask, plus its zarr handles), and iter_images() opens each shard once for its pass and keeps
    none. The per-image table (id, shard, count) is three int64 arrays, read from the index's metadata.
    """

    def __init__(self, index_parquet: str, *, max_open: int = 64) -> None:
        import pyarrow.parquet as pq

        if max_open < 1:
            raise ValueError(f"max_open must be >= 1, got {max_open}")
        self.index_path, self.max_open = str(index_parquet), int(max_open)
        if not Path(index_parquet).is_file():
            raise FileNotFoundError(f"mask index {index_parquet} does not exist")
        meta = (pq.read_schema(index_parquet).metadata or {}).get(INDEX_META_KEY)
        if meta is None:
            raise ValueError(f"{index_parquet} is not a mask index (no {INDEX_META_KEY.decode()} metadata)")
        meta = json.loads(meta)
        base = Path(index_parquet).resolve().parent
        self.shards = [str(base / p) for p in meta["shards"]]
        ids = np.asarray(meta["image_id"], dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]  # (M,) sorted: build_index refuses an id in two shards
        self._shard = np.asarray(meta["shard"], dtype=np.int64)[order]  # (M,)
        self._count = np.asarray(meta["count"], dtype=np.int64)[order]  # (M,)
        self._readers: OrderedDict[int, ShardReader] = OrderedDict()

    def mask_counts(self) -> dict[int, int]:
        """Masks per image id, for every indexed image (zero included), without opening any shard."""
        return dict(zip(self._ids.tolist(), self._count.tolist()))

    def image_ids(self) -> list[int]:
        return self._ids.tolist()

    def __len__(self) -> int:
        return int(self._ids.size)

    def _row(self, image_id: int) -> int | None:
        k = int(np.searchsorted(self._ids, int(image_id)))
        return k if k < self._ids.size and self._ids[k] == int(image_id) else None

    def __contains__(self, image_id: int) -> bool:
        return self._row(image_id) is not None

    def _shard_number(self, image_id: int) -> int:
        k = self._row(image_id)
        if k is None:
            raise KeyError(f"image id {image_id} is not in mask index {self.index_path}")
        return int(self._shard[k])

    def shard_of(self, image_id: int) -> str:
        return self.shards[self._shard_number(image_id)]

    @property
    def open_readers(self) -> int:
        """How many shard readers get() holds open now (at most max_open)."""
        return len(self._readers)

    def _reader(self, s: int) -> ShardReader:
        if s in self._readers:
            self._readers.move_to_end(s)
        else:
            if len(self._readers) >= self.max_open:
                self._readers.popitem(last=False)  # the least recently used
            self._readers[s] = ShardReader(self.shards[s])
        return self._readers[s]

    def get(self, image_id: int) -> ImageMasks:
        return self._reader(self._shard_number(image_id)).get(int(image_id))

    def iter_images(self) -> Iterator[ImageMasks]:
        """Every image, shard by shard, each shard read in one pass by a reader of its own (not kept)."""
        for path in self.shards:
            yield from ShardReader(path).iter_images()
