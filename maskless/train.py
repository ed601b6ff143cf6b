"""The one training loop of every trained model (DenseCL, SOLO with and without EEC, STEGO, PCT).

A method builds its modules and optimizer and hands `fit` a `Run`: above all `step(batch, step) -> dict[str,
Tensor]`, the named values of one step. Everything else is written here once:
- the learning rate of each step (`Schedule`, or none: the optimizer's own), per param group times its
  "lr_mult" when it has one;
- the finite check: every value (the terms averaged over the ranks first, so a NaN on one rank stops all
  of them) must be finite, and the error names the method, the step and the terms;
- the objective: the step's "loss", or (a step that returns only terms) the sum of its entries that are not
  statistics (`Run.stats`); AMP's GradScaler (CUDA only), gradient clipping to a global L2 norm (a norm that
  is not finite stops the run without AMP; with it the scaler skips the step);
- the loss log (one row a step: "step", the columns, "lr" with a schedule), progress lines with images per
  second, the data's share of the time and an ETA, in the method's logger;
- resume (maskless.resume): state outside the rule's outputs every checkpoint_every steps, used only when the
  parameters (plus the process count, maskless.dist) and the data match; a resumed run is bit-identical on
  CPU; the state is removed once the method's output is written;
- data parallel (maskless.dist): the method calls its networks through dist.wrap; rank 0 alone writes
  checkpoints, the output and the loss log; every summary carries the digest of the trained parameters;
- `prefetch`: a method whose batches are a function of the step alone has the next one made in a thread
  while the current step computes (the same batches, in the same order).

The order of a step never changes: batch, learning rate, step, finite check, backward, clip, optimizer step.
Nothing here draws random numbers, so LoopParams has no seed: each method seeds its initialisation and its
per-step generators from its own seed (part of its resume key), and its results depend on nothing else.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from maskless import dist
from maskless.io import write_text_atomic
from maskless.resume import restore, save_state, try_resume

SCHEDULES = ("constant", "cosine", "step", "poly")


@dataclass(frozen=True)
class Schedule:
    """Learning rate of a 0-based step: an optional linear warm-up, then a decay.

    Warm-up over warmup_steps: from zero, lr (s + 1) / warmup_steps (MoCo v2 / DenseCL), or with warmup_start
    detectron2's WarmupMultiStepLR "linear", lr (warmup_start (1 - a) + a), a = s / warmup_steps. Decay:
    "constant"; "cosine" to zero over the steps after warm-up; "step", x0.1 at each fraction decay_at of the
    steps; "poly", lr (1 - s / steps) ^ power (DeepLab).
    """

    lr: float
    steps: int
    decay: str = "constant"
    warmup_steps: int = 0
    warmup_start: float | None = None
    decay_at: tuple[float, ...] = ()
    power: float = 0.9

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            if self.warmup_start is None:
                return self.lr * (step + 1) / self.warmup_steps
            a = step / self.warmup_steps
            return self.lr * (self.warmup_start * (1 - a) + a)
        if self.decay == "constant":
            return self.lr
        if self.decay == "step":
            return self.lr * 0.1 ** sum(step >= f * self.steps for f in self.decay_at)
        if self.decay == "poly":
            return self.lr * (1.0 - step / self.steps) ** self.power
        if self.decay != "cosine":
            raise ValueError(f"learning-rate decay {self.decay!r} unknown; choices: {list(SCHEDULES)}")
        span = max(1, self.steps - self.warmup_steps)
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - self.warmup_steps) / span))


@dataclass(frozen=True)
class LoopParams:
    """How the loop runs; a method fills it from its own params (the config keys stay the method's)."""

    steps: int
    checkpoint_every: int
    log_every: int = 10
    schedule: Callable[[int], float] | None = None  # lr of a 0-based step (Schedule); None: the optimizer's
    grad_clip: float = 0.0  # global L2 norm of Run.clip; 0 disables
    amp: bool = False  # CUDA only (use_amp)


def use_amp(amp: bool, dev: torch.device) -> bool:
    """Mixed precision is used on CUDA only."""
    return bool(amp) and dev.type == "cuda"


def autocast(dev: torch.device, enabled: bool):
    """float16 autocast on `dev` when enabled (a method wraps its forward in it, never its losses)."""
    return torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=enabled)


def identity(x):
    """A DataLoader's collate_fn for items that are whole batches already."""
    return x


