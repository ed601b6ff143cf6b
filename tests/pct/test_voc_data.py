"""PCT on user files (pct.data, PASCAL VOC layout): the data check (run_pct_data), the list-based split,
tags from PNG masks or a tag table, label budgets by count, config errors, and the stages end to end on a
fake VOC tree (maskless.data.voc, maskless.pct.labels, maskless.pct.stage)."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from maskless.config import ConfigError, load_config
from maskless.params import section_params
from maskless.pct.budget import budget_name, budget_text, parse_budget
from maskless.data.voc import run_pct_data
from maskless.pct.labels import LazyMaps, is_file_source, label_maps
from maskless.pct.stage import (SplitParams, make_list_split, read_split, run_pct_eval, run_pct_pseudo, run_pct_split,
                                run_pct_train, train_params)

_spec = importlib.util.spec_from_file_location("fake_voc", Path(__file__).with_name("fake_voc.py"))
fake_voc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_voc)

# Three training images and one held-out image, their classes written by hand (255 borders are no tag).
HAND = {
    "2007_000032": ("train", [(1, 4, 20, 4, 30), (15, 22, 38, 10, 40)], False),  # aeroplane + person
    "2007_000039": ("train", [(15, 10, 30, 10, 30)], True),  # person, palette PNG
    "2007_000063": ("train", [], False),  # background only
    "2007_000033": ("val", [(7, 6, 34, 6, 42)], True),  # car, palette PNG
}
HAND_TAGS = {"2007_000032": [1, 15], "2007_000039": [15], "2007_000063": [], "2007_000033": [7]}


def _data(tree: dict, **kw) -> dict:
    return {"images": str(tree["images"]), "labels": str(tree["labels"]), "train_list": str(tree["train_list"]),
            "val_list": str(tree["val_list"]), "tags": None, "classes": list(fake_voc.VOC_CLASSES),
            "num_classes": None, "ignore_index": 255, **kw}


def _build(tmp_path, spec=None, **kw) -> tuple[dict, dict, str, str]:
    tree = fake_voc.make_fake_voc(tmp_path / "voc", spec)
    manifest, labels = str(tmp_path / "pct" / "manifest.parquet"), str(tmp_path / "pct" / "labels.json")
    record = run_pct_data(data=_data(tree, **kw), manifest=manifest, labels=labels, threads=2)
    return tree, record, manifest, labels


def test_tags_derived_from_png_masks_by_hand(tmp_path):
    """Grey and palette PNGs alike: each image's tags are its mask's classes, 0 and the 255 borders left out;
    ids 1..N by sorted stem; the manifest's split column follows the lists."""
    tree, record, manifest, labels = _build(tmp_path, HAND)
    stems = sorted(HAND)
    assert {rec["stem"]: rec["mask_tags"] for rec in record["images"].values()} == HAND_TAGS
    assert [record["images"][str(i)]["stem"] for i in range(1, 5)] == stems
    assert record["num_classes"] == 21 and record["val"] == [stems.index("2007_000033") + 1]
    rows = pq.read_table(manifest).to_pylist()
    assert [(r["id"], r["file_name"], r["split"], r["height"], r["width"]) for r in rows] == [
        (n, f"{s}.jpg", HAND[s][0], fake_voc.HEIGHT, fake_voc.WIDTH) for n, s in enumerate(stems, start=1)]
    assert is_file_source(labels)
    # The palette PNG reads as its indices (class 15, border 255), not as its colours.
    maps, k = label_maps(labels, [stems.index("2007_000039") + 1])
    np.testing.assert_array_equal(maps[0], tree["maps"]["2007_000039"])
    assert k == 21 and maps[0].dtype == np.uint8

    split = run_pct_split(manifest=manifest, gt=labels, out=str(tmp_path / "split.json"),
                          params=SplitParams(count=1, seed=0))
    assert read_split(str(tmp_path / "split.json")) == split
    assert split["tag_source"] == "masks" and split["count"] == 1 and "ratio" not in split
    assert {split["names"][str(i)]: split["tags"][str(i)] for i in range(1, 5)} == HAND_TAGS
    assert split["eval"] == record["val"] and len(split["strong"]) == 1 and len(split["weak"]) == 2


