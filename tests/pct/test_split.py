"""Strong / weak split, tag table reading and validation (maskless.pct.split)."""

from __future__ import annotations

import numpy as np
import pytest

from maskless.pct.split import read_tag_table, split_ids, tag_matrix, tags_from_label_map, validate_tags


def test_split_by_ratio_and_count_is_deterministic_and_complete():
    """96 ids at ratio 1/8 -> 12 strong, 84 weak, disjoint, covering all; same seed -> same split."""
    ids = list(range(1, 97))
    strong, weak = split_ids(ids, ratio=1 / 8, seed=3)
    assert len(strong) == 12 and len(weak) == 84 and sorted(strong + weak) == ids
    assert split_ids(reversed(ids), ratio=1 / 8, seed=3) == (strong, weak)
    assert split_ids(ids, ratio=1 / 8, seed=4)[0] != strong
    assert split_ids(ids, count=5, seed=0)[0] == split_ids(ids, count=5, seed=0)[0]
    assert split_ids([1, 2, 3], ratio=0.01)[0] != []  # a positive ratio keeps at least one strong image
    assert split_ids([1, 2, 3], count=0) == ([], [1, 2, 3])
    assert split_ids([1, 2, 3], ratio=1.0) == ([1, 2, 3], [])


def test_stratified_split_covers_every_class():
    """Class 3 appears only in image 7; with count 3 the stratified split contains image 7 whatever the seed,
    and every class 1..3 is in the strong set."""
    tags = {i: {1} for i in range(1, 21)}
    tags.update({5: {1, 2}, 9: {2}, 7: {3}})
    for seed in range(5):
        strong, _ = split_ids(tags, count=3, seed=seed, tags=tags)
        assert 7 in strong and len(strong) == 3
        assert set().union(*(tags[i] for i in strong)) == {1, 2, 3}


def test_split_errors():
    with pytest.raises(ValueError, match="exactly one"):
        split_ids([1, 2], ratio=0.5, count=1)
    with pytest.raises(ValueError, match="count"):
        split_ids([1, 2], count=3)
    with pytest.raises(ValueError, match="ratio"):
        split_ids([1, 2], ratio=1.5)
    with pytest.raises(ValueError, match="duplicates"):
        split_ids([1, 1], count=1)
    with pytest.raises(ValueError, match="no tags"):
        split_ids([1, 2], count=1, tags={1: {1}})


def test_tags_from_label_map_skips_background_and_ignore():
    label = np.array([[0, 2, 255], [2, 4, 0]], dtype=np.uint8)
    assert tags_from_label_map(label) == {2, 4}
    assert tags_from_label_map(np.zeros((1, 1), np.uint8)) == frozenset()


def test_read_tag_table(tmp_path):
    """The synthetic generator's format; an image without tags has an empty set."""
    path = tmp_path / "tags.csv"
    path.write_text("image_id,file_name,category_ids\n1,a.png,1 3\n2,b.png,\n")
    assert read_tag_table(path) == {1: {1, 3}, 2: frozenset()}
    path.write_text("image_id,file_name,category_ids\n1,a.png,1\n1,a.png,2\n")
    with pytest.raises(ValueError, match=r"tags.csv line 3: image 1 listed twice"):
        read_tag_table(path)
    path.write_text("image_id,file_name,category_ids\n1,a.png,x\n")
    with pytest.raises(ValueError, match="line 2"):
        read_tag_table(path)
    path.write_text("id,cats\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        read_tag_table(path)


def test_validate_tags_names_image_and_file():
    """Mask class missing from the tags, tag absent from the mask, a tag or mask value outside the classes,
    an image without a row: each a ValueError naming image and file."""
    label = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    kw = dict(tag_file="t.csv", label_files={5: "m/5.png"})
    validate_tags({5: {1, 2}}, 3, labels={5: label}, **kw)  # agrees
    with pytest.raises(ValueError, match=r"image 5: label map m/5.png and tag table t.csv disagree.*\[2\].*\[\]"):
        validate_tags({5: {1}}, 3, labels={5: label}, **kw)
    with pytest.raises(ValueError, match=r"tags absent from the mask \[3\]"):
        validate_tags({5: {1, 2, 3}}, 4, labels={5: label}, **kw)
    with pytest.raises(ValueError, match=r"t.csv: image 5 has class ids \[3\] outside"):
        validate_tags({5: {1, 3}}, 3, **kw)
    with pytest.raises(ValueError, match=r"label map m/5.png \(image 5\) has values \[2\]"):
        validate_tags({5: {1}}, 2, labels={5: label}, **kw)
    with pytest.raises(ValueError, match="image 6 has no row in tag table t.csv"):
        validate_tags({5: {1}}, 3, ids=[5, 6], **kw)


def test_tag_matrix():
    m = tag_matrix([[2], [], [1, 2]], 3)
    assert m.tolist() == [[True, False, True], [True, False, False], [True, True, True]]
    with pytest.raises(ValueError, match="outside"):
        tag_matrix([[3]], 3)


def test_read_tag_table_by_file_name(tmp_path):
    """key="file_name": rows keyed by image stem (VOC names are not numbers); image_id is not needed."""
    path = tmp_path / "tags.csv"
    path.write_text("file_name,category_ids\n2007_000032.jpg,1 15\n2007_000039,\n")
    assert read_tag_table(path, key="file_name") == {"2007_000032": {1, 15}, "2007_000039": frozenset()}
    path.write_text("file_name,category_ids\n2007_000032.jpg,1\n2007_000032,2\n")
    with pytest.raises(ValueError, match=r"line 3: image 2007_000032 listed twice"):
        read_tag_table(path, key="file_name")
    path.write_text("image,category_ids\na,1\n")
    with pytest.raises(ValueError, match="needs the columns file_name and category_ids"):
        read_tag_table(path, key="file_name")
    with pytest.raises(ValueError, match="key must be"):
        read_tag_table(path, key="stem")
