# FreeSOLO Free Mask: one job and one zarr store per shard of images, then an index over all shards and
# COCO exports (results for evaluation, annotations for training any detector).


rule freemask_shard:
    input:
        manifest="results/{experiment}/data/manifest.parquet",
        weights=lambda wc: backbone_file("freemask", wc.experiment),
    output:
        store=directory("results/{experiment}/freemask/shards/{shard}.zarr"),
    log:
        "results/{experiment}/logs/freemask/{shard}.log",
    benchmark:
        "results/{experiment}/benchmarks/freemask/{shard}.tsv"
    conda:
        ENV
    threads: config["freemask"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    params:
        freemask=section_params(
            config,
            "freemask",
            exclude=("enabled", "threads", "shard_size", "batch_size", "backbone"),
        ),
        shard_size=config["freemask"]["shard_size"],
        batch_size=config["freemask"]["batch_size"],
        device=config["device"],
    script:
        "../stages/freemask_shard.py"


rule freemask_index:
    input:
        manifest="results/{experiment}/data/manifest.parquet",
        shards=shard_stores,
    output:
        index="results/{experiment}/freemask/index.parquet",
        results="results/{experiment}/freemask/results.json",
        annotations="results/{experiment}/freemask/annotations.json",
    log:
        "results/{experiment}/logs/freemask_index.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        max_dets=config["eval"]["max_dets"],
    script:
        "../stages/mask_index.py"


# Free Mask on the evaluation set's images (dataset.eval; paths: maskless/evalset.py): the same job per
# shard with the same params, so the masks scored are made exactly like the training masks.
if eval_set() is not None:

    use rule freemask_shard as freemask_eval_shard with:
        input:
            manifest=evalset.EVAL_MANIFEST,
            weights=lambda wc: backbone_file("freemask", wc.experiment),
        output:
            store=directory(evalset.FREEMASK_EVAL_SHARD),
        log:
            "results/{experiment}/logs/freemask/eval_{shard}.log",
        benchmark:
            "results/{experiment}/benchmarks/freemask/eval_{shard}.tsv"

    use rule freemask_index as freemask_eval_index with:
        input:
            manifest=evalset.EVAL_MANIFEST,
            shards=lambda wc: eval_shard_paths(wc, evalset.FREEMASK_EVAL_SHARD),
        output:
            index=evalset.FREEMASK_EVAL_INDEX,
            results=evalset.FREEMASK_EVAL_RESULTS,
        log:
            "results/{experiment}/logs/freemask_eval_index.log",
