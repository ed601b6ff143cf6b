# The test extractor (tests/workflow/extractor/colorcc.py): one mask store per shard of an image set.


rule colorcc_shard:
    input:
        manifest="results/{experiment}/data/{images}/manifest.parquet",
    output:
        store=directory("results/{experiment}/colorcc/{images}/shards/{shard}.zarr"),
    log:
        "results/{experiment}/logs/colorcc/{images}/{shard}.log",
    threads: 1
    params:
        shard_size=config["freemask"]["shard_size"],
        embedding_dim=config["freemask"]["embedding_dim"],
    script:
        "colorcc.py"
