"""Mask store: round trips, random access, atomic writes, parquet index and COCO export."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from zarr.storage import LocalStore, WrapperStore

import maskless.store as store_mod
import maskless.store_writer as writer_mod
from maskless.coco_export import export_coco, export_coco_files
from maskless.data.manifest import write_manifest
from maskless.ops.masks import boxes_xywh, encode_rles
from maskless.store import (
    ImageMasks,
    MaskStore,
    ShardReader,
    build_index,
    read_image,
)
from maskless.store_writer import write_shard


def blob_masks(rng, n, h, w) -> np.ndarray:
    """n random rectangles-with-holes, non-empty."""
    m = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        m[i, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > 0.2
        m[i, y0, x0] = True
    return m


def sample_images() -> list[ImageMasks]:
    """Ids given out of order; image 2 has no masks; image 9 has no embeddings; image 7 holds a one-pixel
    and a full mask; image 5's scores are given unsorted (the store sorts them descending)."""
    rng = np.random.default_rng(0)
    one_px = np.zeros((6, 5), bool)
    one_px[5, 4] = True
    return [
        ImageMasks(5, 20, 30, blob_masks(rng, 3, 20, 30), [0.2, 0.9, 0.5], rng.random((3, 4))),
        ImageMasks(2, 10, 10, np.zeros((0, 10, 10), bool), [], np.zeros((0, 4))),
        ImageMasks(9, 12, 8, blob_masks(rng, 2, 12, 8), [0.8, 0.3], None),
        ImageMasks(7, 6, 5, np.stack([one_px, np.ones((6, 5), bool)]), [0.6, 0.4], rng.random((2, 4))),
    ]


def sorted_copy(im: ImageMasks) -> ImageMasks:
    o = np.argsort(-im.scores, kind="stable")
    return ImageMasks(im.image_id, im.height, im.width, im.masks[o], im.scores[o],
                      None if im.embeddings is None else im.embeddings[o])


def assert_same(a: ImageMasks, b: ImageMasks) -> None:
    assert (a.image_id, a.height, a.width) == (b.image_id, b.height, b.width)
    assert np.array_equal(a.masks, b.masks)
    assert np.allclose(a.scores, b.scores)
    assert (a.embeddings is None) == (b.embeddings is None)
    if a.embeddings is not None:
        assert np.allclose(a.embeddings, b.embeddings)


def test_round_trip_every_image(tmp_path):
    path = tmp_path / "shard0.zarr"
    images = sample_images()
    write_shard(str(path), images, embedding_dim=4, attrs={"params": {"top_k": 20}})
    for im in images:
        assert_same(read_image(str(path), im.image_id), sorted_copy(im))
    reader = ShardReader(str(path))
    assert reader.image_ids().tolist() == [2, 5, 7, 9]
    assert reader.attrs["embedding_dim"] == 4 and reader.attrs["params"] == {"top_k": 20}
    assert reader.attrs["n_masks"] == 7 and reader.attrs["n_images"] == 4
    table = reader.mask_table()
    assert table["areas"][table["image_ids"] == 7].tolist() == [1, 30]
    assert table["boxes"][table["image_ids"] == 7].tolist() == [[4, 5, 1, 1], [0, 0, 5, 6]]
    streamed = list(reader.iter_images())
    assert [s.image_id for s in streamed] == [2, 5, 7, 9]
    for s in streamed:
        assert_same(s, read_image(str(path), s.image_id))


def test_unknown_image_and_bad_input(tmp_path):
    path = tmp_path / "s.zarr"
    write_shard(str(path), sample_images(), embedding_dim=4)
    with pytest.raises(KeyError, match=r"image id 3 .*s\.zarr"):
        read_image(str(path), 3)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_image(str(tmp_path / "nope"), 2)
    dup = sample_images()[:2] + [sample_images()[0]]
    with pytest.raises(ValueError, match="duplicate image ids \\[5\\]"):
        write_shard(str(tmp_path / "d.zarr"), dup, embedding_dim=4)
    with pytest.raises(ValueError, match="embeddings have dim 4, store embedding_dim is 8"):
        write_shard(str(tmp_path / "e.zarr"), sample_images(), embedding_dim=8)
    with pytest.raises(ValueError, match="image 1: 2 masks but 1 scores"):
        ImageMasks(1, 4, 4, np.zeros((2, 4, 4)), [0.5])
    with pytest.raises(ValueError, match=r"image 1: masks must be \(N, 5, 6\)"):
        ImageMasks(1, 5, 6, np.zeros((2, 6, 5)), [0.5, 0.4])


