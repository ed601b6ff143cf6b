"""Writing mask stores: ShardWriter packs one shard's images as they arrive and writes the store atomically;
write_shard writes a list of images in one call.

The format (layout, attrs, why it is chunked so) is maskless.store's docstring; its reader (ShardReader),
index (build_index, MaskStore) and ImageMasks live there too. The chunk sizes and compressors below are the
writer's choices: a reader takes whatever chunking a store has.
"""

from __future__ import annotations

import numpy as np

from maskless.io import atomic_dir
from maskless.ops.masks import pack_mask_delta
from maskless.store import BITS_ENCODING, FORMAT, FORMAT_VERSION, IMAGE_COLUMNS, ImageMasks

BITS_CHUNK = 1 << 18  # bytes of packed masks per chunk: decoding one takes ~0.1 ms
BITS_ZSTD_LEVEL = 9  # level 19 is ~10% smaller but ~30x slower to write (bench/store.py)
EMB_ROWS = 256  # embedding rows per chunk
CHUNKS_PER_SHARD = 64  # chunks per zarr shard file (its index costs 16 bytes per chunk)
TABLE_ROWS = 1 << 16  # rows per chunk of the small arrays, which readers load whole


def _create(group, name: str, data: np.ndarray, chunk_rows: int, per_shard: int | None, compressor) -> None:
    """One array of the store: chunks of chunk_rows rows, grouped per_shard chunks to a file (None: unsharded)."""
    chunks = (chunk_rows,) + data.shape[1:]
    shards = None if per_shard is None else (chunk_rows * per_shard,) + data.shape[1:]
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks, shards=shards,
                             compressors=compressor)
    if data.size:
        arr[...] = data


def _layout(name: str) -> tuple[int, int | None, object]:
    """(chunk rows, chunks per shard, compressor) of a store array."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if name == "bits":
        return BITS_CHUNK, CHUNKS_PER_SHARD, ZstdCodec(level=BITS_ZSTD_LEVEL)
    if name == "embeddings":  # float noise: byte shuffling does not help (measured)
        return EMB_ROWS, CHUNKS_PER_SHARD, ZstdCodec(level=3)
    # Shuffling puts the zero high bytes of small ints (offsets, ids, boxes) in runs that zstd removes.
    return TABLE_ROWS, None, BloscCodec(cname="zstd", clevel=9, shuffle="shuffle")


def _pack_image(im: ImageMasks, embedding_dim: int) -> dict:
    """One image's masks packed (scores descending), with its per-mask values: a few bytes per mask."""
    order = np.argsort(-im.scores, kind="stable")  # scores descending within an image
    packed = [pack_mask_delta(im.masks[k]) for k in order]
    if im.embeddings is not None and im.embeddings.shape[1] != embedding_dim:
        raise ValueError(f"image {im.image_id}: embeddings have dim {im.embeddings.shape[1]}, "
                         f"store embedding_dim is {embedding_dim}")
    emb = (np.zeros((len(order), embedding_dim), np.float32) if im.embeddings is None
           else im.embeddings[order].astype(np.float32))
    return {
        "bits": [b for b, _ in packed],
        "boxes": [box for _, box in packed],
        "scores": im.scores[order].astype(np.float32),
        "areas": im.masks[order].sum(axis=(1, 2), dtype=np.int64),
        "embeddings": emb,
        "row": (im.image_id, len(order), im.height, im.width, int(im.embeddings is not None)),
    }


def _concat(parts: list[dict], embedding_dim: int) -> dict[str, np.ndarray]:
    """Concatenate the packed images (in image-id order) into the store's arrays."""
    bits = [b for p in parts for b in p["bits"]]
    counts = np.array([p["row"][1] for p in parts], dtype=np.int64)
    rows = np.array([p["row"] for p in parts], dtype=np.int64).reshape(-1, 5)
    table = np.stack([rows[:, 0], np.cumsum(counts) - counts, counts, rows[:, 2], rows[:, 3], rows[:, 4]], axis=1)
    ids = np.repeat(rows[:, 0], counts)
    return {
        "bits": np.concatenate(bits) if bits else np.zeros(0, np.uint8),
        "bit_offsets": np.concatenate([[0], np.cumsum([b.size for b in bits], dtype=np.int64)]).astype(np.int64),
        "boxes": np.asarray([x for p in parts for x in p["boxes"]], dtype=np.int32).reshape(-1, 4),
        "scores": np.concatenate([p["scores"] for p in parts]) if parts else np.zeros(0, np.float32),
        "areas": np.concatenate([p["areas"] for p in parts]) if parts else np.zeros(0, np.int64),
        "image_ids": ids.astype(np.int64),
        "embeddings": (np.concatenate([p["embeddings"] for p in parts]) if parts
                       else np.zeros((0, embedding_dim), np.float32)),
        "images": table.reshape(-1, len(IMAGE_COLUMNS)),
    }


class ShardWriter:
    """Builds one shard store image by image: each image's masks are packed as they arrive, so a shard
    job holds packed bits (a few hundred bytes per mask), never every full-size mask of the shard.
    close() writes the store atomically; nothing appears at `path` before it."""

    def __init__(self, path: str, *, embedding_dim: int, attrs: dict | None = None) -> None:
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim} (store {path})")
        self.path, self.embedding_dim, self.attrs = path, int(embedding_dim), dict(attrs or {})
        self._parts: dict[int, dict] = {}

    def add(self, im: ImageMasks) -> None:
        if im.image_id in self._parts:
            raise ValueError(f"duplicate image ids [{im.image_id}] in mask store {self.path}")
        self._parts[im.image_id] = _pack_image(im, self.embedding_dim)

    def close(self) -> None:
        import zarr

        arrays = _concat([self._parts[i] for i in sorted(self._parts)], self.embedding_dim)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "bits_encoding": BITS_ENCODING,
                "embedding_dim": self.embedding_dim, "n_images": len(self._parts),
                "n_masks": int(arrays["scores"].size), "image_columns": list(IMAGE_COLUMNS)}
        clash = sorted(set(meta) & set(self.attrs))
        if clash:
            raise ValueError(f"attrs {clash} are the store's own; pick other names (store {self.path})")
        with atomic_dir(self.path) as tmp:
            group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            for name, data in arrays.items():
                _create(group, name, data, *_layout(name))
            group.attrs.update({**self.attrs, **meta})


def write_shard(path: str, images: list[ImageMasks], *, embedding_dim: int, attrs: dict | None = None) -> None:
    """Write one shard store at `path` (replacing any old one, atomically). Images are stored by id."""
    writer = ShardWriter(path, embedding_dim=embedding_dim, attrs=attrs)
    for im in images:
        writer.add(im)
    writer.close()
