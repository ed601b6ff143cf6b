# Input functions and helpers of rules/eval.smk (functions only: snakemake --lint keeps them apart from rules).


def instance_gt(wildcards):
    """The ground truth of the instance evaluations: the scored images' (SCORED)."""
    return f"results/{wildcards.experiment}/data/{SCORED}/instances_gt.json"


def instance_evals(wildcards):
    """The instance metrics of every extractor's masks and of every SOLO variant and round (none with the branch off or
    nothing to score against)."""
    if not (instances_on() and evalset.instance_eval_on(config)):
        return []
    return [
        f"results/{wildcards.experiment}/eval/{x}/metrics.parquet" for x in EXTRACTORS
    ] + [
        f"results/{wildcards.experiment}/eval/{v}/round{r}/metrics.parquet"
        for v in solo_variants()
        for r in range(variant_rounds(v) + 1)
    ]


def mask_sets():
    if not (instances_on() and has_ground_truth()):
        return []
    return list(EXTRACTORS) + [
        f"{v}_round{r}"
        for v in solo_variants()
        for r in range(1, variant_rounds(v) + 1)
    ]


def mask_set_index(wildcards):
    if wildcards.masks in EXTRACTORS:
        return f"results/{wildcards.experiment}/{wildcards.masks}/train/index.parquet"
    variant, _, r = wildcards.masks.rpartition("_round")
    return training_masks(wildcards.experiment, variant, int(r))


def run_metrics(exp):
    """Every metric file of one run."""
    wc = SimpleNamespace(experiment=exp)
    return instance_evals(wc) + stego_evals(wc) + pct_evals(wc) + pct_oracle_evals(wc)


def claims_inputs(wildcards):
    return [path for run in RUNS for path in run_metrics(run)]