def test_atomic_write(tmp_path, monkeypatch):
    """A failure halfway through leaves no store (and no temp folder); a failed rewrite keeps the old store;
    a successful rewrite replaces it."""
    path = tmp_path / "s.zarr"
    real, calls = writer_mod._create, []

    def failing(group, name, *args):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return real(group, name, *args)

    monkeypatch.setattr(writer_mod, "_create", failing)
    with pytest.raises(OSError, match="simulated"):
        write_shard(str(path), sample_images(), embedding_dim=4)
    assert not path.exists() and os.listdir(tmp_path) == []
    monkeypatch.setattr(writer_mod, "_create", real)
    write_shard(str(path), sample_images(), embedding_dim=4)
    calls.clear()
    monkeypatch.setattr(writer_mod, "_create", failing)
    with pytest.raises(OSError):
        write_shard(str(path), sample_images()[:1], embedding_dim=4)
    assert read_image(str(path), 9).masks.shape == (2, 12, 8)  # the old store is intact
    monkeypatch.setattr(writer_mod, "_create", real)
    write_shard(str(path), sample_images()[:1], embedding_dim=4)
    assert ShardReader(str(path)).image_ids().tolist() == [5] and os.listdir(tmp_path) == ["s.zarr"]


class CountingStore(WrapperStore):
    """Counts the bytes zarr reads, per array (first path component)."""

    counts: dict[str, int] = {}

    def _add(self, key, buf):
        if buf is not None:
            CountingStore.counts[key.split("/")[0]] = CountingStore.counts.get(key.split("/")[0], 0) + len(buf)

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        self._add(key, buf)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        bufs = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), buf in zip(key_ranges, bufs):
            self._add(key, buf)
        return bufs


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_random_access_reads_only_its_chunks(tmp_path, monkeypatch):
    """300 images x 4 masks with small chunks (16 embedding rows, 512 bytes of bits): after the reader has
    opened (metadata and the small per-mask arrays), reading one image touches only `bits` and `embeddings`,
    and of those a small fraction of the bytes (its chunks plus the zarr shard index); timing is printed."""
    monkeypatch.setattr(writer_mod, "EMB_ROWS", 16)
    monkeypatch.setattr(writer_mod, "BITS_CHUNK", 512)
    rng = np.random.default_rng(1)
    images = [ImageMasks(i, 48, 48, blob_masks(rng, 4, 48, 48), rng.random(4), rng.random((4, 32)))
              for i in range(300)]
    path = tmp_path / "big.zarr"
    write_shard(str(path), images, embedding_dim=32)
    CountingStore.counts = {}
    reader = ShardReader(CountingStore(LocalStore(str(path), read_only=True)), where=str(path))
    assert {"images", "bit_offsets", "boxes", "scores"} <= set(CountingStore.counts)
    CountingStore.counts = {}
    got = reader.get(150)
    assert_same(got, sorted_copy(images[150]))
    assert set(CountingStore.counts) == {"bits", "embeddings"}, CountingStore.counts
    for name in ("bits", "embeddings"):
        on_disk = dir_bytes(path / name)
        assert 0 < CountingStore.counts[name] < 0.1 * on_disk, (name, CountingStore.counts, on_disk)
    t0 = time.perf_counter()
    for i in range(0, 300, 30):
        read_image(str(path), i)
    per_read = (time.perf_counter() - t0) / 10
    print(f"read_image: {per_read * 1e3:.1f} ms per image (opens the store each time)")


def test_iter_images_in_blocks_and_empty_store(tmp_path):
    """iter_images reading one image's worth of bits per block (block_bytes=1) gives what get() gives, the
    zero-mask image included; a store of zero images and one of only zero-mask images read back empty."""
    path = tmp_path / "s.zarr"
    write_shard(str(path), sample_images(), embedding_dim=4)
    reader = ShardReader(str(path))
    blocks = list(reader.iter_images(block_bytes=1))
    assert [b.image_id for b in blocks] == [2, 5, 7, 9]
    for b in blocks:
        assert_same(b, reader.get(b.image_id))
    write_shard(str(tmp_path / "none.zarr"), [], embedding_dim=3)
    assert ShardReader(str(tmp_path / "none.zarr")).image_ids().size == 0
    assert list(ShardReader(str(tmp_path / "none.zarr")).iter_images()) == []
    write_shard(str(tmp_path / "empty.zarr"), [ImageMasks(4, 3, 2, np.zeros((0, 3, 2)), [], None)], embedding_dim=3)
    got = read_image(str(tmp_path / "empty.zarr"), 4)
    assert got.masks.shape == (0, 3, 2) and got.scores.shape == (0,) and got.embeddings is None


