"""bench/mfu.py's workloads: one measurable step of every trained model and of Free Mask inference, built
from a config as the pipeline's loops build them (the list and what each row holds: bench/mfu.py's docstring).
Not a test; tests/test_bench_mfu.py runs one workload at tiny sizes."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

from maskless.params import from_config, section_params

BENCH = Path(__file__).resolve().parent


@dataclass
class Workload:
    """One measurable step. data(i) builds the inputs of step i (timed as data), step(inputs, i) runs it."""

    name: str
    batch: int
    step: Callable[[Any, int], Any]
    data: Callable[[int], Any] = lambda i: None
    has_data: bool = False
    note: str = ""


# ---------------------------------------------------------------- shared set-up


class Setup:
    """Config, device and the synthetic dataset (made on first use, in a temp folder)."""

    def __init__(self, cfg: dict, dev: torch.device, tmp: Path, n_images: int, backbone: str | None):
        self.cfg, self.dev, self.tmp, self.n_images = cfg, dev, tmp, n_images
        self._backbone, self._dataset = backbone, None

    @property
    def arch(self) -> str:
        return self.cfg["pretrain"]["arch"]

    def amp(self, section: dict) -> bool:
        return bool(section.get("amp", True)) and self.dev.type == "cuda"

    def dataset(self) -> dict:
        """Synthetic images at the config's size: manifest rows, instances JSON, the images' folder."""
        if self._dataset is None:
            from maskless.data.ingest import ingest
            from maskless.data.manifest import read_manifest
            from maskless.data.synthetic import SyntheticParams, generate

            syn = self.cfg["synthetic"]
            root = self.tmp / "syn"
            generate(str(root), SyntheticParams(num_images=self.n_images, height=syn["height"], width=syn["width"],
                                                num_categories=syn["num_categories"], seed=1))
            manifest = str(self.tmp / "manifest.parquet")
            ingest(kind="coco", images=str(root / "images"), annotations=str(root / "instances.json"),
                   manifest_out=manifest, gt_out=None)
            self._dataset = {"root": root, "manifest": manifest, "rows": read_manifest(manifest),
                             "instances": str(root / "instances.json")}
        return self._dataset

    def backbone(self) -> str:
        """The --backbone checkpoint, or a random-initialised one of the config's arch."""
        if self._backbone is None:
            from maskless.models.resnet import build_resnet
            from maskless.models.weights import save_backbone

            torch.manual_seed(0)
            self._backbone = str(self.tmp / "backbone.pt")
            net = build_resnet(self.arch)
            if self.dev.type == "cuda":  # fp16 overflows a random ResNet-101's activations (solo_train.py)
                if str(BENCH) not in sys.path:
                    sys.path.insert(0, str(BENCH))
                from solo_train import calibrate_batchnorm  # bench/solo_train.py

                calibrate_batchnorm(net)
            save_backbone(self._backbone, net, self.arch, {})
        return self._backbone


def _values(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """The loops' host sync: every term read as a float for the finite check and the loss log."""
    values = {k: float(v.detach()) for k, v in terms.items()}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite terms {bad}")
    return values


# ---------------------------------------------------------------- workloads


def densecl(s: Setup) -> Workload:
    from maskless.models.resnet import normalize
    from maskless.pretrain.densecl import DenseCL, DenseCLParams
    from maskless.pretrain.train import CACHE_SHORT_SIDE_FACTOR, ImageSource, StepBatches, lr_at

    section = section_params(s.cfg, "pretrain")
    params = from_config(DenseCLParams, section, "pretrain", seed=0)
    data = StepBatches(ImageSource(s.dataset()["rows"], math.ceil(CACHE_SHORT_SIDE_FACTOR * params.crop_size)),
                       params)
    torch.manual_seed(0)
    model = DenseCL.from_params(params).to(s.dev).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr_at(0, params),
                          momentum=params.momentum, weight_decay=params.weight_decay)
    use_amp = s.amp(section)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    def step(views, i):
        for group in opt.param_groups:
            group["lr"] = lr_at(i % params.steps, params)
        view_q, view_k = (normalize(v.to(s.dev, non_blocking=True)) for v in views)
        with torch.autocast(device_type=s.dev.type, dtype=torch.float16, enabled=use_amp):
            out = model(view_q, view_k)
        _values(out)
        opt.zero_grad(set_to_none=True)
        scaler.scale(out["loss"]).backward()
        scaler.step(opt)
        scaler.update()

    return Workload("densecl", params.batch_size, step, lambda i: data[i % params.steps], True,
                    f"crop {params.crop_size}, two views, queue {params.queue_size}")


