"""Vision Transformer backbones in DINO's layout, returning the last block's patch tokens as a feature map.

Written from the ViT paper (Dosovitskiy et al. 2021, Sec. 3.1: patch embedding, [CLS] token, learned
position embedding, pre-norm blocks of multi-head self-attention and a GELU MLP, final LayerNorm) with the
module names of DINO's vision_transformer.py (facebookresearch/dino), so its released state dicts load
without renaming: cls_token, pos_embed, patch_embed.proj.{weight,bias}, blocks.{i}.norm1,
blocks.{i}.attn.qkv, blocks.{i}.attn.proj, blocks.{i}.norm2, blocks.{i}.mlp.fc1, blocks.{i}.mlp.fc2, norm.
DINO's vit_small / vit_base: depth 12, MLP ratio 4, qkv bias, LayerNorm eps 1e-6; 384 dims and 6 heads
(ViT-S), 768 dims and 12 heads (ViT-B); patch 16 or 8; position embeddings for a 224 px input. The
classifier `head` is omitted (DINO's backbones have none: num_classes 0, an Identity).

Features (what STEGO takes: mhamilton723/STEGO src/modules.py, DinoFeaturizer with dino_feat_type "feat",
n=1): the tokens of the LAST block after the final norm (get_intermediate_feat applies self.norm), the
[CLS] token dropped, reshaped to (B, C, H/p, W/p).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEVEL = "tokens"  # the one feature level of a ViT: last-block patch tokens after the final norm
LN_EPS = 1e-6  # DINO's vit_small / vit_base: partial(nn.LayerNorm, eps=1e-6)
HEAD_DIM = 64  # 384 / 6 and 768 / 12: DINO's ViT-S and ViT-B heads are 64 wide
PRETRAIN_SIZE = 224  # DINO trains at 224 px: its pos_embed holds (224 / p)^2 + 1 entries


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (DINO: attn.qkv, attn.proj)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"ViT width {dim} does not split into {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        # softmax(q k^T / sqrt(d)) v, DINO's scale head_dim ** -0.5 (SDPA's default)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, C / heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))  # (B, N, C)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as DINO's nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> dim channels (a conv of kernel = stride = p; DINO: patch_embed.proj)."""

    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, C, H // p, W // p): a remainder of the image beyond whole patches is cut


class ViT(nn.Module):
    """ViT backbone without a classifier. forward(x) -> {"tokens": (B, C, H/p, W/p)} (stride p)."""

    def __init__(self, *, patch_size: int, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 pos_grid: int = PRETRAIN_SIZE // 16):
        super().__init__()
        self.patch_size, self.dim, self.depth, self.num_heads = patch_size, dim, depth, num_heads
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid * pos_grid + 1, dim))  # [CLS] first, then rows
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.out_channels = {LEVEL: dim}
        self.strides = {LEVEL: patch_size}
        self._init_weights()

    def _init_weights(self) -> None:
        # DINO's initialisation: truncated normal (std 0.02) for the embeddings and linear weights, zero
        # biases, unit LayerNorms; the patch conv keeps PyTorch's default.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, rows: int, cols: int, square_input: bool = True) -> torch.Tensor:
        """(1, 1 + rows * cols, C) position embeddings for a rows x cols patch grid of an input image whose
        height equals its width (square_input) or not.

        As DINO's interpolate_pos_encoding: the stored square grid (sqrt(N) on a side) is resized bicubically
        (align_corners False) with scale factors ((rows + 0.1) / sqrt(N), (cols + 0.1) / sqrt(N)), the 0.1
        keeping the floored output size exact (facebookresearch/dino issue 8); the [CLS] entry is kept. The
        stored embeddings are used unchanged only when the grid is the stored one and the input is square
        (DINO's test `npatch == N and w == h`: a non-square input with the stored grid is resampled too).
        """
        n = self.pos_embed.shape[1] - 1
        side = math.isqrt(n)
        if rows * cols == n and square_input:
            return self.pos_embed
        grid = self.pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, C, side, side)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic",
                             align_corners=False)  # (1, C, rows, cols)
        if grid.shape[-2:] != (rows, cols):
            raise RuntimeError(f"position embedding resized to {tuple(grid.shape[-2:])}, wanted {(rows, cols)}")
        patch = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)  # (1, rows * cols, C), row-major
        return torch.cat([self.pos_embed[:, :1], patch], dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised images (H, W >= patch size) -> {"tokens": (B, C, H // p, W // p)}."""
        if x.shape[-1] < self.patch_size or x.shape[-2] < self.patch_size:
            raise ValueError(f"ViT input {tuple(x.shape[-2:])} is smaller than one {self.patch_size} px patch")
        grid = self.patch_embed(x)  # (B, C, h, w)
        b, c, h, w = grid.shape
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), grid.flatten(2).transpose(1, 2)], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(h, w, x.shape[-2] == x.shape[-1])  # (B, 1 + h w, C)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)  # STEGO's features are normed (get_intermediate_feat -> self.norm(x))
        return {LEVEL: tokens[:, 1:].transpose(1, 2).reshape(b, c, h, w)}  # [CLS] dropped


# arch -> (patch size, width, heads); DINO vision_transformer.py vit_small / vit_base, depth 12.
ARCHS: dict[str, tuple[int, int, int]] = {
    "vit_s16": (16, 384, 6),
    "vit_s8": (8, 384, 6),
    "vit_b16": (16, 768, 12),
    "vit_b8": (8, 768, 12),
}
DEPTH = 12


def build_vit(arch: str | None = None, *, patch_size: int | None = None, dim: int | None = None,
              depth: int = DEPTH, num_heads: int | None = None, mlp_ratio: float = 4.0,
              pos_grid: int | None = None) -> ViT:
    """A randomly initialised ViT: a named arch of ARCHS (DINO's shapes, positions for 224 px), or the shape
    given explicitly (heads default to width / 64; pos_grid to 224 / patch)."""
    if arch is not None:
        if arch not in ARCHS:
            raise ValueError(f"unknown ViT arch {arch!r}; choices: {sorted(ARCHS)}")
        patch_size, dim, num_heads = ARCHS[arch]
        depth = DEPTH
    if patch_size is None or dim is None:
        raise ValueError("build_vit needs an arch or patch_size and dim")
    num_heads = num_heads or max(1, dim // HEAD_DIM)
    return ViT(patch_size=patch_size, dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
               pos_grid=pos_grid or PRETRAIN_SIZE // patch_size)
