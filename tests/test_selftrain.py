"""Self-training relabel: filters worked out by hand on a 10 x 20 image (W = 20, so 0.95 W = 19 px)."""

import numpy as np
import pytest

from maskless.ops.masks import mask_iou
from maskless.selftrain import RelabelParams, relabel_image, relabel_shard, select_predictions
from maskless.store import ImageMasks, ShardReader
from maskless.store_writer import write_shard

H, W = 10, 20


def box_mask(x0, x1, y0=0, y1=H):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def predictions(embeddings=True):
    masks = np.stack([
        box_mask(0, 19),        # 0: score 0.9, width 19 >= 19 -> too wide
        box_mask(1, 20),        # 1: score 0.8, width 19 starting at x=1: reference w - x = 18 keeps it; we drop
        box_mask(2, 6, 2, 6),   # 2: score 0.5, 4x4 -> kept
        box_mask(8, 10),        # 3: score 0.2 -> below 0.3
        box_mask(12, 15, 0, 5), # 4: score 0.4, 3x5 -> kept
    ])
    scores = np.array([0.9, 0.8, 0.5, 0.2, 0.4], np.float32)
    emb = np.eye(5, 4, dtype=np.float32) if embeddings else None
    return ImageMasks(7, H, W, masks, scores, emb)


def test_mask_iou_by_hand():
    a = np.stack([box_mask(0, 4, 0, 1), box_mask(0, 0)])  # 4 px, empty
    b = np.stack([box_mask(2, 6, 0, 1)])  # 4 px, overlap 2 -> IoU 2 / 6
    np.testing.assert_allclose(mask_iou(a, b), [[2 / 6], [0.0]])


def test_select_score_width_and_limit():
    kept, dropped = select_predictions(predictions(), RelabelParams())
    assert kept.tolist() == [2, 4]  # score order
    assert dropped == {"low_score": 1, "too_wide": 2, "empty": 0, "over_limit": 0}
    kept, dropped = select_predictions(predictions(), RelabelParams(max_per_image=1))
    assert kept.tolist() == [2] and dropped["over_limit"] == 1


def test_width_rule_uses_real_width_not_w_minus_x():
    """Mask 1 spans columns 1..19: width 19 = 0.95 W, dropped; with the threshold at 0.96 W (19.2) it stays."""
    kept, _ = select_predictions(predictions(), RelabelParams(max_width_fraction=0.96))
    assert kept.tolist() == [0, 1, 2, 4]


def test_relabel_embeddings_none_and_predicted():
    im, counts = relabel_image(predictions(), None, RelabelParams())
    assert im.embeddings is None and counts["kept"] == 2 and counts["carried"] == 0
    np.testing.assert_array_equal(im.masks, predictions().masks[[2, 4]])
    im, _ = relabel_image(predictions(), None, RelabelParams(embeddings="predicted"))
    np.testing.assert_array_equal(im.embeddings, np.eye(5, 4, dtype=np.float32)[[2, 4]])


def test_keep_previous_carries_only_non_overlapping():
    """Previous mask A covers new mask 2 exactly (IoU 1): dropped. B (rows 7..9, cols 16..19) overlaps no new
    mask (IoU 0): carried with its embedding; with keep_previous off nothing is carried."""
    prev = ImageMasks(7, H, W, np.stack([box_mask(2, 6, 2, 6), box_mask(16, 20, 7, 10)]),
                      np.array([0.9, 0.8], np.float32), np.full((2, 4), 0.5, np.float32))
    im, counts = relabel_image(predictions(), prev, RelabelParams(keep_previous=True))
    assert counts["carried"] == 1 and len(im.scores) == 3
    np.testing.assert_array_equal(im.masks[2], prev.masks[1])
    np.testing.assert_array_equal(im.embeddings, [[0] * 4, [0] * 4, [0.5] * 4])  # new masks: no embedding
    im, counts = relabel_image(predictions(), prev, RelabelParams(keep_previous=False))
    assert counts["carried"] == 0 and len(im.scores) == 2


def test_no_predictions_gives_an_empty_image():
    empty = ImageMasks(3, H, W, np.zeros((0, H, W), bool), np.zeros(0, np.float32), np.zeros((0, 4), np.float32))
    im, counts = relabel_image(empty, None, RelabelParams())
    assert len(im.scores) == 0 and counts["kept"] == 0


def test_params_are_checked():
    with pytest.raises(ValueError, match="score_thresh"):
        RelabelParams(score_thresh=1.5)
    with pytest.raises(ValueError, match="embeddings"):
        RelabelParams(embeddings="mean")


def test_relabel_shard_round_trip(tmp_path):
    empty = ImageMasks(3, H, W, np.zeros((0, H, W), bool), np.zeros(0, np.float32), None)
    write_shard(str(tmp_path / "pred.zarr"), [predictions(), empty], embedding_dim=4)
    prev = ImageMasks(7, H, W, box_mask(16, 20, 7, 10)[None], np.array([0.8], np.float32), np.ones((1, 4), np.float32))
    write_shard(str(tmp_path / "prev.zarr"), [prev], embedding_dim=4)
    totals = relabel_shard(predictions=str(tmp_path / "pred.zarr"), out_store=str(tmp_path / "out.zarr"),
                           params=RelabelParams(keep_previous=True), previous=str(tmp_path / "prev.zarr"))
    assert totals["images"] == 2 and totals["kept"] == 2 and totals["carried"] == 1
    reader = ShardReader(str(tmp_path / "out.zarr"))
    assert reader.image_ids().tolist() == [3, 7]
    assert len(reader.get(3).scores) == 0 and len(reader.get(7).scores) == 3
    write_shard(str(tmp_path / "prev8.zarr"), [ImageMasks(7, H, W, prev.masks, prev.scores, np.ones((1, 8)))],
                embedding_dim=8)
    with pytest.raises(ValueError, match="embedding dims differ"):
        relabel_shard(predictions=str(tmp_path / "pred.zarr"), out_store=str(tmp_path / "o2.zarr"),
                      params=RelabelParams(keep_previous=True), previous=str(tmp_path / "prev8.zarr"))


def test_shard_with_nothing_confident_warns_with_the_highest_score(tmp_path, caplog):
    """Threshold 0.95 is above every score of predictions() (highest 0.9): nothing is kept, and the warning
    gives 0.900 and the config key to lower (coco-tiny's round 0 topped out at 0.227 against 0.3)."""
    write_shard(str(tmp_path / "pred.zarr"), [predictions()], embedding_dim=4)
    with caplog.at_level("WARNING", logger="maskless.selftrain"):
        totals = relabel_shard(predictions=str(tmp_path / "pred.zarr"), out_store=str(tmp_path / "out.zarr"),
                               params=RelabelParams(score_thresh=0.95))
    assert totals["kept"] == 0 and totals["low_score"] == 5
    assert "the highest score is 0.900" in caplog.text and "selftrain.score_thresh" in caplog.text
