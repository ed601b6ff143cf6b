"""Resumable training state shared by the training stages (DenseCL, SOLO).

State lives outside the rule's outputs (Snakemake deletes outputs before a job starts). A state is used
only when it was made with the same result-changing parameters (the resume key) and the same data (a
fingerprint); anything else, or an unreadable file, starts fresh with the reason logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from maskless.io import torch_save_atomic

log = logging.getLogger(__name__)

REQUIRED = frozenset({"model", "optimizer", "step", "loss_rows"})


def resume_key(params: dict, ignored: tuple[str, ...]) -> dict:
    """The parameters that change the result: all of `params` but the `ignored` ones."""
    return {k: v for k, v in params.items() if k not in ignored}


def try_resume(state_path: Path, *, key: dict, fingerprint: str, what: str) -> dict | None:
    """The saved state at `state_path` if it matches `key` and `fingerprint`, else None (reason logged).

    `what` names the training in messages ("DenseCL", "SOLO").
    """
    if not state_path.exists():
        return None
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch.load raises many types on junk bytes; any of them -> fresh)
        log.warning("resume state %s is unreadable (%s): starting fresh", state_path, e)
        return None
    if not isinstance(state, dict) or not REQUIRED <= set(state):
        log.warning("resume state %s is not a %s training state: starting fresh", state_path, what)
        return None
    if state.get("resume_key") != key or state.get("data") != fingerprint:
        old = state.get("resume_key") or {}
        diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        log.info("resume state %s was made with other parameters %s%s: starting fresh", state_path, diff,
                 " and other data" if state.get("data") != fingerprint else "")
        return None
    return state


def _cuda_rng() -> torch.Tensor | None:
    """The current CUDA device's generator state (dropout on the GPU draws from it, not from the CPU's), or
    None where the process has not used CUDA. Without it a resumed run on CUDA drew other dropout masks than
    the uninterrupted one (found by the gpu-marked PCT resume test)."""
    return torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def save_state(state_path: Path, *, key: dict, fingerprint: str, step: int, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss_rows: list) -> None:
    """Write everything a resume needs, atomically (a kill mid-write leaves the previous state)."""

    torch_save_atomic({"resume_key": key, "data": fingerprint, "step": step, "model": model.state_dict(),
                       "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                       "torch_rng": torch.get_rng_state(), "cuda_rng": _cuda_rng(), "loss_rows": loss_rows},
                      state_path)
    log.info("checkpoint at step %d -> %s", step, state_path)


def restore(state: dict, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler) -> tuple[int, list]:
    """Load a state from try_resume into the live objects; returns (start step, loss rows so far)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])
    return int(state["step"]), [list(r) for r in state["loss_rows"]]
