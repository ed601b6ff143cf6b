"""The optional separate evaluation set of the instance stages (config `dataset.eval`): config logic only.

FreeSOLO's protocol trains on unlabeled images (COCO train2017 + unlabeled2017, annotations unused) and
scores on other images (val2017). With `dataset.eval` null (the default) every instance stage is scored on
the images it ran on, the training images, which then need ground truth (kind synthetic or coco). With an
evaluation set, the image set `eval` (the {images} wildcard of the rules, rules/common.smk IMAGE_SETS and
SCORED): the extractors and every evaluated SOLO variant and round also predict on its images, and the
instance evaluations score those predictions against its annotations; self-training still relabels the
training images. The paths are the rules' (the Snakefile lists them); nothing here builds one.
"""

from __future__ import annotations


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
