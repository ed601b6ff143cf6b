"""Data-parallel helpers (maskless.dist): batch shares, seeds, errors, identities outside a process group.
The training loops' DDP paths are tested beside each loop (tests/pretrain, tests/solo, tests/pct)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as tdist

from maskless import dist


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
    with pytest.raises(ValueError, match="solo.batch_size is 1, not a multiple of the 2 training processes"):
        dist.check_batch(1, "solo.batch_size", dist.Rank(0, 2))
    with pytest.raises(ValueError, match="pretrain.batch_size is 16, not a multiple of the 3"):
        dist.check_batch(16, "pretrain.batch_size", dist.Rank(2, 3))  # shares 6, 5, 5
    dist.check_batch(16, "pretrain.batch_size", dist.Rank(1, 4))  # shares of 4: fine


def test_resume_key_holds_the_process_count_above_one():
    key = {"lr": 0.1}
    assert dist.resume_key(key, dist.Rank()) == key  # one process: older states still match
    assert dist.resume_key(key, dist.Rank(0, 2)) == {"lr": 0.1, "train_processes": 2}
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


def test_under_torchrun_launch_joins_its_group(monkeypatch):
    """torchrun's environment (RANK, WORLD_SIZE, ...) of one process: launch joins that Gloo group instead of
    spawning, runs fn inside it, and leaves it; a process count other than WORLD_SIZE is an error."""
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(dist._free_port())}.items():
        monkeypatch.setenv(key, value)

    def fn(device):
        r = dist.current()
        return (r.active, r.rank, r.world_size, tdist.get_backend())

    assert dist.launch(fn, processes=1, device="cpu") == (True, 0, 1, "gloo")
    assert not tdist.is_initialized()
    with pytest.raises(ValueError, match="torchrun started 1 processes but config key train_processes is 2"):
        dist.launch(fn, processes=2, device="cpu")
