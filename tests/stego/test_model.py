"""STEGO head and probes: shapes, detached probes, cluster assignment, linear probe's ignore label."""

from __future__ import annotations

import pytest
import torch

from maskless.stego.model import ClusterProbe, LinearProbe, StegoHead


def test_head_shapes_dropout_and_gradient():
    torch.manual_seed(0)
    head = StegoHead(8, code_dim=5, dropout=0.1)
    x = torch.randn(2, 8, 3, 4)
    assert head(x).shape == (2, 5, 3, 4)
    head.eval()
    torch.testing.assert_close(head(x), head(x))  # no dropout in eval
    head(x).square().sum().backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in head.parameters())
    with pytest.raises(ValueError, match="dropout"):
        StegoHead(8, dropout=1.0)


def test_cluster_probe_trains_centroids_but_gives_no_gradient_to_the_head():
    torch.manual_seed(0)
    head, probe = StegoHead(6, code_dim=4), ClusterProbe(4, 3)
    loss = probe.loss(head(torch.randn(2, 6, 3, 3)))
    loss.backward()
    assert float(probe.centroids.grad.abs().sum()) > 0
    assert all(p.grad is None for p in head.parameters())


def test_cluster_probe_loss_and_assignment_by_hand():
    """Centroids (1,0) and (0,1) (scale does not matter); codes (2,0) -> cos 1 to centroid 0, (1,1) -> cos
    1/sqrt2 to both (tie: first, 0), (0,-3) -> cos 0 to centroid 0, -1 to centroid 1 (max 0, id 0),
    (0.1, 5) -> centroid 1 with cos 5 / sqrt(0.01 + 25). loss = -(1 + 0.7071 + 0 + 0.9998) / 4."""
    probe = ClusterProbe(2, 2)
    with torch.no_grad():
        probe.centroids.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))
    codes = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0], [0.1, 5.0]]).T.reshape(1, 2, 2, 2)
    assert probe.assign(codes).flatten().tolist() == [0, 0, 0, 1]
    c4 = 5.0 / (0.1**2 + 25) ** 0.5
    assert float(probe.loss(codes).detach()) == pytest.approx(-(1 + 2**-0.5 + 0 + c4) / 4, rel=1e-6)


def test_linear_probe_detached_ignores_255_and_handles_all_ignored():
    torch.manual_seed(0)
    head, probe = StegoHead(6, code_dim=4), LinearProbe(4, 3)
    codes = head(torch.randn(2, 6, 3, 3))
    labels = torch.full((2, 6, 6), 255)
    labels[0, :2, :2] = 1
    loss = probe.loss(codes, labels)
    loss.backward()
    assert torch.isfinite(loss) and float(probe.conv.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in head.parameters())
    empty = probe.loss(codes, torch.full((2, 6, 6), 255))
    assert float(empty.detach()) == 0.0
    empty.backward()  # still a graph
