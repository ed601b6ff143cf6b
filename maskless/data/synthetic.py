"""The embedded default dataset: textured objects on a textured background, with full ground truth.

Every category differs from the background and from the other categories in colour AND texture, so a
method has to use both: colours are jittered per image and the background hue is drawn freely per image
(it can land on a category's hue), while the background texture is smooth and the categories' textures
are high-frequency (stripes, checker, dots, noise blobs at their own angle and period). Each category also
has its own shape family (ellipse, polygon, rounded rectangle, blob) with random size, aspect and rotation.
What makes instance segmentation non-trivial: same-category objects placed touching each other, later
objects hiding up to `occlusion` of earlier ones, small objects, colour jitter, mild blur and noise.

Ground truth is exact: objects are painted in order, each visible mask is the object minus everything
painted after it. An object whose visible area would fall below MIN_VISIBLE_AREA pixels is removed before
painting (counted as `dropped_small`), so the semantic map, the instance masks and the tags agree: every
painted pixel belongs to exactly one annotated instance. Deterministic by seed: image i depends only on
(seed, i), the category styles only on the seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from maskless.io import setup_logging, write_bytes_atomic, write_json_atomic, write_text_atomic

log = logging.getLogger("maskless.synthetic")

TEXTURES = ("stripes", "checker", "dots", "blobs")
SHAPES = ("ellipse", "polygon", "roundrect", "blob")
SMALL_SCALE = (0.05, 0.10)  # size of a "small" object as a fraction of the image side
MIN_VISIBLE_AREA = 16  # pixels; smaller visible remnants are removed before painting
MIN_OBJECT_SIZE = 8.0  # pixels; on small images a "small" object would otherwise fall below MIN_VISIBLE_AREA
PLACEMENT_TRIES = 20  # random placements tried per object before it is given up (counted)
MIN_INSIDE_FRACTION = 0.5  # at least this much of an object's shape must lie inside the image


@dataclass
class SyntheticParams:
    num_images: int = 64
    height: int = 160
    width: int = 160
    num_categories: int = 4
    objects_per_image: tuple[int, int] = (2, 5)  # (min, max), inclusive
    scale_range: tuple[float, float] = (0.15, 0.45)  # object size as a fraction of the shorter side
    small_object_prob: float = 0.15
    occlusion: float = 0.3  # largest fraction of an object that later objects may hide
    touching_prob: float = 0.25
    texture_strength: float = 1.0  # 0 = flat colours, 1 = full texture contrast, > 1 = harder edges
    seed: int = 0

    def __post_init__(self):
        for name, lo, hi in [("num_images", 1, None), ("height", 16, None), ("width", 16, None),
                             ("num_categories", 1, 255), ("seed", 0, None)]:
            _check_int(name, getattr(self, name), lo, hi)
        self.objects_per_image = _check_pair("objects_per_image", self.objects_per_image, int)
        self.scale_range = _check_pair("scale_range", self.scale_range, float)
        omin, omax = self.objects_per_image
        if not 0 <= omin <= omax <= 100:
            raise ValueError(f"synthetic.objects_per_image must be [min, max] with 0 <= min <= max <= 100, "
                             f"got {list(self.objects_per_image)}")
        smin, smax = self.scale_range
        if not 0 < smin <= smax <= 1:
            raise ValueError(f"synthetic.scale_range must be [min, max] with 0 < min <= max <= 1, "
                             f"got {list(self.scale_range)}")
        for name in ("small_object_prob", "occlusion", "touching_prob"):
            value = _check_float(name, getattr(self, name))
            if not 0 <= value <= 1:
                raise ValueError(f"synthetic.{name} must be in [0, 1], got {value}")
        if not 0 <= _check_float("texture_strength", self.texture_strength) <= 100:
            raise ValueError(f"synthetic.texture_strength must be in [0, 100], got {self.texture_strength}")


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"synthetic.{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"synthetic.{name} must be in [{lo}, {hi if hi is not None else 'inf'}], got {value}")


def _check_float(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
        raise ValueError(f"synthetic.{name} must be a finite number, got {value!r}")
    return float(value)


def _check_pair(name, value, kind) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"synthetic.{name} must be a pair [min, max], got {value!r}")
    if kind is int:
        for v in value:
            _check_int(name, v, 0, None)
        return (int(value[0]), int(value[1]))
    return (_check_float(name, value[0]), _check_float(name, value[1]))


# --- category styles ---------------------------------------------------------------------------------


def category_styles(params: SyntheticParams) -> list[dict]:
    """One style per category: evenly spaced hue, texture family, shape family, texture angle and period."""
    rng = np.random.default_rng([params.seed, 0])
    offset = rng.uniform(0, 360)
    styles = []
    for k in range(1, params.num_categories + 1):
        texture = TEXTURES[(k - 1) % len(TEXTURES)]
        # Past four categories the shape family shifts, so texture and shape pair up differently.
        shape = SHAPES[(k - 1 + (k - 1) // len(TEXTURES)) % len(SHAPES)]
        styles.append({
            "id": k, "name": f"cat{k}_{texture}", "texture": texture, "shape": shape,
            "hue": (offset + 360.0 * (k - 1) / params.num_categories) % 360,
            "angle": float(rng.uniform(0, np.pi)), "period": float(rng.uniform(5.0, 9.0)),
        })
    return styles


# --- textures: maps in [0, 1] on the image grid --------------------------------------------------------


def texture_map(style: dict, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the category's texture at a random phase."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W) each
    angle = style["angle"] + rng.uniform(-0.15, 0.15)
    p = style["period"]
    u = xs * math.cos(angle) + ys * math.sin(angle) + rng.uniform(0, p)  # (H, W)
    v = -xs * math.sin(angle) + ys * math.cos(angle) + rng.uniform(0, p)
    if style["texture"] == "stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * u / p)
    if style["texture"] == "checker":
        return (np.sin(np.pi * u / p) * np.sin(np.pi * v / p) > 0).astype(np.float32)
    if style["texture"] == "dots":
        du, dv = (u / p) % 1.0 - 0.5, (v / p) % 1.0 - 0.5
        return np.clip((0.35 - np.sqrt(du**2 + dv**2)) / 0.1, 0, 1)
    return (_smooth_noise(shape, p / 2, rng) > 0).astype(np.float32)  # blobs


def _smooth_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W) zero-mean unit-std noise varying over about `cell` pixels (bicubic upsampled grid)."""
    h, w = shape
    grid = rng.standard_normal((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2))).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return (out - out.mean()) / (out.std() + 1e-6)


