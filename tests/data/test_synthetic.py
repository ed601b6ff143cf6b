"""The synthetic generator: determinism, exact and consistent ground truth, placement rules, validation."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from maskless.data.synthetic import (
    MIN_VISIBLE_AREA,
    SyntheticParams,
    annotation,
    category_styles,
    generate,
    main,
    paste,
    place_objects,
)

SMALL = dict(num_images=5, height=64, width=80, objects_per_image=(3, 6), touching_prob=0.5, seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    summary = generate(str(out), SyntheticParams(**SMALL))
    return out, summary, json.loads((out / "instances.json").read_text())


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    out, _, _ = dataset
    generate(str(tmp_path / "again"), SyntheticParams(**SMALL))
    assert _files(out) == _files(tmp_path / "again")
    generate(str(tmp_path / "other"), SyntheticParams(**{**SMALL, "seed": 8}))
    first, other = _files(out), _files(tmp_path / "other")
    assert first["instances.json"] != other["instances.json"]
    assert all(first[f"images/{i:06d}.png"] != other[f"images/{i:06d}.png"] for i in range(1, 6))


def test_layout_and_coco_fields(dataset):
    out, summary, coco = dataset
    assert summary["images"] == 5 and summary["annotations"] == len(coco["annotations"]) > 0
    assert [im["id"] for im in coco["images"]] == [1, 2, 3, 4, 5]
    assert coco["images"][0] == {"id": 1, "file_name": "000001.png", "width": 80, "height": 64}
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
    assert coco["categories"][0]["name"] == "cat1_stripes"
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    img = cv2.imread(str(out / "images" / "000001.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 80, 3) and img.dtype == np.uint8
    assert SyntheticParams(**json.loads((out / "params.json").read_text())) == SyntheticParams(**SMALL)


def _check_against_semantic_maps(out, coco, shape):
    """Per instance: RLE area == its pixels, all of them labelled with its category in the semantic map,
    bbox == the mask's extent; per image: instances are disjoint and cover exactly the non-zero pixels."""
    for im in coco["images"]:
        semantic = cv2.imread(str(out / "semantic" / im["file_name"]), cv2.IMREAD_UNCHANGED)
        assert semantic.shape == shape and semantic.dtype == np.uint8
        covered = np.zeros(semantic.shape, np.int32)
        for ann in (a for a in coco["annotations"] if a["image_id"] == im["id"]):
            assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert ann["area"] == mask.sum() >= MIN_VISIBLE_AREA
            assert (semantic[mask] == ann["category_id"]).all()
            assert ann["bbox"] == mask_utils.toBbox(ann["segmentation"]).tolist()
            covered += mask
        assert covered.max() <= 1
        np.testing.assert_array_equal(covered > 0, semantic > 0)


def test_annotations_match_semantic_maps(dataset):
    out, _, coco = dataset
    _check_against_semantic_maps(out, coco, (64, 80))


def test_heavy_occlusion_drops_small_remnants_consistently(tmp_path):
    """occlusion 1.0 lets objects be buried: remnants under MIN_VISIBLE_AREA are removed before painting,
    and the ground truth stays consistent."""
    params = SyntheticParams(num_images=3, height=48, width=48, objects_per_image=(10, 10), occlusion=1.0,
                             scale_range=(0.4, 0.6))
    summary = generate(str(tmp_path), params)
    assert summary["dropped_small"] > 0
    _check_against_semantic_maps(tmp_path, json.loads((tmp_path / "instances.json").read_text()), (48, 48))


def test_tags_list_the_annotated_categories(dataset):
    out, _, coco = dataset
    with open(out / "tags.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image_id", "file_name", "category_ids"]
    for row in rows:
        cats = sorted({a["category_id"] for a in coco["annotations"] if a["image_id"] == int(row["image_id"])})
        assert row["category_ids"] == " ".join(map(str, cats))
        assert row["file_name"] == f"{int(row['image_id']):06d}.png"


def test_annotation_of_a_hand_made_mask():
    """Pixels rows 1-2, cols 2-4 of a 5x6 mask: area 2 * 3 = 6, bbox [x=2, y=1, w=3, h=2]."""
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    ann = annotation(9, 3, 2, mask)
    assert (ann["id"], ann["image_id"], ann["category_id"], ann["area"]) == (9, 3, 2, 6)
    assert ann["bbox"] == [2, 1, 3, 2] and ann["segmentation"]["size"] == [5, 6]
    np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)


