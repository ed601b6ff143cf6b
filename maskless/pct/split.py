"""Strong / weak split and image-level tags for PCT (METHODS.md "PCT", data).

- split_ids: strong images (pixel labels used) and weak images (tags only), by ratio or count, a function
  of (sorted ids, seed) only. Plain: the first n of a seeded permutation. Stratified (tags given): classes
  are visited rarest first (fewest images, then lowest id); a class not yet covered by the strong set adds
  its first image in the permutation order while the budget lasts; the rest of the budget is filled in
  permutation order. So with n >= number of classes every class that has an image appears in the strong
  set, which a tiny strong set drawn plainly can miss.
- Tags: class ids in [1, num_classes) (0 = background is implicit, 255 = ignore never a tag).
  read_tag_table reads the CSV the synthetic generator writes (header image_id,file_name,category_ids;
  ids space-separated), keyed by image id; with key="file_name" (a user's table for list-based data such as
  PASCAL VOC, where images are named, not numbered) it needs only the columns file_name and category_ids and
  is keyed by the image stem (maskless.data.semantic.image_stem: "2007_000032.jpg" -> "2007_000032").
  validate_tags checks a table against the configured classes and, for strong images,
  against their label maps: any disagreement is a ValueError naming the image and the file.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from maskless.data.semantic import IGNORE

__all__ = ["split_ids", "tags_from_label_map", "read_tag_table", "validate_tags", "tag_matrix"]

TAG_COLUMNS = ("image_id", "file_name", "category_ids")


def _strong_count(n: int, ratio: float | None, count: int | None) -> int:
    if (ratio is None) == (count is None):
        raise ValueError("split_ids: give exactly one of ratio and count")
    if count is not None:
        if not isinstance(count, (int, np.integer)) or not 0 <= count <= n:
            raise ValueError(f"split_ids: count must be an integer in [0, {n}] (number of images), got {count!r}")
        return int(count)
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        raise ValueError(f"split_ids: ratio must lie in [0, 1], got {ratio!r}")
    # A positive ratio keeps at least one strong image: "1/100 of 50 images" means one, not none.
    return max(1, round(ratio * n)) if ratio > 0 else 0


def held_out_count(n_images: int, eval_fraction: float) -> int:
    """Images held out for evaluation from n (>= 3): round(eval_fraction * n), at least 1, leaving 2 to train."""
    return min(n_images - 2, max(1, round(eval_fraction * n_images)))


def split_ids(ids: Iterable[int], *, ratio: float | None = None, count: int | None = None, seed: int = 0,
              tags: Mapping[int, Iterable[int]] | None = None) -> tuple[list[int], list[int]]:
    """(strong ids, weak ids), each sorted. Stratified when `tags` (id -> class ids) is given (module doc)."""
    ids = sorted(int(i) for i in ids)
    if len(set(ids)) != len(ids):
        raise ValueError("split_ids: ids contain duplicates")
    n_strong = _strong_count(len(ids), ratio, count)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    chosen: list[int] = []
    if tags is not None:
        missing = [i for i in ids if i not in tags]
        if missing:
            raise ValueError(f"split_ids: no tags for images {missing[:10]}")
        sets = {i: set(int(c) for c in tags[i]) for i in ids}
        images_of: dict[int, list[int]] = {}
        for i in order:
            for c in sets[i]:
                images_of.setdefault(c, []).append(i)
        for c in sorted(images_of, key=lambda c: (len(images_of[c]), c)):
            if len(chosen) >= n_strong:
                break
            if not any(c in sets[i] for i in chosen):
                chosen.append(images_of[c][0])
    taken = set(chosen)
    chosen += [i for i in order if i not in taken][: n_strong - len(chosen)]
    strong = set(chosen)
    return sorted(strong), [i for i in ids if i not in strong]


def tags_from_label_map(label: np.ndarray) -> frozenset[int]:
    """Foreground classes of a (H, W) label map: its values other than 0 (background) and 255 (ignore)."""
    values = np.unique(np.asarray(label))
    return frozenset(int(v) for v in values if v not in (0, IGNORE))


def read_tag_table(path: str | Path, *, key: str = "image_id") -> dict:
    """image_id (or, key="file_name", image stem) -> class ids from a tags CSV (module doc). ValueError naming
    the file and line on a bad row, a duplicate image or a missing column."""
    from maskless.data.semantic import image_stem

    if key not in ("image_id", "file_name"):
        raise ValueError(f"read_tag_table: key must be 'image_id' or 'file_name', got {key!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tag table {path} does not exist")
    out: dict = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {key, "category_ids"} <= set(reader.fieldnames):
            header = ",".join(TAG_COLUMNS) if key == "image_id" else "file_name,category_ids"
            raise ValueError(f"tag table {path} needs the columns {key} and category_ids (header "
                             f"{header}), got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                image = int(row["image_id"]) if key == "image_id" else image_stem((row["file_name"] or "").strip())
                if image == "":
                    raise ValueError("empty file_name")
                cats = frozenset(int(c) for c in (row["category_ids"] or "").split())
            except (TypeError, ValueError) as e:
                raise ValueError(f"tag table {path} line {line}: cannot parse {row}: {e}") from e
            if image in out:
                raise ValueError(f"tag table {path} line {line}: image {image} listed twice")
            out[image] = cats
    return out


def validate_tags(tags: Mapping[int, Iterable[int]], num_classes: int, *, ids: Iterable[int] | None = None,
                  labels: Mapping[int, np.ndarray] | None = None, tag_file: str = "<tags>",
                  label_files: Mapping[int, str] | None = None) -> None:
    """Raise ValueError naming the image and file when:
    - an image of `ids` has no row in the tag table;
    - a tag is not a foreground class id in [1, num_classes);
    - a label map (strong image) holds a value outside [0, num_classes) and 255;
    - a strong image's label map and its tags disagree (a class in the mask but not the tags, or a tag
      absent from the mask)."""
    names = label_files or {}
    for i in ids if ids is not None else ():
        if i not in tags:
            raise ValueError(f"image {i} has no row in tag table {tag_file}")
    for i, cats in tags.items():
        bad = sorted(int(c) for c in cats if not 1 <= int(c) < num_classes)
        if bad:
            raise ValueError(f"tag table {tag_file}: image {i} has class ids {bad} outside the configured "
                             f"foreground classes 1..{num_classes - 1}")
    for i, label in (labels or {}).items():
        where = names.get(i, "<label map>")
        values = np.unique(np.asarray(label))
        bad = [int(v) for v in values if not (0 <= v < num_classes or v == IGNORE)]
        if bad:
            raise ValueError(f"label map {where} (image {i}) has values {bad} outside the configured classes "
                             f"0..{num_classes - 1} and ignore {IGNORE}")
        if i not in tags:
            raise ValueError(f"image {i} (label map {where}) has no row in tag table {tag_file}")
        in_mask, tagged = tags_from_label_map(label), frozenset(int(c) for c in tags[i])
        if in_mask != tagged:
            raise ValueError(f"image {i}: label map {where} and tag table {tag_file} disagree: classes in the "
                             f"mask but not the tags {sorted(in_mask - tagged)}, tags absent from the mask "
                             f"{sorted(tagged - in_mask)}")


def tag_matrix(tag_sets: Sequence[Iterable[int]], num_classes: int) -> np.ndarray:
    """(N, K) bool: row n marks image n's classes, column 0 (background) always True."""
    out = np.zeros((len(tag_sets), num_classes), dtype=bool)
    out[:, 0] = True
    for n, cats in enumerate(tag_sets):
        for c in cats:
            if not 0 <= int(c) < num_classes:
                raise ValueError(f"tag_matrix: image {n} has class id {c} outside [0, {num_classes})")
            out[n, int(c)] = True
    return out
