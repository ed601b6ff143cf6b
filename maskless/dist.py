"""Data-parallel training on the GPUs of one node (torch DistributedDataParallel), one process on CPU.

How a training rule uses it (stages/pretrain.py, solo_train.py, pct_train.py):
- `launch(fn, processes=N, ...)` runs `fn(**kwargs)` in N processes, one per GPU, joined in a process group
  (NCCL on GPUs, Gloo on CPU), and returns rank 0's result. Under `torchrun` (RANK / WORLD_SIZE set), it
  joins torchrun's group instead of spawning. N = 1 outside torchrun calls fn directly: no process group,
  no DDP, the single-process code path bit for bit (what the CPU demo and the tests run).
- Inside fn the training loop asks `current()` which rank it is and:
  * builds only its share of each step's global batch: `shard(indices)` (every rank draws the same global
    batch from (seed, step), then takes positions rank, rank + N, ...), so `batch_size` stays the global
    batch and the learning rates need no rescaling;
  * seeds its augmentations with `rng_key(seed, step, ...)`, which appends the rank when N > 1 (N = 1 keeps
    the single-process key, so its results are unchanged);
  * wraps each network it calls forward on with `wrap(module)` (DDP, which averages the gradients over the
    ranks during backward); state dicts are taken from the unwrapped module, so checkpoints are the same
    format at any N;
  * sums statistics that must agree across ranks with `all_sum_` (PCT's dynamic evaluation counts) and
    gathers keys with `all_gather_cat` (DenseCL's queues);
  * writes checkpoints, outputs and logs on rank 0 only (`is_main`); no rank reads what another writes
    during training (every rank reads the resume state before its first collective).
- Results depend on N (each rank's augmentations and BatchNorm statistics see its share of the batch): a
  run is reproducible for a given N and device, as single-process runs are for a given thread count.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as tdist
from maskless.io import setup_logging

log = logging.getLogger(__name__)
_DDP_ARGS = frozenset(inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters)


@dataclass(frozen=True)
class Rank:
    """Where this process sits in the process group (rank 0 of 1 when there is none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True inside a process group (even one of size 1: the DDP code path)."""
        return tdist.is_available() and tdist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Rank:
    """This process's rank; Rank() outside a process group."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return Rank()
    return Rank(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", tdist.get_rank())))


def device(dev: torch.device) -> torch.device:
    """The device of this rank: cuda:<local rank> in a process group on CUDA, else `dev` unchanged."""
    r = current()
    if r.active and dev.type == "cuda":
        return torch.device("cuda", r.local_rank)
    return dev


def shard(items: Sequence, rank: Rank | None = None) -> list:
    """This rank's share of a global batch: positions rank, rank + N, ... (all of it at N = 1)."""
    r = rank or current()
    return list(items[r.rank::r.world_size])


def check_batch(batch_size: int, key: str, rank: Rank | None = None) -> None:
    """The global batch must split into equal shares, one per rank: unequal shares would weigh the samples
    of a smaller share more (DDP averages the ranks' mean losses) and break all-gathers of per-sample keys."""
    r = rank or current()
    if batch_size % r.world_size:
        raise ValueError(f"config key {key} is {batch_size}, not a multiple of the {r.world_size} training "
                         "processes (config key train_processes): each process takes an equal share of the batch")


def resume_key(key: dict, rank: Rank | None = None) -> dict:
    """A training's resume key plus the process count when it is above 1: a state saved by N processes is
    not resumed by another N (the result depends on N). At N = 1 the key is unchanged (older states match)."""
    r = rank or current()
    return {**key, "train_processes": r.world_size} if r.world_size > 1 else key


def rng_key(*key: int, rank: Rank | None = None) -> list[int]:
    """A numpy seed sequence for this rank: `key` itself at N = 1, `key` + [rank] at N > 1."""
    r = rank or current()
    return [int(k) for k in key] + ([r.rank] if r.world_size > 1 else [])


def wrap(module: torch.nn.Module, *, find_unused: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around `module` inside a process group (the module itself otherwise).

    Call forward through the wrapper; save `module`'s own state dict. find_unused: some parameters may get
    no gradient in a step (a loss term that is zero without positives), which DDP must be told about.
    Buffer sync at forward is off: buffers that must agree (queues, EMA counts) are kept equal explicitly, and
    frozen BatchNorm statistics are equal from the start.
    """
    r = current()
    if not r.active or not any(p.requires_grad for p in module.parameters()):
        return module
    on_cuda = next(module.parameters()).is_cuda
    # forward_sync_buffers (torch >= 2.13; broadcast_buffers before) still syncs buffers once at init: they are
    # equal then anyway (same seed and checkpoint on every rank).
    sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_ARGS else {"broadcast_buffers": False})
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[r.local_rank] if on_cuda else None, find_unused_parameters=find_unused, **sync)


def all_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the ranks in place (nothing to do outside a process group); returns it."""
    if current().active:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `tensor` (same shape on all) along dim 0, in rank order; no gradient."""
    r = current()
    if not r.active or r.world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(r.world_size)]
    tdist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def mean_values(values: dict[str, float]) -> dict[str, float]:
    """The mean of logged scalars over the ranks (for the log line and the loss log of rank 0)."""
    r = current()
    if not r.active or r.world_size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                     device="cuda" if tdist.get_backend() == "nccl" else "cpu")
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return {k: float(v) / r.world_size for k, v in zip(keys, t.tolist())}


def param_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes (names and values, in order): equal on every rank after each DDP step
    (buffers such as BatchNorm statistics are per rank and left out). Training summaries carry it."""
    import hashlib

    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- process groups


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device_name: str) -> str:
    """nccl when the processes train on CUDA, gloo otherwise."""
    wants_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    return "nccl" if wants_cuda and tdist.is_nccl_available() else "gloo"


def check_processes(processes: int, device_name: str) -> None:
    """Clear errors for a process count the machine cannot run (config key train_processes)."""
    if not isinstance(processes, int) or processes < 1:
        raise ValueError(f"config key train_processes must be an integer >= 1, got {processes!r}")
    if processes == 1:
        return
    if backend_for(device_name) == "nccl" and processes > torch.cuda.device_count():
        raise ValueError(f"config key train_processes is {processes} but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")


def init_group(*, rank: int, world_size: int, backend: str, addr: str = "127.0.0.1", port: int | None = None,
               local_rank: int | None = None) -> None:
    """Join a process group (sets the environment torchrun would); on NCCL, bind the rank's GPU first."""
    os.environ.setdefault("MASTER_ADDR", addr)
    if port is not None:
        os.environ["MASTER_PORT"] = str(port)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world_size)
    os.environ["LOCAL_RANK"] = str(rank if local_rank is None else local_rank)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    tdist.init_process_group(backend=backend, rank=rank, world_size=world_size)


def _quiet_other_ranks(log_file: str | None) -> None:
    """Rank 0 appends to the rule's log; the others log warnings and errors only (to stderr)."""

    r = current()
    if r.is_main:
        setup_logging(None)
        if log_file:
            handler = logging.FileHandler(log_file, mode="a")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(handler)
    else:
        setup_logging(None, level=logging.WARNING)


def _worker(local_rank: int, fn: Callable, kwargs: dict, world_size: int, backend: str, port: int,
            log_file: str | None, queue) -> None:
    init_group(rank=local_rank, world_size=world_size, backend=backend, port=port)
    try:
        _quiet_other_ranks(log_file)
        queue.put((local_rank, fn(**kwargs)))
    finally:
        tdist.destroy_process_group()


@contextlib.contextmanager
def main_script_hidden():
    """Spawned processes re-run the parent's __main__ script by its path before unpickling fn; a Snakemake
    stage script cannot run outside Snakemake (no `snakemake` object), and fn lives in maskless anyway. So
    the children are not told the path while they start."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is not None:
        del main.__file__
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


def launch(fn: Callable[..., Any], *, processes: int = 1, log_file: str | None = None, all_ranks: bool = False,
           **kwargs: Any) -> Any:
    """Run fn(**kwargs) data-parallel on `processes` ranks (module doc); returns rank 0's result, or with
    all_ranks every rank's result in rank order (spawned processes only; a list of one otherwise).

    kwargs["device"] (default "auto") picks the backend: NCCL for CUDA, Gloo for CPU. fn must be importable
    by the spawned processes (a module-level function of an importable module, not of a __main__ script).
    Under torchrun the group torchrun set up is joined and `processes` must equal its WORLD_SIZE. log_file:
    the rule's log, which rank 0 of spawned processes appends to.
    """
    device = str(kwargs.get("device", "auto"))
    check_processes(processes, device)
    backend = backend_for(device)
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ and not tdist.is_initialized():
        world = int(os.environ["WORLD_SIZE"])
        if world != processes:
            raise ValueError(f"torchrun started {world} processes but config key train_processes is {processes}")
        init_group(rank=int(os.environ["RANK"]), world_size=world, backend=backend,
                   local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
        try:
            result = fn(**kwargs)
            return [result] if all_ranks else result
        finally:
            tdist.destroy_process_group()
    if processes == 1:
        result = fn(**kwargs)
        return [result] if all_ranks else result
    import torch.multiprocessing as mp

    if kwargs.get("threads"):  # the rule's threads are shared by its processes
        kwargs = {**kwargs, "threads": max(1, int(kwargs["threads"]) // processes)}

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    log.info("training on %d processes (%s backend)", processes, backend)
    with main_script_hidden():
        context = mp.start_processes(_worker, args=(fn, kwargs, processes, backend, _free_port(), log_file, queue),
                                     nprocs=processes, join=False, start_method="spawn")
    results: dict[int, Any] = {}
    done = False
    while not done:
        done = context.join(timeout=1)  # re-raises a rank's exception with its traceback
        while not queue.empty():  # drained while waiting: a full pipe would block a finishing rank
            rank, result = queue.get()
            results[rank] = result
    return [results.get(r) for r in range(processes)] if all_ranks else results.get(0)
