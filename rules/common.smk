# Config validation, path helpers, wildcard constraints and small input functions. Nothing else.

import os
import re
import sys
from types import SimpleNamespace

from maskless import evalset
from maskless.config import check_image_count, section_params, validate_config
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


def weights_file(value: str) -> str:
    """The local file a config value naming weights stands for (maskless/models/registry.py): an existing
    path stays itself; a registry name (or one of config weights.extra) becomes <weights.cache>/<file>, which
    rule fetch_weights downloads. A name whose file is missing and whose host is unreachable stops the
    workflow here, before any job, with the URL to fetch by hand and the path to put it at.
    """
    section = config.get("weights") or {}
    return require_weights(value, section.get("cache", "weights"), section.get("extra"))


def pretrain_given():
    """The pretrain rule's input `given`, the cache file of a named pretrain.weights (a path is a param)."""
    value = config["pretrain"]["weights"]
    return {"given": weights_file(value)} if value and not os.path.isfile(value) else {}


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


def instance_gt(wildcards):
    """The ground truth of the instance evaluations: the scored images' (SCORED)."""
    return f"results/{wildcards.experiment}/data/{SCORED}/instances_gt.json"


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


def instances_on():
    """The instance branch (Free Mask -> SOLO -> exemplars, self-training) runs unless freemask.enabled is false."""
    return config["freemask"]["enabled"]


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


def backbone_file(section, exp):
    """The backbone checkpoint of stego / freemask (config <section>.backbone): the pretrain stage's, or the
    file a path or named weight stands for (weights_file)."""
    value = config[section]["backbone"]
    return (
        f"results/{exp}/pretrain/backbone.pt"
        if value == "pretrain"
        else weights_file(value)
    )


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
    """Params of the three training rules (they differ only by kind and inputs). Left out: the split's keys
    (eval_fraction, stratified: the split file is an input) and pct.train.num_workers, which does not change
    the result, so changing it must rerun nothing (the stage reads it from the config).
    """
    pct = section_params(
        config,
        "pct",
        exclude=(
            "threads",
            "enabled",
            "ratios",
            "counts",
            "contextrast",
            "pseudo",
            "data",
            "eval_fraction",
            "stratified",
        ),
    )
    pct["train"] = {k: v for k, v in pct["train"].items() if k != "num_workers"}
    return dict(
        kind=kind,
        pct=pct,
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


def report_files(exp):
    """What the report figures draw (the fields of maskless.report.ReportInputs), exactly the files this run
    makes: field -> path, or -> [path] (metrics), or -> {key: path} with the key saying what the file is of
    (variant and round, budget and mode (and PCT run), exemplar count)."""
    wc = SimpleNamespace(experiment=exp)
    files = {
        "manifest": f"results/{exp}/data/train/manifest.parquet",
        "metrics": instance_evals(wc) + stego_evals(wc),
    }
    if has_ground_truth():
        files["ground_truth"] = f"results/{exp}/data/train/instances_gt.json"
    if SCORED == "eval":
        files["eval_manifest"] = f"results/{exp}/data/eval/manifest.parquet"
        files["eval_ground_truth"] = f"results/{exp}/data/eval/instances_gt.json"
    stego_pretrain = (
        config["stego"]["enabled"] and config["stego"]["backbone"] == "pretrain"
    )
    if (
        instances_on()
        or stego_pretrain
        or (pct_on() and config["pct"]["backbone"] == "pretrain")
    ):
        files["pretrain_loss"] = f"results/{exp}/pretrain/loss.csv"
    if instances_on():
        if "freemask" in EXTRACTORS:  # the report's "Free Mask" strip
            files["freemask"] = f"results/{exp}/freemask/{SCORED}/index.parquet"
        # every round's predictions where the rounds are scored, else the last round's (run_outputs)
        files["solo"] = {
            (v, r): f"results/{exp}/solo/{v}/round{r}/pred/{SCORED}/index.parquet"
            for v in solo_variants()
            for r in (
                range(variant_rounds(v) + 1)
                if instance_evals(wc)
                else [variant_rounds(v)]
            )
        }
        files["solo_losses"] = {
            (v, r): f"results/{exp}/solo/{v}/round{r}/loss.csv"
            for v in solo_variants()
            for r in range(variant_rounds(v) + 1)
        }
        files["pools"] = {
            n: f"results/{exp}/exemplar/n{n}/pool" for n in config["exemplar"]["counts"]
        }
    if config["stego"]["enabled"]:
        files |= {
            "backbone": backbone_file("stego", exp),
            "stego": f"results/{exp}/stego/model.pt",
            "stego_loss": f"results/{exp}/stego/loss.csv",
        }
    if pct_on():
        files["pct"] = {
            (b, m): f"results/{exp}/pct/{b}/{m}/retrain/model.pt"
            for b, m in pct_families()
        }
        files["pct_losses"] = {
            (b, m, run): f"results/{exp}/pct/{b}/{m}/{run}/loss.csv"
            for b, m in pct_families()
            for run in ("strong_only", "pct", "retrain")
        }
        files["pct_metrics"] = dict(zip(pct_families(), pct_evals(wc)))
        if config["pct"]["data"] is not None:
            data = pct_data_inputs(wc)
            files |= {"pct_manifest": data["manifest"], "pct_labels": data["gt"]}
    return {name: value for name, value in files.items() if value}


def report_inputs(wildcards):
    """The named inputs of the report figures: report_files' paths, and as "after" everything else the run
    makes, so the report figures come last."""
    files = report_files(wildcards.experiment)
    return {
        **{n: list(v.values()) if isinstance(v, dict) else v for n, v in files.items()},
        "after": run_outputs(wildcards.experiment, report=False),
    }


def report_keys(wildcards):
    """The keys of report_files' keyed inputs, in their paths' order (a param: the figures name them)."""
    return {
        name: [list(k) if isinstance(k, tuple) else k for k in v]
        for name, v in report_files(wildcards.experiment).items()
        if isinstance(v, dict)
    }


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


def run_metrics(exp):
    """Every metric file of one run."""
    wc = SimpleNamespace(experiment=exp)
    return instance_evals(wc) + stego_evals(wc) + pct_evals(wc) + pct_oracle_evals(wc)


def claims_inputs(wildcards):
    return [path for run in RUNS for path in run_metrics(run)]


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
