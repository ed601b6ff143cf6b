"""Fixtures of the Exemplar-FreeSOLO tests: a synthetic textured disc, a tiny SOLOv2 (and its checkpoint), a
manifest. Helpers reach the tests as fixtures (pytest runs with --import-mode=importlib: no conftest imports)."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch

from maskless.data.manifest import write_manifest
from maskless.solo.model import SOLOv2, SoloModelParams

TINY_MODEL = dict(fpn_channels=16, head_convs=1, head_channels=16, kernel_dim=16, mask_branch_channels=16,
                  emb_dim=8, gn_groups=8)


def disc_image(h=96, w=96, cy=48, cx=48, r=24, seed=0, noise=20.0, blur=1.0, extra=()):
    """uint8 (h, w, 3) RGB and its bool disc mask: a disc of red/yellow diagonal stripes (period 6 px) on a
    blue-grey background, Gaussian noise of std `noise` on both, then a Gaussian blur of sigma `blur` (the
    object's edge is spread over about +-1 px, as anti-aliased photographs are). extra: more (cy, cx, r) discs,
    painted alike; the returned mask is the first disc's."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (60, 110, 150)
    img += rng.normal(0, noise, img.shape)
    yy, xx = np.mgrid[:h, :w]
    stripes = ((xx + yy) // 3) % 2 == 0
    tex = np.where(stripes[..., None], np.array([200, 90, 60]), np.array([230, 190, 90]))
    masks = [(yy - y) ** 2 + (xx - x) ** 2 <= rr * rr for y, x, rr in [(cy, cx, r), *extra]]
    for disc in masks:
        img[disc] = tex[disc] + rng.normal(0, noise, (int(disc.sum()), 3))
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    return np.clip(img, 0, 255).astype(np.uint8), masks[0]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def tiny_solo(cate_bias: float | None = None) -> SOLOv2:
    torch.manual_seed(0)
    model = SOLOv2(SoloModelParams(**TINY_MODEL))
    if cate_bias is not None:
        torch.nn.init.constant_(model.head.cate_out.bias, cate_bias)
    return model.eval()


def save_solo(model: SOLOv2, path) -> str:
    torch.save({"model": model.state_dict(), "params": {"model": model.params.to_dict()}, "kind": "solov2"}, path)
    return str(path)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on one thread: on a shared 2-core machine torch's default 2 threads contend with other
    processes and one ResNet-18 forward on a 64x96 image took 1.2 s instead of 0.02 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_disc():
    return disc_image


@pytest.fixture
def mask_iou():
    return iou


@pytest.fixture
def make_solo():
    return tiny_solo


@pytest.fixture
def solo_ckpt(tmp_path):
    """factory(cate_bias=None) -> path of a tiny SOLOv2 checkpoint in train_solo's format."""
    return lambda cate_bias=None, name="solo.pt": save_solo(tiny_solo(cate_bias), tmp_path / name)


@pytest.fixture
def disc_manifest(tmp_path) -> dict:
    """Five PNGs, ids 1..5: four textured discs at different places and radii (80x96 and 96x80) and, as id 5,
    a uniform grey image (GrabCut must report it, not crash)."""
    records, discs = [], {}
    specs = [(80, 96, 40, 48, 22), (96, 80, 50, 36, 18), (80, 96, 30, 60, 16), (96, 80, 44, 40, 24)]
    for i, (h, w, cy, cx, r) in enumerate(specs, start=1):
        img, discs[i] = disc_image(h, w, cy, cx, r, seed=i)
        records.append(_write(tmp_path, i, img))
    records.append(_write(tmp_path, 5, np.full((80, 96, 3), 128, np.uint8)))
    write_manifest(tmp_path / "manifest.parquet", records)
    return {"manifest": str(tmp_path / "manifest.parquet"), "records": records, "discs": discs}


def _write(tmp_path, i: int, img: np.ndarray) -> dict:
    path = tmp_path / "images" / f"{i}.png"
    path.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(path), img[..., ::-1])
    return dict(id=i, file_name=path.name, path=str(path), width=img.shape[1], height=img.shape[0], split="train",
                hash=hashlib.sha256(path.read_bytes()).hexdigest())