def test_list_split_never_trains_on_val_and_sizes_by_ratio_or_count():
    train, val = list(range(1, 41)), list(range(41, 51))
    tags = {i: frozenset({1 + i % 4}) for i in train}
    for params, n_strong in ((SplitParams(ratio=0.25), 10), (SplitParams(count=3), 3), (SplitParams(count=39), 39),
                             (SplitParams(ratio=0.01), 1)):
        split = make_list_split(train, val, tags, params)
        assert split["eval"] == val and len(split["strong"]) == n_strong
        assert sorted(split["strong"] + split["weak"]) == train  # disjoint, complete, no val image
        assert split == make_list_split(list(reversed(train)), val, tags, params)  # order of the lists
    assert set().union(*(tags[i] for i in make_list_split(train, val, tags, SplitParams(count=4))["strong"])) == {
        1, 2, 3, 4}  # stratified: four strong images cover the four classes
    with pytest.raises(ValueError, match=r"'pct.counts': 40 strong images of 40 training images"):
        make_list_split(train, val, tags, SplitParams(count=40))
    with pytest.raises(ValueError, match=r"'pct.ratios': ratio 0.999"):
        make_list_split(train, val, tags, SplitParams(ratio=0.999))
    with pytest.raises(ValueError, match=r"images \[40\] are in both"):
        make_list_split(train, [40, 41], tags, SplitParams(count=3))


def test_paper_counts_are_exact_where_ratios_are_not():
    """The paper's label counts of VOC's 10582 training images: a count is exact; the nearest 4-digit ratio
    misses 1464 (round(0.1383 * 10582) = 1463)."""
    train = list(range(1, 10583))
    for n in (92, 183, 366, 732, 1464):
        assert len(make_list_split(train, [0], {}, SplitParams(count=n, stratified=False))["strong"]) == n
    assert len(make_list_split(train, [0], {}, SplitParams(ratio=0.1383, stratified=False))["strong"]) == 1463


def test_budgets():
    assert parse_budget("ratio0.125") == (0.125, None) and parse_budget("count92") == (None, 92)
    assert budget_name(ratio=0.125) == "ratio0.125" and budget_name(count=92) == "count92"
    assert budget_text("ratio0.125") == "0.125" and budget_text("count1464") == "1464"
    assert SplitParams.from_budget("count7", seed=3) == SplitParams(count=7, seed=3)
    for bad in ("0.125", "count", "count1.5", "ratio"):
        with pytest.raises(ValueError, match="neither"):
            parse_budget(bad)
    with pytest.raises(ValueError, match="exactly one"):
        SplitParams(ratio=0.1, count=3)
    with pytest.raises(ValueError, match="pct.counts"):
        SplitParams(count=0)