def _hsv_to_rgb(h, s, v) -> np.ndarray:
    """Hue in degrees, s and v in [0, 1] (scalars or (H, W) arrays) -> (H, W, 3) or (1, 1, 3) float RGB."""
    h, s, v = np.broadcast_arrays(np.asarray(h, np.float32) % 360, np.asarray(s, np.float32),
                                  np.asarray(v, np.float32))
    hsv = np.stack([h, s, v], axis=-1).astype(np.float32)  # (H, W, 3) or (3,)
    return cv2.cvtColor(hsv.reshape(hsv.shape if hsv.ndim == 3 else (1, 1, 3)), cv2.COLOR_HSV2RGB)


def background(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1]: smooth low-frequency noise in hue and value around a random hue."""
    cell = min(shape) / 3
    hue = rng.uniform(0, 360) + 25 * _smooth_noise(shape, cell, rng)
    sat = rng.uniform(0.1, 0.5) + 0.05 * _smooth_noise(shape, cell, rng)
    val = rng.uniform(0.45, 0.8) + 0.12 * strength * _smooth_noise(shape, cell, rng)
    return _hsv_to_rgb(hue, np.clip(sat, 0, 1), np.clip(val, 0, 1))


def object_colours(style: dict, shape: tuple[int, int], strength: float, rng) -> np.ndarray:
    """(H, W, 3) float RGB: two tones of the category hue (jittered per object) mixed by its texture."""
    hue = style["hue"] + rng.uniform(-12, 12)
    sat, val = rng.uniform(0.45, 0.9), rng.uniform(0.6, 0.95)
    light = _hsv_to_rgb(hue, sat, val)  # (1, 1, 3)
    dark = _hsv_to_rgb(hue + 30, 0.7 * sat, 0.5 * val)
    mix = np.clip(0.5 + strength * (texture_map(style, shape, rng) - 0.5), 0, 1)[..., None]  # (H, W, 1)
    return light * (1 - mix) + dark * mix


# --- shapes: boolean patches centred on their own canvas -----------------------------------------------


def shape_patch(kind: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """(D, D) bool mask of one shape whose longest extent is about `size` pixels, randomly rotated."""
    d = int(math.ceil(1.2 * size)) + 3
    c = (d - 1) / 2
    ys, xs = np.mgrid[0:d, 0:d].astype(np.float32) - c  # (D, D) each
    theta, aspect, r = rng.uniform(0, np.pi), rng.uniform(0.5, 1.0), size / 2
    xr = xs * math.cos(theta) + ys * math.sin(theta)
    yr = -xs * math.sin(theta) + ys * math.cos(theta)
    if kind == "ellipse":
        return (xr / r) ** 2 + (yr / (aspect * r)) ** 2 <= 1
    if kind == "roundrect":  # signed distance of a rounded box <= 0
        hx, hy = 0.75 * r, 0.75 * r * aspect
        rad = 0.35 * hy
        qx, qy = np.abs(xr) - (hx - rad), np.abs(yr) - (hy - rad)
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0) - rad <= 0
    if kind == "polygon":
        n = int(rng.integers(4, 8))  # vertices near evenly spaced angles: no slivers
        phi = 2 * np.pi * (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n + rng.uniform(0, 2 * np.pi)
        rho = r * rng.uniform(0.7, 1.0, n)
    else:  # blob: a wobbly closed curve r(phi) = r (1 + sum_k a_k cos(k phi + phase_k))
        phi = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        ks = np.arange(2, 5)[:, None]
        rho = r * (0.8 + (rng.uniform(0, 0.12, (3, 1)) * np.cos(ks * phi + rng.uniform(0, 6.3, (3, 1)))).sum(0))
    px, py = rho * np.cos(phi), aspect * rho * np.sin(phi)
    pts = np.stack([px * math.cos(theta) - py * math.sin(theta) + c,
                    px * math.sin(theta) + py * math.cos(theta) + c], axis=1)  # (n, 2) x, y
    canvas = np.zeros((d, d), np.uint8)
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def paste(patch: np.ndarray, top: int, left: int, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: `patch` placed with its top-left corner at (top, left), cropped to the image."""
    h, w = shape
    out = np.zeros(shape, bool)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + patch.shape[0], h), min(left + patch.shape[1], w)
    if y0 < y1 and x0 < x1:
        out[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


# --- placement ---------------------------------------------------------------------------------------


def _touching_corner(patch, target: dict, shape, rng) -> tuple[int, int]:
    """Top-left corner that puts `patch` against `target`: start clear of it, slide in until it touches."""
    phi = rng.uniform(0, 2 * np.pi)
    ty, tx = target["centre"]
    half = patch.shape[0] / 2
    start = target["patch_size"] / 2 + half + 2  # bounding circles are disjoint from here on
    last = None
    for dist in np.arange(start, 0, -1.0):
        top = int(round(ty + dist * math.sin(phi) - half))
        left = int(round(tx + dist * math.cos(phi) - half))
        if (paste(patch, top, left, shape) & target["full"]).any():
            break
        last = (top, left)
    return last if last is not None else (top, left)


def _occlusion_ok(objects: list[dict], full: np.ndarray, limit: float) -> bool:
    """Would painting `full` on top hide more than `limit` of any object already placed?"""
    for obj in objects:
        hidden = 1.0 - (obj["visible"] & ~full).sum() / obj["full"].sum()
        if hidden > limit + 1e-9:
            return False
    return True


def place_objects(params: SyntheticParams, styles: list[dict], rng) -> tuple[list[dict], int]:
    """Objects (category, full mask in the image) in painting order, and how many could not be placed."""
    shape = (params.height, params.width)
    side = min(shape)
    objects: list[dict] = []
    unplaced = 0
    for _ in range(int(rng.integers(params.objects_per_image[0], params.objects_per_image[1] + 1))):
        style = styles[int(rng.integers(0, len(styles)))]
        same = [o for o in objects if o["category_id"] == style["id"]]
        touch = bool(same) and rng.random() < params.touching_prob
        small = rng.random() < params.small_object_prob
        for _try in range(PLACEMENT_TRIES):
            size = max(MIN_OBJECT_SIZE, side * rng.uniform(*(SMALL_SCALE if small else params.scale_range)))
            patch = shape_patch(style["shape"], size, rng)
            if touch:
                top, left = _touching_corner(patch, same[int(rng.integers(0, len(same)))], shape, rng)
            else:
                top = int(rng.integers(0, shape[0])) - patch.shape[0] // 2
                left = int(rng.integers(0, shape[1])) - patch.shape[1] // 2
            full = paste(patch, top, left, shape)
            if full.sum() < max(MIN_VISIBLE_AREA, MIN_INSIDE_FRACTION * patch.sum()):
                continue
            if not _occlusion_ok(objects, full, params.occlusion):
                continue
            for obj in objects:
                obj["visible"] &= ~full
            d = patch.shape[0]
            objects.append({"category_id": style["id"], "style": style, "full": full, "visible": full.copy(),
                            "centre": (top + d / 2, left + d / 2), "patch_size": d})
            break
        else:
            unplaced += 1
    return objects, unplaced


def visible_masks(objects: list[dict]) -> list[np.ndarray]:
    """Each object's full mask minus the union of the objects painted after it."""
    covered = np.zeros_like(objects[0]["full"]) if objects else None
    out = []
    for obj in reversed(objects):
        out.append(obj["full"] & ~covered)
        covered |= obj["full"]
    return out[::-1]


# --- one image and its annotations ---------------------------------------------------------------------


def render_image(image_id: int, params: SyntheticParams, styles: list[dict]) -> dict:
    """dict(image (H, W, 3) uint8 RGB, semantic (H, W) uint8, objects [(category_id, visible mask)], counts)."""
    rng = np.random.default_rng([params.seed, image_id])
    shape = (params.height, params.width)
    img = background(shape, params.texture_strength, rng)  # (H, W, 3)
    objects, unplaced = place_objects(params, styles, rng)
    # Removing an object only uncovers others, so one pass of dropping and recomputing is exact.
    kept = [o for o, vis in zip(objects, visible_masks(objects)) if vis.sum() >= MIN_VISIBLE_AREA]
    semantic = np.zeros(shape, np.uint8)
    for obj in kept:
        colours = object_colours(obj["style"], shape, params.texture_strength, rng)  # (H, W, 3)
        img[obj["full"]] = colours[obj["full"]]
        semantic[obj["full"]] = obj["category_id"]
    img = cv2.GaussianBlur(img, (3, 3), 0.6) + rng.normal(0, 0.012, img.shape).astype(np.float32)
    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return {"image": image, "semantic": semantic, "unplaced": unplaced,
            "dropped_small": len(objects) - len(kept),
            "objects": [(o["category_id"], vis) for o, vis in zip(kept, visible_masks(kept))]}


def annotation(ann_id: int, image_id: int, category_id: int, mask: np.ndarray) -> dict:
    """COCO annotation of one visible mask: compressed RLE (counts as str), area, bbox xywh."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": int(mask.sum()), "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
            "iscrowd": 0}


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError("cv2.imencode failed to write a PNG")
    return buf.tobytes()


def generate(out_dir: str, params: SyntheticParams) -> dict:
    """Write images/, semantic/, instances.json, tags.csv and params.json under out_dir; return counts."""
    out = Path(out_dir)
    styles = category_styles(params)
    images, annotations, tag_rows = [], [], ["image_id,file_name,category_ids"]
    unplaced = dropped = 0
    for image_id in range(1, params.num_images + 1):
        name = f"{image_id:06d}.png"
        result = render_image(image_id, params, styles)
        write_bytes_atomic(out / "images" / name, _png(result["image"][:, :, ::-1]))  # RGB -> BGR
        write_bytes_atomic(out / "semantic" / name, _png(result["semantic"]))
        images.append({"id": image_id, "file_name": name, "width": params.width, "height": params.height})
        for category_id, mask in result["objects"]:
            annotations.append(annotation(len(annotations) + 1, image_id, category_id, mask))
        cats = sorted({c for c, _ in result["objects"]})
        tag_rows.append(f"{image_id},{name},{' '.join(str(c) for c in cats)}")
        unplaced += result["unplaced"]
        dropped += result["dropped_small"]
    categories = [{"id": s["id"], "name": s["name"], "supercategory": "synthetic"} for s in styles]
    write_json_atomic(out / "instances.json", {
        "info": {"description": "maskless synthetic dataset", "seed": params.seed},
        "images": images, "annotations": annotations, "categories": categories})
    write_text_atomic(out / "tags.csv", "\n".join(tag_rows) + "\n")
    write_json_atomic(out / "params.json", dataclasses.asdict(params), indent=2)
    summary = {"images": len(images), "annotations": len(annotations), "categories": len(categories),
               "unplaced": unplaced, "dropped_small": dropped}
    log.info("synthetic dataset in %s: %s", out, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    defaults = SyntheticParams()
    ap = argparse.ArgumentParser(prog="python -m maskless.data.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    for field in dataclasses.fields(SyntheticParams):
        value = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, tuple):
            ap.add_argument(flag, nargs=2, type=type(value[0]), default=value, metavar=("MIN", "MAX"))
        else:
            ap.add_argument(flag, type=type(value), default=value)
    args = vars(ap.parse_args(argv))
    out_dir = args.pop("out_dir")
    setup_logging()
    try:
        params = SyntheticParams(**args)
    except ValueError as e:
        ap.error(str(e))
    generate(out_dir, params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
