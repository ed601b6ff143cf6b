"""Ground-truth semantic label maps for evaluation (and the STEGO linear probe).

Three sources, one output: int64 (H, W) maps with 0 = background, 1..C the classes, 255 = ignore.
- The synthetic generator's semantic PNGs (semantic/<file_name>: 0 = background, pixel = category id),
  mapped through the dataset's categories to contiguous ids (the generator's ids are already 1..C).
- A COCO instances JSON (thing classes only): category ids sorted and mapped to 1..C, background 0 where
  no instance lies, crowd regions 255. Overlapping instances: painted largest area first, so the smaller
  (usually the occluding, fully annotated) instance wins; ties keep annotation order (later wins). Crowd
  regions are painted last: a pixel inside a crowd region is ignored even if an instance covers it.
- A folder of user PNG masks (VOC-style: <image stem>.png holding class ids, 255 = ignore). Grey-level PNGs
  hold the ids as pixel values; palette PNGs (PASCAL VOC's SegmentationClass) hold them as palette indices,
  which are read as such (the colours are never looked at). Another ignore value (`ignore_index`) is mapped
  to 255.
A class id outside [0, num_classes) other than the ignore value is a ValueError naming the file. Resizing is
nearest neighbour (labels are never interpolated).

Image lists (read_image_list): one image per line, as a stem ("2007_000032"), a file name, or the
DeepLab form "<image path> <label path>" (the first field's stem is the image); blank lines and lines
starting with # are skipped.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

IGNORE = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def category_index(categories: list[dict]) -> dict[int, int]:
    """COCO category id -> contiguous class id 1..C (sorted by category id; 0 is background)."""
    ids = sorted(int(c["id"]) for c in categories)
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate category ids in {ids}")
    return {cid: i + 1 for i, cid in enumerate(ids)}


def _load_json(instances: str | os.PathLike | dict) -> dict:
    if isinstance(instances, dict):
        return instances
    with open(instances) as f:
        return json.load(f)


def num_classes(instances: str | os.PathLike | dict) -> int:
    """Classes of an instances JSON (path or loaded dict): its categories plus background."""
    cats = _load_json(instances).get("categories")
    if not cats:
        raise ValueError(f"instances {instances if not isinstance(instances, dict) else '<dict>'} has no "
                         "categories")
    return len(cats) + 1


def resize_labels(label: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) map to size = (height, width); None keeps it."""
    if size is None or tuple(label.shape) == tuple(size):
        return label
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    return cv2.resize(label.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)


def square_crop_geometry(height: int, width: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized h, w), (top, left)): resize the short side to `size`, then centre-crop size x size.

    The same geometry for images (maskless.stego.features.square_image) and labels (square_labels).
    """
    scale = size / min(height, width)
    h, w = max(size, round(height * scale)), max(size, round(width * scale))
    return (h, w), ((h - size) // 2, (w - size) // 2)


def square_labels(label: np.ndarray, size: int) -> np.ndarray:
    """(size, size) int64: nearest-neighbour resize of the short side to `size`, centre crop."""
    (h, w), (top, left) = square_crop_geometry(*label.shape, size)
    return resize_labels(label, (h, w))[top : top + size, left : left + size].astype(np.int64)


def check_range(label: np.ndarray, n_classes: int, source: str) -> np.ndarray:
    """`label` unchanged if every value is in [0, n_classes) or IGNORE; else ValueError naming `source`."""
    bad = (label != IGNORE) & ((label < 0) | (label >= n_classes))
    if bad.any():
        values = sorted(int(v) for v in np.unique(label[bad]))[:10]
        raise ValueError(f"{source}: class ids {values} outside [0, {n_classes}) (255 = ignore)")
    return label


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + (zlib.crc32(kind + body) & 0xFFFFFFFF).to_bytes(4, "big")


def _palette_as_indices(data: bytes) -> bytes | None:
    """The bytes of a palette PNG with its palette replaced by grey levels 0, 1, 2, ... (and any tRNS
    transparency dropped), so that decoding it gives each pixel's palette index in every channel; None when
    `data` is not a palette PNG. Exact whatever the original palette (even one shorter than the indices
    used, which libpng would decode to black)."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or data[25] != 3:
        return None
    bit_depth = data[24]
    out, pos = [data[:8]], 8
    while pos + 12 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind == b"PLTE":
            out.append(_png_chunk(b"PLTE", np.repeat(np.arange(1 << bit_depth, dtype=np.uint8), 3).tobytes()))
        elif kind != b"tRNS":
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out)


