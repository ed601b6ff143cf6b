"""Ingest a dataset: check every image and the COCO ground truth, write the image manifest and a clean GT.

Three kinds (config `dataset.kind`):
- "coco": images listed in the JSON's `images`, `file_name` relative to the images folder.
- "synthetic": read exactly like "coco" (the generator writes COCO format).
- "folder": every image file under the folder (recursive, sorted by relative path) gets id 1..N. Several
  folders (a list, e.g. COCO train2017 and unlabeled2017) are read as one: file names are relative to the
  folders' common parent (so they stay unique), sorted, ids 1..N over all of them.

Every image is decoded with `load_rgb` rules (maskless.data.images); for COCO its EXIF-oriented size must
match the JSON's width/height. Bad images stop the run with one error listing every one of them
(`on_bad_image="stop"`), or are skipped, counted and logged, their annotations dropped (`"skip"`).
The JSON is checked before any image is decoded and cleaned after (maskless.data.coco_json).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Callable

from maskless.data.coco_json import IngestError, clean_gt, load_coco
from maskless.data.images import ImageError, probe_image, sha256_file
from maskless.data.manifest import read_num_rows, write_manifest
from maskless.io import write_json_atomic

log = logging.getLogger("maskless.ingest")

KINDS = ("coco", "folder", "synthetic")
BAD_IMAGE_POLICIES = ("stop", "skip")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def ingest(*, kind: str, images: str | list[str], annotations: str | None, manifest_out: str,
           gt_out: str | None = None, on_bad_image: str = "stop", split: str = "train",
           max_images: int | None = None, summary_out: str | None = None,
           check_count: Callable[[int], object] | None = None) -> dict:
    """Check the dataset, write the manifest (and the cleaned GT when gt_out is given); return counts.

    `images` is one folder, or for kind "folder" a list of folders read as one dataset. The counts (images,
    skipped, annotation fixes and the conversions load_rgb applies: grayscale, 16-bit, alpha, EXIF
    orientation) are logged and, with `summary_out`, written there as JSON. `check_count(n)` runs on the
    number of usable images before anything is written (the workflow's image-count config checks)."""
    _check_args(kind, images, annotations, gt_out, on_bad_image, max_images)
    coco = None
    root = folder_root(images)  # file names are relative to it
    if kind == "folder":
        entries = folder_entries(images)
    else:
        coco = load_coco(annotations)
        entries = [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in coco["images"]]
    entries = sorted(entries, key=lambda e: e["id"])
    if max_images is not None and len(entries) > max_images:
        log.info("max_images=%d: keeping the first %d of %d images by id", max_images, max_images, len(entries))
        entries = entries[:max_images]
    escaped = [e["file_name"] for e in entries if not _inside(root, e["file_name"])]
    if escaped:
        raise IngestError(f"{len(escaped)} file_name(s) in {annotations} point outside the images folder {root} "
                          "(dataset.images); file names must be relative paths inside it:", escaped)
    records, bad, conversions = check_images(entries, root, split)
    if bad:
        lines = [f"{name}: {reason}" for name, reason in bad]
        if on_bad_image == "stop":
            raise IngestError(f"{len(bad)} of {len(entries)} images under {images} are unusable "
                              "(set dataset.on_bad_image: skip to skip them):", lines)
        for line in lines:
            log.warning("skipping image %s", line)
        log.warning("skipped %d of %d images (dataset.on_bad_image = skip)", len(bad), len(entries))
    if not records:
        raise ValueError(f"no usable images under {images}")
    if check_count is not None:
        check_count(len(records))
    for what, count in conversions.items():
        if count:
            log.info("%d of %d images: %s", count, len(records), what)
    summary = {"images": len(records), "skipped": len(bad), "annotations": 0,
               "fixed_area": 0, "fixed_iscrowd": 0, "clipped_boxes": 0, "conversions": conversions}
    gt = None
    if coco is not None:
        gt, counts = clean_gt(coco, {r["id"] for r in records})
        summary.update(counts)
    write_manifest(manifest_out, records)
    if gt_out and gt is not None:
        write_json_atomic(gt_out, gt)
    if summary_out:
        write_json_atomic(summary_out, summary, indent=1)
    log.info("ingest %s: %s", images, summary)
    return summary


def _inside(root: Path, file_name: str) -> bool:
    """Whether `file_name` names a path inside `root` (lexically: a symlink inside the folder may point anywhere)."""
    if os.path.isabs(file_name):
        return False
    base = os.path.normpath(root)
    return os.path.normpath(os.path.join(base, file_name)).startswith(base + os.sep)


def _check_args(kind, images, annotations, gt_out, on_bad_image, max_images) -> None:
    if kind not in KINDS:
        raise ValueError(f"dataset.kind must be one of {list(KINDS)}, got {kind!r}")
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"dataset.on_bad_image must be one of {list(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < 1):
        raise ValueError(f"dataset.max_images must be null or an integer >= 1, got {max_images!r}")
    if kind == "folder" and annotations is not None:
        raise ValueError("dataset.annotations is set but dataset.kind is 'folder' (unlabeled images); "
                         "use kind 'coco' for images with a COCO JSON")
    if kind != "folder" and annotations is None:
        raise ValueError(f"dataset.annotations (a COCO instances JSON) is required for dataset.kind {kind!r}")
    if gt_out is not None and annotations is None:
        raise ValueError("a ground-truth output was requested but dataset.annotations is not set")
    if not isinstance(images, (str, os.PathLike)):
        if kind != "folder":
            raise ValueError("dataset.images is a list of folders, which only dataset.kind 'folder' reads")
        if not images:
            raise ValueError("dataset.images is an empty list of folders")
    for folder in _folders(images):
        if not Path(folder).is_dir():
            raise ValueError(f"dataset.images: {folder} is not a folder")


def _folders(images) -> list:
    return [images] if isinstance(images, (str, os.PathLike)) else list(images)


def _searched(images) -> list[Path]:
    """The folders to list: one as given, several resolved (their names are relative to a common parent)."""
    folders = _folders(images)
    return [Path(folders[0])] if len(folders) == 1 else [Path(f).resolve() for f in folders]


def folder_root(images) -> Path:
    """The folder file names are relative to: the folder itself, or the common parent of several."""
    resolved = _searched(images)
    if len(resolved) == 1:
        return resolved[0]
    for a in resolved:
        for b in resolved:
            if a != b and a.is_relative_to(b):
                raise ValueError(f"dataset.images: folder {a} lies inside folder {b}: its images would be read twice")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"dataset.images names one folder twice: {[str(f) for f in _folders(images)]}")
    return Path(os.path.commonpath(resolved))


