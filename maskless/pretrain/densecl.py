"""DenseCL: dense contrastive self-supervised pretraining (Wang et al. 2021, "Dense Contrastive Learning for
Self-Supervised Visual Pre-Training"; METHODS.md, "DenseCL").

A query encoder and a momentum key encoder (MoCo v2, He et al. 2020 / Chen et al. 2020) each carry a backbone,
a global head (pooled res5 -> MLP -> feat_dim) and a dense head (1x1-conv MLP -> feat_dim per res5 cell).
Global loss: InfoNCE of q against its key k with queue 1 (global keys of past images) as negatives.
Dense loss: each query cell i is matched to the key cell with the most similar BACKBONE feature
(DenseCL Sec. 3.3, Eq. 3: the match is taken on the backbone, not the head) and contrasted against queue 2,
which holds one pooled, L2-normalised dense key vector per past image (DenseCL Sec. 3.2).
loss = (1 - lambda) L_global + lambda L_dense (DenseCL Eq. 4).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from maskless.dist import all_gather_cat
from maskless.models.resnet import ARCHS, build_resnet

_INT_FIELDS = ("steps", "batch_size", "crop_size", "queue_size", "feat_dim", "hidden_dim", "checkpoint_every",
               "seed", "warmup_steps", "num_workers")
_FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "temperature", "key_momentum", "dense_weight")


@dataclass(frozen=True)
class DenseCLParams:
    """Everything that changes a DenseCL run's result (plus checkpoint_every and num_workers, which do not)."""

    arch: str = "resnet18"
    steps: int = 200
    batch_size: int = 16
    crop_size: int = 96
    lr: float = 0.03  # base lr, scaled by batch_size / 256 (linear scaling rule, as in MoCo/DenseCL)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    queue_size: int = 4096  # 65536 at ImageNet scale; small data needs a short queue (stale keys otherwise)
    temperature: float = 0.2
    key_momentum: float = 0.999
    dense_weight: float = 0.5  # lambda of DenseCL Eq. 4
    feat_dim: int = 128
    hidden_dim: int = 512  # the reference uses the backbone width (2048 for ResNet-50)
    checkpoint_every: int = 50
    amp: bool = True  # mixed precision, CUDA only
    seed: int = 0
    warmup_steps: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"DenseCL parameter {name!r} must be {rule}, got {getattr(self, name)!r}")

        if self.arch not in ARCHS:
            raise ValueError(f"DenseCL parameter 'arch' must be one of {sorted(ARCHS)}, got {self.arch!r}")
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise bad(name, "an integer")
        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
                raise bad(name, "a number")
        if not isinstance(self.amp, bool):
            raise bad("amp", "true or false")
        checks = [
            ("steps", self.steps >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 2, ">= 2 (BatchNorm needs two images)"),
            ("crop_size", self.crop_size >= 32, ">= 32 (res5 has stride 32)"),
            ("lr", self.lr > 0, "> 0"),
            ("momentum", 0 <= self.momentum <= 1, "in [0, 1]"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("queue_size", self.queue_size >= self.batch_size, f">= batch_size ({self.batch_size})"),
            ("temperature", self.temperature > 0, "> 0"),
            ("key_momentum", 0 <= self.key_momentum <= 1, "in [0, 1]"),
            ("dense_weight", 0 <= self.dense_weight <= 1, "in [0, 1]"),
            ("feat_dim", self.feat_dim >= 1, ">= 1"),
            ("hidden_dim", self.hidden_dim >= 1, ">= 1"),
            ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
            ("seed", self.seed >= 0, ">= 0"),
            ("warmup_steps", 0 <= self.warmup_steps <= self.steps, f"in [0, steps={self.steps}]"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise bad(name, rule)

    @classmethod
    def from_dict(cls, values: dict) -> "DenseCLParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DenseCL parameters {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def dense_correspondence(feat_q: torch.Tensor, feat_k: torch.Tensor) -> torch.Tensor:
    """For each query cell, the key cell of highest cosine similarity (DenseCL Eq. 3).

    feat_q: (B, C, Hq, Wq), feat_k: (B, C, Hk, Wk) backbone features. Returns (B, Hq*Wq) long indices into
    the flattened (row-major) key grid; ties go to the first index.
    """
    if feat_q.ndim != 4 or feat_k.ndim != 4 or feat_q.shape[:2] != feat_k.shape[:2]:
        raise ValueError(f"dense_correspondence needs (B, C, H, W) pairs, got {tuple(feat_q.shape)} and "
                         f"{tuple(feat_k.shape)}")
    q = F.normalize(feat_q.flatten(2).float(), dim=1)  # (B, C, Sq)
    k = F.normalize(feat_k.flatten(2).float(), dim=1)  # (B, C, Sk)
    sim = torch.bmm(q.transpose(1, 2), k)  # (B, Sq, Sk)
    return sim.argmax(dim=2)  # (B, Sq)


def info_nce(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE loss, -log softmax of the positive among [positive, negatives] (MoCo Eq. 1).

    q: (N, D) queries, k_pos: (N, D) their positive keys, queue: (K, D) negatives shared by all queries;
    all L2-normalised. logits_n = [q_n . k_n, q_n . queue_1, ..., q_n . queue_K] / temperature.
    """
    if q.shape != k_pos.shape or q.ndim != 2 or queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce shapes: q {tuple(q.shape)}, k_pos {tuple(k_pos.shape)}, "
                         f"queue {tuple(queue.shape)}; want (N, D), (N, D), (K, D)")
    pos = (q * k_pos).sum(dim=1, keepdim=True)  # (N, 1)
    neg = q @ queue.t()  # (N, K)
    logits = torch.cat([pos, neg], dim=1) / temperature  # (N, 1 + K)
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is column 0
    return F.cross_entropy(logits, target)


@torch.no_grad()
def momentum_update_(key: nn.Module, query: nn.Module, momentum: float) -> None:
    """theta_k <- m theta_k + (1 - m) theta_q for every parameter (MoCo Eq. 2); buffers are left alone."""
    for pk, pq in zip(key.parameters(), query.parameters(), strict=True):
        pk.mul_(momentum).add_(pq.detach(), alpha=1.0 - momentum)


def _global_head(cin: int, hidden: int, out: int) -> nn.Sequential:
    # MoCo v2 projection: pool -> fc -> ReLU -> fc.
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(cin, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


def _dense_head(cin: int, hidden: int, out: int) -> nn.Sequential:
    # DenseCL Sec. 3.2: the global MLP with its fc layers replaced by 1x1 convs, applied per res5 cell.
    return nn.Sequential(nn.Conv2d(cin, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out, 1))


class DenseCL(nn.Module):
    """Query/key encoders with both heads and both queues. forward(view_q, view_k) -> named losses."""

    def __init__(self, *, arch: str = "resnet18", feat_dim: int = 128, hidden_dim: int = 512,
                 queue_size: int = 4096, temperature: float = 0.2, key_momentum: float = 0.999,
                 dense_weight: float = 0.5):
        super().__init__()
        self.temperature = temperature
        self.key_momentum = key_momentum
        self.dense_weight = dense_weight
        self.encoder_q = build_resnet(arch)
        cin = self.encoder_q.out_channels["res5"]
        self.global_q = _global_head(cin, hidden_dim, feat_dim)
        self.dense_q = _dense_head(cin, hidden_dim, feat_dim)
        # The key encoder starts as an exact copy and then only follows the query by EMA (no gradients).
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.global_k = copy.deepcopy(self.global_q)
        self.dense_k = copy.deepcopy(self.dense_q)
        for p in self._key_modules().parameters():
            p.requires_grad_(False)
        # Queues start as random unit vectors (MoCo) and are replaced as training enqueues real keys.
        # One pointer serves both: every step enqueues one global and one pooled dense key per image.
        self.register_buffer("queue_global", F.normalize(torch.randn(queue_size, feat_dim), dim=1))
        self.register_buffer("queue_dense", F.normalize(torch.randn(queue_size, feat_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_params(cls, p: DenseCLParams) -> "DenseCL":
        return cls(arch=p.arch, feat_dim=p.feat_dim, hidden_dim=p.hidden_dim, queue_size=p.queue_size,
                   temperature=p.temperature, key_momentum=p.key_momentum, dense_weight=p.dense_weight)

    def _query_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.encoder_q, self.global_q, self.dense_q])

    def _key_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.encoder_k, self.global_k, self.dense_k])

    def momentum_update(self) -> None:
        momentum_update_(self._key_modules(), self._query_modules(), self.key_momentum)

    @torch.no_grad()
    def _keys(self, view_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Key-side outputs: res5 features, global keys, per-cell dense keys, pooled dense keys."""
        feat_k = self.encoder_k(view_k)["res5"]  # (B, C, hk, wk)
        k = F.normalize(self.global_k(feat_k).float(), dim=1)  # (B, D)
        dk_map = self.dense_k(feat_k).float()  # (B, D, hk, wk)
        dk = F.normalize(dk_map.flatten(2), dim=1)  # (B, D, Sk)
        # Queue 2 entry: pool first, then normalise (DenseCL Sec. 3.2; METHODS.md).
        dk_pooled = F.normalize(dk_map.mean(dim=(2, 3)), dim=1)  # (B, D)
        return feat_k, k, dk, dk_pooled

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor, dk_pooled: torch.Tensor) -> None:
        """Overwrite the oldest entries of both queues with this batch's keys (FIFO, wrapping around).

        In data-parallel training every rank enqueues the keys of all ranks (rank order), so the queues stay
        equal across ranks and hold the keys of the whole global batch, as in single-process training."""
        k, dk_pooled = all_gather_cat(k), all_gather_cat(dk_pooled)
        n, size = k.shape[0], self.queue_global.shape[0]
        if n > size:
            raise ValueError(f"batch of {n} keys does not fit the queue of {size}")
        idx = (self.queue_ptr + torch.arange(n, device=k.device)) % size  # (B,)
        self.queue_global[idx] = k.to(self.queue_global.dtype)
        self.queue_dense[idx] = dk_pooled.to(self.queue_dense.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor) -> dict[str, torch.Tensor]:
        """view_q, view_k: (B, 3, H, W) normalised views of the same B images -> {"loss_global",
        "loss_dense", "loss"} (scalars; loss = (1 - lambda) loss_global + lambda loss_dense)."""
        feat_q = self.encoder_q(view_q)["res5"]  # (B, C, hq, wq)
        q = F.normalize(self.global_q(feat_q).float(), dim=1)  # (B, D)
        dq = F.normalize(self.dense_q(feat_q).float().flatten(2), dim=1)  # (B, D, Sq)
        with torch.no_grad():
            self.momentum_update()
            feat_k, k, dk, dk_pooled = self._keys(view_k)
            match = dense_correspondence(feat_q.detach(), feat_k)  # (B, Sq)
            dk_pos = torch.gather(dk, 2, match.unsqueeze(1).expand(-1, dk.shape[1], -1))  # (B, D, Sq)
        d = q.shape[1]
        # Clones: the queues are overwritten in place below, before backward needs them.
        loss_global = info_nce(q, k, self.queue_global.clone(), self.temperature)
        loss_dense = info_nce(dq.transpose(1, 2).reshape(-1, d), dk_pos.transpose(1, 2).reshape(-1, d),
                              self.queue_dense.clone(), self.temperature)
        self._enqueue(k, dk_pooled)  # after the loss: a batch must not be its own negative
        loss = (1.0 - self.dense_weight) * loss_global + self.dense_weight * loss_dense
        return {"loss_global": loss_global, "loss_dense": loss_dense, "loss": loss}
