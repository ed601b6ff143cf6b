"""The optional separate evaluation set of the instance stages (config `dataset.eval`) and its paths.

FreeSOLO's protocol trains on unlabeled images (COCO train2017 + unlabeled2017, annotations unused) and
scores on other images (val2017). With `dataset.eval` null (the default) every instance stage is scored on
the images it ran on, the training images, which then need ground truth (kind synthetic or coco). With an
evaluation set, Free Mask and every evaluated SOLO variant and round also predict on its images, and the
instance evaluations score those predictions against its annotations; self-training still relabels the
training images, so a round that is relabelled from has predictions on both sets.

The paths below are the single source of the evaluation-set files: the rules name them as outputs and the
input functions of rules/common.smk return them (formatted), so no rule writes another rule's path by hand.
Nothing here changes a path of a run without an evaluation set.
"""

from __future__ import annotations

# Rule ingest_eval (a checkpoint: the shard count of the evaluation images comes from its manifest).
EVAL_MANIFEST = "results/{experiment}/data/eval_manifest.parquet"
EVAL_GT = "results/{experiment}/data/eval_instances_gt.json"
# Rules freemask_eval_shard and freemask_eval_index: Free Mask on the evaluation images.
FREEMASK_EVAL_SHARD = "results/{experiment}/freemask/eval/shards/{shard}.zarr"
FREEMASK_EVAL_INDEX = "results/{experiment}/freemask/eval/index.parquet"
FREEMASK_EVAL_RESULTS = "results/{experiment}/freemask/eval/results.json"
# Rules solo_predict_eval and solo_index_eval: the predictions of SOLO <variant> round <r> on them.
SOLO_EVAL_SHARD = "results/{experiment}/solo/{variant}/round{round}/eval/pred/{shard}.zarr"
SOLO_EVAL_INDEX = "results/{experiment}/solo/{variant}/round{round}/eval/index.parquet"
SOLO_EVAL_RESULTS = "results/{experiment}/solo/{variant}/round{round}/eval/results.json"

# The same files on the training images (rules ingest, freemask_index, solo_index).
TRAIN_GT = "results/{experiment}/data/instances_gt.json"
FREEMASK_RESULTS = "results/{experiment}/freemask/results.json"
SOLO_INDEX = "results/{experiment}/solo/{variant}/round{round}/index.parquet"
SOLO_RESULTS = "results/{experiment}/solo/{variant}/round{round}/results.json"


def eval_set(config: dict) -> dict | None:
    """The `dataset.eval` section of a validated config, or None (score on the training images)."""
    return config["dataset"].get("eval")


def training_ground_truth(config: dict) -> bool:
    """Whether the training images come with ground truth (synthetic or COCO; never an image folder)."""
    return config["dataset"]["kind"] in ("synthetic", "coco")


def instance_eval_on(config: dict) -> bool:
    """Whether the instance stages are scored: on the evaluation set, or on training images with ground truth."""
    return eval_set(config) is not None or training_ground_truth(config)


def eval_dataset_name(config: dict) -> str:
    """The `dataset` column of the instance metric rows: the evaluation set's name, else the dataset's."""
    ev = eval_set(config)
    if ev is None:
        return config["dataset"]["name"]
    return ev.get("name") or f"{config['dataset']['name']}-eval"


def instance_gt(config: dict, experiment: str) -> str:
    """The ground truth the instance stages are scored against."""
    template = EVAL_GT if eval_set(config) is not None else TRAIN_GT
    return template.format(experiment=experiment)


def freemask_results(config: dict, experiment: str) -> str:
    """The Free Mask COCO results that are scored (on the evaluation images when there is an eval set)."""
    template = FREEMASK_EVAL_RESULTS if eval_set(config) is not None else FREEMASK_RESULTS
    return template.format(experiment=experiment)


def solo_index(config: dict, experiment: str, variant: str, round: int | str) -> str:
    """The index of SOLO <variant> round <round>'s predictions on the scored images."""
    template = SOLO_EVAL_INDEX if eval_set(config) is not None else SOLO_INDEX
    return template.format(experiment=experiment, variant=variant, round=round)


def solo_results(config: dict, experiment: str, variant: str, round: int | str) -> str:
    """The COCO results of SOLO <variant> round <round> that eval_solo scores."""
    template = SOLO_EVAL_RESULTS if eval_set(config) is not None else SOLO_RESULTS
    return template.format(experiment=experiment, variant=variant, round=round)
