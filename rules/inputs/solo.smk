# Input functions and helpers of rules/solo.smk (functions only: snakemake --lint keeps them apart from rules).


def training_masks(experiment, variant, round, shard=None):
    """Masks SOLO round `round` trains on: for round 0 the training images' masks of the extractor config
    solo.masks names (the ground truth for the oracle), else that round's relabelled predictions.
    """
    if round == 0:
        base = f"results/{experiment}/" + (
            "data/gt_masks/"
            if variant == "oracle"
            else f"{config['solo']['masks']}/train/"
        )
        return base + ("index.parquet" if shard is None else f"shards/{shard}.zarr")
    base = f"results/{experiment}/solo/{variant}/round{round}/"
    return base + ("labels.parquet" if shard is None else f"labels/{shard}.zarr")


def solo_train_inputs(wildcards):
    r, exp, variant = int(wildcards.round), wildcards.experiment, wildcards.variant
    if r > variant_rounds(variant):
        raise ValueError(
            f"SOLO {variant} round {r} asked for, but the config gives it {variant_rounds(variant)} "
            f"self-training rounds (selftrain.rounds, exemplar.rounds)"
        )
    inputs = {
        "manifest": f"results/{exp}/data/train/manifest.parquet",
        "masks": training_masks(exp, variant, r),
        "backbone": f"results/{exp}/pretrain/backbone.pt",
    }
    if r > 0 and config["selftrain"]["init"] == "finetune":
        inputs["init"] = f"results/{exp}/solo/{variant}/round{r - 1}/model.pt"
    if variant.startswith("exemplar_n"):
        inputs["pool"] = (
            f"results/{exp}/exemplar/n{variant.removeprefix('exemplar_n')}/pool"
        )
    return inputs


def relabel_inputs(wildcards):
    r, exp, k, variant = (
        int(wildcards.round),
        wildcards.experiment,
        wildcards.shard,
        wildcards.variant,
    )
    if r < 1:
        raise ValueError("relabelled masks exist for self-training rounds >= 1 only")
    inputs = {
        "predictions": f"results/{exp}/solo/{variant}/round{r - 1}/pred/train/shards/{k}.zarr"
    }
    if config["selftrain"]["keep_previous"]:
        inputs["previous"] = training_masks(exp, variant, r - 1, shard=k)
    return inputs


def solo_variants():
    """FreeSOLO, Exemplar-FreeSOLO per exemplar count (by value), and the oracle (SOLO on the ground truth) if
    asked: the pipeline order the report draws them in."""
    oracle = ["oracle"] if config["oracles"] else []
    counts = sorted(config["exemplar"]["counts"])
    return ["freesolo"] + [f"exemplar_n{n}" for n in counts] + oracle


def solo_row_columns(wildcards):
    """The metric-row method and variant (maskless/eval/metrics.py) of a SOLO variant of solo_variants()."""
    columns = {"freesolo": ("freesolo", ""), "oracle": ("oracle", "")}
    columns |= {
        f"exemplar_n{n}": ("exemplar", str(n)) for n in config["exemplar"]["counts"]
    }
    if wildcards.variant not in columns:
        raise ValueError(
            f"SOLO variant {wildcards.variant!r} is not one of this config's: {sorted(columns)}"
        )
    method, variant = columns[wildcards.variant]
    return {"method": method, "variant": variant}


def variant_rounds(variant):
    """Self-training rounds after round 0 of a SOLO variant (none for the oracle: its masks are the truth)."""
    if variant == "oracle":
        return 0
    if variant != "freesolo" and config["exemplar"]["rounds"] is not None:
        return config["exemplar"]["rounds"]
    return config["selftrain"]["rounds"]
