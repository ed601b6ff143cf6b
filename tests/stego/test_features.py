"""Frozen-backbone features: levels and strides, uint8/float equivalence, eval mode, square crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskless.models.resnet import build_resnet
from maskless.stego.features import extract_all, extract_features, square_image


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_resnet("resnet18")


def test_levels_uint8_float_and_mode(backbone):
    images = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    backbone.train()
    f = extract_features(backbone, images)
    assert f.shape == (2, 128, 4, 6) and f.dtype == torch.float32 and not f.requires_grad
    assert backbone.training  # mode restored
    torch.testing.assert_close(extract_features(backbone, images.float() / 255), f)
    assert extract_features(backbone, images, layer="res4").shape == (2, 256, 2, 3)
    # eval mode: an image's features do not depend on its batch
    torch.testing.assert_close(extract_features(backbone, images[:1]), f[:1], rtol=1e-4, atol=1e-4)


def test_extract_all_batches_and_errors(backbone):
    imgs = [np.full((32, 32, 3), i * 40, np.uint8) for i in range(5)]
    f = extract_all(backbone, imgs, batch_size=2)
    assert f.shape == (5, 128, 4, 4)
    torch.testing.assert_close(f[4:], extract_features(backbone, np.stack(imgs[4:])))
    with pytest.raises(ValueError, match="differ in size"):
        extract_all(backbone, [imgs[0], np.zeros((16, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match="layer"):
        extract_features(backbone, np.stack(imgs), layer="res9")
    with pytest.raises(ValueError, match="NaN"):
        extract_features(backbone, torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        extract_features(backbone, torch.zeros(1, 4, 8, 8))


def test_square_image_centre_crop():
    """60 x 30 (h x w): short side 30 -> 10 (scale 1/3), 20 x 10, rows 5..14 kept."""
    img = np.zeros((60, 30, 3), np.uint8)
    img[:15] = 255  # the top quarter is cut away by the crop
    out = square_image(img, 10)
    assert out.shape == (10, 10, 3) and out.max() == 0
