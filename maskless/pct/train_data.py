"""The data side of PCT and supervised training (maskless.pct.train, whose docstring describes the data,
"Lazy data", "Batches" and "Augmentation"): augment, Batch, make_batch, StepBatches (the batch of each step),
the start-up checks of the images and label maps, and the data fingerprint of the resume key.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from maskless import dist
from maskless.data.batches import batch_indices
from maskless.models.resnet import IMAGENET_MEAN
from maskless.pct.losses import IGNORE
from maskless.pct.split import tags_from_label_map, validate_tags

if TYPE_CHECKING:
    from maskless.pct.train import SegTrainParams


_PAD_RGB = tuple(round(255 * m) for m in IMAGENET_MEAN)  # normalises to zero
_WEAK_SEED_OFFSET = 1_000_003  # the weak half's epoch permutations differ from the strong half's


# ---------------------------------------------------------------- data


def augment(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator, params: SegTrainParams
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample -> (image (S, S, 3) uint8, label (S, S) uint8 (255 where unlabelled or padded),
    valid (S, S) bool (False on padding)); S = input_size (module doc)."""
    h, w = image.shape[:2]
    size = params.input_size
    scale = size / min(h, w) * rng.uniform(*params.scale_range)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)  # (nh, nw, 3)
    lab = (np.full((nh, nw), IGNORE, np.uint8) if label is None
           else cv2.resize(label.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST))  # (nh, nw)
    if params.flip and rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    ph, pw = max(size, nh), max(size, nw)
    canvas = np.empty((ph, pw, 3), np.uint8)
    canvas[:] = _PAD_RGB
    canvas[:nh, :nw] = img
    lab_c = np.full((ph, pw), IGNORE, np.uint8)
    lab_c[:nh, :nw] = lab
    valid = np.zeros((ph, pw), bool)
    valid[:nh, :nw] = True
    y0, x0 = int(rng.integers(0, ph - size + 1)), int(rng.integers(0, pw - size + 1))
    crop = (slice(y0, y0 + size), slice(x0, x0 + size))
    return canvas[crop], lab_c[crop], valid[crop]


@dataclass
class Batch:
    images: Tensor  # (B, 3, S, S) uint8
    labels: Tensor  # (B, S, S) int64, 255 = ignore (all 255 on weak images)
    valid: Tensor  # (B, S, S) bool
    present: Tensor  # (B, K) bool, background column set
    n_strong: int  # the first n_strong samples are strong

    def pin_memory(self) -> "Batch":
        """Page-locked copies (the DataLoader calls this with pin_memory=True)."""
        return dataclasses.replace(self, images=self.images.pin_memory(), labels=self.labels.pin_memory(),
                                   valid=self.valid.pin_memory(), present=self.present.pin_memory())


def _check_image(i: int, img) -> None:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image {i} must be uint8 (H, W, 3), got {img.dtype} {img.shape}")


def _check_label_shape(i: int, label, image_shape: tuple[int, ...], where: str = "") -> None:
    if label.shape != image_shape:
        raise ValueError(f"label map of image {i}{where} is {label.shape} but the image is {image_shape}")


def make_batch(images, labels, present: np.ndarray, strong: Sequence[int], weak: Sequence[int],
               rng: np.random.Generator, params: SegTrainParams) -> Batch:
    """Augment the samples `strong` (with labels) then `weak` (labels ignored) into one Batch. Each image
    (uint8 (H, W, 3)) and label map (the image's size) is checked as it is read."""
    imgs, labs, valids = [], [], []
    for i, with_label in [(i, True) for i in strong] + [(i, False) for i in weak]:
        image, label = images[i], labels[i] if with_label else None
        _check_image(i, image)
        if label is not None:
            _check_label_shape(i, label, image.shape[:2])
        img, lab, valid = augment(image, label, rng, params)
        imgs.append(np.ascontiguousarray(img.transpose(2, 0, 1)))
        labs.append(lab)
        valids.append(valid)
    return Batch(images=torch.from_numpy(np.stack(imgs)), labels=torch.from_numpy(np.stack(labs)).long(),
                 valid=torch.from_numpy(np.stack(valids)), n_strong=len(strong),
                 present=torch.from_numpy(present[list(strong) + list(weak)]))


class StepBatches(torch.utils.data.Dataset):
    """Item `step` (0-based) -> this rank's share of that step's Batch: `strong_per_step` of the `strong`
    indices then `weak_per_step` of the `weak` ones, each drawn epoch-wise (batch_indices), augmented with a
    generator seeded from (seed, step[, rank]). A pure function of the step: DataLoader workers (num_workers)
    make the same batches as the training process, and a resume repeats the lost steps exactly. The rank is
    captured at construction (workers run outside the process group)."""

    def __init__(self, images: Sequence, labels: Sequence, present: np.ndarray, strong: Sequence[int],
                 weak: Sequence[int], strong_per_step: int, weak_per_step: int, params: SegTrainParams,
                 rank: dist.Rank | None = None):
        self.images, self.labels, self.present = images, labels, present
        self.strong, self.weak = list(strong), list(weak)
        self.strong_per_step, self.weak_per_step = strong_per_step, weak_per_step
        self.params = params
        self.rank = rank or dist.current()

    def __len__(self) -> int:
        return self.params.steps

    def __getitem__(self, step: int) -> Batch:
        p, r = self.params, self.rank
        s_idx = dist.shard(batch_indices(step, n_images=len(self.strong), batch_size=self.strong_per_step,
                                         seed=p.seed), r) if self.strong_per_step else []
        w_idx = dist.shard(batch_indices(step, n_images=len(self.weak), batch_size=self.weak_per_step,
                                         seed=p.seed + _WEAK_SEED_OFFSET), r) if self.weak_per_step else []
        rng = np.random.default_rng(dist.rng_key(p.seed, step, 2, rank=r))
        return make_batch(self.images, self.labels, self.present, [self.strong[i] for i in s_idx],
                          [self.weak[i] for i in w_idx], rng, p)


