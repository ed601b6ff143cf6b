"""Configuration: defaults from the JSON schema, type coercion of `--config k=v` strings, validation.

Snakemake merges config.yaml, any `--configfile` and `--config k=v` before the workflow sees them; the
Snakefile calls `validate_config` on the merged result, so a typo or a wrong type anywhere stops the run
with one message naming every offending key (DESIGN.md, Known traps: nested values from `--config` arrive
as strings, so validation happens after merging and coerces them first).
"""

from __future__ import annotations

import copy
import difflib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from maskless.models.registry import entries as weight_entries

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names every offending key."""


@lru_cache(maxsize=1)
def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _types(node: dict) -> list[str]:
    t = node.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _coerce(value: Any, node: dict) -> Any:
    """A value as the schema's type where it is one in another spelling.

    Strings from `--config key=value` are parsed as YAML; a string such as "1e-3" (YAML 1.1, which PyYAML
    reads, wants "1.0e-3" for a float) becomes a float where the key takes a number; a whole-number float
    (4.0) becomes an int where the key takes an integer and not a number (JSON Schema counts 4.0 as an
    integer, Python's slices and ranges do not)."""
    types = set(_types(node))
    if isinstance(value, str) and "string" not in types:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(value, str) and "number" in types:
            try:
                value = float(value)
            except ValueError:
                return value
    if (isinstance(value, float) and value.is_integer() and "integer" in types and "number" not in types):
        return int(value)
    return value


def _fill(cfg: Any, node: dict) -> Any:
    """Apply defaults and coercion recursively, following the schema's `properties` and `items`."""
    cfg = _coerce(cfg, node)
    items = node.get("items")
    if isinstance(cfg, list) and isinstance(items, dict):
        return [_fill(v, items) for v in cfg]
    props = node.get("properties")
    if not props or not isinstance(cfg, dict):
        return cfg
    out = dict(cfg)
    for key, sub in props.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _fill(out[key], sub)
    return out


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(err: jsonschema.ValidationError, schema: dict) -> str:
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        msgs = []
        for k in extra:
            near = difflib.get_close_matches(k, allowed, n=1)
            hint = f" (did you mean {'.'.join([*map(str, err.path), near[0]])!r}?)" if near else ""
            msgs.append(f"config key {_key([*err.path, k])!r} is not a known key{hint}")
        return "; ".join(msgs)
    return f"config key {_key(err.path)!r}: {err.message}"


def _cross_checks(cfg: dict) -> list[str]:
    errors = []
    ds = cfg["dataset"]
    if ds["kind"] in ("coco", "folder") and not ds.get("images"):
        errors.append(f"config key 'dataset.images' must be set when dataset.kind is {ds['kind']!r}")
    if ds["kind"] == "coco" and not ds.get("annotations"):
        errors.append("config key 'dataset.annotations' must be set when dataset.kind is 'coco'")
    for key in ("images", "annotations"):
        path = ds.get(key)
        if ds["kind"] != "synthetic" and isinstance(path, str) and path and not os.path.exists(path):
            errors.append(f"config key 'dataset.{key}': {path!r} does not exist")
    errors += _dataset_list_and_eval_checks(ds)
    if cfg["oracles"] and ds["kind"] not in ("synthetic", "coco"):
        errors.append(f"config key 'oracles' needs ground truth to train the oracles on: dataset.kind "
                      f"{ds['kind']!r} has none (synthetic or coco)")
    syn = cfg["synthetic"]
    for key in ("objects_per_image", "scale_range"):
        lo, hi = syn[key]
        if lo > hi:
            errors.append(f"config key 'synthetic.{key}': min {lo} is larger than max {hi}")
    pre = cfg["pretrain"]
    if pre["queue_size"] < pre["batch_size"]:
        errors.append(f"config key 'pretrain.queue_size' ({pre['queue_size']}) must be at least "
                      f"pretrain.batch_size ({pre['batch_size']}): one batch would overwrite itself in the queue")
    errors += _solo_checks(cfg["solo"])
    eec = cfg["exemplar"]["eec"]
    if eec["beta"] > eec["alpha"]:
        errors.append(f"config key 'exemplar.eec.beta' ({eec['beta']}) must not exceed exemplar.eec.alpha "
                      f"({eec['alpha']})")
    st = cfg["stego"]
    if st["train"]["knn_top"] > st["knn_k"]:
        errors.append(f"config key 'stego.train.knn_top' ({st['train']['knn_top']}) exceeds stego.knn_k "
                      f"({st['knn_k']}), the neighbours kept")
    counts = cfg["exemplar"]["counts"]
    if len(set(counts)) != len(counts):
        errors.append(f"config key 'exemplar.counts' repeats a count: {counts}")
    pct = cfg["pct"]
    for key in ("ratios", "counts", "contextrast"):
        if len(set(pct[key])) != len(pct[key]):
            errors.append(f"config key 'pct.{key}' repeats a value: {pct[key]}")
    if pct["enabled"] and not pct["ratios"] and not pct["counts"]:
        errors.append("config keys 'pct.ratios' and 'pct.counts' are both empty: give at least one label ratio or "
                      "count (or set pct.enabled false)")
    errors += _pct_data_checks(pct.get("data"))
    n = cfg["train_processes"]
    # Data-parallel training splits each global batch into equal shares (PCT: each half, strong and weak).
    shares = {"pretrain.batch_size": cfg["pretrain"]["batch_size"], "solo.batch_size": cfg["solo"]["batch_size"],
              "pct.train.batch_size": pct["train"]["batch_size"] // 2}
    errors += [f"config key '{key}' does not split into {n} equal shares, one per training process (config key "
               f"train_processes; PCT splits each half of its batch)" for key, share in shares.items() if share % n]
    if pct["train"]["batch_size"] % 2:
        errors.append(f"config key 'pct.train.batch_size' ({pct['train']['batch_size']}) must be even: PCT batches "
                      "are half strong, half weak")
    weights, extra = pre.get("weights"), (cfg.get("weights") or {}).get("extra")
    named = weight_entries(extra)
    if weights and not os.path.isfile(weights) and weights not in named:
        errors.append(f"config key 'pretrain.weights': {weights!r} is neither a file nor a named weight "
                      f"(maskless/models/registry.py, config weights.extra): {sorted(named)}")
    elif weights in named and named[weights].get("arch") not in (None, pre["arch"]):
        arch = named[weights]["arch"]
        fix = f"set pretrain.arch: {arch}" if arch.startswith("resnet") else "the pretrain stage takes a ResNet"
        errors.append(f"config key 'pretrain.arch' is {pre['arch']} but pretrain.weights {weights!r} hold a "
                      f"{arch}: {fix}")
    errors += _backbone_checks(cfg, named)
    return errors


def _backbone_checks(cfg: dict, named: dict) -> list[str]:
    """stego.backbone and freemask.backbone: 'pretrain' (a ResNet: a ResNet level), a file or a named weight
    (whose registry arch, when given, says the family: ViT files have the one level 'tokens'). A file's own
    levels are checked when the stage loads it."""
    errors = []
    for section, level_key in (("stego", "layer"), ("freemask", "feature_level")):
        value, level = cfg[section]["backbone"], cfg[section][level_key]
        arch = "resnet" if value == "pretrain" else (named.get(value) or {}).get("arch") or ""
        if value != "pretrain" and value not in named and not os.path.isfile(value):
            errors.append(f"config key '{section}.backbone': {value!r} is neither 'pretrain', a file nor a named "
                          f"weight (maskless/models/registry.py, config weights.extra): {sorted(named)}")
        elif arch.startswith("resnet") and level == "tokens":
            errors.append(f"config key '{section}.{level_key}' is 'tokens', a ViT level, but {section}.backbone "
                          f"{value!r} is a ResNet (levels res2..res5)")
        elif arch.startswith("vit") and level != "tokens":
            errors.append(f"config key '{section}.{level_key}' is {level!r}, but {section}.backbone {value!r} is a "
                          "ViT, whose one feature level is 'tokens'")
    return errors


def _dataset_list_and_eval_checks(ds: dict) -> list[str]:
    """dataset.images as a list of folders (kind folder only) and the evaluation set dataset.eval."""
    errors = []
    images = ds.get("images")
    if isinstance(images, list):
        if ds["kind"] != "folder":
            errors.append(f"config key 'dataset.images' is a list of folders, which only dataset.kind 'folder' "
                          f"reads (kind is {ds['kind']!r}): give one folder")
        elif len(set(images)) != len(images):
            errors.append(f"config key 'dataset.images' repeats a folder: {images}")
        else:
            errors += [f"config key 'dataset.images[{i}]': {p!r} {_missing(p, 'folder')}" for i, p in enumerate(images)
                       if not os.path.isdir(p)]
    ev = ds.get("eval")
    if ev is not None:
        for key, what, kind, exists in (("images", "folder of the evaluation images", "folder", os.path.isdir),
                                        ("annotations", "COCO instances JSON of the evaluation images", "file",
                                         os.path.isfile)):
            path = ev.get(key)
            if not path:
                errors.append(f"config key 'dataset.eval.{key}' must be set when dataset.eval is given (the {what})")
            elif not exists(path):
                errors.append(f"config key 'dataset.eval.{key}': {path!r} {_missing(path, kind)}")
    return errors


def _missing(path: str, kind: str) -> str:
    return "does not exist" if not os.path.exists(path) else f"is not a {kind}"


def _pct_data_checks(data: dict | None) -> list[str]:
    """pct.data: its files and folders exist, classes or num_classes given (and agreeing), ignore_index not a class."""
    if data is None:
        return []
    errors = []
    for key, kind, exists in (("images", "folder", os.path.isdir), ("labels", "folder", os.path.isdir),
                              ("train_list", "file", os.path.isfile), ("val_list", "file", os.path.isfile),
                              ("tags", "file", os.path.isfile)):
        path = data.get(key)
        if path is not None and not exists(path):
            errors.append(f"config key 'pct.data.{key}': {path!r} {_missing(path, kind)}")
    names, k = data.get("classes"), data.get("num_classes")
    if names is None and k is None:
        errors.append("config key 'pct.data': give pct.data.classes (names, background first) or pct.data.num_classes")
    elif names is not None and k is not None and len(names) != k:
        errors.append(f"config key 'pct.data.num_classes' ({k}) differs from the {len(names)} names of "
                      "pct.data.classes")
    elif names is not None and len(set(names)) != len(names):
        errors.append(f"config key 'pct.data.classes' repeats a name: {names}")
    n = len(names) if names is not None else k
    if n is not None and 0 <= data["ignore_index"] < n:
        errors.append(f"config key 'pct.data.ignore_index' ({data['ignore_index']}) is a class id (0..{n - 1})")
    return errors


def _solo_checks(solo: dict) -> list[str]:
    errors = []
    geo = solo["geometry"]
    n = len(geo["grids"])
    for key in ("levels", "strides", "scale_ranges"):
        if len(geo[key]) != n:
            errors.append(f"config key 'solo.geometry.{key}' has {len(geo[key])} entries but solo.geometry.grids "
                          f"has {n}: one per level")
    for i, (lo, hi) in enumerate(geo["scale_ranges"]):
        if lo > hi:
            errors.append(f"config key 'solo.geometry.scale_ranges[{i}]': lower {lo} is larger than upper {hi}")
    model = solo["model"]
    for key in ("head_channels", "kernel_dim", "mask_branch_channels"):
        if model[key] % model["gn_groups"]:
            errors.append(f"config key 'solo.model.{key}' ({model[key]}) is not divisible by solo.model.gn_groups "
                          f"({model['gn_groups']}) (GroupNorm)")
    lo, hi = solo["scale_jitter"]
    if lo > hi:
        errors.append(f"config key 'solo.scale_jitter': min {lo} is larger than max {hi}")
    return errors


def image_count_checks(cfg: dict, n: int) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a filled config on a dataset of `n` training images: the checks that need only
    the config and the image count, so that they stop a run before any job (the workflow knows n at DAG time
    for synthetic and folder datasets and for any finished ingest) or at ingest, before a later stage would."""
    errors, warnings = [], []
    st = cfg["stego"]
    if st["enabled"] and n < st["knn_k"] + 1:
        errors.append(f"config key 'stego.knn_k' ({st['knn_k']}) needs at least knn_k + 1 = {st['knn_k'] + 1} "
                      f"images (each image's neighbours exclude itself), the dataset has {n}: lower stego.knn_k or "
                      "set stego.enabled: false")
    if cfg["freemask"]["enabled"]:
        errors += [f"config key 'exemplar.counts': {c} exemplars asked for but the dataset has {n} images"
                   for c in cfg["exemplar"]["counts"] if c > n]
    pct = cfg["pct"]
    if pct["enabled"] and pct["data"] is None and cfg["dataset"]["kind"] != "folder":
        if n < 3:
            errors.append(f"config key 'pct.enabled': PCT needs at least 3 images (held-out, strong, weak), the "
                          f"dataset has {n}: set pct.enabled: false")
        else:
            from maskless.pct.split import held_out_count

            train = n - held_out_count(n, pct["eval_fraction"])
            errors += [f"config key 'pct.counts': {c} strong images of {train} training images ({n} images less "
                       f"pct.eval_fraction held out) leaves no weak image; PCT needs both"
                       for c in pct["counts"] if c >= train]
    if n < 2 and not cfg["pretrain"].get("weights"):
        warnings.append(f"the dataset has {n} image: DenseCL (pretrain.steps {cfg['pretrain']['steps']}) learns "
                        "from one image's crops alone; give pretrain.weights or more images")
    return errors, warnings


def check_image_count(cfg: dict, n: int | None, where: str) -> list[str]:
    """Raise ConfigError for image_count_checks' errors (n images, counted from `where`); return its warnings."""
    if n is None:
        return []
    errors, warnings = image_count_checks(cfg, n)
    if errors:
        raise ConfigError(f"invalid configuration for the {n} images of {where}:\n  - " + "\n  - ".join(errors))
    return warnings


def validate_config(config: dict) -> dict:
    """Return the config with defaults filled in; raise ConfigError naming every bad key."""
    schema = load_schema()
    cfg = _fill(dict(config), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.path])
    messages = [_describe(e, schema) for e in errors]
    if not messages:
        messages = _cross_checks(cfg)
    if messages:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(messages))
    return cfg


