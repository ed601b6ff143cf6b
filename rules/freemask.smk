# FreeSOLO's Free Mask, a coarse-mask extractor (EXTRACTORS in the Snakefile): one job and one zarr store per
# shard of an image set (the training images, and with dataset.eval the evaluation images, with the same
# params, so the masks scored are made exactly like the training masks). rules/masks.smk indexes them.


rule freemask_shard:
    input:
        manifest="results/{experiment}/data/{images}/manifest.parquet",
        weights=lambda wc: backbone_file("freemask", wc.experiment),
    output:
        store=directory("results/{experiment}/freemask/{images}/shards/{shard}.zarr"),
    log:
        "results/{experiment}/logs/freemask/{images}/{shard}.log",
    benchmark:
        "results/{experiment}/benchmarks/freemask/{images}/{shard}.tsv"
    conda:
        ENV
    threads: config["freemask"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    params:
        freemask=section_params(config, "freemask"),
        shard_size=config["freemask"]["shard_size"],
        batch_size=config["freemask"]["batch_size"],
        device=config["device"],
    script:
        "../stages/freemask_shard.py"
