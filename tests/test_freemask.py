"""Free Mask on crafted feature maps whose similarities are known by hand (METHODS.md "Free Mask")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskless.data.images import resized_hw
from maskless.freemask import (
    FreeMaskParams,
    embed_queries,
    filter_reasons,
    free_mask,
    query_masks,
)


def two_halves(h: int = 8, w: int = 8) -> torch.Tensor:
    """(4, h, w): left half = e0, right half = e1 (orthogonal). A left query has cosine 1 on the left and
    0 on the right, already min-max normalised: mask = left half, maskness = 1."""
    f = torch.zeros(4, h, w)
    f[0, :, : w // 2] = 1.0
    f[1, :, w // 2 :] = 1.0
    return f


def test_query_count_and_pure_half_masks():
    """8x8 at scales 1, 0.5, 0.25 -> 64 + 16 + 4 = 84 queries. Every downsampled query averages cells of
    one half only (the boundary at column 4 is aligned with 2x2 and 4x4 blocks), so each mask is a half."""
    qm = query_masks(two_halves(), scales=(1.0, 0.5, 0.25), mask_threshold=0.5)
    assert qm["queries"].shape == (84, 4)
    left = torch.zeros(8, 8, dtype=torch.bool)
    left[:, :4] = True
    assert torch.equal(qm["masks"][0], left) and torch.equal(qm["masks"][7], ~left)  # cell (0,0) and (0,7)
    assert torch.allclose(qm["soft"][0], left.float())
    assert torch.allclose(qm["maskness"], torch.ones(84))
    assert (qm["area"] == 32).all()


def test_query_count_floors_sizes_at_default_input():
    """FreeSOLO resizes with F.interpolate(scale_factor=s): floor sizes. A 10x14 map (res5 of a 320x448
    input) at scales 1, 0.5, 0.25:
      1.0:  10 x 14                            = 140
      0.5:  5 x 7                              = 35
      0.25: floor(2.5) x floor(3.5) = 2 x 3     = 6
    Q = 181 (rounding the sizes would give round(2.5) x round(3.5) = 2 x 4 = 8 and Q = 183)."""
    qm = query_masks(torch.rand(4, 10, 14, generator=torch.Generator().manual_seed(0)), scales=(1.0, 0.5, 0.25),
                     mask_threshold=0.5)
    assert qm["queries"].shape == (181, 4) and qm["soft"].shape == (181, 10, 14)
    assert qm["skipped_scales"] == ()


def ramp(h: int = 10, w: int = 14) -> torch.Tensor:
    """(3, h, w): channels (1, y, x). Bilinear interpolation of a linear function is exact, so the query
    sampled at (y, x) is the vector (1, y, x)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([torch.ones_like(ys), ys, xs])


def test_query_sampling_positions_by_hand():
    """Sampling positions come from the scale factor: src = (dst + 0.5) / s - 0.5 (align_corners False).
    On the 10x14 ramp: s = 0.5 samples rows 0.5, 2.5, ..., 8.5 and columns 0.5, ..., 12.5; s = 0.25
    samples rows 1.5, 5.5 and columns 1.5, 5.5, 9.5. (Positions from the size ratio instead, 10 / 2 = 5
    and 14 / 3, would put the 0.25 rows at 2 and 7.) Queries are the L2-normalised (1, y, x)."""
    qm = query_masks(ramp().float(), scales=(1.0, 0.5, 0.25), mask_threshold=0.5)
    grids = [(torch.arange(10.0), torch.arange(14.0)),  # s = 1: every cell
             (torch.arange(0.5, 9, 2), torch.arange(0.5, 13, 2)),
             (torch.tensor([1.5, 5.5]), torch.tensor([1.5, 5.5, 9.5]))]
    want = []
    for rows, cols in grids:
        ys, xs = torch.meshgrid(rows, cols, indexing="ij")
        want.append(torch.stack([torch.ones_like(ys), ys, xs], dim=-1).reshape(-1, 3))  # row-major (y, x)
    want = torch.nn.functional.normalize(torch.cat(want).double(), dim=1)
    assert want.shape == (181, 3)
    assert torch.allclose(qm["queries"].double(), want, atol=1e-6)