def test_tag_table_disagreeing_with_a_strong_mask_names_the_image(tmp_path):
    """A strong image's table row must equal its mask's classes: the error names the image (its stem), the
    table and the label file. A weak image's row may differ: weak images keep the table's tags."""
    tree = fake_voc.make_fake_voc(tmp_path / "voc", HAND)
    table = tmp_path / "tags.csv"
    rows = dict(HAND_TAGS)

    def write(suffix=""):
        table.write_text("file_name,category_ids\n" + "".join(f"{s}{suffix},{' '.join(map(str, c))}\n"
                                                              for s, c in rows.items()))

    write(".jpg")  # file names or stems alike
    manifest, labels = str(tmp_path / "m.parquet"), str(tmp_path / "labels.json")
    run_pct_data(data=_data(tree, tags=str(table)), manifest=manifest, labels=labels)
    params = SplitParams(count=1, seed=0)
    split = run_pct_split(manifest=manifest, gt=labels, out=str(tmp_path / "s.json"), params=params)
    assert split["tag_source"] == "table"
    strong = split["names"][str(split["strong"][0])]
    weak = split["names"][str(split["weak"][0])]
    # A weak image's row differing from its mask is its tags.
    rows[weak] = [3]
    write()
    run_pct_data(data=_data(tree, tags=str(table)), manifest=manifest, labels=labels)
    split = run_pct_split(manifest=manifest, gt=labels, out=str(tmp_path / "s.json"), params=params)
    assert split["tags"][str(split["weak"][0])] == [3]
    # A strong image's row differing from its mask is an error naming the image and both files.
    rows[strong] = rows[strong] + [5]
    write()
    run_pct_data(data=_data(tree, tags=str(table)), manifest=manifest, labels=labels)
    label_png = tree["labels"] / f"{strong}.png"
    with pytest.raises(ValueError, match=rf"image {strong}: label map {label_png} and tag table {table} disagree"
                                         r".*tags absent from the mask \[5\]"):
        run_pct_split(manifest=manifest, gt=labels, out=str(tmp_path / "s.json"), params=params)
    # A training image without a row, and a class id outside the classes, are named too.
    table.write_text("file_name,category_ids\n2007_000032,1 15\n")
    with pytest.raises(ValueError, match=r"'pct.data.tags'.*no row for 2 images of the train list"):
        run_pct_data(data=_data(tree, tags=str(table)), manifest=manifest, labels=labels)
    table.write_text("file_name,category_ids\n" + "".join(f"{s},21\n" for s in HAND))
    with pytest.raises(ValueError, match=r"image 2007_0000\d\d has class ids \[21\] outside"):
        run_pct_data(data=_data(tree, tags=str(table)), manifest=manifest, labels=labels)


