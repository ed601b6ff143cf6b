# What every coarse-mask extractor's shard stores (EXTRACTORS in the Snakefile) get: one parquet index over
# the shards of an image set, with the masks exported as COCO results (what the instance evaluation scores)
# and annotations (to train any detector), in one pass (stages/mask_index.py).


rule masks_index:
    input:
        manifest="results/{experiment}/data/{images}/manifest.parquet",
        shards=lambda wc: shard_paths(
            wc, f"{wc.extractor}/{wc.images}/shards", wc.images
        ),
    output:
        index="results/{experiment}/{extractor}/{images}/index.parquet",
        results="results/{experiment}/{extractor}/{images}/results.json",
        annotations="results/{experiment}/{extractor}/{images}/annotations.json",
    log:
        "results/{experiment}/logs/{extractor}/{images}_index.log",
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