def test_open_rejects_old_or_damaged_store(tmp_path):
    """A store of another format version, one whose offsets disagree with its boxes (image 7's one-pixel
    mask needs 1 byte; claiming 2 shifts every later offset), and caller attrs that clash are refused."""
    import zarr

    path = tmp_path / "s.zarr"
    write_shard(str(path), sample_images(), embedding_dim=4)
    group = zarr.open_group(str(path), mode="r+")
    offsets = group["bit_offsets"][:]
    group["bit_offsets"][:] = np.concatenate([offsets[:4], offsets[4:] + 1])
    with pytest.raises(ValueError, match=r"s\.zarr is inconsistent: .*bit_offsets disagree with boxes"):
        ShardReader(str(path))
    group.attrs["format_version"] = 1
    with pytest.raises(ValueError, match="format_version 1 .* this code reads 2"):
        ShardReader(str(path))
    with pytest.raises(ValueError, match=r"attrs \['n_masks'\] are the store's own"):
        write_shard(str(tmp_path / "c.zarr"), sample_images(), embedding_dim=4, attrs={"n_masks": 3})


def make_manifest(tmp_path, images) -> str:
    recs = [{"id": im.image_id, "file_name": f"{im.image_id}.png", "path": f"/x/{im.image_id}.png",
             "width": im.width, "height": im.height, "split": "train", "hash": ""} for im in images]
    recs.append({"id": 100, "file_name": "100.png", "path": "/x/100.png", "width": 4, "height": 4,
                 "split": "train", "hash": ""})  # in the manifest, never processed
    path = tmp_path / "manifest.parquet"
    write_manifest(path, recs)
    return str(path)


def two_shard_index(tmp_path) -> tuple[str, list[ImageMasks]]:
    images = sample_images()
    write_shard(str(tmp_path / "shards" / "0.zarr"), images[:2], embedding_dim=4)
    write_shard(str(tmp_path / "shards" / "1.zarr"), images[2:], embedding_dim=4)
    index = str(tmp_path / "index" / "masks.parquet")
    build_index([str(tmp_path / "shards" / "0.zarr"), str(tmp_path / "shards" / "1.zarr")], index)
    return index, images


def test_index_and_mask_store(tmp_path):
    import pyarrow.parquet as pq

    index, images = two_shard_index(tmp_path)
    rows = pq.read_table(index).to_pylist()
    assert len(rows) == 7  # one per mask; image 2 (no masks) has no row
    assert {r["shard"] for r in rows} == {"../shards/0.zarr", "../shards/1.zarr"}
    r7 = [r for r in rows if r["image_id"] == 7]
    got = [(r["index"], r["x"], r["y"], r["w"], r["h"], r["area"]) for r in r7]
    assert got == [(0, 4, 5, 1, 1, 1), (1, 0, 0, 5, 6, 30)]
    ms = MaskStore(index)
    assert ms.image_ids() == [2, 5, 7, 9] and len(ms) == 4 and 2 in ms and 3 not in ms
    assert ms.shard_of(2).endswith("0.zarr") and ms.get(2).masks.shape == (0, 10, 10)
    assert ms.mask_counts() == {im.image_id: len(im.scores) for im in images}
    for im in images:
        assert_same(ms.get(im.image_id), sorted_copy(im))
    with pytest.raises(KeyError, match="image id 3"):
        ms.get(3)
    write_shard(str(tmp_path / "dup.zarr"), images[:1], embedding_dim=4)
    with pytest.raises(ValueError, match="image id 5 is in two mask stores"):
        build_index([str(tmp_path / "shards" / "0.zarr"), str(tmp_path / "dup.zarr")], str(tmp_path / "x.parquet"))