def _solo(s: Setup, with_eec: bool) -> tuple[Any, ...]:
    """The SOLO loop's model, optimizer and batch maker (maskless.solo.train), optionally with EEC."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from solo_train import coarse_masks_from_gt  # bench/solo_train.py
    from maskless.solo.data import SampleSource, make_batch
    from maskless.solo.train import build_training, params_from_config
    from maskless.store import MaskStore

    ds = s.dataset()
    cfg = s.cfg
    emb_dim = cfg["freemask"]["embedding_dim"]
    eec = cfg["exemplar"]["eec"] if with_eec else None
    params = params_from_config(section_params(cfg, "solo"), arch=s.arch, emb_dim=emb_dim, seed=0, eec=eec)
    index = ds.get("solo_index")
    if index is None:
        index = ds["solo_index"] = coarse_masks_from_gt(ds["instances"], ds["manifest"], s.tmp, emb_dim)
    source = SampleSource(ds["rows"], MaskStore(index), params.input_size * params.scale_jitter[1])
    pool = None
    if with_eec:
        n, side = cfg["exemplar"]["counts"][0], cfg["exemplar"]["refine"]["side"]
        rng = np.random.default_rng(0)
        pool = SimpleNamespace(crops=rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
                               masks=rng.random((n, side, side)) < 0.4)
    model, eec_state, _, trainable, opt = build_training(s.backbone(), params, s.dev, None, pool)
    geometry = params.solo_geometry()

    def data(i):
        return make_batch(source, i, params, geometry)[:2]

    return params, model, eec_state, trainable, opt, data


def solo(s: Setup, with_eec: bool = False) -> Workload:
    from maskless.solo.train import lr_at, solo_step

    params, model, eec, trainable, opt, data = _solo(s, with_eec)
    use_amp = s.amp({"amp": params.amp})
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if eec is not None:  # what step 1 does; the timed steps below are never refresh steps
        eec.refresh(model, freeze_backbone_bn=params.freeze_backbone_bn)

    def step(batch, i):
        n = i + 2  # 1-based loop step, past step 1 (EEC refresh) and the pairwise warm-up's start
        while eec is not None and eec.refresh_due(n):
            n += 1
        for group in opt.param_groups:
            group["lr"] = lr_at((n - 1) % params.steps, params)
        losses = solo_step(model, batch, n, params, s.dev, use_amp, eec)
        _values(losses)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if params.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
        scaler.step(opt)
        scaler.update()

    note = f"input {params.input_size}, grids {list(params.model.grids)}"
    if eec is not None:
        note += f", EEC pool {len(eec.crops)} x {eec.crops.shape[1]} px"
    return Workload("solo_eec" if with_eec else "solo", params.batch_size, step, data, True, note)


def eec_refresh(s: Setup) -> Workload:
    params, model, eec, *_ = _solo(s, True)

    def step(_, i):
        eec.refresh(model, freeze_backbone_bn=params.freeze_backbone_bn)

    return Workload("eec_refresh", len(eec.crops), step,
                    note=f"once every {params.eec.refresh_every} steps (pool embeddings, no grad)")


def stego(s: Setup) -> Workload:
    from maskless.models.resnet import build_resnet
    from maskless.stego.knn import compute_knn, pool_features
    from maskless.stego.train import StegoTrainParams, build_modules, step_batch, train_losses

    st = s.cfg["stego"]
    params = from_config(StegoTrainParams, st["train"], "stego.train", seed=0)
    size, n, n_classes = st["input_size"], max(s.n_images, params.batch_size), s.cfg["synthetic"]["num_categories"] + 1
    with torch.no_grad():
        c, h, w = build_resnet(s.arch).eval()(torch.zeros(1, 3, size, size))[st["layer"]].shape[1:]
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(n, c, h, w, generator=gen)
    knn = compute_knn(pool_features(features), st["knn_k"])
    labels = torch.randint(0, n_classes, (n, size, size), generator=gen)
    modules, opt = build_modules(c, n_classes, params, s.dev)

    def data(i):
        batch = step_batch(i, n, knn, params)
        return (batch, features[batch["idx"]].to(s.dev), features[batch["knn"]].to(s.dev),
                labels[batch["idx"]].to(s.dev))

    def step(inputs, i):
        batch, feats, feats_knn, lab = inputs
        torch.manual_seed(params.seed * 1_000_003 + i + 1)
        losses = train_losses(modules, feats, feats_knn, batch, params, lab)
        _values(losses)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()

    return Workload("stego", params.batch_size, step, data, True,
                    f"{st['layer']} features {c} x {h} x {w}, {params.neg_samples} random partners")


def _pct_data(s: Setup) -> dict:
    """Synthetic images, label maps, tags and the class count; every 8th image strong, as a split would."""
    from maskless.data.images import load_rgb
    from maskless.data.semantic import num_classes, synthetic_labels
    from maskless.pct.split import tag_matrix, tags_from_label_map

    ds = s.dataset()
    if "pct" not in ds:
        names = [Path(r["path"]).name for r in ds["rows"]]
        images = [load_rgb(r["path"]) for r in ds["rows"]]
        labels = synthetic_labels(ds["root"], names)
        k = num_classes(ds["instances"])
        ds["pct"] = {"images": images, "labels": labels, "k": k,
                     "present": tag_matrix([tags_from_label_map(lab) for lab in labels], k)}
    return ds["pct"]


def _pct_step(s: Setup, params, nets: list, losses: Callable, use_amp: bool) -> Callable:
    """The shared PCT loop's step (maskless.pct.train._fit) around `losses(batch, step) -> (terms, stats)`."""
    from maskless.pct.train import lr_at, make_optimizer

    opt = make_optimizer(nets, params)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    for net in nets:
        net.train()

    def step(batch, i):
        for group in opt.param_groups:
            group["lr"] = lr_at(i % params.steps, params) * group["lr_mult"]
        with torch.autocast(device_type=s.dev.type, dtype=torch.float16, enabled=use_amp):
            terms, _ = losses(batch, i + 1)
        _values(terms)
        opt.zero_grad(set_to_none=True)
        scaler.scale(sum(terms.values())).backward()
        if params.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for n in nets for p in n.parameters()], params.grad_clip)
        scaler.step(opt)
        scaler.update()

    return step