def bilinear_scale_reference(f: np.ndarray, s: float) -> np.ndarray:
    """Independent float64 bilinear downsampling by scale factor s: (C, h, w) -> (C, floor(h s), floor(w s)).
    Per axis: src = max((dst + 0.5) / s - 0.5, 0), i0 = floor(src), i1 = min(i0 + 1, n - 1), weight src - i0."""
    def axis_weights(n: int) -> np.ndarray:  # (floor(n s), n) interpolation matrix
        m = np.zeros((math.floor(n * s), n))
        for d in range(m.shape[0]):
            src = max((d + 0.5) / s - 0.5, 0.0)
            i0 = int(math.floor(src))
            i1, lam = min(i0 + 1, n - 1), src - i0
            m[d, i0] += 1 - lam
            m[d, i1] += lam
        return m
    return np.einsum("yh,chw,xw->cyx", axis_weights(f.shape[1]), f, axis_weights(f.shape[2]))


@pytest.mark.parametrize("hw", [(10, 14), (7, 9)])
def test_query_values_match_float64_reference(hw):
    """Random maps, odd sizes included (7 x 0.25 -> 1 row sampled at 1.5, 9 x 0.5 -> 4 columns at 0.5..6.5):
    the queries equal the float64 reference above, normalised."""
    f = np.random.default_rng(0).standard_normal((5, *hw))
    scales = (1.0, 0.5, 0.25)
    qm = query_masks(torch.from_numpy(f).float(), scales=scales, mask_threshold=0.5)
    ref = np.concatenate([bilinear_scale_reference(f, s).reshape(5, -1).T for s in scales])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert qm["queries"].shape == ref.shape
    np.testing.assert_allclose(qm["queries"].double().numpy(), ref, atol=1e-5)


def test_scale_with_empty_map_gives_no_queries_and_is_counted():
    """3x5 at scales 1, 0.25: floor(0.75) = 0 rows, so 0.25 contributes no query (the reference would
    raise) and is reported; Q = 15. With only that scale there is no query at all, and no mask."""
    f = torch.rand(4, 3, 5, generator=torch.Generator().manual_seed(0))
    qm = query_masks(f, scales=(1.0, 0.25), mask_threshold=0.5)
    assert qm["queries"].shape == (15, 4) and qm["skipped_scales"] == (0.25,)
    res = free_mask(f, (12, 20), FreeMaskParams(scales=(0.25,)))
    assert res.n_queries == 0 and res.masks.shape == (0, 12, 20) and res.skipped_scales == (0.25,)


def test_free_mask_two_halves_top2():
    """Both halves survive with decayed score 1 (IoU 0 between them); upsampled to 16x16 they are columns
    0-7 and 8-15: the bilinear value at output column 7 is 0.75 (>= 0.5), at column 8 it is 0.25."""
    res = free_mask(two_halves(), (16, 16), FreeMaskParams(top_k=2))
    left = np.zeros((16, 16), bool)
    left[:, :8] = True
    assert res.masks.shape == (2, 16, 16)
    assert np.array_equal(res.masks[0], left) and np.array_equal(res.masks[1], ~left)
    assert res.scores.tolist() == [1.0, 1.0] and res.scores.tolist() == pytest.approx([1.0, 1.0])
    assert res.embeddings.shape == (2, 128) and res.embeddings.dtype == np.float32
    assert res.soft_masks.shape == (2, 8, 8)
    assert res.filtered["top_k"] == 84 - 2 and res.n_queries == 84


def test_free_mask_duplicates_decay_to_exp_minus_sigma():
    """With top_k = 20 the 18 duplicates (IoU 1 with the top mask of their half, comp 0) have decay
    exp(-2 * 1) = 0.1353. Without the score filter they are kept (Matrix NMS decays, the top-k cuts);
    with the reference's filter (decayed score >= 0.7) only the two halves remain."""
    res = free_mask(two_halves(), (8, 8), FreeMaskParams(min_maskness=0.0))
    assert len(res.scores) == 20 and res.filtered["top_k"] == 64
    assert res.scores.tolist()[:3] == pytest.approx([1.0, 1.0, math.exp(-2)], abs=1e-6)
    assert res.maskness.tolist() == pytest.approx([1.0] * 20)  # raw maskness is not decayed
    assert all(m.sum() == 32 for m in res.masks)
    res = free_mask(two_halves(), (8, 8), FreeMaskParams())
    assert len(res.scores) == 2 and res.filtered["low_maskness"] == 18


