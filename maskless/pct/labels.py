"""PCT's images and label maps as lazy sequences, and its two label sources (maskless.pct.stage's module doc).

LazyMaps: a read-only sequence whose items are read when used, and that describes them without reading them
(content keys, source paths, known shapes: maskless.pct.train, "Lazy data"). label_maps gives a split's label
maps from either source: the dataset's COCO ground truth (read at once) or the user files of pct.data
(labels.json written by maskless.data.voc.run_pct_data; each PNG read when used). read_pseudo reads
Pseudo-Net's label PNGs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence as SequenceABC
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from maskless.data.images import load_rgb
from maskless.data.manifest import read_manifest
from maskless.data.voc import LABELS_FORMAT


def _const(x):
    return x


def _file_key(kind: str, path: str) -> str:
    """Content key of an item decoded from a file: how it is decoded and the file's sha256."""
    from maskless.data.images import sha256_file

    return f"{kind} sha256 {sha256_file(path)}"


def _array_key(x) -> str:
    """Content key of an in-memory array: dtype, shape and the sha256 of its bytes."""
    import hashlib

    a = np.ascontiguousarray(x)
    return f"array {a.dtype} {tuple(a.shape)} sha256 {hashlib.sha256(a.data).hexdigest()}"


class LazyMaps(SequenceABC):
    """A read-only sequence whose items are made when accessed: item i is thunks[i]() (None where thunks[i]
    is None). Picklable when the thunks are (functools.partial of module-level functions), so it can cross
    to spawned training processes and DataLoader workers; slicing gives another LazyMaps.

    It may also describe its items without making them (maskless.pct.train, "Lazy data"): keys[i] a string
    naming item i's content (file hash and decoding; or a thunk returning it), paths[i] the file it is read
    from (for messages), shapes[i] its (H, W). content_keys(), source_paths() and known_shapes() return
    them (content_keys and known_shapes None when some non-None item lacks one); present_items() says which
    items are not None."""

    def __init__(self, thunks: Sequence[Callable[[], object] | None], *, keys: Sequence | None = None,
                 paths: Sequence[str | None] | None = None, shapes: Sequence[tuple[int, int] | None] | None = None):
        self._thunks = list(thunks)
        n = len(self._thunks)
        self._keys = list(keys) if keys is not None else [None] * n
        self._paths = list(paths) if paths is not None else [None] * n
        self._shapes = [None if s is None else tuple(int(v) for v in s) for s in shapes] if shapes is not None \
            else [None] * n
        if not len(self._keys) == len(self._paths) == len(self._shapes) == n:
            raise ValueError(f"LazyMaps: {n} thunks but {len(self._keys)} keys, {len(self._paths)} paths and "
                             f"{len(self._shapes)} shapes")

    @classmethod
    def concat(cls, *parts: Sequence) -> "LazyMaps":
        """One LazyMaps of several sequences (LazyMaps, or lists whose items are kept as they are; an
        in-memory array is keyed by its bytes and shaped by its shape)."""
        thunks: list = []
        keys: list = []
        paths: list = []
        shapes: list = []
        for part in parts:
            if isinstance(part, LazyMaps):
                thunks += part._thunks
                keys += part._keys
                paths += part._paths
                shapes += part._shapes
            else:
                for x in part:
                    thunks.append(None if x is None else partial(_const, x))
                    keys.append(None if x is None else partial(_array_key, x))
                    paths.append(None)
                    shapes.append(None if x is None or np.ndim(x) < 2 else tuple(np.shape(x)[:2]))
        return cls(thunks, keys=keys, paths=paths, shapes=shapes)

    def __len__(self) -> int:
        return len(self._thunks)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LazyMaps(self._thunks[i], keys=self._keys[i], paths=self._paths[i], shapes=self._shapes[i])
        thunk = self._thunks[i]
        return None if thunk is None else thunk()

    def _complete(self, values: list) -> bool:
        return all(v is not None for t, v in zip(self._thunks, values) if t is not None)

    def present_items(self) -> list[bool]:
        """Per item whether it is not None, without making it."""
        return [t is not None for t in self._thunks]

    def content_keys(self) -> list[str | None] | None:
        """Per item its content key (None for a None item), without making the items; None when some item
        has no key. Thunk keys (file hashes) are computed here."""
        if not self._complete(self._keys):
            return None
        return [None if t is None else (k() if callable(k) else k) for t, k in zip(self._thunks, self._keys)]

    def source_paths(self) -> list[str | None]:
        """Per item the file it is read from, None where unknown or for a None item."""
        return [None if t is None else p for t, p in zip(self._thunks, self._paths)]

    def known_shapes(self) -> list[tuple[int, int] | None] | None:
        """Per item its (H, W) without making it (None for a None item); None when some item's is unknown."""
        if not self._complete(self._shapes):
            return None
        return [None if t is None else s for t, s in zip(self._thunks, self._shapes)]


