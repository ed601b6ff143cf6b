"""The separate evaluation set (config dataset.eval): validation errors naming the key, and the paths the
instance evaluations read with and without it (maskless.evalset, used by rules/common.smk)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from maskless import evalset
from maskless.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def val(tmp_path) -> dict:
    """A minimal evaluation set on disk: an images folder and a COCO JSON."""
    (tmp_path / "val2017").mkdir()
    ann = tmp_path / "instances_val2017.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    return {"images": str(tmp_path / "val2017"), "annotations": str(ann)}


# ---------------------------------------------------------------- config


def test_eval_set_defaults_to_none_and_fills_its_keys(val):
    assert validate_config({})["dataset"]["eval"] is None
    ev = validate_config({"dataset": {"eval": val}})["dataset"]["eval"]
    assert ev == {**val, "name": None, "max_images": None}


@pytest.mark.parametrize("key", ["images", "annotations"])
def test_eval_set_path_must_be_set(val, key):
    with pytest.raises(ConfigError, match=rf"'dataset\.eval\.{key}' must be set when dataset\.eval is given"):
        validate_config({"dataset": {"eval": {k: v for k, v in val.items() if k != key}}})


@pytest.mark.parametrize("key", ["images", "annotations"])
def test_eval_set_missing_path_is_named(val, tmp_path, key):
    with pytest.raises(ConfigError, match=rf"'dataset\.eval\.{key}': '.*nope' does not exist"):
        validate_config({"dataset": {"eval": {**val, key: str(tmp_path / "nope")}}})


def test_eval_set_images_must_be_a_folder_and_annotations_a_file(val):
    swapped = {"images": val["annotations"], "annotations": val["images"]}
    with pytest.raises(ConfigError) as err:
        validate_config({"dataset": {"eval": swapped}})
    assert "'dataset.eval.images'" in str(err.value) and "is not a folder" in str(err.value)
    assert "'dataset.eval.annotations'" in str(err.value) and "is not a file" in str(err.value)


def test_eval_set_typo_and_bad_name_are_named(val):
    with pytest.raises(ConfigError, match=r"'dataset\.eval\.annotation' is not a known key \(did you mean "
                                          r"'dataset\.eval\.annotations'\?\)"):
        validate_config({"dataset": {"eval": {"images": val["images"], "annotation": val["annotations"]}}})
    with pytest.raises(ConfigError, match=r"'dataset\.eval\.name'"):
        validate_config({"dataset": {"eval": {**val, "name": "val 2017"}}})


def test_image_folder_list(tmp_path):
    a, b = tmp_path / "train2017", tmp_path / "unlabeled2017"
    a.mkdir()
    b.mkdir()
    cfg = validate_config({"dataset": {"kind": "folder", "images": [str(a), str(b)]}})
    assert cfg["dataset"]["images"] == [str(a), str(b)]
    with pytest.raises(ConfigError, match=r"'dataset\.images\[1\]': '.*nope' does not exist"):
        validate_config({"dataset": {"kind": "folder", "images": [str(a), str(tmp_path / "nope")]}})
    with pytest.raises(ConfigError, match=r"'dataset\.images' repeats a folder"):
        validate_config({"dataset": {"kind": "folder", "images": [str(a), str(a)]}})
    with pytest.raises(ConfigError, match=r"'dataset\.images' is a list of folders, which only dataset\.kind "
                                          r"'folder' reads"):
        validate_config({"dataset": {"kind": "coco", "images": [str(a)], "annotations": str(tmp_path)}})


def test_coco_full_config_names_every_path_to_set():
    """configs/coco-full.yaml: its placeholders are the only errors, each naming its key."""
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "config.yaml", REPO / "configs" / "coco-full.yaml")
    keys = set(re.findall(r"config key '([a-z_.\[\]0-9]+)'", str(err.value)))
    assert keys == {"dataset.images[0]", "dataset.images[1]", "dataset.eval.images", "dataset.eval.annotations",
                    "pretrain.weights"}, str(err.value)


# ---------------------------------------------------------------- config logic


def _cfg(eval_set=None, kind="synthetic") -> dict:
    return {"dataset": {"kind": kind, "name": "coco-train", "eval": eval_set}}


def test_without_eval_set_the_training_images_are_scored():
    """dataset.eval null: the training images (which then need ground truth) are scored, under the dataset's name."""
    cfg = _cfg()
    assert evalset.eval_set(cfg) is None and evalset.eval_dataset_name(cfg) == "coco-train"
    assert evalset.instance_eval_on(cfg) and not evalset.instance_eval_on(_cfg(kind="folder"))


def test_with_eval_set_its_own_files_are_scored():
    cfg = _cfg({"name": "coco-val2017", "images": "v", "annotations": "v.json"}, kind="folder")
    assert evalset.eval_set(cfg)["images"] == "v" and evalset.eval_dataset_name(cfg) == "coco-val2017"
    assert evalset.instance_eval_on(cfg)  # an image folder with an evaluation set is scored


def test_evalset_builds_no_path():
    """Issue 13 item 2: the rules hold every results path; the module keeps only the config logic."""
    import inspect

    assert "results/" not in inspect.getsource(evalset)


def test_eval_set_name_defaults_to_the_dataset_name():
    assert evalset.eval_dataset_name(_cfg({"name": None, "images": "v", "annotations": "v.json"})) == "coco-train-eval"

