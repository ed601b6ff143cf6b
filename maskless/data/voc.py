"""PASCAL VOC-layout user data for PCT (config pct.data): images, PNG label maps, an optional tag table,
train and val lists (PASCAL VOC with SBD's SegmentationClassAug is the reference layout), checked once and
written as the PCT manifest and labels.json (maskless.pct.stage's module doc, "User files"; read back by
maskless.pct.labels).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from maskless.io import write_json_atomic
from maskless.pct.split import tags_from_label_map  # image-level tags (pct.split: torch-free, no pct import back)

log = logging.getLogger(__name__)

LABELS_FORMAT = "maskless-pct-labels"  # labels.json, read by maskless.pct.labels


def data_classes(data: dict) -> tuple[int, list[str] | None]:
    """(class count with background, class names or None) of a pct.data section: `classes` (names,
    background first) or `num_classes`; both must agree when both are given."""
    names, k = data.get("classes"), data.get("num_classes")
    if names is None and k is None:
        raise ValueError("config key 'pct.data': give classes (names, background first) or num_classes")
    if names is not None and k is not None and len(names) != k:
        raise ValueError(f"config key 'pct.data.num_classes' ({k}) differs from the {len(names)} names of "
                         "pct.data.classes")
    k = len(names) if names is not None else int(k)
    if not 2 <= k <= 255:
        raise ValueError(f"config key 'pct.data': {k} classes; PCT needs 2 to 255 (background included; 255 = "
                         "ignore)")
    return k, (list(names) if names is not None else None)


def _probe_pair(stem: str, image: str, label: str, k: int, ignore: int) -> dict:
    """Size and hash of one image, its label map checked (values, size) and the mask's tags."""
    from maskless.data.images import probe_image
    from maskless.data.semantic import read_label_png

    info = probe_image(image)
    lab = read_label_png(label, n_classes=k, ignore_index=ignore)
    if lab.shape != (info["height"], info["width"]):
        raise ValueError(f"label map {label} is {lab.shape[0]}x{lab.shape[1]} but image {image} is "
                         f"{info['height']}x{info['width']} (image {stem})")
    return {**info, "mask_tags": sorted(tags_from_label_map(lab))}