def _png_label(path: str, n_classes: int, ignore_index: int) -> np.ndarray:
    from maskless.data.semantic import read_label_png

    return read_label_png(path, n_classes=n_classes, ignore_index=ignore_index).astype(np.uint8)


def _read_pseudo_png(path: str) -> np.ndarray:
    import cv2

    lab = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if lab is None or lab.ndim != 2:
        raise ValueError(f"pseudo label {path} is missing or not a single-channel PNG")
    return lab.astype(np.uint8)


def load_labels(gt: str, ids: Sequence[int]) -> tuple[list[np.ndarray], int]:
    """uint8 (H, W) label maps of `ids` from a COCO instances JSON, and the class count (background included)."""
    from maskless.data.semantic import coco_labels, num_classes

    k = num_classes(gt)
    if k > 255:
        raise ValueError(f"{gt}: {k - 1} categories; PCT label maps hold at most 254 classes (255 = ignore)")
    return [lab.astype(np.uint8) for lab in coco_labels(gt, ids)], k


def lazy_images(manifest: str, ids: Sequence[int]) -> LazyMaps:
    """uint8 (H, W, 3) RGB images of `ids`, in that order, each read when accessed (an id missing from the
    manifest is an error at once). Described without reading them: keyed by the manifest's content hash (the
    file is hashed where the manifest has none), shaped by its height and width, named by its path."""
    rows = {int(r["id"]): r for r in read_manifest(manifest)}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ValueError(f"manifest {manifest} lacks image ids {missing[:10]} named by the PCT split")
    picked = [rows[i] for i in ids]
    return LazyMaps([partial(load_rgb, r["path"]) for r in picked],
                    keys=[f"rgb sha256 {r['hash']}" if r.get("hash") else partial(_file_key, "rgb", r["path"])
                          for r in picked],
                    paths=[r["path"] for r in picked], shapes=[(r["height"], r["width"]) for r in picked])


def is_file_source(gt: str) -> bool:
    """True when `gt` is the labels.json of user files (rule pct_data), False for a COCO instances JSON.
    Decided from the file's first bytes (labels.json starts with its format), so a large instances JSON is
    not parsed twice."""
    with open(gt, "rb") as f:
        head = f.read(256)
    return f'"format": "{LABELS_FORMAT}"'.encode() in head


def read_format(path: str, fmt: str, what: str) -> dict:
    """A JSON object written by this module, its "format" checked (ValueError naming the file otherwise)."""
    with open(path) as f:
        obj = json.load(f)
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} (format {fmt!r})")
    return obj


def read_label_source(gt: str) -> dict:
    """The labels.json written by run_pct_data (format checked)."""
    return read_format(gt, LABELS_FORMAT, "PCT label source")


def label_maps(gt: str, ids: Sequence[int]) -> tuple[Sequence[np.ndarray], int]:
    """uint8 label maps of `ids` and the class count, from either source: a list from the instances JSON
    (load_labels), a LazyMaps reading each PNG when used from user files."""
    if not is_file_source(gt):
        return load_labels(gt, ids)
    src = read_label_source(gt)
    k, ignore, images = int(src["num_classes"]), int(src["ignore_index"]), src["images"]
    missing = [i for i in ids if str(i) not in images]
    if missing:
        raise ValueError(f"{gt} lacks image ids {missing[:10]} named by the PCT split")
    files = [images[str(i)]["label"] for i in ids]
    return LazyMaps([partial(_png_label, f, k, ignore) for f in files], paths=files,
                    keys=[partial(_file_key, f"label-png classes {k} ignore {ignore}", f) for f in files]), k


def read_pseudo(folder: str, ids: Sequence[int], *, lazy: bool = False) -> Sequence[np.ndarray]:
    """The pseudo label PNGs <folder>/<id>.png of `ids` as uint8 maps (a missing or unreadable one is an
    error); lazy=True checks that every file exists and returns a LazyMaps that reads each when used."""
    paths = [str(Path(folder) / f"{i}.png") for i in ids]
    if not lazy:
        return [_read_pseudo_png(p) for p in paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"pseudo label {missing[0]} is missing ({len(missing)} of {len(paths)} missing)")
    return LazyMaps([partial(_read_pseudo_png, p) for p in paths], paths=paths,
                    keys=[partial(_file_key, "pseudo-png", p) for p in paths])