def _pct_mode(s: Setup) -> str:
    return "ctr" if s.cfg["pct"]["contextrast"][0] else "plain"


def pct_pair(s: Setup) -> Workload:
    from maskless.models.resnet import normalize
    from maskless.pct.losses import DynamicEvaluation
    from maskless.pct.model import build_segnet
    from maskless.pct.stage import train_params
    from maskless.pct.terms import pct_losses
    from maskless.pct.train import batch_to, check_outputs
    from maskless.pct.train_data import StepBatches

    d = _pct_data(s)
    params = train_params(section_params(s.cfg, "pct"), kind="pct", mode=_pct_mode(s), arch=s.arch,
                          num_classes=d["k"], seed=0)
    strong = list(range(0, len(d["images"]), 8))
    weak = [i for i in range(len(d["images"])) if i not in set(strong)]
    labels = [lab if i in set(strong) else None for i, lab in enumerate(d["labels"])]
    half = params.batch_size // 2
    batches = StepBatches(d["images"], labels, d["present"], strong, weak, half, half, params)
    backbone = s.backbone()
    torch.manual_seed(0)
    hybrid = build_segnet(params.model, backbone).to(s.dev)
    torch.manual_seed(1)
    pseudo = build_segnet(params.model, backbone).to(s.dev)
    dyn = DynamicEvaluation(d["k"], momentum=params.ema_momentum, power=params.iou_power,
                            unseen_iou=params.unseen_iou).to(s.dev)

    def losses(b, i):
        b = batch_to(b, s.dev)
        x = normalize(b.images)
        ho = hybrid(x, embeddings=params.use_contextrast)
        po = pseudo(x, embeddings=params.use_contextrast)
        check_outputs({"hybrid logits": ho["logits"], "pseudo logits": po["logits"]}, "PCT", i)
        with torch.autocast(device_type=s.dev.type, enabled=False):
            return pct_losses(ho, po, b, dyn, params)

    step = _pct_step(s, params, [hybrid, pseudo], losses, s.amp({"amp": params.amp}))
    return Workload("pct_pair", params.batch_size, step, lambda i: batches[i % params.steps], True,
                    f"two nets, crop {params.input_size}, {half} strong + {half} weak, mode {_pct_mode(s)}")


