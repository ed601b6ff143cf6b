"""Every named backbone the methods take, and one loader for any checkpoint of them.

BACKBONES maps a name to its family, factory and feature levels (level -> stride): the ResNets of
maskless.models.resnet (res2..res5, strides 4..32) and DINO's ViTs of maskless.models.vit (one level,
"tokens", at the patch stride 8 or 16). A method picks a level by name (stego.layer, freemask.feature_level)
and checks it against the loaded backbone with require_level.

load_any_backbone reads a file through maskless.models.weights.read_state_dict (no code in the file runs).
A ViT is recognised by its patch embedding (`<prefix>patch_embed.proj.weight`); its prefix (DDP's
"module.", DINO's multi-crop wrapper "backbone.", both) is stripped, the DINO head and any classifier
(head.*) and everything outside the prefix dropped and counted, and its shape read from the keys: patch
size from the patch conv's kernel, width from the embedding, depth from the block count, heads as width / 64
(DINO's ViT-S and ViT-B), position grid from pos_embed. Every other file is a ResNet checkpoint and goes to
maskless.models.weights.load_backbone (its formats, prefixes and errors).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from maskless.models import resnet, vit
from maskless.models.weights import check_state, load_backbone, read_state_dict

log = logging.getLogger(__name__)

_PATCH_KEY = "patch_embed.proj.weight"
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# First key components of a ViT checkpoint that are not the backbone: DINO's projection head (DINOHead
# under "head."), a classifier ("head", "fc"), a distillation head ("head_dist").
VIT_HEADS = frozenset({"head", "head_dist", "fc"})


@dataclass(frozen=True)
class Backbone:
    family: str  # "resnet" or "vit"
    build: Callable[[], nn.Module]  # a randomly initialised model
    levels: dict[str, int]  # feature level -> stride


BACKBONES: dict[str, Backbone] = {
    **{name: Backbone("resnet", partial(resnet.build_resnet, name),
                      {level: 4 * 2**i for i, level in enumerate(resnet.LEVELS)}) for name in resnet.ARCHS},
    **{name: Backbone("vit", partial(vit.build_vit, name), {vit.LEVEL: patch})
       for name, (patch, _, _) in vit.ARCHS.items()},
}
LEVELS = tuple(dict.fromkeys(level for b in BACKBONES.values() for level in b.levels))  # every level name


def require_level(model: nn.Module, level: str, key: str, path: str) -> None:
    """Raise ValueError naming the config `key` when `level` is not a feature level of the loaded backbone."""
    levels = list(getattr(model, "strides", {}))
    if level not in levels:
        raise ValueError(f"config key {key!r} is {level!r}, but the backbone {path} ({describe(model)}) has the "
                         f"feature levels {levels}")


def describe(model: nn.Module) -> str:
    if isinstance(model, vit.ViT):
        return f"ViT patch {model.patch_size}, width {model.dim}, depth {model.depth}"
    return type(model).__name__


def vit_prefix(keys: list[str], path: str) -> str | None:
    """The prefix of a ViT's keys (`<prefix>patch_embed.proj.weight`), or None when the file holds no ViT."""
    prefixes = sorted({k[: -len(_PATCH_KEY)] for k in keys if k.endswith(_PATCH_KEY)})
    if len(prefixes) > 1:
        raise ValueError(f"checkpoint {path} holds several ViTs, under the prefixes {prefixes}; extract the one "
                         "to use into a file of its own")
    return prefixes[0] if prefixes else None


def vit_state(state: dict[str, torch.Tensor], prefix: str, path: str) -> dict[str, torch.Tensor]:
    """The backbone tensors under `prefix`, prefix stripped, heads dropped (counted in the log)."""
    kept: dict[str, torch.Tensor] = {}
    outside = heads = 0
    for key, value in state.items():
        if not key.startswith(prefix):
            outside += 1
        elif key[len(prefix):].split(".")[0] in VIT_HEADS:
            heads += 1
        else:
            kept[key[len(prefix):]] = value
    if outside or heads:
        log.info("checkpoint %s: kept %d ViT tensors under prefix %r; dropped %d head and %d outside it", path,
                 len(kept), prefix, heads, outside)
    return kept


def vit_shape(state: dict[str, torch.Tensor], path: str) -> dict:
    """build_vit's keyword arguments read from a ViT state dict (prefix already stripped)."""
    for key in (_PATCH_KEY, "pos_embed", "blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise ValueError(f"checkpoint {path} looks like a ViT but lacks {key!r}")
    proj = state[_PATCH_KEY]  # (C, 3, p, p)
    dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    n = int(state["pos_embed"].shape[1]) - 1
    side = math.isqrt(max(n, 0))
    if side * side != n or side == 0:
        raise ValueError(f"checkpoint {path}: pos_embed {tuple(state['pos_embed'].shape)} is not 1 + a square "
                         "grid of positions")
    depth = len({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    return dict(patch_size=patch, dim=dim, depth=depth, mlp_ratio=hidden / dim, pos_grid=side)


def vit_arch(shape: dict) -> str | None:
    """The name in BACKBONES of a ViT of this shape (DINO's 224 px positions), or None."""
    for name, (patch, dim, _) in vit.ARCHS.items():
        if (shape["patch_size"], shape["dim"], shape["depth"], shape["mlp_ratio"], shape["pos_grid"]) == (
                patch, dim, vit.DEPTH, 4.0, vit.PRETRAIN_SIZE // patch):
            return name
    return None


def load_any_backbone(path: str, arch: str | None = None) -> nn.Module:
    """A backbone of BACKBONES with the checkpoint's weights (eval mode not set). arch: a name of BACKBONES
    the file must hold (its shapes are checked against it), or None to take it from the file."""
    path = str(path)
    if arch is not None and arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; choices: {sorted(BACKBONES)}")
    if arch is not None and BACKBONES[arch].family == "resnet":
        return load_backbone(path, arch)
    state, meta = read_state_dict(path)
    prefix = vit_prefix(list(state), path)
    if prefix is None:
        if arch is not None:  # a ViT was asked for
            raise ValueError(f"checkpoint {path} holds no ViT (no key ends in {_PATCH_KEY!r}) but {arch} was "
                             f"requested; its first keys: {list(state)[:5]}")
        return load_backbone(path)
    state = vit_state(state, prefix, path)
    if arch is None:
        shape = vit_shape(state, path)
        model, name = vit.build_vit(**shape), vit_arch(shape) or "ViT (shape read from the keys)"
    else:
        model, name = BACKBONES[arch].build(), arch
    model.load_state_dict(check_state(model, state, path), strict=True)
    log.info("loaded %s backbone from %s (%s, %s format)", name, path, describe(model), meta.get("format"))
    return model
