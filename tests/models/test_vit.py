"""ViT in DINO's layout: key names and shapes, features (shape, stride, final norm, [CLS] dropped), attention
by hand, and the position-embedding interpolation for other (non-square) inputs."""

from __future__ import annotations

import math

import pytest
import torch

from maskless.models.vit import ARCHS, LEVEL, LN_EPS, Attention, ViT, build_vit

BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
              "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
              "mlp.fc2.bias")


def tiny(patch: int = 8, dim: int = 32, depth: int = 2, grid: int = 4) -> ViT:
    torch.manual_seed(0)
    return build_vit(patch_size=patch, dim=dim, depth=depth, num_heads=2, pos_grid=grid).eval()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_dino_key_layout_and_shapes(arch):
    """Keys and shapes of DINO's vit_small / vit_base (facebookresearch/dino vision_transformer.py), built on
    the meta device (no memory): depth 12, MLP ratio 4, qkv bias, 224 px positions, no head."""
    patch, dim, heads = ARCHS[arch]
    with torch.device("meta"):
        model = build_vit(arch)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {"cls_token": (1, 1, dim), "pos_embed": (1, (224 // patch) ** 2 + 1, dim),
                "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,),
                "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(12):
        for key in BLOCK_KEYS:
            rows = {"attn.qkv": 3 * dim, "mlp.fc1": 4 * dim}.get(key.rsplit(".", 1)[0], dim)
            cols = 4 * dim if key == "mlp.fc2.weight" else dim
            expected[f"blocks.{i}.{key}"] = (rows, cols) if key.endswith("weight") and "norm" not in key else (rows,)
    assert shapes == expected
    assert model.num_heads == heads and model.strides == {LEVEL: patch} and model.out_channels == {LEVEL: dim}
    assert all(m.eps == LN_EPS for m in model.modules() if isinstance(m, torch.nn.LayerNorm))


def test_features_shape_stride_norm_and_cls_dropped():
    """(B, C, H // p, W // p) at stride p, a remainder of the image beyond whole patches cut (DINO's conv);
    every token is the final LayerNorm's output (unit weight, zero bias: mean 0, variance 1 per token)."""
    model = tiny()
    feats = model(torch.randn(2, 3, 40, 61))
    assert set(feats) == {LEVEL} and feats[LEVEL].shape == (2, 32, 5, 7)
    f = feats[LEVEL]
    torch.testing.assert_close(f.mean(1), torch.zeros(2, 5, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(f.var(1, unbiased=False), torch.ones(2, 5, 7), atol=1e-3, rtol=0)
    # Composed from the modules: [CLS] first, patches row-major, stored positions (a 32 px square input is
    # the stored 4x4 grid), the blocks, the final norm; the map is tokens 1.. reshaped to the grid.
    x = torch.randn(1, 3, 32, 32)
    tokens = torch.cat([model.cls_token, model.patch_embed(x).flatten(2).transpose(1, 2)], 1) + model.pos_embed
    for block in model.blocks:
        tokens = block(tokens)
    expected = model.norm(tokens)[0, 1:].T.reshape(32, 4, 4)
    torch.testing.assert_close(model(x)[LEVEL][0], expected)
    with pytest.raises(ValueError, match="patch"):
        model(torch.randn(1, 3, 4, 64))


def test_attention_matches_the_formula_by_hand():
    """softmax(q k^T / sqrt(d_head)) v per head, heads concatenated, then proj (ViT paper Eq. 5-6)."""
    torch.manual_seed(1)
    attn = Attention(8, 2)
    x = torch.randn(1, 3, 8)
    q, k, v = attn.qkv(x).reshape(1, 3, 3, 2, 4).permute(2, 0, 3, 1, 4)  # each (1, heads, N, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)  # (1, heads, N, N)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(1, 3, 8))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_position_embedding_interpolation():
    """The stored 4x4 grid is kept for a square input of that grid and resampled otherwise (DINO's
    interpolate_pos_encoding: also for a non-square input whose grid count matches). Resampled to 6x3, a
    grid that varies along rows only (channel 0 = row index) still varies along rows only and increases
    down them; one that varies along columns only (channel 1) along columns only; a constant channel stays
    constant (bicubic weights sum to 1); the [CLS] entry is kept."""
    model = tiny(grid=4)
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    with torch.no_grad():
        model.pos_embed.zero_()
        model.pos_embed[0, 1:, 0] = rows.flatten()
        model.pos_embed[0, 1:, 1] = cols.flatten()
        model.pos_embed[0, 1:, 2] = 0.7
        model.pos_embed[0, 0] = 5.0
        assert model.interpolate_pos_encoding(4, 4) is model.pos_embed
        assert model.interpolate_pos_encoding(4, 4, square_input=False) is not model.pos_embed
        pe = model.interpolate_pos_encoding(6, 3)
    assert pe.shape == (1, 1 + 18, 32)
    torch.testing.assert_close(pe[0, 0], model.pos_embed[0, 0])
    grid = pe[0, 1:].reshape(6, 3, 32)  # row-major, as the patch tokens are laid out
    torch.testing.assert_close(grid[..., 0], grid[:, :1, 0].expand(6, 3))  # constant along columns
    assert (grid[1:, 0, 0] - grid[:-1, 0, 0] > 0).all()  # increasing down the rows
    torch.testing.assert_close(grid[..., 1], grid[:1, :, 1].expand(6, 3))  # constant along rows
    assert (grid[0, 1:, 1] - grid[0, :-1, 1] > 0).all()
    torch.testing.assert_close(grid[..., 2], torch.full((6, 3), 0.7))
    # the whole forward on a non-square input uses it: a 48 x 24 image is a 6 x 3 grid of 8 px patches
    assert model(torch.randn(1, 3, 48, 24))[LEVEL].shape == (1, 32, 6, 3)


def test_build_errors():
    with pytest.raises(ValueError, match="unknown ViT arch"):
        build_vit("vit_h14")
    with pytest.raises(ValueError, match="heads"):
        build_vit(patch_size=8, dim=30, depth=1, num_heads=4)
