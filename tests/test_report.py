"""Report figures (maskless.report) of a small synthetic results folder built here, its files named
explicitly (as the workflow's report_inputs does): which figures exist for which inputs, what the mask strips
show, index.json, skipped stages, determinism, atomic replacement."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskless import figure_layout, viz
from maskless.report import CATEGORIES, STRIP_HEIGHT, ReportInputs, build_report_figures

H, W = 48, 64  # every synthetic image (non-square, so the STEGO square crop differs from the image)
IDS = [5, 2, 9, 7]  # manifest ids, given unsorted: the sample is the first ids in id order
PAD = 4  # viz.side_by_side's default pad


def _blob(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), 90, np.uint8) + rng.integers(0, 40, (H, W, 3), dtype=np.uint8)
    img[_blob(20, 20, 8)] = (200, 60, 60)
    return img


def _store(folder: Path, per_image: dict[int, list[tuple[np.ndarray, float]]]) -> None:
    from maskless.store import ImageMasks, build_index
    from maskless.store_writer import write_shard

    images = [ImageMasks(i, H, W, np.array([m for m, _ in ms], bool).reshape(-1, H, W), [s for _, s in ms])
              for i, ms in per_image.items()]
    write_shard(str(folder / "shards" / "0.zarr"), images, embedding_dim=4)
    build_index([str(folder / "shards" / "0.zarr")], str(folder / "index.parquet"))


def _loss(path: Path, losses: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("step,loss,lr\n" + "".join(f"{i + 1},{v},0.1\n" for i, v in enumerate(losses)))


def _models(root: Path) -> None:
    """A random resnet18 backbone, a STEGO head/probe checkpoint and a small PCT SegNet checkpoint."""
    import torch

    from maskless.models.resnet import build_resnet
    from maskless.models.weights import save_backbone
    from maskless.pct.model import SegNet, SegNetParams
    from maskless.stego.model import ClusterProbe, StegoHead

    torch.manual_seed(0)
    save_backbone(str(root / "pretrain" / "backbone.pt"), build_resnet("resnet18"), "resnet18", {})
    head, cluster = StegoHead(128, 8, 0.1), ClusterProbe(8, 3)
    (root / "stego").mkdir(exist_ok=True)
    # no params record beside it: input size 32 and layer res3 are inferred from feature_hw and the channels
    torch.save({"kind": "stego", "head": head.state_dict(), "cluster": cluster.state_dict(), "linear": None,
                "params": {"in_channels": 128, "code_dim": 8, "dropout": 0.1, "n_clusters": 3, "num_classes": 3,
                           "feature_hw": [4, 4]}}, root / "stego" / "model.pt")
    params = SegNetParams(num_classes=3, aspp_channels=8, low_channels=8, decoder_channels=8, embed_dim=8)
    state = SegNet(params).state_dict()
    # the figure uses the first one found by ratio, then mode: ratio 0.25 before 0.5 whatever the mode
    for ratio, mode in (("0.5", "ctr"), ("0.25", "plain")):
        out = root / "pct" / f"ratio{ratio}" / mode / "retrain" / "model.pt"
        out.parent.mkdir(parents=True)
        torch.save({"kind": "segnet", "model": state, "params": {"input_size": 32, "model": params.to_dict()}}, out)


def build_results(root: Path) -> Path:
    """results/<experiment>/ with every stage the report draws, small."""
    from maskless.data.manifest import write_manifest
    from maskless.eval.metrics import metric_rows, write_metrics
    from maskless.exemplar.pool import ExemplarPool

    (root / "data").mkdir(parents=True)
    records = []
    for i in IDS:
        path = root / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(_image(i), cv2.COLOR_RGB2BGR))
        records.append({"id": i, "file_name": path.name, "path": str(path), "width": W, "height": H,
                        "split": "train", "hash": "x"})
    write_manifest(root / "data" / "manifest.parquet", records)
    poly = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    gt = {"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in IDS],
          "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "segmentation": poly, "area": 400.0,
                           "bbox": [10, 10, 20, 20], "iscrowd": 0},
                          {"id": 2, "image_id": 5, "category_id": 2, "segmentation": poly, "area": 400.0,
                           "bbox": [10, 10, 20, 20], "iscrowd": 0}]}
    (root / "data" / "instances_gt.json").write_text(json.dumps(gt))
    # Free Mask: image 2 has two masks, image 5 none, image 7 one (and 9 none)
    _store(root / "freemask", {2: [(_blob(20, 20, 8), 0.9), (_blob(35, 50, 6), 0.5)], 5: [],
                               7: [(_blob(10, 40, 5), 0.7)], 9: []})
    # SOLO round 0: image 2 one confident mask; image 5 only a mask below the 0.3 score threshold
    _store(root / "solo" / "freesolo" / "round0", {2: [(_blob(20, 20, 9), 0.8)], 5: [(_blob(20, 20, 9), 0.2)],
                                                   7: [], 9: []})
    _loss(root / "pretrain" / "loss.csv", [2.0, 1.5, 1.2, 1.0])
    _loss(root / "solo" / "freesolo" / "round0" / "loss.csv", [3.0, 2.5, 2.0])
    _loss(root / "stego" / "loss.csv", [0.5, -0.1, -0.3])  # STEGO's loss goes negative: linear scale
    inst = metric_rows({"segm": {"AP": 10.0, "AP50": 20.0, "AR100": 30.0}, "bbox": {"AP": 11.0}},
                       experiment="t", method="freemask", round=0, dataset="d", seed=0)
    inst += metric_rows({"segm": {"AP": 12.0, "AP50": 25.0, "AR100": 33.0}},
                        experiment="t", method="freesolo", round=0, dataset="d", seed=0)
    write_metrics(root / "eval" / "freemask" / "metrics.parquet", inst[:4])
    write_metrics(root / "eval" / "freesolo" / "round0" / "metrics.parquet", inst[4:])
    write_metrics(root / "eval" / "stego" / "metrics.parquet",
                  metric_rows({"semantic": {"mIoU": 19.0, "Acc": 60.0}}, experiment="t", method="stego",
                              variant="cluster", mode="plain", dataset="d", seed=0))
    for ratio in ("0.25", "0.5"):
        for mode, model in (("plain", "strong_only"), ("ctr", "pct_retrain")):
            write_metrics(root / "eval" / "pct" / f"ratio{ratio}" / mode / "metrics.parquet",
                          metric_rows({"semantic": {"mIoU": 30.0 + len(model) + 4 * (mode == "ctr")}},
                                      experiment="t", method="pct", variant=model, budget=ratio, mode=mode,
                                      dataset="d", seed=0))
    crops = np.stack([_image(1)[:32, :32], _image(2)[:32, :32]])
    masks = np.stack([_blob(20, 20, 8)[:32, :32]] * 2)
    ExemplarPool(crops, masks, [2, 7], [[0, 0, 32, 32]] * 2, ["grabcut", "solo"], [0.5, 0.6]).save(
        str(root / "exemplar" / "n2" / "pool"))
    _models(root)
    return root


def inputs_of(root: Path, **changes) -> ReportInputs:
    """The report inputs of everything build_results makes under root (the workflow's report_inputs names a
    run's files the same way), with `changes` (ReportInputs fields) applied."""
    def at(*parts) -> str:
        return str(root.joinpath(*parts))

    budgets = (("ratio0.5", "ctr"), ("ratio0.25", "plain"))
    inputs = ReportInputs(
        manifest=at("data", "manifest.parquet"), ground_truth=at("data", "instances_gt.json"),
        freemask=at("freemask", "index.parquet"),
        solo=[("freesolo", 0, at("solo", "freesolo", "round0", "index.parquet"))],
        backbone=at("pretrain", "backbone.pt"), stego=at("stego", "model.pt"),
        pct=[(b, m, at("pct", b, m, "retrain", "model.pt")) for b, m in budgets],
        pretrain_loss=at("pretrain", "loss.csv"),
        solo_losses=[("freesolo", 0, at("solo", "freesolo", "round0", "loss.csv"))],
        stego_loss=at("stego", "loss.csv"),
        metrics=[at("eval", "freemask", "metrics.parquet"), at("eval", "freesolo", "round0", "metrics.parquet"),
                 at("eval", "stego", "metrics.parquet")],
        pct_metrics=[(f"ratio{r}", m, at("eval", "pct", f"ratio{r}", m, "metrics.parquet"))
                     for r in ("0.25", "0.5") for m in ("plain", "ctr")],
        pools=[(2, at("exemplar", "n2", "pool"))])
    return dataclasses.replace(inputs, **changes)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return build_results(tmp_path_factory.mktemp("results") / "exp")


@pytest.fixture(scope="module")
def full(results, tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("report") / "figures"
    return out, build_report_figures(inputs_of(results), str(out), n_images=3)


def _png(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _panels(strip: np.ndarray, widths: list[int]) -> list[np.ndarray]:
    """The image areas (under the titles) of a side_by_side strip whose columns have these widths."""
    out, x = [], PAD
    for w in widths:
        out.append(strip[PAD + figure_layout.TITLE_HEIGHT:PAD + figure_layout.TITLE_HEIGHT + STRIP_HEIGHT, x:x + w])
        x += w + PAD
    return out


EXPECTED = {"masks_2.png", "masks_5.png", "masks_7.png", "semantic_2.png", "semantic_5.png", "semantic_7.png",
            "loss_pretrain.png", "loss_solo_freesolo_round0.png", "loss_stego.png", "metrics_instance.png",
            "metrics_semantic.png", "metrics_semi.png", "exemplars_n2.png"}


def test_expected_files_and_index(full):
    out, figures = full
    assert {p.name for p in out.iterdir()} == EXPECTED | {"index.json"}
    assert [f["file"] for f in figures] == [
        "masks_2.png", "masks_5.png", "masks_7.png", "semantic_2.png", "semantic_5.png", "semantic_7.png",
        "loss_pretrain.png", "loss_solo_freesolo_round0.png", "loss_stego.png",
        "metrics_instance.png", "metrics_semantic.png", "metrics_semi.png", "exemplars_n2.png"]
    assert json.loads((out / "index.json").read_text()) == figures
    for f in figures:
        assert set(f) == {"file", "category", "caption"} and f["category"] in CATEGORIES
        assert f["file"].startswith({"losses": "loss", "exemplars": "exemplars"}.get(f["category"], f["category"]))
        assert f["caption"].endswith(".") and f["caption"].count(". ") == 0
    captions = {f["file"]: f["caption"] for f in figures}
    assert "log scale" in captions["loss_pretrain.png"] and "log scale" not in captions["loss_stego.png"]
    assert "ratio 0.25, plain" in captions["semantic_2.png"]  # first PCT ratio (then mode)
    assert "32x32" in captions["semantic_2.png"]  # STEGO input size inferred from the checkpoint


def test_masks_strip_panels_show_the_masks(full):
    out, _ = full
    w = round(W * STRIP_HEIGHT / H)
    cols = ["image", "ground truth", "free mask", "freesolo r0"]
    strips = {i: _png(out / f"masks_{i}.png") for i in (2, 5, 7)}
    for strip in strips.values():
        assert strip.shape == (2 * PAD + figure_layout.TITLE_HEIGHT + STRIP_HEIGHT, len(cols) * (w + PAD) + PAD, 3)
    p2, p5, p7 = (dict(zip(cols, _panels(strips[i], [w] * len(cols)))) for i in (2, 5, 7))
    assert np.array_equal(p2["image"], _panels(viz.side_by_side([("image", _image(2))], height=STRIP_HEIGHT),
                                               [w])[0])  # the photo itself
    # image 2 has ground truth, Free Masks and a confident SOLO mask: every panel differs from the photo
    for name in cols[1:]:
        assert not np.array_equal(p2[name], p2["image"]), name
    # image 5: ground truth but no Free Mask, and its only SOLO mask scores 0.2 < 0.3 (not shown)
    assert not np.array_equal(p5["ground truth"], p5["image"])
    assert np.array_equal(p5["free mask"], p5["image"]) and np.array_equal(p5["freesolo r0"], p5["image"])
    # image 7: no ground-truth instance, one Free Mask, no SOLO mask
    assert np.array_equal(p7["ground truth"], p7["image"]) and np.array_equal(p7["freesolo r0"], p7["image"])
    assert not np.array_equal(p7["free mask"], p7["image"])
    # the Free Mask panel of image 2 holds its two masks in the first two palette colours (outlines)
    colours = {tuple(c) for c in p2["free mask"].reshape(-1, 3)}
    assert {tuple(int(v) for v in c) for c in viz.palette(2)} <= colours


def test_chart_and_grid_layouts(full):
    out, _ = full
    assert _png(out / "metrics_instance.png").shape[0] == 3 * 320 + 4 * PAD  # AP, AP50, AR100 charts
    assert _png(out / "metrics_semi.png").shape[0] == 2 * 320 + 3 * PAD  # one chart per label ratio
    assert _png(out / "metrics_semantic.png").shape[:2] == (320, 480)
    assert _png(out / "exemplars_n2.png").shape[:2] == (128 + figure_layout.CAPTION_HEIGHT + 2 * PAD, 2 * 128 + 3 * PAD)
    w, s = round(W * STRIP_HEIGHT / H), STRIP_HEIGHT
    # image | ground truth | stego input | stego ground truth | stego clusters | pct retrain
    assert _png(out / "semantic_2.png").shape[1] == 3 * w + 3 * s + 7 * PAD


def test_same_inputs_same_bytes_and_old_folder_replaced(results, full, tmp_path):
    out, figures = full
    again = tmp_path / "figures"
    again.mkdir()
    (again / "stale.png").write_bytes(b"old")
    assert build_report_figures(inputs_of(results), str(again), n_images=3) == figures
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in out.iterdir())
    for p in out.iterdir():
        assert (again / p.name).read_bytes() == p.read_bytes(), p.name
    assert not [p for p in tmp_path.iterdir() if p.name != "figures"]  # no temp folder left beside it


def test_inputs_not_given_are_not_drawn(results, full, tmp_path):
    """Only the named files are drawn, whatever else lies in the folder (every stage's files lie there)."""
    part = inputs_of(results, solo=(), solo_losses=(), stego=None, stego_loss=None, pct=(), pools=(),
                     metrics=inputs_of(results).metrics[:2])
    figures = build_report_figures(part, str(tmp_path / "figures"), n_images=1)
    assert [f["file"] for f in figures] == ["masks_2.png", "loss_pretrain.png", "metrics_instance.png",
                                            "metrics_semi.png"]
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {f["file"] for f in figures} | {"index.json"}
    # the strip loses its SOLO panel, the rest is drawn as before
    assert np.array_equal(_png(tmp_path / "figures" / "masks_2.png"),
                          _png(full[0] / "masks_2.png")[:, :-(round(W * STRIP_HEIGHT / H) + PAD)])
    # the exemplar pool and the SOLO predictions lie in the folder but are not given: not drawn
    assert (results / "exemplar" / "n2" / "pool").is_dir() and (results / "solo" / "freesolo").is_dir()
    assert not [f for f in figures if "freesolo" in f["caption"]]
    assert build_report_figures(ReportInputs(), str(tmp_path / "none")) == []
    assert [p.name for p in (tmp_path / "none").iterdir()] == ["index.json"]


def test_bad_arguments(results, tmp_path):
    with pytest.raises(TypeError, match="ReportInputs"):
        build_report_figures(str(results), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="n_images"):
        build_report_figures(ReportInputs(), str(tmp_path / "out"), n_images=-1)
    missing = str(tmp_path / "missing" / "loss.csv")
    with pytest.raises(FileNotFoundError, match="missing"):  # a named file that is not there is an error
        build_report_figures(ReportInputs(pretrain_loss=missing), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="PCT loss log .*run 'other'"):
        build_report_figures(ReportInputs(pct_losses=[("ratio0.5", "plain", "other", missing)]), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing written on an error


def test_from_workflow_pairs_named_inputs_with_their_keys():
    """The rule's named inputs (report_inputs) and their keys (param input_keys) make the ReportInputs."""
    files = {"manifest": "m.parquet", "metrics": ["a.parquet", "b.parquet"], "solo": ["s0", "s1"],
             "pools": ["p2"], "pct_metrics": ["e.parquet"], "after": ["tables/metrics.md"]}
    keys = {"solo": [["freesolo", 0], ["exemplar_n2", 1]], "pools": [2], "pct_metrics": [["count92", "ctr"]]}
    got = ReportInputs.from_workflow(files, keys)
    assert got == ReportInputs(manifest="m.parquet", metrics=["a.parquet", "b.parquet"],
                               solo=[("freesolo", 0, "s0"), ("exemplar_n2", 1, "s1")], pools=[(2, "p2")],
                               pct_metrics=[("count92", "ctr", "e.parquet")])
    with pytest.raises(ValueError, match="2 files of solo but 1 keys"):
        ReportInputs.from_workflow(files, {**keys, "solo": [["freesolo", 0]]})
    with pytest.raises(ValueError, match=r"unknown names \['masks'\]"):
        ReportInputs.from_workflow({**files, "masks": "x"}, keys)
    with pytest.raises(ValueError, match=r"keys of \['pct'\] but no files"):
        ReportInputs.from_workflow(files, {**keys, "pct": [["ratio0.5", "plain"]]})


# ------------------------------------------------ evaluation set (dataset.eval), label counts, pct.data

EVAL_IDS = [103, 101, 102]  # evaluation manifest ids (other than the training ids)


def _manifest(path: Path, folder: Path, ids: list[int], *, seed: int = 0, hw: tuple[int, int] = (H, W)) -> None:
    """A manifest of synthetic images <folder>/<id>.png (image i drawn with seed i + seed)."""
    from maskless.data.manifest import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in ids:
        img = cv2.resize(_image(i + seed), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        records.append({"id": i, "file_name": f"{i}.png", "path": str(folder / f"{i}.png"), "width": hw[1],
                        "height": hw[0], "split": "eval", "hash": "x"})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(path, records)


def _eval_set(root: Path) -> dict:
    """The files of an evaluation set under root (laid out as the rules write them: the image set `eval`); the
    ReportInputs fields naming them (the Free Mask and SOLO predictions on the evaluation images replace those
    on the training images)."""
    manifest, gt_file = root / "data/eval/manifest.parquet", root / "data/eval/instances_gt.json"
    freemask, solo = root / "freemask/eval/index.parquet", root / "solo/freesolo/round0/pred/eval/index.parquet"
    _manifest(manifest, root / "eval_images", EVAL_IDS, seed=50)
    poly = [[30.0, 5.0, 60.0, 5.0, 60.0, 40.0, 30.0, 40.0]]
    gt = {"categories": [{"id": 1, "name": "a"}],
          "images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in EVAL_IDS],
          "annotations": [{"id": 1, "image_id": 101, "category_id": 1, "segmentation": poly, "area": 1050.0,
                           "bbox": [30, 5, 30, 35], "iscrowd": 0}]}
    gt_file.write_text(json.dumps(gt))
    # Free Mask and SOLO round 0 on the evaluation images: image 101 has a mask each, 102 none
    _store(freemask.parent, {101: [(_blob(30, 45, 7), 0.9)], 102: [], 103: []})
    _store(solo.parent, {101: [(_blob(15, 45, 6), 0.9)], 102: [(_blob(15, 45, 6), 0.1)], 103: []})
    return {"eval_manifest": str(manifest), "eval_ground_truth": str(gt_file), "freemask": str(freemask),
            "solo": [("freesolo", 0, str(solo))]}


@pytest.fixture(scope="module")
def eval_run(results, tmp_path_factory) -> tuple[Path, list[dict]]:
    """An evaluation set beside training images without ground truth (kind folder): the report of it."""
    root = tmp_path_factory.mktemp("evalset") / "exp"
    inputs = inputs_of(results, ground_truth=None, pools=(), **_eval_set(root))
    out = root.parent / "figures"
    return out, build_report_figures(inputs, str(out), n_images=2)


def test_eval_set_mask_strips_show_the_evaluation_images_and_predictions(eval_run):
    out, figures = eval_run
    files = [f["file"] for f in figures]
    assert [f for f in files if f.startswith("masks_")] == ["masks_101.png", "masks_102.png"]
    captions = {f["file"]: f["caption"] for f in figures}
    assert captions["masks_101.png"].startswith("Evaluation image 101 with its ground-truth instances, Free Mask")
    w = round(W * STRIP_HEIGHT / H)
    cols = ["image", "ground truth", "free mask", "freesolo r0"]
    p101, p102 = (dict(zip(cols, _panels(_png(out / f"masks_{i}.png"), [w] * len(cols)))) for i in (101, 102))
    eval_image = cv2.cvtColor(cv2.imread(str(out.parent / "exp" / "eval_images" / "101.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(p101["image"], _panels(viz.side_by_side([("image", eval_image)], height=STRIP_HEIGHT),
                                                 [w])[0])
    # the training stores do not hold image 101: only the evaluation ground truth and stores draw on it
    for name in cols[1:]:
        assert not np.array_equal(p101[name], p101["image"]), name
    # image 102: no ground-truth instance, no Free Mask, its SOLO mask scores 0.1 < 0.3
    for name in cols[1:]:
        assert np.array_equal(p102[name], p102["image"]), name


def test_eval_set_without_training_ground_truth(eval_run):
    out, figures = eval_run
    files = [f["file"] for f in figures]
    # semantic strips of the training images (ids 2 and 5), without ground-truth panels
    assert [f for f in files if f.startswith("semantic_")] == ["semantic_2.png", "semantic_5.png"]
    w, s = round(W * STRIP_HEIGHT / H), STRIP_HEIGHT
    # image | stego input | stego clusters | pct retrain
    assert _png(out / "semantic_2.png").shape[1] == 2 * w + 2 * s + 5 * PAD
    assert "ground-truth" not in {f["file"]: f["caption"] for f in figures}["semantic_2.png"]
    assert {"metrics_instance.png", "loss_pretrain.png"} <= set(files)


def test_eval_set_strips_only_when_its_files_are_given(results, tmp_path):
    base = inputs_of(results, stego=None, pct=(), pools=(), metrics=(), pct_metrics=())
    evalset_inputs = _eval_set(tmp_path / "exp")

    def masks(inputs: ReportInputs) -> list[str]:
        figures = build_report_figures(inputs, str(tmp_path / "figures"), n_images=1)
        return [f["file"] for f in figures if f["category"] == "masks"]

    assert masks(dataclasses.replace(base, **evalset_inputs)) == ["masks_101.png"]
    # not given (no dataset.eval), though its files lie in the folder: the training images, as before
    assert masks(base) == ["masks_2.png"]


def test_count_budgets_found_ordered_and_labelled(results, tmp_path):
    from maskless.eval.metrics import metric_rows, write_metrics

    root = tmp_path / "exp"
    model = results / "pct" / "ratio0.25" / "plain" / "retrain" / "model.pt"
    counts, losses = [], []
    for budget, mode in (("count92", "ctr"), ("count92", "plain"), ("count183", "plain")):
        (root / "pct" / budget / mode / "retrain").mkdir(parents=True)
        shutil.copy(model, root / "pct" / budget / mode / "retrain" / "model.pt")
        counts.append((budget, mode, str(root / "pct" / budget / mode / "retrain" / "model.pt")))
    # given in no particular order: the report orders them
    for budget, mode, run in (("count92", "ctr", "retrain"), ("ratio0.5", "ctr", "retrain"),
                              ("count183", "plain", "retrain"), ("ratio0.25", "plain", "retrain"),
                              ("count92", "plain", "retrain"), ("ratio0.25", "plain", "strong_only")):
        _loss(root / "pct" / budget / mode / run / "loss.csv", [1.0, 0.5])
        losses.append((budget, mode, run, str(root / "pct" / budget / mode / run / "loss.csv")))
    count_metrics = [("count92", "plain", str(root / "eval" / "pct" / "count92" / "plain" / "metrics.parquet"))]
    write_metrics(count_metrics[0][2],
                  [row for model in ("strong_only", "pct_retrain")
                   for row in metric_rows({"semantic": {"mIoU": 40.0}}, experiment="t", method="pct", variant=model,
                                          budget="92", mode="plain", dataset="d", seed=0)])
    base = inputs_of(results, stego=None, stego_loss=None, pools=(), metrics=inputs_of(results).metrics[:2])
    inputs = dataclasses.replace(base, pct=[*counts, *base.pct], pct_losses=losses,
                                 pct_metrics=[*count_metrics, *base.pct_metrics])
    figures = build_report_figures(inputs, str(tmp_path / "figures"), n_images=1)
    files = [f["file"] for f in figures]
    captions = {f["file"]: f["caption"] for f in figures}
    # loss curves: ratios then counts by value; plain before ctr; strong_only before retrain
    assert [f for f in files if f.startswith("loss_pct")] == [
        "loss_pct_ratio0.25_plain_strong_only.png", "loss_pct_ratio0.25_plain_retrain.png",
        "loss_pct_ratio0.5_ctr_retrain.png", "loss_pct_count92_plain_retrain.png",
        "loss_pct_count92_ctr_retrain.png", "loss_pct_count183_plain_retrain.png"]
    assert "label ratio 0.25, plain" in captions["semantic_2.png"]  # a ratio before any count
    # one chart per label budget: 0.25, 0.5, then 92
    assert _png(tmp_path / "figures" / "metrics_semi.png").shape[0] == 3 * 320 + 4 * PAD
    assert captions["metrics_semi.png"] == ("Semi/weakly supervised mIoU (%) per model at label ratio 0.25, 0.5 "
                                            "and label count 92, one chart per label budget.")
    # counts only (the VOC config): the smallest count's plain model, labelled as a count
    inputs = dataclasses.replace(base, pct=counts, pct_metrics=count_metrics)
    figures = build_report_figures(inputs, str(tmp_path / "figures"), n_images=1)
    captions = {f["file"]: f["caption"] for f in figures}
    assert "(label count 92, plain)" in captions["semantic_2.png"]
    assert captions["metrics_semi.png"].endswith("at label count 92, one chart per count.")


def test_pct_data_strips_use_its_images_and_labels(results, tmp_path):
    """PCT on user files (pct.data): its own held-out images and label PNGs, not the dataset's."""
    # budget 0.25 plain given as count25 plain, 0.5 ctr as count5 ctr: the first (count 5) is drawn
    pct = [(f"count{r[2:]}", m, str(results / "pct" / f"ratio{r}" / m / "retrain" / "model.pt"))
           for r, m in (("0.25", "plain"), ("0.5", "ctr"))]
    hw = (40, 40)  # square: other than the dataset's images
    data = tmp_path / "exp" / "pct" / "data"
    _manifest(data / "manifest.parquet", tmp_path / "voc", [1, 2, 3], seed=70, hw=hw)
    labels = {}
    for i in (1, 2, 3):
        lab = np.zeros(hw, np.uint8)
        lab[5:20, 5:20] = i % 3
        lab[30:, 30:] = 255  # ignored pixels
        cv2.imwrite(str(tmp_path / "voc" / f"{i}_label.png"), lab)
        labels[str(i)] = {"stem": f"im{i}", "label": str(tmp_path / "voc" / f"{i}_label.png"), "mask_tags": []}
    (data / "labels.json").write_text(json.dumps({"format": "maskless-pct-labels", "num_classes": 3,
                                                  "classes": None, "ignore_index": 255, "train": [1],
                                                  "val": [2, 3], "images": labels}))
    base = inputs_of(results, solo=(), solo_losses=(), stego=None, stego_loss=None, pools=(), metrics=(),
                     pct_metrics=(), pct=pct)
    inputs = dataclasses.replace(base, pct_manifest=str(data / "manifest.parquet"),
                                 pct_labels=str(data / "labels.json"))
    figures = build_report_figures(inputs, str(tmp_path / "figures"), n_images=4)
    files = [f["file"] for f in figures]
    # no STEGO: the dataset's images get no semantic strip (PCT did not learn from them)
    assert [f for f in files if f.startswith("semantic")] == ["semantic_pct_2.png", "semantic_pct_3.png"]
    captions = {f["file"]: f["caption"] for f in figures}
    assert "(im2)" in captions["semantic_pct_2.png"] and "(label count 5, ctr)" in captions["semantic_pct_2.png"]
    strip = _png(tmp_path / "figures" / "semantic_pct_2.png")
    image, truth, pred = _panels(strip, [STRIP_HEIGHT] * 3)
    assert strip.shape[1] == 3 * STRIP_HEIGHT + 4 * PAD
    lab = cv2.imread(str(tmp_path / "voc" / "2_label.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(truth, _panels(viz.side_by_side([("t", viz.colorize_labels(lab, 3))],
                                                          height=STRIP_HEIGHT), [STRIP_HEIGHT])[0])
    # pct.data's files not given (they lie in the folder): PCT learnt from the dataset, its strips show it
    figures = build_report_figures(base, str(tmp_path / "figures"), n_images=4)
    assert [f["file"] for f in figures if f["category"] == "semantic"] == [f"semantic_{i}.png" for i in sorted(IDS)]
    assert "(label count 5, ctr)" in {f["file"]: f["caption"] for f in figures}["semantic_2.png"]


def test_semi_chart_reads_the_rows_columns_and_checks_the_budget(tmp_path):
    """The semi chart labels its bars by the rows' variant and mode, one chart per file's budget; a file whose
    rows' budget column is not its label budget's is an error naming the file."""
    from maskless.eval.metrics import metric_rows, write_metrics

    path = tmp_path / "eval" / "pct" / "count92" / "ctr" / "metrics.parquet"
    write_metrics(path, metric_rows({"semantic": {"mIoU": 40.0}}, experiment="t", method="pct",
                                    variant="pct_retrain", budget="92", mode="ctr", dataset="d", seed=0))
    figures = build_report_figures(ReportInputs(pct_metrics=[("count92", "ctr", str(path))]), str(tmp_path / "ok"))
    assert [f["file"] for f in figures] == ["metrics_semi.png"]
    wrong = tmp_path / "eval" / "pct" / "count93" / "ctr" / "metrics.parquet"
    shutil.copytree(path.parent, wrong.parent)
    with pytest.raises(ValueError, match=r"count93/ctr/metrics.parquet of PCT label budget count93: a row has "
                                         r"budget '92', expected '93'"):
        build_report_figures(ReportInputs(pct_metrics=[("count93", "ctr", str(wrong))]), str(tmp_path / "bad"))
