"""Lazy data in the PCT training loops (maskless.pct.train, "Lazy data"; maskless.pct.labels.LazyMaps): the
start-up reads no image and checks label maps one at a time, errors still name the image and its file,
in-memory data keep their resume fingerprint, and DataLoader workers (num_workers) change nothing."""

from __future__ import annotations

import hashlib
import importlib.util
import weakref
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from maskless import dist
from maskless.config import load_config
from maskless.params import section_params
from maskless.pct import labels as labels_mod
from maskless.pct import train as train_mod
from maskless.data.voc import run_pct_data
from maskless.pct.labels import LazyMaps
from maskless.pct.stage import SplitParams, run_pct_split, run_pct_train, train_params
from maskless.pct.train import PCTParams, SegTrainParams, train_pct, train_supervised
from maskless.pct.train_data import StepBatches, data_fingerprint
from maskless.train import identity

MODEL = dict(num_classes=3, aspp_channels=8, low_channels=8, decoder_channels=8, embed_dim=8)
TINY = dict(batch_size=4, input_size=32, amp=False, model=MODEL)

_spec = importlib.util.spec_from_file_location("fake_voc", Path(__file__).with_name("fake_voc.py"))
fake_voc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_voc)


def _fingerprint_before_keys(images, labels, tags, backbone) -> str:
    """maskless.pct.train_data.data_fingerprint as it was before lazy sequences could describe their items."""
    h = hashlib.sha256()
    for i, img in enumerate(images):
        h.update(f"{i} {img.shape} ".encode())
        h.update(np.ascontiguousarray(img).tobytes())
        lab = labels[i] if labels is not None else None
        h.update(b"none" if lab is None else np.ascontiguousarray(lab).astype(np.uint8).tobytes())
        if tags is not None:
            h.update(f"tags {sorted(int(c) for c in tags[i])}".encode())
    h.update(f"backbone {'random' if backbone is None else '?'}".encode())
    return h.hexdigest()


def test_in_memory_fingerprint_is_the_one_older_resume_states_hold(make_pct_data):
    d = make_pct_data()
    assert data_fingerprint(d["images"], d["labels"], d["tags"], None) == _fingerprint_before_keys(
        d["images"], d["labels"], d["tags"], None)
    labelled = [lab if lab is not None else np.zeros((40, 40), np.uint8) for lab in d["labels"]]
    assert data_fingerprint(d["images"], labelled, None, None) == _fingerprint_before_keys(
        d["images"], labelled, None, None)


class _Decodes:
    """Thunks that count (and may forbid) decodes, and track how many decoded label maps are still alive."""

    def __init__(self):
        self.images, self.labels, self.most_alive = 0, 0, 0
        self._alive: list = []

    def image(self, img):
        self.images += 1
        raise AssertionError("an image was decoded at start-up")

    def label(self, lab):
        self.labels += 1
        self.most_alive = max(self.most_alive, sum(r() is not None for r in self._alive) + 1)
        out = lab.copy()
        self._alive.append(weakref.ref(out))
        return out


def _lazy(d: dict, dec: _Decodes, *, image_keys=None, label_keys=None, paths=None) -> tuple[LazyMaps, LazyMaps]:
    n = len(d["images"])
    images = LazyMaps([partial(dec.image, img) for img in d["images"]],
                      keys=image_keys or [f"rgb sha256 {i:064x}" for i in range(n)],
                      shapes=[img.shape[:2] for img in d["images"]])
    labels = LazyMaps([None if lab is None else partial(dec.label, lab) for lab in d["labels"]],
                      keys=label_keys or [None if lab is None else f"label {i}" for i, lab in enumerate(d["labels"])],
                      paths=paths)
    return images, labels


class _AtLoop(Exception):
    pass


@pytest.fixture
def stop_at_loop(monkeypatch) -> dict:
    """Stop the training functions at the loop's entry, keeping the fingerprint they computed."""
    seen: dict = {}

    def at_loop(run, params, *, fingerprint, **kw):
        seen["fingerprint"] = fingerprint
        raise _AtLoop

    monkeypatch.setattr(train_mod, "_fit", at_loop)
    return seen


def _start(fn, stop: dict, **kw) -> str:
    with pytest.raises(_AtLoop):
        fn(out="x.pt", state_dir="s", device="cpu", **kw)
    return stop.pop("fingerprint")


