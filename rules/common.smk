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


def shard_stores(wildcards):
    """Every Free Mask shard of the experiment; the count comes from the manifest (a checkpoint)."""
    manifest = checkpoints.ingest.get(experiment=wildcards.experiment).output.manifest
    n = num_shards(manifest, config["freemask"]["shard_size"])
    return [f"results/{wildcards.experiment}/freemask/shards/{k}.zarr" for k in range(n)]


def get_final_outputs():
    out = [f"results/{EXP}/freemask/index.parquet", f"results/{EXP}/freemask/annotations.json"]
    if has_ground_truth():
        out.append(f"results/{EXP}/tables/metrics.md")
    return out
