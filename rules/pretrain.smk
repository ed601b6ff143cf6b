# DenseCL self-supervised pretraining of the backbone, or the user's given weights (pretrain.weights: a path
# or a name of maskless/models/registry.py).


rule pretrain:
    input:
        **pretrain_given(),  # named weights: their cache file, fetched by rule fetch_weights (rules/weights.smk)
        manifest="results/{experiment}/data/train/manifest.parquet",
    output:
        weights="results/{experiment}/pretrain/backbone.pt",
        loss_log="results/{experiment}/pretrain/loss.csv",
    log:
        "results/{experiment}/logs/pretrain.log",
    benchmark:
        "results/{experiment}/benchmarks/pretrain.tsv"
    conda:
        ENV
    threads: config["pretrain"]["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=config["train_processes"],
    params:
        densecl=section_params(config, "pretrain"),
        weights=config["pretrain"]["weights"],
        seed=seed_param,
        device=config["device"],
        processes=config["train_processes"],  # data-parallel training processes (maskless/dist.py)
        # Resumable state lives outside the outputs: Snakemake deletes outputs before a job starts.
        state_dir=lambda wc: f"results/{wc.experiment}/_state/pretrain",
    script:
        "../stages/pretrain.py"