def test_lazy_start_up_reads_no_image_and_one_label_at_a_time(stop_at_loop, make_pct_data):
    """Described sequences: train_pct and train_supervised check and fingerprint without decoding an image
    (a decode raises), decode each label map they train on exactly once, never holding two at a time; the
    fingerprint follows the content keys."""
    d = make_pct_data()
    d["labels"][2:4] = [np.zeros((40, 40), np.uint8), np.zeros((40, 40), np.uint8)]  # 4 labelled, 2 weak
    d["tags"][2:4] = [[], []]
    dec = _Decodes()
    images, labels = _lazy(d, dec)
    params = PCTParams(**TINY, steps=1)
    fp = _start(train_pct, stop_at_loop, images=images, labels=labels, tags=d["tags"], params=params, threads=1)
    assert dec.images == 0 and dec.labels == 4 and dec.most_alive == 1
    sup = _start(train_supervised, stop_at_loop, images=images, labels=labels, params=SegTrainParams(**TINY),
                 threads=1)
    assert dec.images == 0 and dec.labels == 8 and dec.most_alive == 1
    assert sup != fp
    # The same keys give the same fingerprint; another image key or label key another one.
    again = _lazy(d, _Decodes())
    assert _start(train_pct, stop_at_loop, images=again[0], labels=again[1], tags=d["tags"], params=params) == fp
    keys = [f"rgb sha256 {i:064x}" for i in range(6)]
    other_image = _lazy(d, _Decodes(), image_keys=keys[:5] + ["rgb sha256 " + "f" * 64])
    assert _start(train_pct, stop_at_loop, images=other_image[0], labels=other_image[1], tags=d["tags"],
                  params=params) != fp
    other_label = _lazy(d, _Decodes(), label_keys=["label 0", "label 1", "label 2", "label 3x", None, None])
    assert _start(train_pct, stop_at_loop, images=other_label[0], labels=other_label[1], tags=d["tags"],
                  params=params) != fp


def test_undescribed_lazy_sequences_are_read_one_item_at_a_time(stop_at_loop, make_pct_data):
    """A LazyMaps without keys or shapes falls back to reading its items (images too), with the fingerprint of
    the same data in lists."""
    d = make_pct_data()
    d["labels"][2:4] = [np.zeros((40, 40), np.uint8), np.zeros((40, 40), np.uint8)]  # 4 labelled, 2 weak
    d["tags"][2:4] = [[], []]
    dec = _Decodes()
    images = LazyMaps([partial(np.copy, img) for img in d["images"]])
    labels = LazyMaps([None if lab is None else partial(dec.label, lab) for lab in d["labels"]])
    fp = _start(train_pct, stop_at_loop, images=images, labels=labels, tags=d["tags"], params=PCTParams(**TINY))
    assert fp == _fingerprint_before_keys(d["images"], d["labels"], d["tags"], None)
    assert dec.labels == 8 and dec.most_alive == 1  # checked, then fingerprinted


@pytest.mark.parametrize("threads", [1, 2])
def test_label_errors_name_the_nth_image_and_its_file(stop_at_loop, threads, make_pct_data):
    """A bad label map at position 3 (and another at 4): the error names image 3 and its file, also when
    several are checked at once; a label map of the wrong size names both sizes."""
    d = make_pct_data()
    d["labels"] = [np.zeros((40, 40), np.uint8) for _ in range(6)]
    d["labels"][3] = np.full((40, 40), 7, np.uint8)  # class 7 of 3
    d["labels"][4] = np.full((40, 40), 9, np.uint8)
    paths = [f"/data/labels/{i}.png" for i in range(6)]
    images, labels = _lazy(d, _Decodes(), paths=paths)
    with pytest.raises(ValueError, match=r"label map /data/labels/3\.png \(image 3\) has values \[7\] outside"):
        train_supervised(images=images, labels=labels, params=SegTrainParams(**TINY), out="x", state_dir="s",
                         device="cpu", threads=threads)
    # PCT: a strong image whose mask disagrees with its tags (images 0..3 strong, 4 and 5 weak).
    d = make_pct_data()
    d["labels"] = [np.zeros((40, 40), np.uint8) for _ in range(4)] + [None, None]
    d["labels"][3][:5] = 2
    d["tags"] = [[], [], [], [1], [1], [2]]
    images, labels = _lazy(d, _Decodes(), paths=paths)
    with pytest.raises(ValueError, match=r"image 3: label map /data/labels/3\.png and tag table tags argument "
                                         r"disagree: classes in the mask but not the tags \[2\]"):
        train_pct(images=images, labels=labels, tags=d["tags"], params=PCTParams(**TINY), out="x", state_dir="s",
                  device="cpu", threads=threads)
    d["labels"][3] = np.zeros((30, 40), np.uint8)
    images, labels = _lazy(d, _Decodes(), paths=paths)
    with pytest.raises(ValueError, match=r"label map of image 3 \(/data/labels/3\.png\) is \(30, 40\) but the image "
                                         r"is \(40, 40\)"):
        train_pct(images=images, labels=labels, tags=d["tags"], params=PCTParams(**TINY), out="x", state_dir="s",
                  device="cpu", threads=threads)
    # In-memory lists keep their names (labels[i]).
    d["labels"][3] = np.full((40, 40), 7, np.uint8)
    with pytest.raises(ValueError, match=r"label map labels\[3\] \(image 3\) has values \[7\]"):
        train_supervised(images=d["images"], labels=d["labels"], params=SegTrainParams(**TINY), out="x",
                         state_dir="s", device="cpu", threads=threads)


