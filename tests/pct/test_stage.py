"""The PCT workflow stages (maskless.pct.stage): split, config -> params, pseudo labels on disk, and the
per-ratio table of PCT's rows (maskless.eval.metrics.ratio_table)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from maskless.config import load_config
from maskless.params import section_params
from maskless.eval.metrics import metric_rows, metrics_markdown
from maskless.pct.budget import ratio_name
from maskless.pct.labels import read_pseudo
from maskless.pct.stage import SplitParams, make_split, read_split, train_params
from maskless.pct.train import PCTParams, SegTrainParams

TAGS = {i: frozenset({1 + i % 3}) for i in range(1, 41)}  # 40 images, classes 1, 2, 3


def test_held_out_set_is_the_same_for_every_ratio_and_never_trained_on():
    splits = [make_split(list(TAGS), TAGS, SplitParams(ratio=r, eval_fraction=0.25)) for r in (0.1, 0.5)]
    assert splits[0]["eval"] == splits[1]["eval"] and len(splits[0]["eval"]) == 10
    for s in splits:
        parts = [set(s["eval"]), set(s["strong"]), set(s["weak"])]
        assert sum(map(len, parts)) == 40 and set().union(*parts) == set(TAGS)  # disjoint and complete
    assert [len(s["strong"]) for s in splits] == [3, 15]  # ratio of the 30 training images
    # Stratified: three strong images cover the three classes.
    assert set().union(*(TAGS[i] for i in splits[0]["strong"])) == {1, 2, 3}


def test_split_depends_on_seed_only():
    a = make_split(list(TAGS), TAGS, SplitParams(ratio=0.2, seed=3))
    assert a == make_split(list(reversed(list(TAGS))), TAGS, SplitParams(ratio=0.2, seed=3))
    assert a["eval"] != make_split(list(TAGS), TAGS, SplitParams(ratio=0.2, seed=4))["eval"]


def test_split_errors_name_the_config_key():
    with pytest.raises(ValueError, match="leaves no weak image"):
        make_split(list(TAGS), TAGS, SplitParams(ratio=0.999))
    # ratio 1 is the oracle's split (config oracles): every training image strong, none weak
    full = make_split(list(TAGS), TAGS, SplitParams(ratio=1.0))
    assert full["weak"] == [] and sorted(full["strong"] + full["eval"]) == sorted(TAGS)
    with pytest.raises(ValueError, match="pct.eval_fraction"):
        SplitParams(ratio=0.1, eval_fraction=1.0)
    with pytest.raises(ValueError, match="at least 3 images"):
        make_split([1, 2], TAGS, SplitParams(ratio=0.5))


def test_read_split_rejects_other_json(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"strong": [1]}))
    with pytest.raises(ValueError, match="not a PCT split"):
        read_split(str(path))


def test_config_to_params_by_kind_and_mode():
    pct = section_params(load_config("config.yaml"), "pct")
    pct = dict(pct, train=dict(pct["train"], steps=7, retrain_steps=3, p2h_weight=0.5))
    p = train_params(pct, kind="pct", mode="ctr", arch="resnet18", num_classes=4, seed=2)
    assert isinstance(p, PCTParams) and p.use_contextrast and p.p2h_weight == 0.5 and p.steps == 7
    assert p.model.num_classes == 4 and p.model.arch == "resnet18" and p.seed == 2
    assert p.contextrast.bane_fraction == pct["contextrast_params"]["bane_fraction"]
    s = train_params(pct, kind="strong_only", mode="plain", arch="resnet18", num_classes=4, seed=2)
    assert type(s) is SegTrainParams and not s.use_contextrast and s.steps == 7
    assert train_params(pct, kind="retrain", mode="plain", arch="resnet18", num_classes=4, seed=2).steps == 3
    assert s.num_workers == 0  # a workflow key: the stage passes pct.train.num_workers itself
    assert train_params(pct, kind="pct", mode="plain", arch="resnet18", num_classes=4, seed=2,
                        num_workers=3).num_workers == 3
    with pytest.raises(ValueError, match="unknown"):
        train_params(pct, kind="pct", mode="both", arch="resnet18", num_classes=4, seed=2)


def test_config_rejects_odd_pct_batch_and_repeated_ratio():
    with pytest.raises(ValueError, match="pct.train.batch_size"):
        load_config("config.yaml", overrides={"pct": {"train": {"batch_size": 5}}})
    with pytest.raises(ValueError, match="pct.ratios"):
        load_config("config.yaml", overrides={"pct": {"ratios": [0.1, 0.1]}})


def test_read_pseudo_names_a_missing_file(tmp_path):
    cv2.imwrite(str(tmp_path / "3.png"), np.full((4, 5), 2, np.uint8))
    (lab,) = read_pseudo(str(tmp_path), [3])
    assert lab.dtype == np.uint8 and lab.shape == (4, 5) and (lab == 2).all()
    with pytest.raises(ValueError, match="7.png"):
        read_pseudo(str(tmp_path), [3, 7])


def test_ratio_names():
    assert ratio_name(0.125) == "0.125" and ratio_name(1) == "1"


RATIO_GOLDEN = """\
### semi/weak mIoU per label ratio (held-out images)

| experiment | model | contextrast | dataset | 0.05 | 0.25 |
|:--|:--|:--|:--|--:|--:|
| e | strong_only | no | d | 10.0 | 30.0 |
| e | pct_hybrid | no | d | 20.0 | - |
| e | pct_hybrid | yes | d | 21.0 | - |
"""


def test_ratio_table_golden():
    rows = []
    for model, mode, budget, miou in (("pct_hybrid", "ctr", "0.05", 21.0), ("strong_only", "plain", "0.25", 30.0),
                                      ("pct_hybrid", "plain", "0.05", 20.0), ("strong_only", "plain", "0.05", 10.0)):
        rows += metric_rows({"semantic": {"mIoU": miou, "Acc": 90.0}}, experiment="e", method="pct", variant=model,
                            budget=budget, mode=mode, dataset="d", seed=0)
    text = metrics_markdown(rows)
    assert text.split("\n### semi/weak Acc")[0] == RATIO_GOLDEN
    assert "### semantic" not in text  # per-ratio rows are not repeated in the plain table
    assert metrics_markdown(list(reversed(rows))) == text


def test_split_by_count_and_the_instances_source(tmp_path):
    """pct.counts on the dataset-ground-truth source: eval_fraction held out, then exactly `count` strong;
    a count leaving no weak image names pct.counts. An instances JSON is not a user-file source."""
    from maskless.pct.labels import is_file_source

    s = make_split(list(TAGS), TAGS, SplitParams(count=4, eval_fraction=0.25))
    assert len(s["eval"]) == 10 and len(s["strong"]) == 4 and len(s["weak"]) == 26
    assert s["eval"] == make_split(list(TAGS), TAGS, SplitParams(ratio=0.5))["eval"]  # the same held-out set
    with pytest.raises(ValueError, match="pct.counts"):
        make_split(list(TAGS), TAGS, SplitParams(count=30))
    gt = tmp_path / "instances.json"
    gt.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    assert not is_file_source(str(gt))
