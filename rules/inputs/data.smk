# Input functions and helpers of rules/data.smk (functions only: snakemake --lint keeps them apart from rules).


def dataset_source(wildcards):
    """Inputs of the ingest rule: the generated dataset, or nothing (user files are params)."""
    if (
        config["dataset"]["kind"] == "synthetic"
    ):  # one dataset (made with `seed`) for every seed's run
        return {
            "instances": f"data/synthetic/{EXP}/instances.json",
            "images": f"data/synthetic/{EXP}/images",
        }
    return {}