def test_paste_crops_at_the_border():
    """A 3x3 patch with its corner at (-1, -1): only patch[1:, 1:] lands, at image[0:2, 0:2]."""
    patch = np.ones((3, 3), bool)
    patch[1, 1] = False
    out = paste(patch, -1, -1, (4, 4))
    expected = np.zeros((4, 4), bool)
    expected[0:2, 0:2] = [[False, True], [True, True]]
    np.testing.assert_array_equal(out, expected)
    assert not paste(patch, 10, 10, (4, 4)).any()


@pytest.mark.parametrize("limit", [0.0, 0.3])
def test_occlusion_limit_is_respected(limit):
    params = SyntheticParams(height=96, width=96, objects_per_image=(8, 8), occlusion=limit,
                             scale_range=(0.3, 0.5), touching_prob=0.0)
    for seed in range(4):
        objects, _ = place_objects(params, category_styles(params), np.random.default_rng(seed))
        for obj in objects:
            assert 1 - obj["visible"].sum() / obj["full"].sum() <= limit + 1e-9


def test_touching_objects_touch_without_overlapping():
    """One category, touching_prob 1: the second object sits next to the first. No overlap, and a 3x3
    dilation of it reaches the first (the slide stops one step of at most 1 px per axis before contact)."""
    params = SyntheticParams(height=128, width=128, num_categories=1, objects_per_image=(2, 2),
                             scale_range=(0.2, 0.25), small_object_prob=0.0, touching_prob=1.0, occlusion=0.0)
    for seed in range(5):
        objects, unplaced = place_objects(params, category_styles(params), np.random.default_rng(seed))
        assert unplaced == 0 and len(objects) == 2
        first, second = objects[0]["full"], objects[1]["full"]
        assert not (first & second).any()
        assert (cv2.dilate(second.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & first).any()


def test_no_objects_gives_empty_ground_truth(tmp_path):
    summary = generate(str(tmp_path), SyntheticParams(num_images=2, height=16, width=16, objects_per_image=(0, 0)))
    assert summary["annotations"] == 0
    assert cv2.imread(str(tmp_path / "semantic" / "000002.png"), cv2.IMREAD_UNCHANGED).max() == 0
    assert (tmp_path / "tags.csv").read_text().splitlines()[1:] == ["1,000001.png,", "2,000002.png,"]


def test_flat_colours_without_texture(tmp_path):
    """texture_strength 0 mixes the two tones at a constant 0.5: the only variation inside an object is the
    blur at its edge and the noise (std 0.012 * 255 = 3 grey levels), far below a texture's contrast."""
    params = SyntheticParams(num_images=1, height=64, width=64, objects_per_image=(1, 1), scale_range=(0.6, 0.6),
                             small_object_prob=0.0, texture_strength=0.0)
    generate(str(tmp_path), params)
    img = cv2.imread(str(tmp_path / "images" / "000001.png")).astype(float)
    mask = cv2.erode(cv2.imread(str(tmp_path / "semantic" / "000001.png"), 0), np.ones((5, 5), np.uint8)) > 0
    assert mask.sum() > 100 and img[mask].std(axis=0).max() < 6


BAD_PARAMS = [
    ("num_images", 0), ("num_images", True), ("height", 8), ("width", 32.5), ("num_categories", 0),
    ("num_categories", 256), ("objects_per_image", (3, 2)), ("objects_per_image", (1,)),
    ("objects_per_image", (-1, 2)), ("scale_range", (0.0, 0.5)), ("scale_range", (0.5, 0.4)),
    ("scale_range", (0.2, 1.5)), ("small_object_prob", 1.5), ("occlusion", -0.1), ("touching_prob", math.nan),
    ("texture_strength", -1.0), ("texture_strength", "strong"), ("seed", -1),
]


@pytest.mark.parametrize("field,value", BAD_PARAMS)
def test_param_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"synthetic.{field}"):
        SyntheticParams(**{field: value})


def test_lists_from_a_config_become_tuples():
    params = SyntheticParams(objects_per_image=[1, 2], scale_range=[0.1, 0.2])
    assert params.objects_per_image == (1, 2) and params.scale_range == (0.1, 0.2)


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path / "d"), "--num-images", "2", "--height", "32", "--width", "40", "--seed", "3",
                 "--objects-per-image", "1", "2"]) == 0
    saved = json.loads((tmp_path / "d" / "params.json").read_text())
    assert (saved["seed"], saved["width"], saved["objects_per_image"]) == (3, 40, [1, 2])
    assert len(list((tmp_path / "d" / "images").iterdir())) == 2
    with pytest.raises(SystemExit):
        main([str(tmp_path / "e"), "--occlusion", "2"])
    assert "synthetic.occlusion" in capsys.readouterr().err