def pct_retrain(s: Setup) -> Workload:
    from maskless.models.resnet import normalize
    from maskless.pct.model import build_segnet
    from maskless.pct.stage import train_params
    from maskless.pct.terms import supervised_losses
    from maskless.pct.train import batch_to, check_outputs
    from maskless.pct.train_data import StepBatches

    d = _pct_data(s)
    params = train_params(section_params(s.cfg, "pct"), kind="retrain", mode=_pct_mode(s), arch=s.arch,
                          num_classes=d["k"], seed=0)
    everything = np.ones((len(d["images"]), d["k"]), dtype=bool)
    batches = StepBatches(d["images"], d["labels"], everything, list(range(len(d["images"]))), [],
                          params.batch_size, 0, params)
    torch.manual_seed(0)
    net = build_segnet(params.model, s.backbone()).to(s.dev)

    def losses(b, i):
        b = batch_to(b, s.dev)
        o = net(normalize(b.images), embeddings=params.use_contextrast)
        check_outputs({"logits": o["logits"]}, "supervised", i)
        with torch.autocast(device_type=s.dev.type, enabled=False):
            return supervised_losses(o, b, params)

    step = _pct_step(s, params, [net], losses, s.amp({"amp": params.amp}))
    return Workload("pct_retrain", params.batch_size, step, lambda i: batches[i % params.steps], True,
                    f"one net, crop {params.input_size} (also the strong-only baseline's step)")


def freemask(s: Setup, backbone_only: bool = False) -> Workload:
    from maskless.data.images import load_resized
    from maskless.freemask import FreeMaskParams, free_mask
    from maskless.models.resnet import normalize
    from maskless.models.weights import load_backbone

    fm = s.cfg["freemask"]
    params = from_config(FreeMaskParams, section_params(s.cfg, "freemask"), "freemask")
    batch_size, rows = fm["batch_size"], s.dataset()["rows"]
    model = load_backbone(s.backbone(), arch=s.arch).to(s.dev).eval()

    def data(i):
        recs = [rows[(i * batch_size + j) % len(rows)] for j in range(batch_size)]
        loaded = [load_resized(r, params.input_size) for r in recs]  # one size: the synthetic images share it
        return np.stack([img for img, _ in loaded]), [hw for _, hw in loaded]

    def step(inputs, i):
        batch, sizes = inputs
        with torch.inference_mode():
            x = normalize(torch.from_numpy(batch).permute(0, 3, 1, 2).to(s.dev))
            feats = model(x)[params.feature_level]
            if not backbone_only:
                for f, hw in zip(feats, sizes):
                    free_mask(f, hw, params)

    name = "freemask_fwd" if backbone_only else "freemask"
    note = f"input {params.input_size}, {params.feature_level}" + (", backbone forward only" if backbone_only else "")
    return Workload(name, batch_size, step, data, True, note)


BUILDERS: dict[str, Callable[[Setup], Workload]] = {
    "densecl": densecl, "solo": solo, "solo_eec": lambda s: solo(s, True), "eec_refresh": eec_refresh,
    "stego": stego, "pct_pair": pct_pair, "pct_retrain": pct_retrain, "freemask": freemask,
    "freemask_fwd": lambda s: freemask(s, True),
}
