"""Dense CRF post-processing by mean-field inference, our own torch implementation (no CRF library installs
cleanly from the package index: pydensecrf needs a compiler and Cython at install time).

Model (Krahenbuhl & Koltun 2011, "Efficient Inference in Fully Connected CRFs", Eqs. 1-3):
    E(x) = sum_i U_i(x_i) + sum_{i != j} mu(x_i, x_j) k(f_i, f_j),   U_i = -log P_i (the network's probs)
    k = w1 exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2)    appearance (bilateral)
      + w2 exp(-|p_i - p_j|^2 / 2 theta_gamma^2)                                      smoothness (spatial)
    mu = Potts ([x_i != x_j]).
Mean-field update (their Algorithm 1) with Potts: Q_i(l) ~ exp(-U_i(l) + w1 m1_i(l) + w2 m2_i(l)), where
m_i(l) = sum_{j != i} k(i, j) Q_j(l) / n_i is the kernel-weighted vote of the other pixels for label l.

Differences from the fully connected CRF, both deliberate:
- Normalisation: each message is divided by n_i = 1 + sum_{j != i} k(i, j) (the kernel mass including the
  pixel itself), so messages lie in [0, 1) and w1, w2 do not scale with image size. This mirrors the
  symmetric kernel normalisation of Krahenbuhl's released code, used by STEGO's defaults below.
- The bilateral message is summed over a local window: offsets up to `radius` pixels on a grid of `stride`
  pixels (not all pixels of the image): O(N (2 radius / stride + 1)^2) instead of the permutohedral-lattice
  approximation of the fully connected sum. With theta_alpha = 67 the positional factor is nearly flat
  inside the window, so it approximates the fully connected kernel restricted to the window; long-range
  agreement (two same-coloured regions far apart) is not propagated.
The spatial message is an exact separable Gaussian blur (its kernel is negligible beyond 3 theta_gamma).

Defaults: the STEGO-era settings (Hamilton et al. 2022, evaluation code): 10 iterations, w1 = 4,
theta_alpha = 67, theta_beta = 3, w2 = 3, theta_gamma = 1; colours in [0, 255].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class CrfParams:
    iterations: int = 10
    w1: float = 4.0  # appearance (bilateral) kernel weight
    w2: float = 3.0  # smoothness (spatial) kernel weight
    theta_alpha: float = 67.0  # bilateral position std, pixels
    theta_beta: float = 3.0  # bilateral colour std, RGB in [0, 255]
    theta_gamma: float = 1.0  # spatial std, pixels
    radius: int = 15  # bilateral window radius, pixels
    stride: int = 3  # bilateral window sampling step, pixels

    def __post_init__(self) -> None:
        for key in ("iterations", "radius", "stride"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "iterations" else 1):
                raise ValueError(f"CrfParams.{key} must be a {'non-negative' if key == 'iterations' else 'positive'}"
                                 f" integer, got {value!r}")
        for key in ("w1", "w2"):
            if not math.isfinite(getattr(self, key)) or getattr(self, key) < 0:
                raise ValueError(f"CrfParams.{key} must be a finite number >= 0, got {getattr(self, key)!r}")
        for key in ("theta_alpha", "theta_beta", "theta_gamma"):
            if not math.isfinite(getattr(self, key)) or getattr(self, key) <= 0:
                raise ValueError(f"CrfParams.{key} must be a finite number > 0, got {getattr(self, key)!r}")


def _image_tensor(image, hw: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float32 colours in [0, 255] from (3, H, W) / (H, W, 3) uint8 or float [0, 255] input."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if image.ndim == 3 and image.shape[0] != 3 and image.shape[-1] == 3:
        image = image.permute(2, 0, 1)  # (3, H, W)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W) or (H, W, 3) RGB, got shape {tuple(image.shape)}")
    if tuple(image.shape[1:]) != tuple(hw):
        raise ValueError(f"image is {tuple(image.shape[1:])} but probs are {tuple(hw)}; they must match")
    image = image.float()
    if not torch.isfinite(image).all():
        raise ValueError("image holds NaN or inf values")
    return image


def _shifted(x: torch.Tensor, pad: int, dy: int, dx: int, hw: tuple[int, int]) -> torch.Tensor:
    """x_pad (C, H + 2 pad, W + 2 pad) -> (C, H, W) with out[:, i, j] = x[:, i + dy, j + dx] (0 outside)."""
    h, w = hw
    return x[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def bilateral_weights(image: torch.Tensor, *, theta_alpha: float, theta_beta: float, radius: int, stride: int):
    """Offsets [(dy, dx)] of the window (without (0, 0)), their kernel values (O, H, W) (0 where the partner
    lies outside the image) and the normaliser n (H, W) = 1 + sum over offsets."""
    h, w = image.shape[1:]
    steps = range(-(radius // stride) * stride, radius + 1, stride)
    offsets = [(dy, dx) for dy in steps for dx in steps if (dy, dx) != (0, 0)]
    img = F.pad(image, (radius,) * 4)  # (3, H + 2r, W + 2r)
    inside = F.pad(torch.ones(1, h, w, dtype=image.dtype, device=image.device), (radius,) * 4)
    weights = torch.empty(len(offsets), h, w, dtype=image.dtype, device=image.device)
    for o, (dy, dx) in enumerate(offsets):
        colour = ((image - _shifted(img, radius, dy, dx, (h, w))) ** 2).sum(0)  # (H, W)
        pos = (dy * dy + dx * dx) / (2 * theta_alpha**2)
        weights[o] = torch.exp(-pos - colour / (2 * theta_beta**2)) * _shifted(inside, radius, dy, dx, (h, w))[0]
    return offsets, weights, 1.0 + weights.sum(0)


def bilateral_message(q: torch.Tensor, offsets, weights: torch.Tensor, norm: torch.Tensor, radius: int):
    """sum_{j != i} k1(i, j) Q_j / n_i over the window: q (K, H, W) -> (K, H, W)."""
    hw = q.shape[1:]
    qp = F.pad(q, (radius,) * 4)  # (K, H + 2r, W + 2r)
    out = torch.zeros_like(q)
    for o, (dy, dx) in enumerate(offsets):
        out += weights[o] * _shifted(qp, radius, dy, dx, hw)
    return out / norm


def spatial_message(q: torch.Tensor, theta_gamma: float) -> torch.Tensor:
    """sum_{j != i} k2(i, j) Q_j / n_i with the Gaussian k2 (separable blur): q (K, H, W) -> (K, H, W)."""
    r = max(1, math.ceil(3 * theta_gamma))
    d = torch.arange(-r, r + 1, dtype=q.dtype, device=q.device)
    g = torch.exp(-(d**2) / (2 * theta_gamma**2))  # (2r + 1,), g(0) = 1

    def blur(x: torch.Tensor) -> torch.Tensor:  # (K, H, W), zero outside the image
        k = x.shape[0]
        x = F.conv2d(x[None], g.view(1, 1, -1, 1).expand(k, 1, -1, 1), padding=(r, 0), groups=k)
        return F.conv2d(x, g.view(1, 1, 1, -1).expand(k, 1, 1, -1), padding=(0, r), groups=k)[0]

    norm = blur(torch.ones_like(q[:1]))  # (1, H, W): kernel mass including the pixel itself (g(0)^2 = 1)
    return (blur(q) - q) / norm


@dataclass
class CrfImage:
    """An image's bilateral kernel for given CrfParams (bilateral_weights' offsets, weights, norm): made once
    by prepare_image when several probability maps of one image go through dense_crf (STEGO's cluster and
    linear probes), which then skips its most expensive set-up (about a quarter of a call at 160 px)."""

    hw: tuple[int, int]
    params: CrfParams
    offsets: list
    weights: torch.Tensor
    norm: torch.Tensor


def prepare_image(image, params: CrfParams, hw: tuple[int, int], device=None) -> CrfImage:
    """The bilateral kernel of an image (3, H, W) or (H, W, 3), colours in [0, 255], of size hw."""
    image = _image_tensor(image, hw).to(device) if device is not None else _image_tensor(image, hw)
    offsets, weights, norm = bilateral_weights(image, theta_alpha=params.theta_alpha,
                                               theta_beta=params.theta_beta, radius=params.radius,
                                               stride=params.stride)
    return CrfImage(tuple(hw), params, offsets, weights, norm)


def dense_crf(image, probs: torch.Tensor, params: CrfParams | None = None) -> torch.Tensor:
    """Mean-field refined probabilities (K, H, W) for probs (K, H, W) (a distribution over K per pixel)
    and the image (3, H, W) or (H, W, 3), colours in [0, 255], or its CrfImage (made with the same params)."""
    params = params or CrfParams()
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must be (K, H, W), got shape {tuple(probs.shape)}")
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probs must be finite and non-negative")
    probs = probs.float()
    if isinstance(image, CrfImage):
        if image.hw != tuple(probs.shape[1:]) or image.params != params:
            raise ValueError(f"the CrfImage was made for {image.hw} and {image.params}, not for probs "
                             f"{tuple(probs.shape[1:])} and {params}")
        prepared = image
    else:
        prepared = prepare_image(image, params, tuple(probs.shape[1:]), probs.device)
    offsets, weights, norm = prepared.offsets, prepared.weights, prepared.norm
    probs = probs / probs.sum(0, keepdim=True).clamp(min=1e-12)
    log_p = probs.clamp(min=1e-8).log()  # -U, (K, H, W)
    q = probs
    for _ in range(params.iterations):
        m = params.w1 * bilateral_message(q, offsets, weights, norm, params.radius)
        m = m + params.w2 * spatial_message(q, params.theta_gamma)
        q = torch.softmax(log_p + m, dim=0)  # (K, H, W)
    return q


def crf_labels(image, probs: torch.Tensor, params: CrfParams | None = None) -> torch.Tensor:
    """(H, W) int64 argmax of dense_crf."""
    return dense_crf(image, probs, params).argmax(0)
