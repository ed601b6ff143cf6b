"""Data-parallel helpers (maskless.dist): batch shares, seeds, errors, and training on two Gloo processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as tdist

from maskless import dist
from maskless.pct.train import PCTParams, SegTrainParams, train_pct, train_supervised

MODEL = dict(num_classes=3, aspp_channels=8, low_channels=8, decoder_channels=8, embed_dim=8)
TINY = dict(batch_size=4, input_size=32, amp=False, model=MODEL)


def _data():
    """Six 40 x 40 images with a bright square of class 1 or 2; images 0 and 1 strong, 2..5 weak."""
    rng = np.random.default_rng(0)
    images, labels, tags = [], [], []
    for i in range(6):
        c = 1 + i % 2
        img = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
        lab = np.zeros((40, 40), np.uint8)
        lab[8 + i : 28 + i, 10:30] = c
        img[lab == c] = (200, 80 * c, 40)
        images.append(img)
        labels.append(lab if i < 2 else None)
        tags.append([c])
    return dict(images=images, labels=labels, tags=tags)


def test_shares_of_a_global_batch_cover_it_once():
    """Ranks of 3 over the global batch [10..17]: positions r, r + 3, ...; together every item once."""
    batch = list(range(10, 18))
    shares = [dist.shard(batch, dist.Rank(r, 3)) for r in range(3)]
    assert shares == [[10, 13, 16], [11, 14, 17], [12, 15]]
    assert sorted(sum(shares, [])) == batch
    assert dist.shard(batch, dist.Rank()) == batch  # one process: the whole batch


def test_rng_key_keeps_the_single_process_key():
    assert dist.rng_key(5, 2, 1, rank=dist.Rank()) == [5, 2, 1]
    assert dist.rng_key(5, 2, 1, rank=dist.Rank(1, 2)) == [5, 2, 1, 1]
    assert dist.rng_key(5, 2, 1, rank=dist.Rank(0, 2)) == [5, 2, 1, 0]


def test_errors_name_the_config_keys():
    with pytest.raises(ValueError, match="solo.batch_size is 1, smaller than the 2 training processes"):
        dist.check_batch(1, "solo.batch_size", dist.Rank(0, 2))
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="train_processes must be an integer >= 1"):
            dist.check_processes(bad, "cpu")


def test_one_process_is_a_plain_call_without_a_group():
    seen = {}

    def fn(x, threads=None):
        seen["active"] = dist.current().active
        return x * 2

    assert dist.launch(fn, processes=1, x=21, threads=2) == 42 and seen == {"active": False}
    assert dist.launch(fn, processes=1, all_ranks=True, x=1) == [2]
    assert not tdist.is_initialized()


def test_outside_a_group_wrap_and_reductions_are_identities():
    net = torch.nn.Linear(2, 2)
    assert dist.wrap(net) is net
    t = torch.tensor([1.0, 2.0])
    assert dist.all_sum_(t) is t and t.tolist() == [1.0, 2.0]
    assert dist.all_gather_cat(t) is t and dist.mean_values({"a": 1.5}) == {"a": 1.5}


def test_param_digest_sees_every_parameter():
    net = torch.nn.Linear(2, 2)
    before = dist.param_digest(net)
    with torch.no_grad():
        net.bias[0] += 1e-6
    assert dist.param_digest(net) != before


def test_group_of_one_wraps_in_ddp_and_matches_one_process(tmp_path, process_group_of_one):
    """Inside a Gloo group of one the networks are DDP-wrapped and the dynamic evaluation all-reduces; the
    weights after 3 PCT steps equal a plain run's bit for bit (averaging over one rank changes nothing)."""
    assert isinstance(dist.wrap(torch.nn.Linear(2, 2)), torch.nn.parallel.DistributedDataParallel)
    data = _data()
    params = PCTParams(**TINY, steps=3)
    in_group = train_pct(**data, params=params, out=str(tmp_path / "a.pt"), state_dir=str(tmp_path / "sa"),
                         device="cpu", threads=1)
    tdist.destroy_process_group()
    try:
        plain = train_pct(**data, params=params, out=str(tmp_path / "b.pt"), state_dir=str(tmp_path / "sb"),
                          device="cpu", threads=1)
    finally:
        tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg2'}", rank=0, world_size=1)
    assert in_group["param_digest"] == plain["param_digest"]
    a, b = (torch.load(tmp_path / f, weights_only=True)["model"] for f in ("a.pt", "b.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["pct"])
def test_two_gloo_processes_stay_in_step(tmp_path, kind):
    """Two spawned CPU processes, each with half of every global batch: after 3 steps both hold the same
    parameters (DDP averaged the same gradients), only rank 0 wrote the model and the loss log, and the
    result differs from one process (each rank saw other images and augmentations)."""
    data = _data()
    if kind == "pct":
        fn, params = train_pct, PCTParams(**TINY, steps=3)
    else:
        fn, params = train_supervised, SegTrainParams(**TINY, steps=3)
        data.pop("tags")
    kw = dict(params=params, device="cpu", threads=2, **data)
    results = dist.launch(fn, processes=2, all_ranks=True, out=str(tmp_path / "m.pt"), state_dir=str(tmp_path / "s"),
                          loss_log=str(tmp_path / "loss.csv"), **kw)
    assert [r["rank"] for r in results] == [0, 1]
    assert results[0]["param_digest"] == results[1]["param_digest"]
    assert "out" in results[0] and "out" not in results[1]
    assert len(open(tmp_path / "loss.csv").read().splitlines()) == 1 + 3
    single = fn(out=str(tmp_path / "one.pt"), state_dir=str(tmp_path / "s1"), **kw)
    assert single["param_digest"] != results[0]["param_digest"]