def step_batches(data: torch.utils.data.Dataset, start: int, num_workers: int, pin_memory: bool = False,
                 spawn: bool = False) -> Iterator:
    """Items start, start + 1, ... of `data` (item s: the batch of 0-based step s), made here (num_workers 0)
    or by DataLoader workers, in step order either way. The loader draws its workers' base seed from a
    generator of its own: from torch's global one it would shift the training's random stream (dropout) and
    the result would depend on num_workers. spawn: start the workers fresh instead of forking this process
    (for data that must not inherit this process's state, such as zarr's I/O thread, which a fork leaves
    dead); `data` is then pickled, and a Snakemake stage script is not re-run in them."""
    if num_workers == 0:
        return (data[s] for s in range(start, len(data)))
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(start, len(data)),
                                         num_workers=num_workers, collate_fn=identity, pin_memory=pin_memory,
                                         generator=torch.Generator().manual_seed(0),
                                         multiprocessing_context="spawn" if spawn else None)
    with dist.main_script_hidden():
        return iter(loader)


_DONE = object()


def prefetch(items: Iterable, depth: int = 1) -> Iterator:
    """The items of `items`, in order, each made in a background thread up to `depth` ahead of the one the
    caller works on: batch building (numpy, OpenCV and torch release the GIL for their heavy work) overlaps
    the training step instead of adding to it. The items are the ones a plain loop would give, so a method
    whose batch is a function of (seed, step) stays bit-identical; its random draws must not come from a
    generator the step also draws from. An exception raised while making an item is raised here, at that
    item. When the caller stops early (a resume test's stop, an error in the step) and drops the iterator,
    the thread stops too.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((_DONE, e))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="maskless-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


@dataclass
class Run:
    """What a method hands the loop."""

    what: str  # the method's name in messages ("DenseCL")
    log: logging.Logger  # the method's logger: its lines keep their source
    step: Callable[[Any, int], dict[str, Tensor]]  # (batch, 1-based step) -> named values
    batches: Callable[[int], Iterable]  # first 0-based step -> the batches of that step and the following ones
    module: nn.Module  # what a resume state holds; its parameters are digested
    optimizer: torch.optim.Optimizer
    columns: tuple[str, ...]  # the loss log's: "step", "loss", values of the step, "lr" last with a schedule
    save: Callable[[], None]  # writes the method's output (rank 0, after the last step)
    clip: Sequence[Tensor] = ()  # the parameters whose gradient norm LoopParams.grad_clip bounds
    stats: tuple[str, ...] = ()  # values logged as this rank's own, never averaged nor summed into a loss
    images_per_step: int = 0  # the global batch, for images per second
    digest: nn.Module | None = None  # whose parameters the summary digests (default: module)
    after_step: Callable[[int, dict[str, float]], None] = lambda step, values: None
    note: Callable[[], str] = lambda: ""  # appended to progress lines


@dataclass
class Resume:
    """Where the resume state lives and what it must match."""

    path: Path
    key: dict  # the parameters that change the result (maskless.resume.resume_key)
    fingerprint: str  # the data


def _values(run: Run, out: dict[str, Tensor], step: int, hint: str) -> tuple[dict[str, float], Tensor, float]:
    """(values, all but Run.stats averaged over the ranks; the objective; its logged value);
    FloatingPointError naming every non-finite value ("loss" last)."""
    local = {k: float(v.detach()) for k, v in out.items()}
    values = {**dist.mean_values({k: v for k, v in local.items() if k not in run.stats}),
              **{k: local[k] for k in run.stats}}
    bad = [k for k, v in values.items() if k != "loss" and not math.isfinite(v)]
    bad += [k for k in ("loss",) if k in values and not math.isfinite(values[k])]
    if bad:
        raise FloatingPointError(f"{run.what} step {step}: non-finite loss terms {bad} (losses: {values}){hint}")
    if "loss" in out:
        return values, out["loss"], values["loss"]
    objective = sum(v for k, v in out.items() if k not in run.stats)
    return values, objective, sum(v for k, v in values.items() if k not in run.stats)


def _hint(run: Run, params: LoopParams, amp: bool) -> str:
    tries = ["a lower lr"]
    if run.clip:
        tries.append("a smaller grad_clip" if params.grad_clip > 0 else "grad_clip > 0")
    if amp:
        tries.append("amp: false")
    return "; try " + ", ".join(tries[:-1]) + (" or " if len(tries) > 1 else "") + tries[-1]


def write_loss_log(path: str, columns: Sequence[str], rows: list[list[float]]) -> None:
    """CSV with a header; the step as an integer, every other value with 8 significant digits; atomic."""
    lines = [",".join(columns)]
    lines += [f"{int(r[0])}," + ",".join(format(v, ".8g") for v in r[1:]) for r in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _progress(run: Run, params: LoopParams, row: dict, start: int, elapsed: float, data_s: float) -> None:
    step, done = int(row["step"]), int(row["step"]) - start
    terms = " ".join(f"{k} {row[k]:.4g}" for k in run.columns[2:] if k != "lr")
    lr = f" lr {row['lr']:.5g}" if "lr" in row else ""
    run.log.info("step %d/%d loss %.4f (%s)%s %.1f img/s, data %.0f%% of the time, %.2f s/step, ETA %.0f s%s",
                 step, params.steps, row["loss"], terms, lr, done * run.images_per_step / max(elapsed, 1e-9),
                 100 * data_s / max(elapsed, 1e-9), elapsed / max(done, 1),
                 (params.steps - step) * elapsed / max(done, 1), run.note())


def _set_lr(run: Run, params: LoopParams, step: int) -> float | None:
    """Set the lr of 1-based `step` on every param group (times its "lr_mult"); None without a schedule."""
    if params.schedule is None:
        return None
    lr = params.schedule(step - 1)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"] if "lr_mult" in group else lr
    return lr


def _optimize(run: Run, params: LoopParams, scaler: torch.amp.GradScaler, objective: Tensor, step: int,
              values: dict[str, float]) -> None:
    opt = run.optimizer
    opt.zero_grad(set_to_none=True)
    scaler.scale(objective).backward()
    if params.grad_clip > 0:
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(run.clip, params.grad_clip)
        if not scaler.is_enabled() and not torch.isfinite(norm):  # with AMP the scaler skips the step
            raise FloatingPointError(f"{run.what} step {step}: gradient norm is {float(norm)} (losses: {values})")
    scaler.step(opt)
    scaler.update()


def _start(run: Run, params: LoopParams, resume: Resume, key: dict, scaler) -> tuple[int, list]:
    """(start step, loss rows so far): from a matching resume state, else (0, [])."""
    saved = try_resume(resume.path, key=key, fingerprint=resume.fingerprint, what=run.what)
    if saved is None:
        return 0, []
    start, rows = restore(saved, model=run.module, optimizer=run.optimizer, scaler=scaler)
    run.log.info("resuming %s from %s at step %d/%d", run.what, resume.path, start, params.steps)
    return start, rows


def _finish(run: Run, resume: Resume, rows: list, loss_log: str | None) -> None:
    """Rank 0 after the last step: the method's output, the loss log, then the resume state goes."""
    run.save()
    if loss_log:
        write_loss_log(loss_log, run.columns, rows)
    if resume.path.exists():
        resume.path.unlink()
        run.log.info("training finished: removed resume state %s", resume.path)