# ---------------------------------------------------------------- data checks and fingerprint


def _described(seq, method: str):
    """seq.<method>() of a sequence that describes its items (module doc, "Lazy data"), else None."""
    fn = getattr(seq, method, None)
    return fn() if callable(fn) else None


def data_fingerprint(images, labels, tags, backbone: str | None) -> str:
    """Identity of the pixels, labels, tags and initial backbone file. A sequence with content keys
    (module doc, "Lazy data") enters by its keys, its items never read; any other by the bytes of its items
    (in-memory data: the same digest as before keys existed, so older resume states still match)."""
    from maskless.data.images import sha256_file

    image_keys = _described(images, "content_keys")
    label_keys = _described(labels, "content_keys") if labels is not None else None
    h = hashlib.sha256()
    for i in range(len(images)):
        if image_keys is not None:
            h.update(f"{i} src {image_keys[i]} ".encode())
        else:
            img = images[i]
            h.update(f"{i} {img.shape} ".encode())
            h.update(np.ascontiguousarray(img).tobytes())
            del img  # one item alive at a time
        if label_keys is not None:
            h.update(b"none" if label_keys[i] is None else f"src {label_keys[i]}".encode())
        else:
            lab = labels[i] if labels is not None else None
            h.update(b"none" if lab is None else np.ascontiguousarray(lab).astype(np.uint8).tobytes())
            del lab
        if tags is not None:
            h.update(f"tags {sorted(int(c) for c in tags[i])}".encode())
    h.update(f"backbone {sha256_file(backbone) if backbone else 'random'}".encode())
    return h.hexdigest()


def has_label_map(labels) -> list[bool]:
    """Per image whether it has a label map: from present_items() without reading them when the sequence
    has it, else by reading each (none kept)."""
    known = _described(labels, "present_items")
    return list(known) if known is not None else [lab is not None for lab in labels]


def check_images(images, labels) -> list[tuple[int, ...]]:
    """Every image's (H, W): from known_shapes() without reading the images when the sequence has them (each
    image is then checked when a batch reads it), else by reading each image once, checking it is uint8
    (H, W, 3) and keeping only its size."""
    if len(images) == 0:
        raise ValueError("no training images")
    if len(labels) != len(images):
        raise ValueError(f"labels has {len(labels)} entries but images has {len(images)}")
    known = _described(images, "known_shapes")
    if known is not None:
        return [tuple(int(x) for x in shape) for shape in known]
    shapes = []
    for i in range(len(images)):
        img = images[i]
        _check_image(i, img)
        shapes.append(img.shape[:2])
        del img  # one image alive at a time
    return shapes


def _ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """fn over items in order, on up to `workers` threads with at most 2 x workers items in flight (results
    are not piled up); the first error in item order is raised."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for x in items:
            pending.append(pool.submit(fn, x))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def check_labels(labels, used: Sequence[int], image_shapes: Sequence[tuple[int, ...]], k: int,
                  tags: Sequence[Iterable[int]] | None, *, tag_file: str, threads: int) -> None:
    """Each label map of `used` read once and checked (its image's size; validate_tags: values, agreement with
    tags[i], or with no tags the map's own classes), one at a time (`threads` at once); none is kept. Errors
    name the image and the label's file (`labels[i]`, or the path the sequence reads it from). uint8 maps are
    checked with a histogram first; validate_tags runs (and words the error) only on a map that fails it."""
    paths = _described(labels, "source_paths") or [None] * len(labels)
    fine = set(range(k)) | {IGNORE}

    def check(i: int) -> None:
        label = labels[i]
        _check_label_shape(i, label, image_shapes[i], f" ({paths[i]})" if paths[i] else "")
        if isinstance(label, np.ndarray) and label.dtype == np.uint8:
            values = set(np.flatnonzero(np.bincount(label.ravel(), minlength=256)).tolist())
            wanted = values - {0, IGNORE} if tags is None else {int(c) for c in tags[i]}
            if values <= fine and values - {0, IGNORE} == wanted and all(1 <= c < k for c in wanted):
                return
        # the label map's own classes are its tags; those outside 1..K-1 are left to the value check (names the file)
        cats = tags[i] if tags is not None else {c for c in tags_from_label_map(label) if c < k}
        validate_tags({i: cats}, k, labels={i: label}, tag_file=tag_file, label_files={i: paths[i] or f"labels[{i}]"})

    for _ in _ordered_map(check, used, threads):
        pass
