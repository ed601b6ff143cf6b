"""Config validation: defaults, typos, wrong types, `--config` strings, cross-field checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskless.config import ConfigError, load_config, load_schema, validate_config

from maskless.params import section_params

REPO = Path(__file__).resolve().parents[1]


def test_embedded_default_is_valid_and_filled():
    cfg = load_config(REPO / "config.yaml")
    assert cfg["dataset"]["kind"] == "synthetic"
    # A key absent from config.yaml comes from the schema's default.
    assert cfg["freemask"]["scales"] == [1.0, 0.5, 0.25]
    assert cfg["pretrain"]["temperature"] == 0.2


def test_empty_config_gets_every_default():
    cfg = validate_config({})
    assert cfg["experiment"] == "synthetic"
    assert cfg["freemask"]["top_k"] == 20
    assert cfg["pretrain"]["dense_weight"] == 0.5


def test_typo_names_the_key_and_suggests():
    with pytest.raises(ConfigError, match=r"'pretrain.stpes' is not a known key \(did you mean 'pretrain.steps'\?\)"):
        validate_config({"pretrain": {"stpes": 10}})


def test_top_level_typo():
    with pytest.raises(ConfigError, match=r"'freemsk' is not a known key \(did you mean 'freemask'\?\)"):
        validate_config({"freemsk": {}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"'freemask.top_k'"):
        validate_config({"freemask": {"top_k": "many"}})


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validate_config({"pretrain": {"steps": 0}, "freemask": {"nms_kernel": "box"}})
    assert "pretrain.steps" in str(err.value) and "freemask.nms_kernel" in str(err.value)


def test_command_line_strings_are_coerced():
    """`--config` nested values arrive as strings (DESIGN.md, Known traps)."""
    cfg = validate_config({"pretrain": {"steps": "12", "amp": "false"}, "freemask": {"scales": "[1.0, 0.5]"}})
    assert cfg["pretrain"]["steps"] == 12 and cfg["pretrain"]["amp"] is False
    assert cfg["freemask"]["scales"] == [1.0, 0.5]


def test_coco_needs_images_and_annotations():
    with pytest.raises(ConfigError) as err:
        validate_config({"dataset": {"kind": "coco"}})
    assert "dataset.images" in str(err.value) and "dataset.annotations" in str(err.value)


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(ConfigError, match="dataset.images"):
        validate_config({"dataset": {"kind": "folder", "images": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match="pretrain.weights"):
        validate_config({"pretrain": {"weights": str(tmp_path / "nope.pt")}})


def test_min_above_max_is_an_error():
    with pytest.raises(ConfigError, match="synthetic.scale_range"):
        validate_config({"synthetic": {"scale_range": [0.5, 0.2]}})


def test_config_file_must_be_a_mapping(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(p)


def _walk(node, path=()):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, (*path, key))


def test_schema_documents_every_key_and_forbids_unknown_ones():
    for path, node in _walk(load_schema()):
        if path:
            assert node.get("description"), f"schema key {'.'.join(path)} has no description"
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{'.'.join(path)} allows unknown keys"


def test_queue_shorter_than_a_batch_is_an_error():
    with pytest.raises(ConfigError, match="pretrain.queue_size"):
        validate_config({"pretrain": {"queue_size": 8, "batch_size": 16}})


def test_batches_must_split_evenly_over_the_training_processes():
    """3 processes: pretrain 16 (shares 6/5/5) and solo 8 fail; PCT 12 -> halves of 6 split into 2 + 2 + 2."""
    with pytest.raises(ConfigError) as e:
        validate_config({"train_processes": 3, "pretrain": {"batch_size": 16}, "solo": {"batch_size": 8},
                         "pct": {"train": {"batch_size": 12}}})
    msg = str(e.value)
    assert "'pretrain.batch_size' does not split into 3 equal shares" in msg and "'solo.batch_size'" in msg
    assert "'pct.train.batch_size'" not in msg
    validate_config({"train_processes": 2, "pretrain": {"batch_size": 16}, "solo": {"batch_size": 8},
                     "pct": {"train": {"batch_size": 8}}})


def test_solo_geometry_levels_must_match_the_grids():
    with pytest.raises(ConfigError, match=r"solo.geometry.levels' has 2 entries but solo.geometry.grids has 3"):
        validate_config({"solo": {"geometry": {"levels": ["p3", "p4"]}}})


def test_solo_widths_must_divide_by_the_groupnorm_groups():
    with pytest.raises(ConfigError, match=r"solo.model.kernel_dim' \(48\) is not divisible"):
        validate_config({"solo": {"model": {"kernel_dim": 48}}})


def test_solo_section_becomes_training_params():
    """The model's grids and levels come from the geometry, arch from pretrain, emb_dim from Free Mask."""
    from maskless.solo.train import params_from_config

    cfg = load_config(REPO / "config.yaml")
    p = params_from_config(section_params(cfg, "solo"), arch=cfg["pretrain"]["arch"], emb_dim=cfg["freemask"]["embedding_dim"],
                           seed=3)
    assert p.model.grids == tuple(cfg["solo"]["geometry"]["grids"]) and p.model.levels == ("p3", "p4", "p5")
    assert p.model.arch == "resnet18" and p.model.emb_dim == 128 and p.seed == 3
    assert p.solo_geometry().scale_ranges == ((1.0, 48.0), (24.0, 96.0), (48.0, 2048.0))
    assert p.loss.pair_warmup == cfg["solo"]["loss"]["pair_warmup"] and p.steps == cfg["solo"]["steps"]