def test_missing_or_bad_files_are_named(tmp_path):
    tree = fake_voc.make_fake_voc(tmp_path / "voc", HAND)
    out = dict(manifest=str(tmp_path / "m.parquet"), labels=str(tmp_path / "l.json"))
    missing = tree["labels"] / "2007_000039.png"
    missing.rename(tmp_path / "kept.png")
    (tree["images"] / "2007_000063.jpg").unlink()
    with pytest.raises(ValueError, match="2 problems") as err:
        run_pct_data(data=_data(tree), **out)
    msg = str(err.value)
    assert f"config key 'pct.data.labels': label file {missing} not found for image '2007_000039' of " \
           f"pct.data.train_list ({tree['train_list']})" in msg
    assert "config key 'pct.data.images': no file 2007_000063.<jpg" in msg and str(tree["images"]) in msg
    (tmp_path / "kept.png").rename(missing)
    fake_voc.make_fake_voc(tmp_path / "voc", HAND)
    # A label map of another size than its image; a value outside the classes.
    import cv2

    cv2.imwrite(str(tree["labels"] / "2007_000032.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(tree["labels"] / "2007_000063.png"), np.full((fake_voc.HEIGHT, fake_voc.WIDTH), 30, np.uint8))
    with pytest.raises(ValueError) as err:
        run_pct_data(data=_data(tree), **out)
    assert f"label map {tree['labels'] / '2007_000032.png'} is 8x8 but image" in str(err.value)
    assert f"{tree['labels'] / '2007_000063.png'}: class ids [30] outside [0, 21)" in str(err.value)
    fake_voc.make_fake_voc(tmp_path / "voc", HAND)
    # An image in both lists; a list that does not exist.
    Path(tree["val_list"]).write_text("2007_000033\n2007_000032\n")
    with pytest.raises(ValueError, match=r"'pct.data.train_list'.*'pct.data.val_list'.*both name 1 images"):
        run_pct_data(data=_data(tree), **out)
    with pytest.raises(ValueError, match=r"config key 'pct.data.train_list': '/nonexistent/train.txt' does not"):
        run_pct_data(data=_data(tree, train_list="/nonexistent/train.txt"), **out)


def _voc_config(tree: dict, **data) -> dict:
    return {"pct": {"ratios": [], "counts": [2], "data": {**{k: str(tree[k]) for k in (
        "images", "labels", "train_list", "val_list")}, "num_classes": 21, **data}}}


def test_config_validation_names_the_keys(tmp_path):
    tree = fake_voc.make_fake_voc(tmp_path / "voc", HAND)
    cfg = load_config("config.yaml", overrides=_voc_config(tree))
    assert cfg["pct"]["data"]["ignore_index"] == 255 and cfg["pct"]["data"]["tags"] is None
    assert load_config("config.yaml")["pct"]["data"] is None and load_config("config.yaml")["pct"]["counts"] == []
    cases = [
        (_voc_config(tree, images=str(tmp_path / "nope")), rf"'pct.data.images': '{tmp_path / 'nope'}' does not exist"),
        (_voc_config(tree, labels=str(tree["train_list"])), r"'pct.data.labels': .* is not a folder"),
        (_voc_config(tree, tags=str(tmp_path / "tags.csv")), r"'pct.data.tags': .*tags.csv' does not exist"),
        (_voc_config(tree, num_classes=None), r"'pct.data': give pct.data.classes"),
        (_voc_config(tree, classes=["bg", "a"]), r"'pct.data.num_classes' \(21\) differs from the 2 names"),
        (_voc_config(tree, ignore_index=3), r"'pct.data.ignore_index' \(3\) is a class id"),
        (_voc_config(tree, imgs="x"), r"'pct.data.imgs' is not a known key"),
        ({"pct": {"data": {"images": str(tree["images"])}}}, r"'pct.data': 'labels' is a required property"),
        ({"pct": {"ratios": [], "counts": []}}, r"'pct.ratios' and 'pct.counts' are both empty"),
        ({"pct": {"counts": [5, 5]}}, r"'pct.counts' repeats a value"),
        ({"pct": {"counts": [0]}}, r"'pct.counts.0'"),
    ]
    for overrides, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            load_config("config.yaml", overrides=overrides)


def test_voc_config_is_valid_with_its_paths_set(tmp_path):
    """configs/voc.yaml validates once its /path/to placeholders point at a VOC tree and a checkpoint, and
    fails naming the keys while they do not."""
    import yaml

    text = (Path(__file__).parents[2] / "configs" / "voc.yaml").read_text()
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", overrides=yaml.safe_load(text))
    for key in ("pretrain.weights", "pct.data.images", "pct.data.labels", "pct.data.train_list",
                "pct.data.val_list", "dataset.images"):
        assert f"'{key}'" in str(err.value)
    tree = fake_voc.make_fake_voc(tmp_path, HAND)
    (tmp_path / "r101.pth").write_bytes(b"")
    text = text.replace("/path/to/VOCdevkit", str(tmp_path / "VOCdevkit")).replace(
        "/path/to/resnet101_imagenet.pth", str(tmp_path / "r101.pth"))
    assert "/path/to" not in text
    cfg = load_config("config.yaml", overrides=yaml.safe_load(text))
    assert cfg["pct"]["counts"] == [92, 183, 366, 732, 1464] and cfg["pct"]["ratios"] == []
    assert cfg["pct"]["data"]["classes"] == fake_voc.VOC_CLASSES and cfg["pretrain"]["arch"] == "resnet101"
    assert Path(cfg["pct"]["data"]["train_list"]) == tree["train_list"]


def test_lazy_maps_read_when_used_slice_concat_and_pickle():
    calls = []
    seq = LazyMaps([lambda: calls.append(0) or 0, None, lambda: calls.append(2) or 2])
    assert len(seq) == 3 and calls == []
    assert seq[2] == 2 and seq[1] is None and calls == [2]
    assert list(seq[1:]) == [None, 2] and isinstance(seq[1:], LazyMaps)
    both = LazyMaps.concat(seq[:1], [np.ones(2), None])
    assert len(both) == 3 and both[2] is None and (both[1] == 1).all()
    from functools import partial

    lazy = LazyMaps.concat(LazyMaps([partial(int, "7")]), [None])
    assert list(pickle.loads(pickle.dumps(lazy))) == [7, None]


def test_stages_end_to_end_on_a_fake_voc_tree(tmp_path):
    """pct_data -> split at count 2 -> strong-only, PCT pair -> pseudo labels -> retrain -> evaluation, on
    images and labels read from the VOC layout: rows "<model>@2", scored on the val list only."""
    tree, record, manifest, labels = _build(tmp_path)
    split_path = str(tmp_path / "count2" / "split.json")
    split = run_pct_split(manifest=manifest, gt=labels, out=split_path, params=SplitParams.from_budget("count2"))
    assert split["eval"] == record["val"] and len(split["strong"]) == 2 and len(split["weak"]) == 4
    pct = section_params(load_config("config.yaml"), "pct")
    pct = dict(pct, model=dict(pct["model"], aspp_channels=8, low_channels=8, decoder_channels=8, embed_dim=8),
               train=dict(pct["train"], steps=1, batch_size=2, input_size=32, amp=False))
    base = tmp_path / "count2" / "plain"
    models = {}
    for kind in ("strong_only", "pct", "retrain"):
        if kind == "retrain":
            n = run_pct_pseudo(split_path=split_path, manifest=manifest, model=models["pct"],
                               out_dir=str(base / "pseudo"), input_size=32, scales=[1.0], flip=False, device="cpu",
                               threads=1)
            assert n == 4 and len(list((base / "pseudo").glob("*.png"))) == 4
        models[kind] = str(base / kind / "model.pt")
        run_pct_train(kind=kind, split_path=split_path, manifest=manifest, gt=labels,
                      params=train_params(pct, kind=kind, mode="plain", arch="resnet18", num_classes=21, seed=0),
                      out=models[kind], state_dir=str(tmp_path / "state" / kind), backbone=None,
                      pseudo=str(base / "pseudo") if kind == "retrain" else None, device="cpu", threads=1)
    rows = run_pct_eval(split_path=split_path, manifest=manifest, gt=labels, models=models, pseudo=str(base / "pseudo"),
                        out_metrics=str(tmp_path / "metrics.parquet"), out_table=str(tmp_path / "metrics.md"),
                        experiment="voc", dataset="fake-voc", budget=budget_text("count2"), mode="plain", seed=0,
                        input_size=32, scales=[1.0], flip=False, device="cpu", threads=1)
    assert {(r["method"], r["variant"], r["budget"], r["mode"], r["seed"]) for r in rows} == {
        ("pct", m, "2", "plain", 0) for m in ("strong_only", "pct_hybrid", "pct_pseudo", "pct_labels", "pct_retrain")}
    assert all(0.0 <= r["value"] <= 100.0 for r in rows if r["value"] == r["value"])
    assert "### semi/weak mIoU per label ratio" in (tmp_path / "metrics.md").read_text()
    assert json.loads((tmp_path / "pct" / "labels.json").read_text())["val"] == split["eval"]
    # The oracle's evaluation (rule pct_eval_oracle): the strong-only net alone, no pseudo labels, one row,
    # the same value as the family's strong-only row.
    alone = run_pct_eval(split_path=split_path, manifest=manifest, gt=labels, models={"strong_only": models["strong_only"]},
                         pseudo=None, out_metrics=str(tmp_path / "oracle.parquet"), out_table=str(tmp_path / "o.md"),
                         experiment="voc", dataset="fake-voc", budget="1", mode="plain", seed=0, input_size=32,
                         scales=[1.0], flip=False, device="cpu", threads=1)
    assert {(r["variant"], r["budget"], r["mode"]) for r in alone} == {("strong_only", "1", "plain")}
    family = {r["metric"]: r["value"] for r in rows if r["variant"] == "strong_only"}
    np.testing.assert_equal({r["metric"]: r["value"] for r in alone}, family)  # NaN-aware
