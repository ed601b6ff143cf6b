"""Reading and writing backbone checkpoints.

Files: torch (.pth/.pt/.tar), detectron2 .pkl and .safetensors, all read without running code from the file
(maskless/models/formats.py). Accepted inputs: a raw torchvision or timm state dict; {"state_dict": ...}
(MoCo, OpenSelfSup/mmcv DenseCL, Lightning); {"model": ...} (detectron2, whose ResNet key names are mapped
to torchvision's); DINO's training checkpoint {"teacher", "student", ...} (the teacher is read); and our own
format {"arch", "state_dict", "params"} (DESIGN.md, "Checkpoints": state dicts plus the resolved parameters
that made them, loaded with weights_only). Keys wrapped by a training framework ("module.", "encoder_q.",
"backbone.", ...) are unwrapped when that makes them match a ResNet; the classifier (fc.*) and the
self-supervised heads, key encoder and queues are dropped and counted.
"""

from __future__ import annotations

import json
import logging
import re

import torch

from maskless.io import torch_save_atomic
from maskless.models.formats import detectron2_to_torchvision, is_detectron2_resnet, read_checkpoint
from maskless.models.resnet import ARCHS, ResNet, build_resnet

log = logging.getLogger(__name__)

# Longest first: the prefix that yields the most backbone keys wins, ties go to the shorter prefix.
PREFIXES = (
    "module.encoder_q.0.",
    "module.encoder_q.",
    "module.backbone.",
    "encoder_q.0.",
    "encoder_q.",
    "backbone.",
    "module.",
    "model.",
    "",
)
_BACKBONE_KEY = re.compile(r"^(conv1|bn1|layer[1-4])\.")
# First key components of everything a self-supervised training checkpoint holds besides the backbone.
HEAD_NAMES = frozenset(
    {"fc", "head", "heads", "neck", "projector", "predictor", "encoder_k", "global_head", "dense_head",
     "head_global", "head_dense", "queue", "queue_ptr", "queue2", "queue2_ptr", "queue_global",
     "queue_dense", "queue_global_ptr", "queue_dense_ptr"}
)
_WRAPPERS = ("state_dict", "model")
_MAX_LISTED = 10