def image_files(images) -> list[Path]:
    """Every image file under `images` (one folder or a list; recursive), sorted by its name relative to
    folder_root."""
    root = folder_root(images)
    files = [p for folder in _searched(images) for p in folder.rglob("*")
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def folder_entries(images) -> list[dict]:
    """Every image file under `images` (image_files) with ids 1..N."""
    root = folder_root(images)
    names = [p.relative_to(root).as_posix() for p in image_files(images)]
    if not names:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {images}")
    return [{"id": i, "file_name": name} for i, name in enumerate(names, start=1)]


def input_fingerprint(images, annotations: str | None = None) -> dict:
    """What a user's dataset is, cheaply, for the workflow to compare between runs (DAG time, every run):
    sha256 over every image file's name, size and modification time under `images`, and over the
    annotation file's bytes (a touched but unchanged JSON reruns nothing). {"images": hex or None when a
    folder is missing, "image_files": count, "annotations": hex or None}. Cost: one stat per image file and
    one read of the JSON per run of snakemake (about a second for COCO train2017 on a local disk)."""
    out: dict = {"images": None, "image_files": 0, "annotations": None}
    if images and all(Path(f).is_dir() for f in _folders(images)):
        root, h = folder_root(images), hashlib.sha256()
        files = image_files(images)
        for p in files:
            st = p.stat()
            h.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        out.update(images=h.hexdigest(), image_files=len(files))
    if annotations and Path(annotations).is_file():
        out["annotations"] = sha256_file(annotations)
    return out


def dag_image_count(cfg: dict, manifest: str | os.PathLike, fingerprint: dict) -> int | None:
    """The training images a run will have, where known before any job: the synthetic count, the image files
    of a folder (input_fingerprint), the rows of a finished ingest's `manifest` for COCO; else None (ingest
    checks)."""
    ds = cfg["dataset"]
    cap = ds["max_images"] or float("inf")
    if ds["kind"] == "synthetic":
        return int(min(cfg["synthetic"]["num_images"], cap))
    if ds["kind"] == "folder":
        return int(min(fingerprint.get("image_files", 0), cap)) if fingerprint.get("images") else None
    return read_num_rows(manifest) if Path(manifest).is_file() else None


# The conversions load_rgb applies, counted by ingest: its note (maskless.data.images) -> the counted name.
CONVERSIONS = {"grayscale converted to RGB": "grayscale", "16-bit samples scaled to 8-bit": "16-bit",
               "alpha composited on black": "alpha", "EXIF orientation": "exif_orientation"}


def check_images(entries: list[dict], root: Path,
                 split: str) -> tuple[list[dict], list[tuple[str, str]], dict[str, int]]:
    """Decode every image: manifest records of the good ones, (file_name, reason) of the bad ones, and how many
    good images needed each conversion (CONVERSIONS)."""
    records, bad = [], []
    conversions = dict.fromkeys(CONVERSIONS.values(), 0)
    step = max(1, math.ceil(len(entries) / 10))
    for i, entry in enumerate(entries, start=1):
        path = root / entry["file_name"]
        try:
            info = probe_image(path)
        except ImageError as e:
            bad.append((entry["file_name"], e.reason))
            info = None
        if info is not None:
            size, expected = (info["width"], info["height"]), (entry.get("width"), entry.get("height"))
            if "width" in entry and size != expected:
                bad.append((entry["file_name"], f"size {size[0]}x{size[1]} (after EXIF orientation) does not "
                            f"match the annotations' {expected[0]}x{expected[1]}"))
            else:
                records.append({"id": int(entry["id"]), "file_name": entry["file_name"],
                                "path": str(path.resolve()), "width": size[0], "height": size[1],
                                "split": split, "hash": info["sha256"]})
                for note in info["notes"]:
                    conversions[next(v for k, v in CONVERSIONS.items() if note.startswith(k))] += 1
        if i % step == 0 or i == len(entries):
            log.info("checked %d/%d images (%d bad)", i, len(entries), len(bad))
    return records, bad, conversions