def read_label_png(path: str | os.PathLike, *, n_classes: int, id_map: dict[int, int] | None = None,
                   size: tuple[int, int] | None = None, ignore_index: int = IGNORE) -> np.ndarray:
    """(H, W) int64 from a single-channel 8- or 16-bit PNG or a palette PNG (module doc); id_map maps stored
    ids (0 and 255 kept); stored `ignore_index` becomes 255."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"label file {path} not found")
    if id_map is not None and ignore_index != IGNORE:
        raise ValueError(f"read_label_png: ignore_index {ignore_index} cannot be combined with id_map")
    data = path.read_bytes()
    palette = _palette_as_indices(data)
    raw = cv2.imdecode(np.frombuffer(palette if palette is not None else data, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"label file {path} cannot be decoded as an image")
    if raw.ndim == 3:
        if not (raw == raw[:, :, :1]).all():
            raise ValueError(f"label file {path} has {raw.shape[2]} different channels; expected one channel "
                             "of class ids or a palette PNG (an RGB colour image must be converted to ids first)")
        raw = raw[:, :, 0]
    label = raw.astype(np.int64)
    if id_map is not None:
        lut = {0: 0, IGNORE: IGNORE, **id_map}
        unknown = sorted(set(np.unique(label).tolist()) - set(lut))
        if unknown:
            raise ValueError(f"label file {path}: ids {unknown[:10]} are not categories of the dataset")
        keys = np.array(sorted(lut))
        label = np.array([lut[k] for k in keys])[np.searchsorted(keys, label)]
    elif ignore_index != IGNORE:
        ignored = label == ignore_index
        bad = ~ignored & ((label < 0) | (label >= n_classes))
        if bad.any():
            values = sorted(int(v) for v in np.unique(label[bad]))[:10]
            raise ValueError(f"{path}: class ids {values} outside [0, {n_classes}) (ignore = {ignore_index})")
        label[ignored] = IGNORE
    check_range(label, n_classes, str(path))
    return resize_labels(label, size)


def synthetic_labels(dataset_dir: str | os.PathLike, file_names: Sequence[str], *,
                     size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Label maps of the synthetic generator's images (dataset_dir/semantic/<file_name>)."""
    root = Path(dataset_dir)
    instances = _load_json(root / "instances.json")
    id_map, n = category_index(instances["categories"]), num_classes(instances)
    return [read_label_png(root / "semantic" / name, n_classes=n, id_map=id_map, size=size)
            for name in file_names]


def png_labels(folder: str | os.PathLike, file_names: Sequence[str], *, n_classes: int,
               size: tuple[int, int] | None = None, ignore_index: int = IGNORE) -> list[np.ndarray]:
    """Label maps from user PNGs: folder/<stem of each image file name>.png holding class ids."""
    return [read_label_png(Path(folder) / (Path(name).stem + ".png"), n_classes=n_classes, size=size,
                           ignore_index=ignore_index) for name in file_names]


def image_stem(entry: str) -> str:
    """The image named by a list entry or a file name: "a/b/2007_000032.jpg" and "2007_000032" -> "2007_000032"
    (only a known image suffix is removed, so stems holding dots survive)."""
    name = entry.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and stem and f".{suffix.lower()}" in IMAGE_SUFFIXES else name


def read_image_list(path: str | os.PathLike) -> list[str]:
    """Image stems of a list file (module doc), in file order. ValueError naming the file (and the lines) when
    it is missing, empty or names an image twice."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image list {path} not found")
    stems: list[str] = []
    first_line: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        stem = image_stem(fields[0])
        if stem in first_line:
            raise ValueError(f"image list {path} line {n}: image {stem!r} already listed on line {first_line[stem]}")
        first_line[stem] = n
        stems.append(stem)
    if not stems:
        raise ValueError(f"image list {path} names no image")
    return stems


def instance_mask(segmentation, height: int, width: int, where: str) -> np.ndarray:
    """(H, W) bool of a COCO segmentation: polygons, uncompressed RLE or compressed RLE."""
    import pycocotools.mask as mask_utils

    try:
        if isinstance(segmentation, list):
            rles = mask_utils.frPyObjects(segmentation, height, width)
            rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation, dict):
            rle = dict(segmentation)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        else:
            raise TypeError(f"unsupported segmentation type {type(segmentation).__name__}")
        return mask_utils.decode(rle).astype(bool)
    except Exception as e:  # noqa: BLE001 (pycocotools raises TypeError/ValueError/... on bad input)
        raise ValueError(f"{where}: cannot decode its segmentation ({type(e).__name__}: {e})") from e


def coco_labels(instances: str | os.PathLike | dict, image_ids: Sequence[int], *,
                size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Label maps of the given image ids from a COCO instances JSON (module docstring for the rules)."""
    where = str(instances) if not isinstance(instances, dict) else "instances"
    data = _load_json(instances)
    id_map = category_index(data.get("categories") or [])
    images = {int(im["id"]): im for im in data.get("images", [])}
    by_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    out = []
    for image_id in image_ids:
        if int(image_id) not in images:
            raise ValueError(f"{where}: image id {image_id} not found")
        im = images[int(image_id)]
        h, w = int(im["height"]), int(im["width"])
        label = np.zeros((h, w), dtype=np.int64)
        anns = by_image.get(int(image_id), [])
        things = sorted((a for a in anns if not a.get("iscrowd")), key=lambda a: -float(a.get("area", 0)))
        for ann in things + [a for a in anns if a.get("iscrowd")]:
            what = f"{where}: annotation {ann.get('id')} of image {image_id}"
            if int(ann["category_id"]) not in id_map:
                raise ValueError(f"{what} has category_id {ann['category_id']} not in the categories")
            value = IGNORE if ann.get("iscrowd") else id_map[int(ann["category_id"])]
            label[instance_mask(ann["segmentation"], h, w, what)] = value
        out.append(resize_labels(label, size))
    return out


def stack_labels(labels: Sequence[np.ndarray]) -> "torch.Tensor":  # noqa: F821
    """(N, H, W) int64 tensor of equal-sized maps (the form maskless.stego.train takes)."""
    import torch

    if not labels:
        raise ValueError("no label maps to stack")
    shapes = {tuple(x.shape) for x in labels}
    if len(shapes) != 1:
        raise ValueError(f"label maps differ in size {sorted(shapes)[:5]}; resize them to one size first")
    return torch.from_numpy(np.stack([np.asarray(x, dtype=np.int64) for x in labels]))