def _read_config_files(paths) -> list[dict]:
    """Each YAML file's mapping (an empty file is {}); anything but a mapping is an error naming the file."""
    files = []
    for p in paths:
        with open(p) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping, not {type(data).__name__}")
        files.append(data)
    return files


def _merged(files: list[dict]) -> dict:
    merged: dict = {}
    for data in files:
        merged = deep_merge(merged, data)
    return merged


def load_config(*paths: str | os.PathLike, overrides: dict | None = None) -> dict:
    """Merge YAML files (later ones win, nested dicts merged) and overrides, then validate."""
    return validate_config(deep_merge(_merged(_read_config_files(paths)), overrides or {}))


def bench_config(*paths: str | os.PathLike) -> dict:
    """The merged config of `paths` (the first one the base, as snakemake loads config.yaml first) with the
    base file's `dataset` and `pretrain.weights`: what a benchmark needs from a config is its sizes and widths,
    so a config whose data paths exist only on a cluster (configs/coco-full.yaml) is measured anywhere."""
    raw = _read_config_files(paths)
    merged = _merged(raw)
    merged["dataset"] = raw[0]["dataset"]
    merged.setdefault("pretrain", {})["weights"] = raw[0].get("pretrain", {}).get("weights")
    return validate_config(merged)


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
