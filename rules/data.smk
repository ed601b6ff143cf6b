# Datasets: the synthetic generator and the ingest of any dataset into the image manifest.


include: "inputs/data.smk"


rule synthetic:
    output:
        instances="data/synthetic/{experiment}/instances.json",
        images=directory("data/synthetic/{experiment}/images"),
        semantic=directory("data/synthetic/{experiment}/semantic"),
        tags="data/synthetic/{experiment}/tags.csv",
    log:
        "results/{experiment}/logs/synthetic.log",
    benchmark:
        "results/{experiment}/benchmarks/synthetic.tsv"
    wildcard_constraints:
        experiment=re.escape(EXP),  # one dataset for every seed's run (dataset_source)
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        synthetic=config["synthetic"],
        seed=config["seed"],
    script:
        "../stages/synthetic.py"


checkpoint ingest:
    input:
        unpack(dataset_source),
    output:
        manifest="results/{experiment}/data/train/manifest.parquet",
        gt=(
            "results/{experiment}/data/train/instances_gt.json"
            if has_ground_truth()
            else []
        ),
        summary="results/{experiment}/data/train/ingest_summary.json",
    log:
        "results/{experiment}/logs/ingest.log",
    benchmark:
        "results/{experiment}/benchmarks/ingest.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,  # decodes every image once: ~241k for COCO train2017 + unlabeled2017
    params:
        kind=config["dataset"]["kind"],
        images=config["dataset"]["images"],
        annotations=config["dataset"]["annotations"],
        on_bad_image=config["dataset"]["on_bad_image"],
        max_images=config["dataset"]["max_images"],
        inputs=DATASET_INPUTS,
    script:
        "../stages/ingest.py"


# The evaluation set (dataset.eval, COCO format: e.g. val2017 when training on train2017 + unlabeled2017):
# the image set `eval`, its own manifest and ground truth beside the training set's (its own rule: its files
# and params are the eval section's). The rules with an {images} wildcard run on it like on `train`.
if eval_set() is not None:

    checkpoint ingest_eval:
        output:
            manifest="results/{experiment}/data/eval/manifest.parquet",
            gt="results/{experiment}/data/eval/instances_gt.json",
            summary="results/{experiment}/data/eval/ingest_summary.json",
        log:
            "results/{experiment}/logs/ingest_eval.log",
        benchmark:
            "results/{experiment}/benchmarks/ingest_eval.tsv"
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            kind="coco",
            images=eval_set()["images"],
            annotations=eval_set()["annotations"],
            on_bad_image=config["dataset"]["on_bad_image"],
            max_images=eval_set()["max_images"],
            split="eval",
            inputs=input_fingerprint(eval_set()["images"], eval_set()["annotations"]),
        script:
            "../stages/ingest.py"


# The ground-truth masks as a mask store (config `oracles`): the oracle SOLO variant's training masks, in the
# Free Mask sharding (maskless/data/gt_masks.py).


rule gt_masks_shard:
    input:
        manifest="results/{experiment}/data/train/manifest.parquet",
        gt="results/{experiment}/data/train/instances_gt.json",
    output:
        store=directory("results/{experiment}/data/gt_masks/shards/{shard}.zarr"),
    log:
        "results/{experiment}/logs/gt_masks/{shard}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        shard_size=config["freemask"]["shard_size"],
        embedding_dim=config["freemask"]["embedding_dim"],
    script:
        "../stages/gt_masks.py"


rule gt_masks_index:
    input:
        manifest="results/{experiment}/data/train/manifest.parquet",
        shards=lambda wc: shard_paths(wc, "data/gt_masks/shards"),
    output:
        index="results/{experiment}/data/gt_masks/index.parquet",
    log:
        "results/{experiment}/logs/gt_masks/index.log",
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        max_dets=config["eval"]["max_dets"],
    script:
        "../stages/mask_index.py"