def test_graded_maskness_by_hand():
    """1x4 map of unit vectors with cosines (1, 0.7, 0.4, -0.5) to the first: min-max normalised
    (c + 0.5) / 1.5 = (1, 0.8, 0.6, 0); threshold 0.5 -> first three cells; maskness (1 + 0.8 + 0.6) / 3 = 0.8.
    The third vector is scaled by 5: cosine ignores length."""
    c = torch.tensor([1.0, 0.7, 0.4, -0.5])
    f = torch.stack([c, torch.sqrt(1 - c**2)])[:, None, :].clone()  # (2, 1, 4)
    f[:, 0, 2] *= 5
    qm = query_masks(f, scales=(1.0,), mask_threshold=0.5)
    assert qm["soft"][0, 0].tolist() == pytest.approx([1.0, 0.8, 0.6, 0.0], abs=1e-6)
    assert qm["masks"][0, 0].tolist() == [True, True, True, False]
    assert qm["maskness"][0].item() == pytest.approx(0.8, abs=1e-6)


def test_constant_features_give_no_masks():
    """max == min for every query: soft masks are zero, every mask is empty and counted as small.
    6x6 at scales 1, 0.5, 0.25: 6x6 + 3x3 + floor(1.5)^2 = 36 + 9 + 1 queries (floor sizes, query_scale)."""
    res = free_mask(torch.ones(3, 6, 6), (12, 12), FreeMaskParams())
    assert res.masks.shape == (0, 12, 12) and res.embeddings.shape == (0, 128)
    assert res.filtered["small"] == 36 + 9 + 1 and res.n_queries == 46


def test_one_cell_region_is_dropped_as_small():
    """One cell of vector a in a field of b: that query's mask is the single cell (area 1 <= 1), dropped."""
    f = torch.zeros(2, 8, 8)
    f[1] = 1.0
    f[:, 3, 3] = torch.tensor([1.0, 0.0])
    params = FreeMaskParams(scales=(1.0,), drop_top_fraction=0.0, max_width_fraction=2.0, top_k=100,
                            min_maskness=0.0)  # keep the 62 decayed duplicates of the b-mask
    res = free_mask(f, (8, 8), params)
    assert res.filtered["small"] == 1
    assert len(res.scores) == 63 and not res.masks[:, 3, 3].any() and (res.masks.sum(axis=(1, 2)) == 63).all()


def test_filter_reasons_by_hand():
    """10x10 image, defaults: top if box centre y < 2, wide if box w >= 9.5, low if maskness < 0.7."""
    m = np.zeros((7, 10, 10), bool)
    m[0, 0:2, 3:6] = True  # y 0, h 2 -> centre 1 < 2: top
    m[1, 5:8, :] = True  # w 10: wide
    m[2, 4:9, 2:7] = True  # maskness 0.6: low_maskness
    # m[3] empty
    m[4, 4:9, 2:7] = True  # kept
    m[5, 0:2, :] = True  # both top (centre 1) and wide: top is checked first
    m[6, 0:4, 0:9] = True  # centre exactly 2.0 is not < 2, width 9 < 9.5: kept
    maskness = np.array([0.9, 0.9, 0.6, 0.9, 0.9, 0.9, 0.9], np.float32)
    reasons = filter_reasons(m, maskness, FreeMaskParams())
    assert reasons.tolist() == ["top", "wide", "low_maskness", "empty", "", "top", ""]
    off = FreeMaskParams(drop_top_fraction=0.0, max_width_fraction=2.0, min_maskness=0.0)
    assert filter_reasons(m, maskness, off).tolist() == ["", "", "", "empty", "", "", ""]


