"""The exemplar pool on disk (exact round trip, atomic, empty pool errors), pivots, and build_pool end to end
on synthetic discs with a tiny SOLO (failures counted and named, never dropped)."""

from __future__ import annotations

import numpy as np
import pytest

from maskless.exemplar.pool import PoolParams, build_pool
from maskless.solo.exemplar_pool import ExemplarPool, cluster_pivots
from maskless.exemplar.refine import Exemplar
from maskless.solo.inference import SoloInferenceParams
from maskless.store import ImageMasks, build_index
from maskless.store_writer import write_shard


def _pool(n=4, side=8, seed=0, embeddings=True) -> ExemplarPool:
    rng = np.random.default_rng(seed)
    masks = rng.random((n, side, side)) > 0.5
    masks[:, 0, 0] = True
    return ExemplarPool(rng.integers(0, 255, (n, side, side, 3), dtype=np.uint8), masks, np.arange(10, 10 + n),
                        rng.integers(0, 50, (n, 4)), ["solo", "grabcut"] * (n // 2), rng.random(n),
                        rng.normal(size=(n, 5)) if embeddings else None)


def test_round_trip_is_exact_and_atomic(tmp_path):
    pool = _pool().with_pivots(2, seed=0)
    path = tmp_path / "pools" / "pool"
    pool.save(str(path), attrs={"params": {"a": 1}})
    got = ExemplarPool.load(str(path))
    for key in ("crops", "masks", "image_ids", "boxes", "ious", "embeddings", "pivots", "pivot_centres"):
        a, b = getattr(pool, key), getattr(got, key)
        assert a.dtype == b.dtype and np.array_equal(a, b), key
    assert got.methods == pool.methods and got.side == 8 and len(got) == 4
    assert ExemplarPool.read_attrs(str(path))["params"] == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["pool"]  # no temp folder left
    plain = _pool(embeddings=False)
    plain.save(str(path))  # overwrite in place
    again = ExemplarPool.load(str(path))
    assert again.embeddings is None and again.pivots is None and np.array_equal(again.crops, plain.crops)


def test_empty_pool_names_its_path(tmp_path):
    empty = ExemplarPool.from_exemplars([])
    with pytest.raises(ValueError, match="pool/empty would be empty"):
        empty.save(str(tmp_path / "pool" / "empty"))
    assert not (tmp_path / "pool" / "empty").exists()
    with pytest.raises(FileNotFoundError, match="nothing"):
        ExemplarPool.load(str(tmp_path / "nothing"))


def test_load_rejects_a_foreign_folder(tmp_path):
    import zarr

    (tmp_path / "p").mkdir()
    zarr.open_group(str(tmp_path / "p" / "arrays.zarr"), mode="w", zarr_format=3).attrs["format"] = "other"
    (tmp_path / "p" / "exemplars.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="is not an exemplar pool"):
        ExemplarPool.load(str(tmp_path / "p"))


def test_load_of_an_empty_pool_names_its_path(tmp_path):
    """A pool folder whose attrs and table say 0 exemplars (save() never writes one; a hand-made one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    from maskless.solo.exemplar_pool import FORMAT, FORMAT_VERSION

    (tmp_path / "e").mkdir()
    zarr.open_group(str(tmp_path / "e" / "arrays.zarr"), mode="w", zarr_format=3).attrs.update(
        {"format": FORMAT, "format_version": FORMAT_VERSION, "n": 0})
    pq.write_table(pa.table({"index": pa.array([], pa.int64())}), tmp_path / "e" / "exemplars.parquet")
    with pytest.raises(ValueError, match=r"exemplar pool .*/e is empty"):
        ExemplarPool.load(str(tmp_path / "e"))


def test_pool_validation():
    p = _pool()
    with pytest.raises(ValueError, match=r"exemplars \[1\] have empty masks"):
        masks = p.masks.copy()
        masks[1] = False
        ExemplarPool(p.crops, masks, p.image_ids, p.boxes, p.methods, p.ious)
    with pytest.raises(ValueError, match="methods"):
        ExemplarPool(p.crops, p.masks, p.image_ids, p.boxes, ["solo", "sam", "solo", "solo"], p.ious)
    with pytest.raises(ValueError, match="no embeddings"):
        _pool(embeddings=False).with_pivots(2)


def test_pivots_by_hand():
    """Rows near (1, 0) (0 and 2) and near (0, 1) (1 and 3): two pivots split them so, for any seed;
    the centres are unit vectors. More pivots than exemplars names both numbers."""
    emb = np.array([[1, 0.1], [0.1, 1], [1, -0.1], [-0.1, 1]], np.float32)
    for seed in range(3):
        centres, labels = cluster_pivots(emb, 2, seed=seed)
        assert labels[0] == labels[2] != labels[1] == labels[3]
        assert np.allclose(np.linalg.norm(centres, axis=1), 1.0)
    with pytest.raises(ValueError, match="5 pivots.*4 exemplar"):
        cluster_pivots(emb, 5)


def test_from_exemplars():
    ex = [Exemplar(3, np.zeros((6, 6, 3), np.uint8), np.ones((6, 6), bool), (1, 2, 3, 4), "solo", 0.7)]
    pool = ExemplarPool.from_exemplars(ex * 2)
    assert len(pool) == 2 and pool.boxes.tolist() == [[1, 2, 3, 4]] * 2 and pool.methods == ["solo"] * 2
    with pytest.raises(ValueError, match="different sizes"):
        ExemplarPool.from_exemplars([ex[0], Exemplar(3, np.zeros((5, 5, 3), np.uint8), np.ones((5, 5), bool),
                                                     (0, 0, 1, 1), "solo", 0.0)])


def _params(**select) -> PoolParams:
    return PoolParams(select={"count": 5, "method": "random", "input_size": 64, **select},
                      refine={"side": 32, "input_size": 64}, pivots=2)


def test_build_pool_counts_and_names_failures(tmp_path, disc_manifest, solo_ckpt, mask_iou):
    """All five images: the uniform id 5 is left out with its reason in the summary (and the pool's attrs),
    the four discs become exemplars. The untrained SOLO predicts nothing usable at score_thresh 0.1, so every
    mask is GrabCut's (counted as mask_grabcut), whose crop is the disc: the stored mask matches the disc
    cut out and resized the same way."""
    from maskless.exemplar.refine import resize_exemplar

    out = tmp_path / "pool"
    summary = build_pool(manifest=disc_manifest["manifest"], solo_weights=solo_ckpt(), out_pool=str(out),
                         params=_params(), device="cpu", threads=1)
    assert summary["selected"] == 5 and summary["exemplars"] == 4 and summary["pivots"] == 2
    assert list(summary["no_foreground"]) == ["5"] and "uniform" in summary["no_foreground"]["5"]
    assert summary["counts"]["init_center"] == 5 and summary["counts"]["mask_grabcut"] == 4
    pool = ExemplarPool.load(str(out))
    assert pool.image_ids.tolist() == [1, 2, 3, 4] and pool.embeddings.shape == (4, 16)
    assert ExemplarPool.read_attrs(str(out))["summary"]["no_foreground"] == summary["no_foreground"]
    x, y, w, h = pool.boxes[0]
    disc = disc_manifest["discs"][1][y : y + h, x : x + w]
    _, want = resize_exemplar(np.zeros((h, w, 3), np.uint8), disc, 32)
    assert mask_iou(pool.masks[0], want) > 0.8


def test_build_pool_diverse_with_free_masks(tmp_path, disc_manifest, solo_ckpt):
    """Diverse selection of 3 (pooled SOLO backbone features) with the Free Mask init: images with a Free Mask
    use its box, the others fall back to the centred rectangle, and both are counted. The SOLO here predicts
    whole-crop masks (category bias +10, mask_thresh 0) and min_iou is 0.2, below any disc's share of its crop
    (about pi / (4 x 1.3^2) = 0.46), so every refined mask is SOLO's: counted as mask_solo."""
    recs = disc_manifest["records"]
    stored = []
    for rec in recs[:2]:
        h, w = rec["height"], rec["width"]
        stored.append(ImageMasks(rec["id"], h, w, disc_manifest["discs"][rec["id"]][None], [0.9]))
    write_shard(str(tmp_path / "fm" / "0.zarr"), stored, embedding_dim=4)
    build_index([str(tmp_path / "fm" / "0.zarr")], str(tmp_path / "fm" / "index.parquet"))
    params = _params(count=3, method="diverse")
    params.grabcut.init = "freemask"
    params.refine.min_iou = 0.2
    params.refine.inference = SoloInferenceParams(score_thresh=0.5, update_thresh=0.0, mask_thresh=0.0)
    summary = build_pool(manifest=disc_manifest["manifest"], solo_weights=solo_ckpt(10.0), out_pool=str(tmp_path / "p"),
                         params=params, masks_index=str(tmp_path / "fm" / "index.parquet"), device="cpu")
    counts = summary["counts"]
    assert summary["selected"] == 3
    assert counts.get("init_freemask", 0) + counts.get("init_center (no free mask)", 0) == 3
    assert summary["exemplars"] + len(summary["no_foreground"]) == 3
    assert counts["mask_solo"] == summary["exemplars"] >= 1
    assert ExemplarPool.load(str(tmp_path / "p")).masks.all()
    with pytest.raises(ValueError, match="needs masks_index"):
        build_pool(manifest=disc_manifest["manifest"], solo_weights=solo_ckpt(), out_pool=str(tmp_path / "q"),
                   params=params, device="cpu")


def test_build_pool_bad_input(tmp_path, disc_manifest, solo_ckpt):
    with pytest.raises(ValueError, match=r"needs 6 images.*only 5"):
        build_pool(manifest=disc_manifest["manifest"], solo_weights=solo_ckpt(), out_pool=str(tmp_path / "p"),
                   params=_params(count=6), device="cpu")
    from maskless.data.manifest import write_manifest

    write_manifest(tmp_path / "uniform.parquet", disc_manifest["records"][4:])
    params = PoolParams(select={"count": 1, "method": "random"})
    with pytest.raises(ValueError, match=r"pool .*/p would be empty.*5.*uniform"):
        build_pool(manifest=str(tmp_path / "uniform.parquet"), solo_weights=solo_ckpt(),
                   out_pool=str(tmp_path / "p"), params=params, device="cpu")
    assert not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match="pivots 3 exceeds the exemplar count 2"):
        PoolParams(select={"count": 2}, pivots=3)