def test_a_described_image_is_checked_when_a_batch_reads_it(tmp_path, make_pct_data):
    """known_shapes spares the start-up the image check; a float image is still refused, by the batch."""
    d = make_pct_data()
    d["images"][3] = d["images"][3].astype(np.float32)
    images = LazyMaps.concat(d["images"])
    assert images.known_shapes() == [(40, 40)] * 6
    with pytest.raises(ValueError, match="image 3 must be uint8"):
        train_pct(images=images, labels=d["labels"], tags=d["tags"], params=PCTParams(**TINY, steps=6),
                  out=str(tmp_path / "x.pt"), state_dir=str(tmp_path / "s"), device="cpu", threads=1)


def _pct(tmp_path, name: str, data: dict, **kw) -> tuple[dict, dict]:
    params = PCTParams(**TINY, steps=3, checkpoint_every=2, **kw.pop("params", {}))
    summary = train_pct(**data, params=params, out=str(tmp_path / f"{name}.pt"), state_dir=str(tmp_path / f"s{name}"),
                        loss_log=str(tmp_path / f"{name}.csv"), device="cpu", threads=1, **kw)
    return summary, torch.load(tmp_path / f"{name}.pt", weights_only=True)["model"]


def test_num_workers_gives_bit_identical_weights_and_resume(tmp_path, make_pct_data):
    """3 PCT steps with batches made by 2 DataLoader workers equal the in-process run bit for bit (weights,
    BatchNorm statistics, loss log); a run with workers stopped after step 3 (state at 2) and resumed without
    them equals it too (num_workers is not part of the resume key)."""
    d = make_pct_data()
    data = dict(images=LazyMaps.concat(d["images"]), labels=LazyMaps.concat(d["labels"]), tags=d["tags"])
    _, plain = _pct(tmp_path, "plain", data)
    _, workers = _pct(tmp_path, "workers", data, params={"num_workers": 2})
    assert plain.keys() == workers.keys() and all(torch.equal(plain[k], workers[k]) for k in plain)
    assert (tmp_path / "plain.csv").read_text() == (tmp_path / "workers.csv").read_text()
    params = PCTParams(**TINY, steps=3, checkpoint_every=2, num_workers=2)
    stopped = train_pct(**data, params=params, out=str(tmp_path / "r.pt"), state_dir=str(tmp_path / "sr"),
                        device="cpu", threads=1, stop_after=3)
    assert stopped["stopped"]
    summary, resumed = _pct(tmp_path, "r", data)
    assert summary["resumed"] and summary["start_step"] == 2
    assert all(torch.equal(plain[k], resumed[k]) for k in plain)
    assert (tmp_path / "plain.csv").read_text() == (tmp_path / "r.csv").read_text()
    assert "num_workers" in params.to_dict() and "num_workers" not in train_mod.resume_key(
        params.to_dict(), train_mod._RESUME_IGNORED)
    with pytest.raises(ValueError, match="num_workers"):
        SegTrainParams(**TINY, num_workers=-1)