def test_top_region_dropped_end_to_end():
    """10x10 map: rows 0-1 = a, rows 2-9 = b; image 20x20. The a-mask upsamples to rows 0-3 (centre y 2
    < 0.2 * 20 = 4): all 20 a-queries are dropped as top; the 80 b-masks (rows 4-19) are kept."""
    f = torch.zeros(2, 10, 10)
    f[0, :2] = 1.0
    f[1, 2:] = 1.0
    res = free_mask(f, (20, 20), FreeMaskParams(scales=(1.0,), max_width_fraction=2.0, top_k=100,
                                                min_maskness=0.0))
    assert res.filtered["top"] == 20 and len(res.scores) == 80
    bottom = np.zeros((20, 20), bool)
    bottom[4:] = True
    assert all(np.array_equal(mk, bottom) for mk in res.masks)


def test_results_sorted_by_maskness():
    res = free_mask(torch.rand(8, 6, 7, generator=torch.Generator().manual_seed(0)), (24, 28),
                    FreeMaskParams(min_maskness=0.0, drop_top_fraction=0.0, max_width_fraction=2.0))
    assert len(res.scores) > 1
    assert np.all(np.diff(res.scores) <= 0)


def test_embed_interpolate_by_hand():
    """(1, 0, 0, 0) to 8 entries, align_corners=False: sample points (i + 0.5) / 2 - 0.5 =
    -0.25 (clamped to 0), 0.25, 0.75, 1.25, ... -> 1, 0.75, 0.25, 0, 0, 0, 0, 0."""
    e = embed_queries(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), dim=8, method="interpolate")
    assert e[0].tolist() == pytest.approx([1, 0.75, 0.25, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("c,d", [(4, 8), (16, 8)])
def test_embed_random_projection_orthogonal_and_fixed(c, d):
    x = torch.randn(5, c, generator=torch.Generator().manual_seed(3))
    e1 = embed_queries(x, dim=d, method="random_projection", seed=7)
    e2 = embed_queries(x, dim=d, method="random_projection", seed=7)
    assert e1.shape == (5, d) and torch.equal(e1, e2)
    proj = embed_queries(torch.eye(c), dim=d, method="random_projection", seed=7)  # the (C, D) matrix
    gram = proj.T @ proj if c >= d else proj @ proj.T
    assert torch.allclose(gram, torch.eye(min(c, d)), atol=1e-5)


def test_resized_hw():
    """Short side 320; a 1:10 image hits the long-side cap 640 first (scale 0.64)."""
    assert resized_hw(480, 640, 320) == (320, 427)
    assert resized_hw(100, 1000, 320) == (64, 640)
    assert resized_hw(320, 320, 320) == (320, 320)


def test_params_validation_names_the_field():
    assert FreeMaskParams(scales=[1, 0.5]).scales == (1.0, 0.5)
    for bad, name in [({"top_k": 0}, "top_k"), ({"nms_kernel": "box"}, "nms_kernel"),
                      ({"scales": ()}, "scales"), ({"feature_level": "res6"}, "feature_level"),
                      ({"embedding_method": "pca"}, "embedding_method"), ({"mask_threshold": 1.0}, "mask_threshold")]:
        with pytest.raises(ValueError, match=f"FreeMaskParams.{name}"):
            FreeMaskParams(**bad)


def test_nan_features_raise():
    f = two_halves()
    f[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        free_mask(f, (8, 8), FreeMaskParams())


def test_run_freemask_shard(tmp_path):
    """Tiny end-to-end: random resnet18 checkpoint, three PNGs (two sizes), one shard of a 2-shard manifest."""
    pytest.importorskip("maskless.data.images")
    pytest.importorskip("maskless.models.resnet")
    weights_mod = pytest.importorskip("maskless.models.weights")
    import cv2

    from maskless.data.manifest import write_manifest
    from maskless.freemask import run_freemask_shard
    from maskless.models.resnet import build_resnet
    from maskless.store import read_image

    torch.manual_seed(0)
    ckpt = tmp_path / "backbone.pt"
    weights_mod.save_backbone(str(ckpt), build_resnet("resnet18"), "resnet18", {})
    rng = np.random.default_rng(0)
    records = []
    for i, (h, w) in enumerate([(48, 64), (48, 64), (60, 40), (30, 30)], start=1):
        img = np.zeros((h, w, 3), np.uint8)
        img[h // 3 :, w // 4 : 3 * w // 4] = rng.integers(150, 255, 3)
        path = tmp_path / f"im{i}.png"
        cv2.imwrite(str(path), img)
        records.append({"id": i, "file_name": path.name, "path": str(path), "width": w, "height": h,
                        "split": "train", "hash": ""})
    write_manifest(tmp_path / "manifest.parquet", records)
    params = FreeMaskParams(feature_level="res4", input_size=64, min_maskness=0.0)
    out = tmp_path / "shard0.zarr"
    summary = run_freemask_shard(manifest=str(tmp_path / "manifest.parquet"), weights=str(ckpt), shard=0,
                                 shard_size=3, out_store=str(out), params=params, device="cpu", threads=1,
                                 batch_size=2)
    assert summary["images"] == 3 and summary["masks"] >= 0 and set(summary["filtered"]) >= {"top", "wide"}
    for rec in records[:3]:
        im = read_image(str(out), rec["id"])
        assert im.masks.shape[1:] == (rec["height"], rec["width"])
        assert im.embeddings is None or im.embeddings.shape[1] == 128
    with pytest.raises(KeyError, match="4"):
        read_image(str(out), 4)  # in shard 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_maskness_prefilter_is_exact(seed):
    """Dropping raw maskness < min_maskness before Matrix NMS (a speed shortcut) gives exactly the masks
    and scores of running without the filter and then keeping decayed scores >= min_maskness."""
    f = torch.randn(16, 12, 12, generator=torch.Generator().manual_seed(seed))
    f[:, 3:8, 2:9] += 3.0 * torch.randn(16, 1, 1, generator=torch.Generator().manual_seed(seed + 10))
    base = dict(drop_top_fraction=0.0, max_width_fraction=2.0, top_k=20)
    fast = free_mask(f, (48, 48), FreeMaskParams(min_maskness=0.7, **base))
    full = free_mask(f, (48, 48), FreeMaskParams(min_maskness=0.0, **base))
    sel = full.scores >= 0.7
    assert len(fast.scores) > 0
    assert np.array_equal(fast.scores, full.scores[sel])
    assert np.array_equal(fast.masks, full.masks[sel])
    assert np.array_equal(fast.embeddings, full.embeddings[sel])


def test_keep_largest_component_cuts_a_split_mask():
    """Columns 0-1 and 5-7 carry e0, columns 2-4 e1: an e0 query's mask is two blocks (16 and 24 cells of an
    8x8 map). Kept whole by default (FreeSOLO); with keep_largest_component only the 24-cell block stays."""
    f = torch.zeros(4, 8, 8)
    f[0, :, :2] = f[0, :, 5:] = 1.0
    f[1, :, 2:5] = 1.0
    base = dict(scales=(1.0,), top_k=1, drop_top_fraction=0.0, max_width_fraction=2.0, min_maskness=0.5)
    whole = free_mask(f, (8, 8), FreeMaskParams(**base))
    cut = free_mask(f, (8, 8), FreeMaskParams(**base, keep_largest_component=True))
    e0 = np.zeros((8, 8), bool)
    e0[:, :2] = e0[:, 5:] = True
    assert (whole.masks[0] == e0).all()
    right = np.zeros((8, 8), bool)
    right[:, 5:] = True
    assert (cut.masks[0] == right).all()
    assert cut.scores[0] == whole.scores[0]


def test_run_freemask_shard_on_a_vit(tmp_path):
    """freemask.backbone may be a DINO-layout ViT file: masks from its "tokens" level (stride 8 here); a
    ResNet level on it is an error naming freemask.feature_level."""
    import cv2

    from maskless.data.manifest import write_manifest
    from maskless.freemask import run_freemask_shard
    from maskless.models.vit import build_vit
    from maskless.store import read_image

    torch.manual_seed(0)
    vit = build_vit(patch_size=8, dim=32, depth=1, pos_grid=4)
    torch.save({"module." + k: v for k, v in vit.state_dict().items()}, tmp_path / "vit.pth")
    img = np.zeros((48, 64, 3), np.uint8)
    img[16:, 16:48] = 200
    cv2.imwrite(str(tmp_path / "im1.png"), img)
    write_manifest(tmp_path / "manifest.parquet", [{"id": 1, "file_name": "im1.png", "path": str(tmp_path / "im1.png"),
                                                    "width": 64, "height": 48, "split": "train", "hash": ""}])
    kwargs = dict(manifest=str(tmp_path / "manifest.parquet"), weights=str(tmp_path / "vit.pth"), shard=0,
                  shard_size=1, device="cpu", threads=1)
    params = FreeMaskParams(feature_level="tokens", input_size=48, min_maskness=0.0)
    summary = run_freemask_shard(**kwargs, out_store=str(tmp_path / "s.zarr"), params=params)
    assert summary["images"] == 1
    assert read_image(str(tmp_path / "s.zarr"), 1).masks.shape[1:] == (48, 64)
    with pytest.raises(ValueError, match=r"config key 'freemask.feature_level' is 'res4'.*vit.pth"):
        run_freemask_shard(**kwargs, out_store=str(tmp_path / "t.zarr"), params=FreeMaskParams(feature_level="res4"))


@pytest.mark.gpu
def test_free_mask_on_cuda_matches_cpu():
    """A random resnet18's res4 features of an image of bright rectangles: free_mask on CUDA gives the CPU's
    result (TF32 and other kernels may flip a pixel at the 0.5 threshold or reorder near-tied scores): the
    same mask count, sorted scores to 1e-3, and every CPU mask matched by a CUDA mask at IoU >= 0.98."""
    from maskless.models.resnet import build_resnet, normalize

    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (128, 160, 3), dtype=np.uint8)
    for top, left, h, w in [(10, 10, 40, 50), (60, 90, 50, 60), (80, 20, 30, 30)]:
        img[top : top + h, left : left + w] = rng.integers(120, 255, 3)
    torch.manual_seed(0)
    net = build_resnet("resnet18").eval()
    with torch.inference_mode():
        feats = net(normalize(torch.from_numpy(img).permute(2, 0, 1)[None]))["res4"][0]
    params = FreeMaskParams(min_maskness=0.0)
    cpu, gpu = free_mask(feats, (128, 160), params), free_mask(feats.cuda(), (128, 160), params)
    assert len(cpu.masks) == len(gpu.masks) > 0
    assert np.allclose(np.sort(cpu.scores), np.sort(gpu.scores), atol=1e-3)
    a, b = cpu.masks.reshape(len(cpu.masks), -1), gpu.masks.reshape(len(gpu.masks), -1)
    inter = a.astype(np.float64) @ b.T.astype(np.float64)
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    assert (inter / np.maximum(union, 1)).max(1).min() >= 0.98


def test_maskness_counts_a_cell_exactly_at_the_threshold():
    """Keys (1, 0), (0, 1), (-1, 0) at scale 1 (C = 2, h = 1, w = 3): query (1, 0) has cosines (1, 0, -1),
    so soft = (1, 0.5, 0) exactly; the 0.5 cell is in the mask (soft >= 0.5), area 2, maskness
    (1 + 0.5) / 2 = 0.75. Query (0, 1): cosines (0, 1, 0), soft (0, 1, 0), maskness 1. Query (-1, 0):
    soft (0, 0.5, 1), maskness 0.75."""
    feats = torch.tensor([[[1.0, 0.0, -1.0]], [[0.0, 1.0, 0.0]]])  # (2, 1, 3)
    qm = query_masks(feats, scales=(1.0,), mask_threshold=0.5)
    assert qm["soft"][:, 0].tolist() == [[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 1.0]]
    assert qm["masks"][:, 0].tolist() == [[True, True, False], [False, True, False], [False, True, True]]
    assert qm["area"].tolist() == [2, 1, 2] and qm["maskness"].tolist() == [0.75, 1.0, 0.75]
