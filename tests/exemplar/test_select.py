"""Exemplar image selection: seeded random, diverse (k-means on pooled features), the greedy distinct match,
pooled backbone features, and the fewer-images-than-exemplars error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskless.exemplar.select import (SelectParams, choose_exemplars, greedy_nearest, pooled_features,
                                      select_diverse, select_random)
from maskless.models.resnet import build_resnet


def test_random_is_seeded_distinct_and_sorted():
    a, b, c = select_random(20, 5, 0), select_random(20, 5, 0), select_random(20, 5, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(set(a.tolist())) == 5 and np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 20
    assert np.array_equal(select_random(4, 4, 3), np.arange(4))  # all of them


@pytest.mark.parametrize("method", ["random", "diverse"])
def test_fewer_images_than_count_names_both_numbers(method):
    records = [{"id": i} for i in range(3)]
    with pytest.raises(ValueError, match=r"needs 4 images.*only 3"):
        choose_exemplars(records, SelectParams(count=4, method=method), features=np.eye(3, 4))
    with pytest.raises(ValueError, match=r"needs 4 images.*only 3"):
        select_diverse(np.eye(3, 4), 4, seed=0)


def test_diverse_picks_the_centre_image_of_each_cluster():
    """Three clusters in 4-D, rows 3k..3k+2 = e_k, e_k + 0.1 e_3, e_k - 0.1 e_3 (k = 0, 1, 2). The spherical
    k-means centre of a cluster is the normalised mean of its unit rows, which is e_k by symmetry, so the
    image nearest each centre is the unperturbed row 3k: rows [0, 3, 6], for any seed."""
    rows = []
    for k in range(3):
        e = np.eye(4)[k]
        rows += [e, e + 0.1 * np.eye(4)[3], e - 0.1 * np.eye(4)[3]]
    feats = np.array(rows, np.float32)
    for seed in range(4):
        assert select_diverse(feats, 3, seed=seed).tolist() == [0, 3, 6]


def test_diverse_is_deterministic_and_distinct_with_duplicates():
    """Eight identical feature rows, four exemplars: every centre has the same nearest image, the greedy
    match must still return four distinct rows, and the same ones on every call."""
    feats = np.ones((8, 5), np.float32)
    a = select_diverse(feats, 4, seed=0)
    assert len(set(a.tolist())) == 4 and np.array_equal(a, select_diverse(feats, 4, seed=0))


def test_greedy_nearest_by_hand():
    """sim [[.9, .8], [.9, .1], [.2, .3]]: the best pair (image 0, centre 0) = .9 goes first (the tie with
    (1, 0) goes to the lower flat index); centre 1's best image 0 is taken, its next best is image 2 (.3)."""
    sim = np.array([[0.9, 0.8], [0.9, 0.1], [0.2, 0.3]])
    assert greedy_nearest(sim).tolist() == [0, 2]


def test_diverse_rejects_nan_and_needs_features():
    feats = np.eye(4, 3, dtype=np.float32)
    feats[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        select_diverse(feats, 2, seed=0)
    with pytest.raises(ValueError, match="needs features"):
        choose_exemplars([{"id": i} for i in range(4)], SelectParams(count=2, method="diverse"))
    with pytest.raises(ValueError, match="3 feature rows for 4 records"):
        choose_exemplars([{"id": i} for i in range(4)], SelectParams(count=2), features=np.eye(3))


def test_choose_returns_records_sorted_by_id():
    records = [{"id": i} for i in (9, 3, 7, 1, 5)]
    got = choose_exemplars(records, SelectParams(count=3, method="random", seed=2))
    ids = [r["id"] for r in got]
    assert ids == sorted(ids) and len(set(ids)) == 3 and set(ids) <= {1, 3, 5, 7, 9}


@pytest.mark.parametrize("bad", [dict(count=0), dict(method="kmeans"), dict(seed=-1), dict(input_size=0)])
def test_params_validation(bad):
    with pytest.raises(ValueError, match="SelectParams"):
        SelectParams(**bad)


def test_pooled_features_unit_rows_batch_independent(disc_manifest):
    """Rows are unit vectors of the res5 width (512 for resnet18), equal to the same image pooled alone
    (mixed-size images are never padded together), and the backbone's training mode comes back."""
    torch.manual_seed(0)
    backbone = build_resnet("resnet18").train()
    records = disc_manifest["records"]
    feats = pooled_features(records, backbone, input_size=64, batch_size=4)
    assert feats.shape == (5, 512) and np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    alone = pooled_features(records[2:3], backbone, input_size=64)
    assert np.allclose(feats[2], alone[0], atol=1e-5)
    assert backbone.training