def test_step_batches_keep_their_rank_in_workers(make_pct_data):
    """StepBatches of rank 1 of 2 (captured at construction): a DataLoader worker, outside any process group,
    makes the same batch as this process, and it is rank 1's share (other samples than rank 0's)."""
    d = make_pct_data()
    present = np.ones((6, 3), bool)
    params = PCTParams(**TINY, steps=4)
    make = partial(StepBatches, d["images"], d["labels"], present, [0, 1], [2, 3, 4, 5], 2, 2, params)
    r0, r1 = make(rank=dist.Rank(0, 2)), make(rank=dist.Rank(1, 2))
    loader = torch.utils.data.DataLoader(r1, batch_size=None, sampler=range(1, 4), num_workers=1,
                                         collate_fn=identity)
    for step, b in zip(range(1, 4), loader):
        here = r1[step]
        assert b.n_strong == here.n_strong == 1 and torch.equal(b.images, here.images)
        assert torch.equal(b.labels, here.labels) and torch.equal(b.valid, here.valid)
        assert not torch.equal(b.images, r0[step].images)


def test_stage_sequences_describe_files_without_reading_them(tmp_path, monkeypatch, stop_at_loop):
    """On a fake VOC tree: run_pct_train's images are keyed by the manifest's hashes and shaped by its sizes, its
    label PNGs by their files; the start-up of every kind reads no image; changing one strong label PNG
    changes the fingerprint."""
    tree = fake_voc.make_fake_voc(tmp_path / "voc")
    manifest, labels = str(tmp_path / "pct" / "manifest.parquet"), str(tmp_path / "pct" / "labels.json")
    run_pct_data(data={"images": str(tree["images"]), "labels": str(tree["labels"]),
                       "train_list": str(tree["train_list"]), "val_list": str(tree["val_list"]), "tags": None,
                       "classes": list(fake_voc.VOC_CLASSES), "num_classes": None, "ignore_index": 255},
                 manifest=manifest, labels=labels, threads=1)
    split_path = str(tmp_path / "split.json")
    split = run_pct_split(manifest=manifest, gt=labels, out=split_path, params=SplitParams(count=2))
    seq = labels_mod.lazy_images(manifest, split["strong"])
    rows = {r["id"]: r for r in labels_mod.read_manifest(manifest)}
    assert seq.content_keys() == [f"rgb sha256 {rows[i]['hash']}" for i in split["strong"]]
    assert seq.known_shapes() == [(fake_voc.HEIGHT, fake_voc.WIDTH)] * 2
    assert seq[1:].source_paths() == [rows[split["strong"][1]]["path"]]
    maps, _ = labels_mod.label_maps(labels, split["strong"])
    assert all(k.startswith("label-png classes 21 ignore 255 sha256 ") for k in maps.content_keys())
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    for i in split["weak"]:
        cv2.imwrite(str(pseudo / f"{i}.png"), np.zeros((fake_voc.HEIGHT, fake_voc.WIDTH), np.uint8))

    def no_decode(path):
        raise AssertionError(f"image {path} decoded at start-up")

    monkeypatch.setattr(labels_mod, "load_rgb", no_decode)
    pct = section_params(load_config("config.yaml"), "pct")
    fps = {}
    for kind in ("strong_only", "pct", "retrain"):
        with pytest.raises(_AtLoop):
            run_pct_train(kind=kind, split_path=split_path, manifest=manifest, gt=labels, out="x", state_dir="s",
                          params=train_params(pct, kind=kind, mode="plain", arch="resnet18", num_classes=21, seed=0),
                          backbone=None, pseudo=str(pseudo), device="cpu", threads=1)
        fps[kind] = stop_at_loop.pop("fingerprint")
    assert len(set(fps.values())) == 3
    stem = split["names"][str(split["strong"][0])]
    label_png = Path(tree["labels"]) / f"{stem}.png"
    cv2.imwrite(str(label_png), np.zeros((fake_voc.HEIGHT, fake_voc.WIDTH), np.uint8))
    with pytest.raises(_AtLoop):
        run_pct_train(kind="strong_only", split_path=split_path, manifest=manifest, gt=labels, out="x",
                      state_dir="s", params=train_params(pct, kind="strong_only", mode="plain", arch="resnet18",
                                                         num_classes=21, seed=0),
                      backbone=None, device="cpu", threads=1)
    assert stop_at_loop.pop("fingerprint") != fps["strong_only"]
