# Input functions and helpers of rules/pct.smk (functions only: snakemake --lint keeps them apart from rules).


def pct_on():
    """PCT runs on the dataset's ground truth or on the user files of pct.data."""
    return config["pct"]["enabled"] and (
        has_ground_truth() or config["pct"]["data"] is not None
    )


def pct_families():
    """(budget wildcard, mode) of every PCT run the config asks for: ratio<r> per pct.ratios, count<n> per
    pct.counts."""
    from maskless.pct.budget import budget_name

    budgets = [budget_name(ratio=r) for r in config["pct"]["ratios"]]
    budgets += [budget_name(count=n) for n in config["pct"]["counts"]]
    return [
        (b, "ctr" if c else "plain")
        for b in budgets
        for c in config["pct"]["contextrast"]
    ]


def pct_data_inputs(wildcards):
    """The image manifest and label source of the PCT rules: the dataset's (ingest), or pct.data's (pct_data)."""
    exp = wildcards.experiment
    if config["pct"]["data"] is None:
        return {
            "manifest": f"results/{exp}/data/train/manifest.parquet",
            "gt": f"results/{exp}/data/train/instances_gt.json",
        }
    return {
        "manifest": f"results/{exp}/pct/data/manifest.parquet",
        "gt": f"results/{exp}/pct/data/labels.json",
    }


def pct_split_params():
    """Params of pct_split: eval_fraction only where it is used (the dataset-ground-truth source)."""
    params = dict(stratified=config["pct"]["stratified"], seed=seed_param)
    if config["pct"]["data"] is None:
        params = dict(eval_fraction=config["pct"]["eval_fraction"], **params)
    return params


def pct_train_inputs(wildcards, kind):
    exp, base = (
        wildcards.experiment,
        f"results/{wildcards.experiment}/pct/{wildcards.budget}",
    )
    inputs = {"split": f"{base}/split.json", **pct_data_inputs(wildcards)}
    if config["pct"]["backbone"] == "pretrain":
        inputs["backbone"] = f"results/{exp}/pretrain/backbone.pt"
    if kind == "retrain":
        inputs["pseudo"] = f"{base}/{wildcards.mode}/pseudo"
    return inputs


def pct_train_params(kind):
    """Params of the three training rules (they differ only by kind and inputs). section_params leaves out
    the keys the schema marks with x-role, among them the split's (eval_fraction, stratified: the split file
    is an input) and pct.train.num_workers, which does not change the result, so changing it reruns
    nothing (the stage reads it from the config).
    """
    return dict(
        kind=kind,
        pct=section_params(config, "pct"),
        arch=config["pretrain"]["arch"],
        seed=seed_param,
        device=config["device"],
        processes=config["train_processes"],
    )


def pct_evals(wildcards):
    if not pct_on():
        return []
    return [
        f"results/{wildcards.experiment}/eval/pct/{b}/{m}/metrics.parquet"
        for b, m in pct_families()
    ]


def pct_budget_texts():
    """The PCT budgets as the metric rows' budget column holds them (0.125, 92)."""
    from maskless.pct.budget import budget_text

    return (
        list(dict.fromkeys(budget_text(b) for b, _ in pct_families()))
        if pct_on()
        else []
    )


PCT_ORACLE_BUDGET = (
    "ratio1"  # every training image labelled (rule pct_eval_oracle's paths)
)


def pct_oracle_on():
    """PCT's oracle (config `oracles`, the dataset's ground truth): the strong-only net with every training
    image labelled (budget ratio1, plain), scored on the held-out images like every PCT model.
    """
    return bool(config["oracles"]) and pct_on() and config["pct"]["data"] is None


def pct_oracle_text():
    """The budget column of the oracle's metric rows ("1"), None when there is no oracle."""
    from maskless.pct.budget import budget_text

    return budget_text(PCT_ORACLE_BUDGET) if pct_oracle_on() else None


def pct_oracle_evals(wildcards):
    exp = wildcards.experiment
    return (
        [f"results/{exp}/eval/pct/{PCT_ORACLE_BUDGET}/oracle/metrics.parquet"]
        if pct_oracle_on()
        else []
    )