def _unwrap(obj: object, path: str, file_format: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Find the tensor dict inside a checkpoint; meta gets arch/params when the file carries them."""
    meta: dict = {"path": str(path), "format": "raw", "file_format": file_format}
    if isinstance(obj, dict) and isinstance(obj.get("teacher"), dict) and "student" in obj:
        # DINO's training checkpoint: DINO evaluates and releases the teacher, the momentum average of the
        # student, which performs better (Caron et al. 2021, Sec. 3.1; its README evaluates one's own
        # checkpoint with --checkpoint_key teacher).
        return _unwrap(obj["teacher"], path, file_format)[0], {**meta, "format": "dino-teacher"}
    if isinstance(obj, dict):
        if isinstance(obj.get("arch"), str):
            meta["arch"] = obj["arch"]
        if isinstance(obj.get("params"), dict):
            meta["params"] = obj["params"]
        for name in _WRAPPERS:
            if isinstance(obj.get(name), dict):
                meta["format"] = "maskless" if "params" in meta and name == "state_dict" else name
                obj = obj[name]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"checkpoint {path} holds no state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"checkpoint {path} holds no tensors; top-level keys: {list(obj)[:_MAX_LISTED]}")
    return tensors, meta


def _choose_prefix(keys: list[str]) -> str:
    def score(prefix: str) -> int:
        return sum(1 for k in keys if k.startswith(prefix) and _BACKBONE_KEY.match(k[len(prefix):]))

    best = max(PREFIXES, key=lambda p: (score(p), -len(p)))
    return best if score(best) > 0 else ""


def _infer_arch(state: dict[str, torch.Tensor]) -> str | None:
    """Blocks per stage plus block type (conv3 exists only in bottlenecks) identify the ResNet."""
    counts = []
    for i in range(1, 5):
        blocks = {k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}
        counts.append(len(blocks))
    bottleneck = "layer1.0.conv3.weight" in state
    for arch, (block, layers) in ARCHS.items():
        if tuple(counts) == layers and (block.expansion == 4) == bottleneck:
            return arch
    return None


def read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Every tensor of a checkpoint file, keys as stored (no prefix stripped), and meta: path, format
    (raw / state_dict / model / dino-teacher / maskless), file_format (torch / detectron2-pkl /
    safetensors) and arch and params when the file carries them. Any backbone family's loader starts here;
    nothing in the file is executed."""
    path = str(path)
    obj, file_format = read_checkpoint(path)
    return _unwrap(obj, path, file_format)


def load_state(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Backbone tensors of a checkpoint with torchvision key names, and meta (arch, params, prefix, dropped)."""
    path = str(path)
    state, meta = read_state_dict(path)
    if is_detectron2_resnet(list(state)):
        state = {detectron2_to_torchvision(k): v for k, v in state.items()}
        meta["key_names"] = "detectron2"
    prefix = _choose_prefix(list(state))
    backbone: dict[str, torch.Tensor] = {}
    dropped_outside = dropped_fc = dropped_heads = 0
    for key, value in state.items():
        if not key.startswith(prefix):
            dropped_outside += 1  # key encoder, necks, queues of a wrapped training model
            continue
        name = key[len(prefix):]
        head = name.split(".")[0]
        if head == "fc":
            dropped_fc += 1
        elif head in HEAD_NAMES:
            dropped_heads += 1
        else:
            backbone[name] = value
    dropped = dropped_outside + dropped_fc + dropped_heads
    if dropped:
        log.info("checkpoint %s: kept %d backbone tensors under prefix %r; dropped %d (fc: %d, heads/key "
                 "encoder/queues: %d, outside the prefix: %d)", path, len(backbone), prefix, dropped,
                 dropped_fc, dropped_heads, dropped_outside)
    meta.update(prefix=prefix, dropped=dropped)
    if meta.get("arch") not in ARCHS:
        inferred = _infer_arch(backbone)
        if "arch" in meta:
            meta["arch_in_file"] = meta["arch"]
        meta["arch"] = inferred
        meta["arch_source"] = "inferred from keys" if inferred else "unknown"
    else:
        meta["arch_source"] = "checkpoint"
    return backbone, meta


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f"{len(keys)}: {shown}{more}"


def check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """Raise ValueError naming `path` on missing/unexpected keys or shape mismatches.

    BatchNorm's num_batches_tracked counters are optional (older torchvision checkpoints lack them) and
    are taken from the model when absent.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches {_listing(shapes)}")
    if problems:
        raise ValueError(f"checkpoint {path} does not fit the backbone: " + "; ".join(problems))
    return {k: state.get(k, v) for k, v in expected.items()}


def load_backbone(path: str, arch: str | None = None, *, norm: str | None = None) -> ResNet:
    """A ResNet with the checkpoint's weights; arch (and norm) from the file's meta when not given."""
    state, meta = load_state(path)
    file_arch = meta.get("arch")
    if arch is None:
        if file_arch is None:
            raise ValueError(f"checkpoint {path} does not say its arch and it cannot be inferred from its "
                             f"keys; pass arch (one of {sorted(ARCHS)})")
        arch = file_arch
    elif meta["arch_source"] == "checkpoint" and file_arch != arch:
        raise ValueError(f"checkpoint {path} holds a {file_arch} backbone but {arch} was requested")
    if norm is None:
        norm = (meta.get("params") or {}).get("norm", "bn")
        if not any(k.endswith("running_mean") for k in state):
            norm = "gn"  # no running statistics: a GroupNorm backbone
    model = build_resnet(arch, norm=norm)
    model.load_state_dict(check_state(model, state, path), strict=True)
    log.info("loaded %s backbone from %s (arch %s)", arch, path, meta["arch_source"])
    return model


def save_backbone(path: str, model: ResNet, arch: str, params: dict) -> None:
    """Write {"arch", "state_dict", "params"} atomically; params must be JSON-like (weights_only-safe)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone arch {arch!r}; choices: {sorted(ARCHS)}")
    try:
        params = json.loads(json.dumps(params))
    except TypeError as e:
        raise ValueError(f"params for {path} must be plain JSON-like values: {e}") from e
    params.setdefault("norm", getattr(model, "norm", "bn"))
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch_save_atomic({"arch": arch, "state_dict": state, "params": params}, path)
