# Config validation, the image sets, the runs, wildcard constraints, shard paths and the final outputs. The
# input functions of each stage live beside its rules, in rules/inputs/<stage>.smk.

import os
import re
import sys
from types import SimpleNamespace

from maskless import evalset
from maskless.config import check_image_count, validate_config
from maskless.params import section_params
from maskless.data.ingest import dag_image_count, input_fingerprint
from maskless.data.manifest import num_shards
from maskless.models.registry import entries as registry_entries
from maskless.models.registry import require as require_weights

config.update(validate_config(config))

EXP = config["experiment"]
# The image sets ({images}): `train`, the dataset, and `eval`, the evaluation set (dataset.eval; FreeSOLO's
# protocol trains on train2017 + unlabeled2017 and scores on val2017). The instance outputs are scored on
# SCORED: the evaluation images when there are some, else the training images.
IMAGE_SETS = ["train"] + (["eval"] if evalset.eval_set(config) is not None else [])
SCORED = IMAGE_SETS[-1]
if config["solo"]["masks"] not in EXTRACTORS:
    raise ValueError(
        f"config solo.masks: {config['solo']['masks']!r} is not a coarse-mask extractor; the Snakefile's "
        f"EXTRACTORS has {sorted(EXTRACTORS)}"
    )
# What the user's dataset files are now (names, sizes, times; the JSON's bytes): a param of the ingest rules,
# so a changed image set or annotation file reruns ingest and everything after it.
DATASET_INPUTS = (
    input_fingerprint(config["dataset"]["images"], config["dataset"]["annotations"])
    if config["dataset"]["kind"] != "synthetic"
    else {}
)
for _w in check_image_count(
    config,
    dag_image_count(
        config, f"results/{EXP}/data/train/manifest.parquet", DATASET_INPUTS
    ),
    f"dataset {config['dataset']['name']!r}",
):
    print(f"warning: {_w}", file=sys.stderr)
ENV = "../envs/maskless.yaml"


# The runs of this config: the experiment itself, or one per training seed (config `seeds`) below it.
RUNS = [EXP] if config["seeds"] is None else [f"{EXP}/seed{k}" for k in config["seeds"]]


wildcard_constraints:
    # only this config's runs: results/<other>/... is not this run's
    experiment="|".join(re.escape(r) for r in RUNS),
    images="|".join(IMAGE_SETS),
    extractor="|".join(re.escape(x) for x in EXTRACTORS),
    shard=r"\d+",
    stage=r"[a-z0-9_]+",
    round=r"\d+",
    variant=r"freesolo|exemplar_n\d+|oracle",
    n_exemplars=r"\d+",
    budget=r"ratio[0-9]*\.?[0-9]+|count[0-9]+",
    mode=r"plain|ctr",


def seed_param(wildcards):
    """The seed param of a run: k for results/<experiment>/seed<k>/, else the config's seed."""
    found = re.fullmatch(r".*/seed(\d+)", wildcards.experiment)
    return int(found.group(1)) if found else config["seed"]


def has_ground_truth():
    return config["dataset"]["kind"] in ("synthetic", "coco")


def shard_paths(wildcards, folder, images="train"):
    """One store per shard of an image set's manifest, results/<experiment>/<folder>/<k>.zarr; the count comes
    from the manifest (a checkpoint: ingest or ingest_eval). Every per-shard stage shares the sharding of
    freemask.shard_size."""
    ingest = checkpoints.ingest_eval if images == "eval" else checkpoints.ingest
    manifest = ingest.get(experiment=wildcards.experiment).output.manifest
    n = num_shards(manifest, config["freemask"]["shard_size"])
    return [f"results/{wildcards.experiment}/{folder}/{k}.zarr" for k in range(n)]


def eval_set():
    return evalset.eval_set(config)


def instances_on():
    """The instance branch (Free Mask -> SOLO -> exemplars, self-training) runs unless freemask.enabled is false."""
    return config["freemask"]["enabled"]


def run_outputs(exp, report=True):
    """The final outputs of one run (results/<experiment>/ or one seed's folder under it)."""
    # The last round's predictions: on the evaluation images when there is an evaluation set (the training
    # images' are only made where a self-training round relabels them).
    out = []
    if instances_on():
        out += [f"results/{exp}/{x}/train/annotations.json" for x in EXTRACTORS]
        out += [
            f"results/{exp}/solo/{v}/round{variant_rounds(v)}/pred/{SCORED}/index.parquet"
            for v in solo_variants()
        ]
    if config["stego"]["enabled"]:
        out.append(f"results/{exp}/stego/model.pt")
    wc = SimpleNamespace(experiment=exp)
    if (
        instance_evals(wc)
        or stego_evals(wc)
        or (pct_on() and config["pct"]["data"] is None)
    ):
        out.append(f"results/{exp}/tables/metrics.md")
    if mask_sets():
        out.append(f"results/{exp}/tables/mask_quality.md")
    if pct_on():
        out += [
            f"results/{exp}/pct/{b}/{m}/retrain/model.pt" for b, m in pct_families()
        ] + pct_oracle_evals(wc)
        if config["pct"]["data"] is not None:
            out.append(
                f"results/{exp}/tables/pct.md"
            )  # the PCT table (metrics.md needs instance ground truth)
    if report and config["report"]["enabled"]:
        out.append(f"results/{exp}/report")
    return out


def get_final_outputs():
    """Every run's outputs, and the claims table when the config runs several seeds."""
    out = [path for run in RUNS for path in run_outputs(run)]
    if config["seeds"] is not None and any(run_metrics(run) for run in RUNS):
        out.append(f"results/{EXP}/tables/claims.md")
    return out