def test_mask_store_keeps_at_most_max_open_readers(tmp_path, monkeypatch):
    """Reading from 6 shards through a store capped at 2 open readers: never more than 2 open, the least
    recently used closed first, every read still right; iter_images keeps none open (issue 17)."""
    images = [ImageMasks(i, 8, 8, blob_masks(np.random.default_rng(i), 2, 8, 8), [0.7, 0.2]) for i in range(1, 7)]
    paths = [str(tmp_path / f"{i}.zarr") for i in range(6)]
    for path, im in zip(paths, images):
        write_shard(path, [im], embedding_dim=2)
    build_index(paths, str(tmp_path / "index.parquet"))
    opened = []
    real_init = ShardReader.__init__

    def counting_init(self, store, where=None):
        opened.append(Path(str(store)).name)
        real_init(self, store, where)

    monkeypatch.setattr(ShardReader, "__init__", counting_init)
    ms = MaskStore(str(tmp_path / "index.parquet"), max_open=2)
    for image_id in (1, 2, 1, 3, 1, 4, 5, 6, 6):
        assert_same(ms.get(image_id), sorted_copy(images[image_id - 1]))
        assert ms.open_readers <= 2
    # 1 stays open while it is used; 2 is closed when 3 opens, 3 when 4 opens (1 was used in between).
    assert opened == ["0.zarr", "1.zarr", "2.zarr", "3.zarr", "4.zarr", "5.zarr"]
    assert ms.get(2).image_id == 2 and opened[-1] == "1.zarr" and ms.open_readers == 2  # reopened after eviction
    fresh = MaskStore(str(tmp_path / "index.parquet"), max_open=2)
    assert [im.image_id for im in fresh.iter_images()] == [1, 2, 3, 4, 5, 6] and fresh.open_readers == 0
    with pytest.raises(ValueError, match="max_open"):
        MaskStore(str(tmp_path / "index.parquet"), max_open=0)


