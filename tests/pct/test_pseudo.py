"""Inference: plain prediction, class-restricted multi-scale + flip pseudo labels, label PNGs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from maskless.pct.model import SegNet, SegNetParams
from maskless.pct.pseudo import predict, pseudo_label, pseudo_labels, write_label_png


class LeftRight(nn.Module):
    """Logits per input pixel: class 0 -> 0, class 1 -> 2 on the left half of the input, 0 on the right,
    class 2 -> 1 everywhere. Ignores the colours; works at any size."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, embeddings=False):
        b, _, h, w = x.shape
        logits = torch.zeros(b, 3, h, w)
        logits[:, 1, :, : w // 2] = 2.0
        logits[:, 2] = 1.0
        return {"logits": logits}


def test_flip_averaging_and_class_restriction_by_hand():
    """Without flip: left half class 1 (logits 0, 2, 1), right half class 2 (0, 0, 1).
    With flip the two passes are averaged in probability: softmax(0, 2, 1) = (.090, .665, .245) and
    softmax(0, 0, 1) = (.212, .212, .576) -> mean (.151, .439, .410): class 1 on both halves.
    Restricted to {2}: class 1 is out, class 2 beats background everywhere; to {}: all background."""
    model, image = LeftRight(), np.zeros((4, 8, 3), np.uint8)
    plain = pseudo_label(model, image, [1, 2], scales=(1.0,), flip=False)
    assert plain.dtype == np.uint8 and plain.shape == (4, 8)
    assert (plain[:, :4] == 1).all() and (plain[:, 4:] == 2).all()
    assert (pseudo_label(model, image, [1, 2], scales=(1.0,), flip=True) == 1).all()
    assert (pseudo_label(model, image, [2], scales=(1.0, 2.0)) == 2).all()
    assert (pseudo_label(model, image, []) == 0).all()
    assert (predict(model, image)[:, :4] == 1).all()


def test_real_network_shapes_and_mode_restored():
    """A SegNet in train mode: outputs at the image's size, labels within background + the image's classes,
    train mode restored afterwards; several images at once."""
    torch.manual_seed(0)
    net = SegNet(SegNetParams(num_classes=4, aspp_channels=8, low_channels=8, decoder_channels=8, embed_dim=8))
    image = np.random.default_rng(0).integers(0, 255, (37, 45, 3), dtype=np.uint8)
    out = pseudo_label(net, image, [3], scales=(0.5, 1.0), input_size=32)
    assert out.shape == (37, 45) and set(np.unique(out)) <= {0, 3} and net.training
    assert predict(net, image).shape == (37, 45)
    many = pseudo_labels(net, [image, image], [[1], [2, 3]], scales=(1.0,), flip=False)
    assert set(np.unique(many[0])) <= {0, 1} and set(np.unique(many[1])) <= {0, 2, 3}


def test_bad_inputs():
    model = LeftRight()
    with pytest.raises(ValueError, match="uint8"):
        predict(model, np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        pseudo_label(model, np.zeros((0, 4, 3), np.uint8), [1])
    with pytest.raises(ValueError, match="scales"):
        pseudo_label(model, np.zeros((4, 4, 3), np.uint8), [1], scales=(0.0,))
    with pytest.raises(ValueError, match="outside"):
        pseudo_label(model, np.zeros((4, 4, 3), np.uint8), [5])
    with pytest.raises(ValueError, match="2 images but 1"):
        pseudo_labels(model, [np.zeros((4, 4, 3), np.uint8)] * 2, [[1]])


def test_write_label_png_roundtrip(tmp_path):
    label = np.array([[0, 1], [255, 7]], np.uint8)
    write_label_png(tmp_path / "a" / "x.png", label)
    assert np.array_equal(cv2.imread(str(tmp_path / "a" / "x.png"), cv2.IMREAD_UNCHANGED), label)
    with pytest.raises(ValueError, match="uint8"):
        write_label_png(tmp_path / "y.png", label.astype(np.int32))
