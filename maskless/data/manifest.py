"""The image manifest: one parquet row per image, the contract between ingest and every later stage.

Columns (DESIGN.md, "Contracts between stages"):
    id        int64   image id (COCO id for COCO data, 1..N otherwise)
    file_name string  name relative to the dataset's image folder (COCO `file_name`)
    path      string  absolute path of the image file
    width     int32   width after EXIF orientation
    height    int32   height after EXIF orientation
    split     string  e.g. "train"
    hash      string  sha256 of the file's bytes

Rows are sorted by id. Shards are consecutive runs of `shard_size` rows in that order, so the shard count
is known from the manifest alone (the workflow reads it at DAG time).
"""

from __future__ import annotations

import hashlib
import math
import os

import pyarrow as pa
import pyarrow.parquet as pq

from maskless.io import write_parquet_atomic

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("file_name", pa.string()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("split", pa.string()),
        ("hash", pa.string()),
    ]
)


def write_manifest(path: str | os.PathLike, records: list[dict]) -> None:
    """Write records (dicts with the SCHEMA's keys) sorted by id; duplicate ids are an error."""
    records = sorted(records, key=lambda r: int(r["id"]))
    ids = [int(r["id"]) for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:10]
        raise ValueError(f"duplicate image ids in manifest {path}: {dup}")
    table = pa.Table.from_pylist([{k: r[k] for k in SCHEMA.names} for r in records], schema=SCHEMA)
    write_parquet_atomic(path, table)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """All rows as dicts, sorted by id."""
    table = pq.read_table(path)
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(f"image manifest {path} lacks columns {missing}")
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def read_num_rows(path: str | os.PathLike) -> int:
    """Rows of the manifest, from its footer alone."""
    return pq.read_metadata(path).num_rows


def rows_digest(rows: list[dict]):
    """A sha256 fed with the identity of each row's image (id, content hash or path, size): the start of a
    training's data fingerprint, so a resume never mixes datasets."""
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r['id']}|{r.get('hash') or r['path']}|{r['width']}|{r['height']}\n".encode())
    return h


def num_shards(path: str | os.PathLike, shard_size: int) -> int:
    """How many shards of `shard_size` images the manifest splits into (at least 1)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return max(1, math.ceil(read_num_rows(path) / shard_size))


def shard_records(records: list[dict], shard: int, shard_size: int) -> list[dict]:
    """The rows of shard `shard` (0-based) of the id-sorted records."""
    n = max(1, math.ceil(len(records) / shard_size))
    if not 0 <= shard < n:
        raise ValueError(f"shard {shard} out of range: the manifest has {n} shards of {shard_size}")
    return records[shard * shard_size : (shard + 1) * shard_size]
