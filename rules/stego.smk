# STEGO unsupervised semantic segmentation on a frozen backbone (stego.backbone: the pretrain stage's, or a
# checkpoint path or named weights of any backbone of maskless/models/backbones.py): features + kNN + head and probes
# (one job), then the evaluation of the cluster probe, the linear probe (each with and without CRF) and the
# k-means baseline against the instances' thing classes.


include: "inputs/stego.smk"


rule stego_train:
    input:
        unpack(stego_train_inputs),
    output:
        model="results/{experiment}/stego/model.pt",
        knn="results/{experiment}/stego/knn.npy",
        loss_log="results/{experiment}/stego/loss.csv",
    log:
        "results/{experiment}/logs/stego/train.log",
    benchmark:
        "results/{experiment}/benchmarks/stego/train.tsv"
    conda:
        ENV
    threads: config["stego"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        stage=section_params(config, "stego"),
        train=config["stego"]["train"],
        seed=seed_param,
        device=config["device"],
        state_dir=lambda wc: f"results/{wc.experiment}/_state/stego",
    script:
        "../stages/stego_train.py"


rule stego_eval:
    input:
        manifest="results/{experiment}/data/train/manifest.parquet",
        backbone=lambda wc: backbone_file("stego", wc.experiment),
        model="results/{experiment}/stego/model.pt",
        gt="results/{experiment}/data/train/instances_gt.json",
    output:
        metrics="results/{experiment}/eval/stego/metrics.parquet",
        table="results/{experiment}/eval/stego/metrics.md",
    log:
        "results/{experiment}/logs/eval/stego.log",
    benchmark:
        "results/{experiment}/benchmarks/eval/stego.tsv"
    conda:
        ENV
    threads: config["stego"]["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        stage=section_params(config, "stego"),
        flip=config["stego"]["flip"],
        crf=config["stego"]["crf"],
        dataset=config["dataset"]["name"],
        seed=seed_param,
        device=config["device"],
    script:
        "../stages/stego_eval.py"