def test_whole_number_floats_become_ints_where_the_key_takes_an_integer():
    # JSON Schema counts 4.0 as an integer; Python slices, ranges and wildcards do not (issue 17).
    cfg = validate_config({"pretrain": {"steps": 4.0}, "freemask": {"shard_size": 4.0}, "solo": {"steps": 3.0},
                           "selftrain": {"rounds": 1.0}, "exemplar": {"counts": [2.0, 8]}})
    values = (cfg["pretrain"]["steps"], cfg["freemask"]["shard_size"], cfg["solo"]["steps"],
              cfg["selftrain"]["rounds"], *cfg["exemplar"]["counts"])
    assert values == (4, 4, 3, 1, 2, 8) and all(type(v) is int for v in values)
    # A number key keeps its float; a fractional value for an integer key is refused, naming the key.
    assert type(validate_config({"pretrain": {"lr": 1.0}})["pretrain"]["lr"]) is float
    with pytest.raises(ConfigError, match=r"'freemask.shard_size': 4.5 is not of type 'integer'"):
        validate_config({"freemask": {"shard_size": 4.5}})


def test_exponent_without_a_dot_is_a_number():
    # PyYAML (YAML 1.1) reads 1e-3 as the string '1e-3'; where the key takes a number it is one.
    import yaml

    assert yaml.safe_load("lr: 1e-3") == {"lr": "1e-3"}
    cfg = validate_config(yaml.safe_load("pretrain: {lr: 1e-3}\npct: {ratios: [5e-2]}"))
    assert cfg["pretrain"]["lr"] == 0.001 and cfg["pct"]["ratios"] == [0.05]
    with pytest.raises(ConfigError, match=r"'pretrain.lr': 'fast' is not of type 'number'"):
        validate_config({"pretrain": {"lr": "fast"}})
    # A string key stays a string.
    assert validate_config({"experiment": "1e3"})["experiment"] == "1e3"


def test_stego_and_freemask_backbones_and_their_levels(tmp_path):
    """stego.backbone / freemask.backbone: 'pretrain' (a ResNet), a file or a named weight; the level must
    be the family's (a ViT named weight has 'tokens' only); each error names its key."""
    ckpt = tmp_path / "vit.pth"
    ckpt.write_bytes(b"")
    ok = validate_config({"stego": {"backbone": str(ckpt), "layer": "tokens"},
                          "freemask": {"backbone": "dino_vits8", "feature_level": "tokens"}})
    assert ok["stego"]["backbone"] == str(ckpt) and validate_config({})["freemask"]["backbone"] == "pretrain"
    with pytest.raises(ConfigError, match=r"'stego.layer' is 'tokens', a ViT level, but stego.backbone 'pretrain'"):
        validate_config({"stego": {"layer": "tokens"}})
    with pytest.raises(ConfigError, match=r"'freemask.feature_level' is 'res5', but freemask.backbone 'dino_vitb8'"):
        validate_config({"freemask": {"backbone": "dino_vitb8"}})
    with pytest.raises(ConfigError, match=r"'stego.backbone': 'nowhere.pth' is neither 'pretrain', a file nor"):
        validate_config({"stego": {"backbone": "nowhere.pth"}})


def test_from_config_builds_nested_dataclasses_and_names_bad_keys():
    """maskless.params.from_config: a nested dict becomes its field's dataclass; an unknown key, a key given
    twice and a value the dataclass refuses are ConfigErrors naming the config key."""
    from maskless.params import from_config
    from maskless.exemplar.pool import PoolParams
    from maskless.freemask import FreeMaskParams

    pool = from_config(PoolParams, {"select": {"count": 3}, "pivots": 2}, "exemplar", pivot_seed=5)
    assert pool.select.count == 3 and pool.pivots == 2 and pool.pivot_seed == 5
    assert type(pool.select).__name__ == "SelectParams"
    with pytest.raises(ConfigError, match=r"\['exemplar.select.cuont'\]"):
        from_config(PoolParams, {"select": {"cuont": 3}}, "exemplar")
    with pytest.raises(ConfigError, match=r"\['freemask.top_k'\].*given twice"):
        from_config(FreeMaskParams, {"top_k": 3}, "freemask", top_k=4)
    with pytest.raises(ConfigError, match=r"'freemask'.*min_maskness"):
        from_config(FreeMaskParams, {"min_maskness": 2.0}, "freemask")
