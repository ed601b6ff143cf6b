# Self-supervised SOLOv2 and its self-training rounds, for each variant: "freesolo" (FreeSOLO) and
# "exemplar_n<count>" (Exemplar-FreeSOLO: the same training plus the EEC term against the exemplar pool mined
# with <count> images, rules/exemplar.smk). Round 0 trains on the Free Mask masks; round r >= 1 on round
# r-1's predictions on the training images, relabelled shard by shard (score, count and width filters).
# Each round predicts on an image set ({images}): the training images where a later round relabels them,
# the scored images (SCORED in rules/common.smk) for its evaluation. Prediction and relabel shards follow
# the sharding of freemask.shard_size.


include: "inputs/solo.smk"


rule solo_train:
    input:
        unpack(solo_train_inputs),
    output:
        weights="results/{experiment}/solo/{variant}/round{round}/model.pt",
        loss_log="results/{experiment}/solo/{variant}/round{round}/loss.csv",
    log:
        "results/{experiment}/logs/solo/{variant}/round{round}/train.log",
    benchmark:
        "results/{experiment}/benchmarks/solo/{variant}/round{round}/train.tsv"
    conda:
        ENV
    threads: config["solo"]["threads"]
    resources:
        mem_mb=8000,
        runtime=480,
        gpu=config["train_processes"],
    params:
        solo=section_params(config, "solo"),
        arch=config["pretrain"]["arch"],
        emb_dim=config["freemask"]["embedding_dim"],
        init=lambda wc: (
            "pretrained" if int(wc.round) == 0 else config["selftrain"]["init"]
        ),
        seed=seed_param,
        device=config["device"],
        eec=lambda wc: (
            config["exemplar"]["eec"] if wc.variant.startswith("exemplar_n") else None
        ),
        processes=config["train_processes"],  # data-parallel training processes (maskless/dist.py)
        state_dir=lambda wc: f"results/{wc.experiment}/_state/solo/{wc.variant}/round{wc.round}",
    script:
        "../stages/solo_train.py"


rule solo_predict:
    input:
        manifest="results/{experiment}/data/{images}/manifest.parquet",
        weights="results/{experiment}/solo/{variant}/round{round}/model.pt",
    output:
        store=directory(
            "results/{experiment}/solo/{variant}/round{round}/pred/{images}/shards/{shard}.zarr"
        ),
    log:
        "results/{experiment}/logs/solo/{variant}/round{round}/pred_{images}_{shard}.log",
    benchmark:
        "results/{experiment}/benchmarks/solo/{variant}/round{round}/pred_{images}_{shard}.tsv"
    conda:
        ENV
    threads: config["solo"]["predict_threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    params:
        inference=config["solo"]["inference"],
        input_size=config["solo"]["input_size"],
        shard_size=config["freemask"]["shard_size"],
        batch_size=config["solo"]["predict_batch_size"],
        device=config["device"],
    script:
        "../stages/solo_predict.py"


rule solo_index:
    input:
        manifest="results/{experiment}/data/{images}/manifest.parquet",
        shards=lambda wc: shard_paths(
            wc, f"solo/{wc.variant}/round{wc.round}/pred/{wc.images}/shards", wc.images
        ),
    output:
        index="results/{experiment}/solo/{variant}/round{round}/pred/{images}/index.parquet",
        results="results/{experiment}/solo/{variant}/round{round}/pred/{images}/results.json",
    log:
        "results/{experiment}/logs/solo/{variant}/round{round}/index_{images}.log",
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


rule selftrain_relabel:
    input:
        unpack(relabel_inputs),
    output:
        store=directory(
            "results/{experiment}/solo/{variant}/round{round}/labels/{shard}.zarr"
        ),
    log:
        "results/{experiment}/logs/solo/{variant}/round{round}/labels_{shard}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        relabel=section_params(config, "selftrain"),
    script:
        "../stages/selftrain_relabel.py"


rule selftrain_labels_index:
    input:
        manifest="results/{experiment}/data/train/manifest.parquet",
        shards=lambda wc: shard_paths(wc, f"solo/{wc.variant}/round{wc.round}/labels"),
    output:
        index="results/{experiment}/solo/{variant}/round{round}/labels.parquet",
        annotations="results/{experiment}/solo/{variant}/round{round}/labels.json",
    log:
        "results/{experiment}/logs/solo/{variant}/round{round}/labels_index.log",
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
