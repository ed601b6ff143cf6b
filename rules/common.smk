# Config validation, path helpers, wildcard constraints and small input functions. Nothing else.

from maskless.config import section_params, validate_config
from maskless.data.manifest import num_shards

config.update(validate_config(config))

EXP = config["experiment"]
ENV = "../envs/maskless.yaml"


wildcard_constraints:
    experiment=r"[A-Za-z0-9_.-]+",
    shard=r"\d+",
    stage=r"[a-z0-9_]+",
    round=r"\d+",
    variant=r"freesolo|exemplar_n\d+",
    n_exemplars=r"\d+",
    ratio=r"[0-9]*\.?[0-9]+",
    mode=r"plain|ctr",


def has_ground_truth():
    return config["dataset"]["kind"] in ("synthetic", "coco")


def dataset_source(wildcards):
    """Inputs of the ingest rule: the generated dataset, or nothing (user files are params)."""
    if config["dataset"]["kind"] == "synthetic":
        return {
            "instances": f"data/synthetic/{wildcards.experiment}/instances.json",
            "images": f"data/synthetic/{wildcards.experiment}/images",
        }
    return {}


def shard_paths(wildcards, folder):
    """One store per shard of the manifest under results/<experiment>/<folder>/; the count comes from the
    manifest (a checkpoint). Every per-shard stage shares the Free Mask sharding."""
    manifest = checkpoints.ingest.get(experiment=wildcards.experiment).output.manifest
    n = num_shards(manifest, config["freemask"]["shard_size"])
    return [f"results/{wildcards.experiment}/{folder}/{k}.zarr" for k in range(n)]


def shard_stores(wildcards):
    return shard_paths(wildcards, "freemask/shards")


def training_masks(experiment, variant, round, shard=None):
    """Masks SOLO round `round` trains on: Free Mask for round 0, else that round's relabelled predictions."""
    if round == 0:
        return f"results/{experiment}/freemask/" + ("index.parquet" if shard is None else f"shards/{shard}.zarr")
    base = f"results/{experiment}/solo/{variant}/round{round}/"
    return base + ("labels.parquet" if shard is None else f"labels/{shard}.zarr")


def solo_train_inputs(wildcards):
    r, exp, variant = int(wildcards.round), wildcards.experiment, wildcards.variant
    if r > variant_rounds(variant):
        raise ValueError(f"SOLO {variant} round {r} asked for, but the config gives it {variant_rounds(variant)} "
                         f"self-training rounds (selftrain.rounds, exemplar.rounds)")
    inputs = {"manifest": f"results/{exp}/data/manifest.parquet", "masks": training_masks(exp, variant, r),
              "backbone": f"results/{exp}/pretrain/backbone.pt"}
    if r > 0 and config["selftrain"]["init"] == "finetune":
        inputs["init"] = f"results/{exp}/solo/{variant}/round{r - 1}/model.pt"
    if variant != "freesolo":
        inputs["pool"] = f"results/{exp}/exemplar/n{variant.removeprefix('exemplar_n')}/pool"
    return inputs


def relabel_inputs(wildcards):
    r, exp, k, variant = int(wildcards.round), wildcards.experiment, wildcards.shard, wildcards.variant
    if r < 1:
        raise ValueError("relabelled masks exist for self-training rounds >= 1 only")
    inputs = {"predictions": f"results/{exp}/solo/{variant}/round{r - 1}/pred/{k}.zarr"}
    if config["selftrain"]["keep_previous"]:
        inputs["previous"] = training_masks(exp, variant, r - 1, shard=k)
    return inputs


def solo_variants():
    return ["freesolo"] + [f"exemplar_n{n}" for n in config["exemplar"]["counts"]]


def variant_rounds(variant):
    """Self-training rounds after round 0 of a SOLO variant."""
    if variant != "freesolo" and config["exemplar"]["rounds"] is not None:
        return config["exemplar"]["rounds"]
    return config["selftrain"]["rounds"]


def solo_evals(wildcards):
    return [f"results/{wildcards.experiment}/eval/{v}/round{r}/metrics.parquet"
            for v in solo_variants() for r in range(variant_rounds(v) + 1)]


def stego_train_inputs(wildcards):
    exp = wildcards.experiment
    inputs = {"manifest": f"results/{exp}/data/manifest.parquet", "backbone": f"results/{exp}/pretrain/backbone.pt"}
    if has_ground_truth():
        inputs["gt"] = f"results/{exp}/data/instances_gt.json"  # the linear probe (evaluation only)
    return inputs


def stego_evals(wildcards):
    on = config["stego"]["enabled"] and has_ground_truth()
    return [f"results/{wildcards.experiment}/eval/stego/metrics.parquet"] if on else []


def pct_on():
    return config["pct"]["enabled"] and has_ground_truth()


def pct_families():
    """(ratio wildcard, mode) of every PCT run the config asks for."""
    from maskless.pct.stage import ratio_name

    return [(ratio_name(r), "ctr" if c else "plain") for r in config["pct"]["ratios"] for c in config["pct"]["contextrast"]]


def pct_train_inputs(wildcards, kind):
    exp, base = wildcards.experiment, f"results/{wildcards.experiment}/pct/ratio{wildcards.ratio}"
    inputs = {"split": f"{base}/split.json", "manifest": f"results/{exp}/data/manifest.parquet",
              "gt": f"results/{exp}/data/instances_gt.json"}
    if config["pct"]["backbone"] == "pretrain":
        inputs["backbone"] = f"results/{exp}/pretrain/backbone.pt"
    if kind == "retrain":
        inputs["pseudo"] = f"{base}/{wildcards.mode}/pseudo"
    return inputs


def pct_train_params(kind):
    """Params of the three training rules (they differ only by kind and inputs)."""
    return dict(
        kind=kind,
        pct=section_params(config, "pct", exclude=("threads", "enabled", "ratios", "contextrast", "pseudo")),
        arch=config["pretrain"]["arch"],
        seed=config["seed"],
        device=config["device"],
        processes=config["train_processes"],
    )


def pct_evals(wildcards):
    if not pct_on():
        return []
    return [f"results/{wildcards.experiment}/eval/pct/ratio{r}/{m}/metrics.parquet" for r, m in pct_families()]


def report_inputs(wildcards):
    """Everything the run makes, so the report figures come last."""
    return get_final_outputs(report=False)


def get_final_outputs(report=True):
    out = [f"results/{EXP}/freemask/index.parquet", f"results/{EXP}/freemask/annotations.json",
           *[f"results/{EXP}/solo/{v}/round{variant_rounds(v)}/index.parquet" for v in solo_variants()]]
    if config["stego"]["enabled"]:
        out.append(f"results/{EXP}/stego/model.pt")
    if has_ground_truth():
        out.append(f"results/{EXP}/tables/metrics.md")
    if pct_on():
        out += [f"results/{EXP}/pct/ratio{r}/{m}/retrain/model.pt" for r, m in pct_families()]
    if report and config["report"]["enabled"]:
        out.append(f"results/{EXP}/report")
    return out