def run_pct_data(*, data: dict, manifest: str, labels: str, threads: int | None = None) -> dict:
    """Check the user files of pct.data (module doc) and write the PCT manifest and labels.json.

    Errors name the config key and the path: a list, folder or table that does not exist; an image of a
    list with no file in pct.data.images (or two files of that stem); an image with no label PNG
    (pct.data.labels/<stem>.png); an image in both lists; an unreadable image; a label PNG holding values
    outside the classes and the ignore value, or of another size than its image; a tag table without a row
    for a training image, or with class ids outside the classes. Every problem is listed (up to 20) before
    stopping."""
    from maskless.data.manifest import write_manifest
    from maskless.data.semantic import IMAGE_SUFFIXES, read_image_list
    from maskless.pct.split import read_tag_table, validate_tags

    if not isinstance(data, dict):
        raise ValueError(f"config key 'pct.data' is {data!r}: rule pct_data needs the user files it names")
    k, names = data_classes(data)
    ignore = int(data.get("ignore_index", 255))
    if 0 <= ignore < k:
        raise ValueError(f"config key 'pct.data.ignore_index' ({ignore}) is a class id (0..{k - 1})")
    paths = {}
    for key, kind in (("images", "folder"), ("labels", "folder"), ("train_list", "file"), ("val_list", "file"),
                      ("tags", "file")):
        path = data.get(key)
        if path is None and key == "tags":
            continue
        if not path or not (os.path.isdir(path) if kind == "folder" else os.path.isfile(path)):
            what = "does not exist" if not path or not os.path.exists(path) else f"is not a {kind}"
            raise ValueError(f"config key 'pct.data.{key}': {path!r} {what}")
        paths[key] = os.path.abspath(path)
    lists = {key: read_image_list(paths[key]) for key in ("train_list", "val_list")}
    both = sorted(set(lists["train_list"]) & set(lists["val_list"]))
    if both:
        raise ValueError(f"config keys 'pct.data.train_list' ({paths['train_list']}) and 'pct.data.val_list' "
                         f"({paths['val_list']}) both name {len(both)} images, e.g. {both[:5]}: the held-out "
                         "images must never be trained on")
    files: dict[str, list[str]] = {}
    with os.scandir(paths["images"]) as it:
        for entry in it:
            stem, dot, suffix = entry.name.rpartition(".")
            if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES and entry.is_file():
                files.setdefault(stem, []).append(entry.name)
    problems: list[str] = []
    split_of = {stem: "train" for stem in lists["train_list"]} | {stem: "val" for stem in lists["val_list"]}
    stems = sorted(split_of)
    suffixes = "|".join(s[1:] for s in IMAGE_SUFFIXES)
    for stem in stems:
        listed = f"image {stem!r} of pct.data.{split_of[stem]}_list ({paths[split_of[stem] + '_list']})"
        found = files.get(stem, [])
        if not found:
            problems.append(f"config key 'pct.data.images': no file {stem}.<{suffixes}> in {paths['images']} for "
                            f"{listed}")
        elif len(found) > 1:
            problems.append(f"config key 'pct.data.images': several files {sorted(found)} in {paths['images']} for "
                            f"{listed}")
        label = os.path.join(paths["labels"], f"{stem}.png")
        if not os.path.isfile(label):
            problems.append(f"config key 'pct.data.labels': label file {label} not found for {listed}")
    _stop_on(problems, "pct.data")
    ids = {stem: n for n, stem in enumerate(stems, start=1)}
    table: dict = {}
    if "tags" in paths:
        table = read_tag_table(paths["tags"], key="file_name")
        missing = [stem for stem in lists["train_list"] if stem not in table]
        if missing:
            raise ValueError(f"config key 'pct.data.tags': tag table {paths['tags']} has no row for {len(missing)} "
                             f"images of the train list, e.g. {missing[:5]} (every training image needs its tags)")
        validate_tags({stem: table[stem] for stem in stems if stem in table}, k, tag_file=paths["tags"])

    def probe(stem: str):
        image = os.path.join(paths["images"], files[stem][0])
        try:
            return _probe_pair(stem, image, os.path.join(paths["labels"], f"{stem}.png"), k, ignore)
        except ValueError as e:  # ImageError is a ValueError naming the file
            return str(e)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, threads or 1)) as pool:
        infos = dict(zip(stems, pool.map(probe, stems)))
    problems = [f"image {stem!r}: {info}" for stem, info in infos.items() if isinstance(info, str)]
    _stop_on(problems, "pct.data")
    log.info("PCT data: %d train + %d val images and their label PNGs checked in %.1f s, %d classes",
             len(lists["train_list"]), len(lists["val_list"]), time.perf_counter() - t0, k)
    write_manifest(manifest, [{"id": ids[stem], "file_name": files[stem][0],
                               "path": os.path.join(paths["images"], files[stem][0]), "width": infos[stem]["width"],
                               "height": infos[stem]["height"], "split": split_of[stem], "hash": infos[stem]["sha256"]}
                              for stem in stems])
    record = {"format": LABELS_FORMAT, "num_classes": k, "classes": names, "ignore_index": ignore,
              "images_folder": paths["images"], "labels_folder": paths["labels"], "tag_table": paths.get("tags"),
              "train_list": paths["train_list"], "val_list": paths["val_list"],
              "train": sorted(ids[s] for s in lists["train_list"]), "val": sorted(ids[s] for s in lists["val_list"]),
              "images": {str(ids[stem]): {"stem": stem, "label": os.path.join(paths["labels"], f"{stem}.png"),
                                          "mask_tags": infos[stem]["mask_tags"],
                                          **({"tags": sorted(table[stem])} if stem in table else {})}
                         for stem in stems}}
    write_json_atomic(labels, record)
    return record


def _stop_on(problems: list[str], what: str, most: int = 20) -> None:
    if problems:
        more = f"\n  ... and {len(problems) - most} more" if len(problems) > most else ""
        raise ValueError(f"{what}: {len(problems)} problems:\n  " + "\n  ".join(problems[:most]) + more)
