"""Report figures (maskless.report) from a small synthetic results folder built here: which files exist for
which inputs, what the mask strips show, index.json, skipped stages, determinism, atomic replacement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskless import viz
from maskless.report import CATEGORIES, STRIP_HEIGHT, build_report_figures

H, W = 48, 64  # every synthetic image (non-square, so the STEGO square crop differs from the image)
IDS = [5, 2, 9, 7]  # manifest ids, given unsorted: the sample is the first ids in id order
PAD = 4  # viz.side_by_side's default pad
REAL_RUN = Path("/tmp/wf/results/tiny")


def _blob(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), 90, np.uint8) + rng.integers(0, 40, (H, W, 3), dtype=np.uint8)
    img[_blob(20, 20, 8)] = (200, 60, 60)
    return img


def _store(folder: Path, per_image: dict[int, list[tuple[np.ndarray, float]]]) -> None:
    from maskless.store import ImageMasks, build_index, write_shard

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
                       experiment="t", stage="freemask", round=0, dataset="d")
    inst += metric_rows({"segm": {"AP": 12.0, "AP50": 25.0, "AR100": 33.0}},
                        experiment="t", stage="freesolo", round=0, dataset="d")
    write_metrics(root / "eval" / "freemask" / "metrics.parquet", inst[:4])
    write_metrics(root / "eval" / "freesolo" / "round0" / "metrics.parquet", inst[4:])
    write_metrics(root / "eval" / "stego" / "metrics.parquet",
                  metric_rows({"semantic": {"mIoU": 19.0, "Acc": 60.0}}, experiment="t", stage="stego_cluster",
                              round=0, dataset="d"))
    semi = [row for ratio in ("0.25", "0.5") for model in ("strong_only", "pct_retrain+ctr")
            for row in metric_rows({"semantic": {"mIoU": 30.0 + len(model)}}, experiment="t",
                                   stage=f"{model}@{ratio}", round=0, dataset="d")]
    write_metrics(root / "eval" / "pct" / "metrics.parquet", semi)
    crops = np.stack([_image(1)[:32, :32], _image(2)[:32, :32]])
    masks = np.stack([_blob(20, 20, 8)[:32, :32]] * 2)
    ExemplarPool(crops, masks, [2, 7], [[0, 0, 32, 32]] * 2, ["grabcut", "solo"], [0.5, 0.6]).save(
        str(root / "exemplar" / "n2" / "pool"))
    _models(root)
    return root


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return build_results(tmp_path_factory.mktemp("results") / "exp")


@pytest.fixture(scope="module")
def full(results, tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("report") / "figures"
    return out, build_report_figures(str(results), str(out), n_images=3)


def _png(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _panels(strip: np.ndarray, widths: list[int]) -> list[np.ndarray]:
    """The image areas (under the titles) of a side_by_side strip whose columns have these widths."""
    out, x = [], PAD
    for w in widths:
        out.append(strip[PAD + viz.TITLE_HEIGHT:PAD + viz.TITLE_HEIGHT + STRIP_HEIGHT, x:x + w])
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
        assert strip.shape == (2 * PAD + viz.TITLE_HEIGHT + STRIP_HEIGHT, len(cols) * (w + PAD) + PAD, 3)
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
    assert _png(out / "exemplars_n2.png").shape[:2] == (128 + viz.CAPTION_HEIGHT + 2 * PAD, 2 * 128 + 3 * PAD)
    w, s = round(W * STRIP_HEIGHT / H), STRIP_HEIGHT
    # image | ground truth | stego input | stego ground truth | stego clusters | pct retrain
    assert _png(out / "semantic_2.png").shape[1] == 3 * w + 3 * s + 7 * PAD


def test_same_inputs_same_bytes_and_old_folder_replaced(results, full, tmp_path):
    out, figures = full
    again = tmp_path / "figures"
    again.mkdir()
    (again / "stale.png").write_bytes(b"old")
    assert build_report_figures(str(results), str(again), n_images=3) == figures
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in out.iterdir())
    for p in out.iterdir():
        assert (again / p.name).read_bytes() == p.read_bytes(), p.name
    assert not [p for p in tmp_path.iterdir() if p.name != "figures"]  # no temp folder left beside it


def test_absent_stages_are_skipped(results, full, tmp_path):
    part = tmp_path / "exp"
    shutil.copytree(results, part)
    for sub in ("solo", "stego", "eval/stego", "pct", "exemplar"):
        shutil.rmtree(part / sub)
    figures = build_report_figures(str(part), str(tmp_path / "figures"), n_images=1)
    assert [f["file"] for f in figures] == ["masks_2.png", "loss_pretrain.png", "metrics_instance.png",
                                            "metrics_semi.png"]
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {f["file"] for f in figures} | {"index.json"}
    # the strip loses its SOLO panel, the rest is drawn as before
    assert np.array_equal(_png(tmp_path / "figures" / "masks_2.png"),
                          _png(full[0] / "masks_2.png")[:, :-(round(W * STRIP_HEIGHT / H) + PAD)])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_report_figures(str(empty), str(tmp_path / "none")) == []
    assert [p.name for p in (tmp_path / "none").iterdir()] == ["index.json"]


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report_figures(str(tmp_path / "missing"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="n_images"):
        build_report_figures(str(tmp_path), str(tmp_path / "out"), n_images=-1)


def test_real_tiny_run(tmp_path):
    if not (REAL_RUN / "data" / "manifest.parquet").is_file():
        pytest.skip(f"{REAL_RUN} (a finished tiny workflow run) exists only on the machine that ran it")
    figures = build_report_figures(str(REAL_RUN), str(tmp_path / "figures"), n_images=1)
    files = {f["file"] for f in figures}
    assert {"masks_1.png", "semantic_1.png", "loss_pretrain.png", "loss_stego.png", "metrics_instance.png",
            "metrics_semantic.png", "metrics_semi.png", "exemplars_n2.png"} <= files
    assert sum(f["category"] == "losses" for f in figures) == len(list(REAL_RUN.glob("**/loss.csv")))