def fit(run: Run, params: LoopParams, resume: Resume, *, dev: torch.device, loss_log: str | None = None,
        stop_after: int | None = None) -> dict:
    """Train run.module for params.steps steps (module doc); returns a summary.

    stop_after: testing hook; stop once that many steps (counted from step 0) are done, without writing the
    output or loss_log, as a kill would.
    """
    rank = dist.current()
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp(params.amp, dev))
    key = dist.resume_key(resume.key, rank)
    start, rows = _start(run, params, resume, key, scaler)
    hint = _hint(run, params, scaler.is_enabled())
    t_start, data_s, step = time.perf_counter(), 0.0, start
    batches = iter(run.batches(start))
    for step in range(start + 1, params.steps + 1):
        t0 = time.perf_counter()
        batch = next(batches)
        data_s += time.perf_counter() - t0
        lr = _set_lr(run, params, step)
        values, objective, loss = _values(run, run.step(batch, step), step, hint)
        _optimize(run, params, scaler, objective, step, values)
        rows.append([{**values, "step": step, "loss": loss, "lr": lr}[c] for c in run.columns])
        run.after_step(step, values)
        if step % params.log_every == 0 or step == params.steps:
            _progress(run, params, dict(zip(run.columns, rows[-1])), start, time.perf_counter() - t_start, data_s)
        if step % params.checkpoint_every == 0 and step < params.steps and rank.is_main:
            save_state(resume.path, key=key, fingerprint=resume.fingerprint, step=step, model=run.module,
                       optimizer=run.optimizer, scaler=scaler, loss_rows=rows)
        if stop_after is not None and step >= stop_after:
            run.log.info("stopping after step %d (stop_after)", step)
            return {"steps_done": step, "start_step": start, "stopped": True}

    seconds = time.perf_counter() - t_start
    digest = dist.param_digest(run.digest if run.digest is not None else run.module)
    if not rank.is_main:
        return {"steps_done": step, "start_step": start, "stopped": False, "rank": rank.rank, "param_digest": digest}
    _finish(run, resume, rows, loss_log)
    return {"steps_done": step, "start_step": start, "stopped": False, "resumed": start > 0, "device": str(dev),
            "seconds": seconds, "data_fraction": data_s / max(seconds, 1e-9), "rank": rank.rank,
            "param_digest": digest, "final": dict(zip(run.columns, rows[-1])) if rows else {}}