def test_export_results_scores_perfectly_against_same_masks(tmp_path):
    """Results made from the same masks as a ground truth score AP = 1 (class-agnostic segm eval)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    index, images = two_shard_index(tmp_path)
    manifest = make_manifest(tmp_path, images)
    out = tmp_path / "results.json"
    export_coco(index=index, manifest=manifest, out_json=str(out), kind="results")
    results = json.loads(out.read_text())
    assert len(results) == 7 and all("bbox" not in r and r["category_id"] == 1 for r in results)
    per_image = {}
    for r in results:
        per_image.setdefault(r["image_id"], []).append(r["score"])
    assert all(s == sorted(s, reverse=True) for s in per_image.values())

    gt = COCO()
    anns = []
    for im in images:
        for rle, box, m in zip(encode_rles(im.masks), boxes_xywh(im.masks), im.masks):
            anns.append({"id": len(anns) + 1, "image_id": im.image_id, "category_id": 1, "segmentation": rle,
                         "area": float(m.sum()), "bbox": box.tolist(), "iscrowd": 0})
    gt.dataset = {"images": [{"id": im.image_id, "height": im.height, "width": im.width} for im in images],
                  "categories": [{"id": 1, "name": "object"}], "annotations": anns}
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(str(out)), "segm")
    ev.params.useCats = 0
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)

    export_coco(index=index, manifest=manifest, out_json=str(out), kind="results", max_per_image=1)
    assert len(json.loads(out.read_text())) == 3  # images 5, 7, 9: one each


def test_export_annotations_round_trip(tmp_path):
    from pycocotools.coco import COCO

    index, images = two_shard_index(tmp_path)
    manifest = make_manifest(tmp_path, images)
    out = tmp_path / "train.json"
    summary = export_coco(index=index, manifest=manifest, out_json=str(out), kind="annotations")
    assert summary == {"images": 5, "masks": 7}
    coco = COCO(str(out))
    assert sorted(coco.getImgIds()) == [2, 5, 7, 9, 100] and coco.loadCats([1])[0]["name"] == "object"
    for im in map(sorted_copy, images):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im.image_id]))
        assert len(anns) == len(im.scores)
        for ann, mask, box in zip(anns, im.masks, boxes_xywh(im.masks)):
            assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
            assert ann["bbox"] == box.tolist() and ann["area"] == mask.sum() and ann["iscrowd"] == 0


def test_export_checks_manifest(tmp_path):
    index, images = two_shard_index(tmp_path)
    manifest = make_manifest(tmp_path, images[1:])  # image 5 missing
    with pytest.raises(ValueError, match="image id 5 .* not in manifest"):
        export_coco(index=index, manifest=manifest, out_json=str(tmp_path / "r.json"))
    with pytest.raises(ValueError, match="kind"):
        export_coco(index=index, manifest=manifest, out_json=str(tmp_path / "r.json"), kind="boxes")
    assert not (tmp_path / "r.json").exists()


def _export_in_memory(index, manifest, kind, max_per_image=None) -> str:
    """The export before issue 17 (every record in a list, then json.dumps of the whole): the reference text."""
    from maskless.data.manifest import read_manifest

    records = {int(r["id"]): r for r in read_manifest(manifest)}
    out, anns = [], []
    for im in MaskStore(index).iter_images():
        order = np.argsort(-im.scores, kind="stable")[:max_per_image]
        masks = im.masks[order]
        for rle, k, box, m in zip(encode_rles(masks), order, boxes_xywh(masks), masks):
            score = float(im.scores[k])
            if kind == "results":
                out.append({"image_id": im.image_id, "category_id": 1, "segmentation": rle, "score": score})
            else:
                anns.append({"id": len(anns) + 1, "image_id": im.image_id, "category_id": 1,
                             "bbox": [float(v) for v in box], "area": float(m.sum()), "iscrowd": 0,
                             "segmentation": rle, "score": score})
    if kind == "annotations":
        images = [{"id": int(r["id"]), "file_name": r["file_name"], "width": int(r["width"]),
                   "height": int(r["height"])} for r in records.values()]
        out = {"info": {"description": f"maskless masks from {index}"}, "images": images,
               "categories": [{"id": 1, "name": "object", "supercategory": "object"}], "annotations": anns}
    return json.dumps(out) + "\n"


@pytest.mark.parametrize("cap", [None, 1, 2])
def test_streamed_export_is_byte_identical_to_the_whole_json(tmp_path, cap):
    """One pass writing both files record by record gives the bytes json.dumps of the whole objects gave,
    and the same as two separate exports; an empty store gives empty lists (issue 17)."""
    index, images = two_shard_index(tmp_path)
    manifest = make_manifest(tmp_path, images)
    res, ann = tmp_path / "res.json", tmp_path / "ann.json"
    counts = export_coco_files(index=index, manifest=manifest, results=str(res), annotations=str(ann),
                               max_per_image=cap, max_annotations_per_image=cap)
    assert res.read_text() == _export_in_memory(index, manifest, "results", cap)
    assert ann.read_text() == _export_in_memory(index, manifest, "annotations", cap)
    assert counts == {"images": 5, "results": {None: 7, 1: 3, 2: 6}[cap], "annotations": counts["results"]}
    both = export_coco_files(index=index, manifest=manifest, results=str(res), annotations=str(ann),
                             max_per_image=cap)  # annotations keep every mask, results keep cap
    assert ann.read_text() == _export_in_memory(index, manifest, "annotations")
    assert res.read_text() == _export_in_memory(index, manifest, "results", cap) and both["annotations"] == 7
    export_coco(index=index, manifest=manifest, out_json=str(tmp_path / "one.json"), kind="annotations")
    assert (tmp_path / "one.json").read_text() == ann.read_text()

    write_shard(str(tmp_path / "empty.zarr"), [ImageMasks(2, 10, 10, np.zeros((0, 10, 10), bool), [])],
                embedding_dim=4)
    build_index([str(tmp_path / "empty.zarr")], str(tmp_path / "empty.parquet"))
    export_coco_files(index=str(tmp_path / "empty.parquet"), manifest=manifest, results=str(res), annotations=str(ann))
    assert res.read_text() == "[]\n" == _export_in_memory(str(tmp_path / "empty.parquet"), manifest, "results")
    assert ann.read_text() == _export_in_memory(str(tmp_path / "empty.parquet"), manifest, "annotations")
    with pytest.raises(ValueError, match="results or an annotations path"):
        export_coco_files(index=index, manifest=manifest)
    wrong = make_manifest(tmp_path, [SimpleNamespace(image_id=i.image_id, height=i.height + (i.image_id == 7),
                                                     width=i.width) for i in images])
    with pytest.raises(ValueError, match="image 7: masks are 6x5 .* says 7x5"):
        export_coco_files(index=index, manifest=wrong, results=str(tmp_path / "never.json"))
    assert not (tmp_path / "never.json").exists()


def test_index_streams_row_groups_with_the_same_rows(tmp_path, monkeypatch):
    """build_index writes the masks in row groups as it reads the shards: below INDEX_ROW_GROUP rows the
    file is byte for byte one write_table of the whole table (the index before issue 17); with groups of 3
    rows it holds the same rows and metadata in ceil(7 / 3) groups."""
    import pyarrow.parquet as pq

    index, _ = two_shard_index(tmp_path)
    pq.write_table(pq.read_table(index), tmp_path / "whole.parquet")
    assert Path(index).read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    monkeypatch.setattr(store_mod, "INDEX_ROW_GROUP", 3)
    shards = [str(tmp_path / "shards" / f"{s}.zarr") for s in (0, 1)]
    build_index(shards, str(tmp_path / "index" / "grouped.parquet"))
    grouped = pq.ParquetFile(tmp_path / "index" / "grouped.parquet")
    assert grouped.num_row_groups == 3 and grouped.metadata.num_rows == 7
    assert grouped.read().equals(pq.read_table(index))
    assert grouped.schema_arrow.metadata == pq.read_schema(index).metadata
    assert MaskStore(str(tmp_path / "index" / "grouped.parquet")).mask_counts() == MaskStore(index).mask_counts()
