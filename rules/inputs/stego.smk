# Input functions and helpers of rules/stego.smk (functions only: snakemake --lint keeps them apart from rules).


def stego_train_inputs(wildcards):
    exp = wildcards.experiment
    inputs = {
        "manifest": f"results/{exp}/data/train/manifest.parquet",
        "backbone": backbone_file("stego", exp),
    }
    if has_ground_truth():
        inputs["gt"] = (
            f"results/{exp}/data/train/instances_gt.json"  # the linear probe (evaluation only)
        )
    return inputs


def stego_evals(wildcards):
    on = config["stego"]["enabled"] and has_ground_truth()
    return [f"results/{wildcards.experiment}/eval/stego/metrics.parquet"] if on else []
