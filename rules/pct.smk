# Semi/weakly supervised PCT (with the optional Contextrast loss) per label budget: split -> strong-only
# baseline, PCT pair -> pseudo labels of the weak images -> retrain -> evaluation on held-out images.
# Wildcards: budget ("ratio<r>" for a value of pct.ratios, e.g. ratio0.125, or "count<n>" for a value of
# pct.counts, e.g. count92), mode (plain | ctr = with Contextrast).
# Data: the dataset's ground truth (pct.data null), or the user files of pct.data checked once by pct_data
# (pct_data_inputs in common.smk says which files the PCT rules read; pct_split_params which params).


include: "inputs/pct.smk"


rule pct_data:
    output:
        manifest="results/{experiment}/pct/data/manifest.parquet",
        labels="results/{experiment}/pct/data/labels.json",
    log:
        "results/{experiment}/logs/pct/data.log",
    benchmark:
        "results/{experiment}/benchmarks/pct/data.tsv"
    conda:
        ENV
    threads: config["pct"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        data=config["pct"]["data"],
    script:
        "../stages/pct_data.py"


rule pct_split:
    input:
        unpack(pct_data_inputs),
    output:
        split="results/{experiment}/pct/{budget}/split.json",
    log:
        "results/{experiment}/logs/pct/{budget}/split.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **pct_split_params(),
    script:
        "../stages/pct_split.py"


rule pct_strong_only:
    input:
        unpack(lambda wc: pct_train_inputs(wc, "strong_only")),
    output:
        model="results/{experiment}/pct/{budget}/{mode}/strong_only/model.pt",
        loss_log="results/{experiment}/pct/{budget}/{mode}/strong_only/loss.csv",
    log:
        "results/{experiment}/logs/pct/{budget}/{mode}/strong_only.log",
    benchmark:
        "results/{experiment}/benchmarks/pct/{budget}/{mode}/strong_only.tsv"
    conda:
        ENV
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["train_processes"],
    params:
        **pct_train_params("strong_only"),
        state_dir=lambda wc: f"results/{wc.experiment}/_state/pct/{wc.budget}/{wc.mode}/strong_only",
    script:
        "../stages/pct_train.py"


rule pct_train:
    input:
        unpack(lambda wc: pct_train_inputs(wc, "pct")),
    output:
        model="results/{experiment}/pct/{budget}/{mode}/pct/model.pt",
        loss_log="results/{experiment}/pct/{budget}/{mode}/pct/loss.csv",
    log:
        "results/{experiment}/logs/pct/{budget}/{mode}/pct.log",
    benchmark:
        "results/{experiment}/benchmarks/pct/{budget}/{mode}/pct.tsv"
    conda:
        ENV
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=config["train_processes"],
    params:
        **pct_train_params("pct"),
        state_dir=lambda wc: f"results/{wc.experiment}/_state/pct/{wc.budget}/{wc.mode}/pct",
    script:
        "../stages/pct_train.py"


rule pct_pseudo:
    input:
        split="results/{experiment}/pct/{budget}/split.json",
        manifest=lambda wc: pct_data_inputs(wc)["manifest"],
        model="results/{experiment}/pct/{budget}/{mode}/pct/model.pt",
    output:
        labels=directory("results/{experiment}/pct/{budget}/{mode}/pseudo"),
    log:
        "results/{experiment}/logs/pct/{budget}/{mode}/pseudo.log",
    benchmark:
        "results/{experiment}/benchmarks/pct/{budget}/{mode}/pseudo.tsv"
    conda:
        ENV
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    params:
        input_size=config["pct"]["train"]["input_size"],
        pseudo=config["pct"]["pseudo"],
        device=config["device"],
    script:
        "../stages/pct_pseudo.py"


rule pct_retrain:
    input:
        unpack(lambda wc: pct_train_inputs(wc, "retrain")),
    output:
        model="results/{experiment}/pct/{budget}/{mode}/retrain/model.pt",
        loss_log="results/{experiment}/pct/{budget}/{mode}/retrain/loss.csv",
    log:
        "results/{experiment}/logs/pct/{budget}/{mode}/retrain.log",
    benchmark:
        "results/{experiment}/benchmarks/pct/{budget}/{mode}/retrain.tsv"
    conda:
        ENV
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["train_processes"],
    params:
        **pct_train_params("retrain"),
        state_dir=lambda wc: f"results/{wc.experiment}/_state/pct/{wc.budget}/{wc.mode}/retrain",
    script:
        "../stages/pct_train.py"


rule pct_eval:
    input:
        unpack(pct_data_inputs),
        split="results/{experiment}/pct/{budget}/split.json",
        strong_only="results/{experiment}/pct/{budget}/{mode}/strong_only/model.pt",
        pct="results/{experiment}/pct/{budget}/{mode}/pct/model.pt",
        retrain="results/{experiment}/pct/{budget}/{mode}/retrain/model.pt",
        pseudo="results/{experiment}/pct/{budget}/{mode}/pseudo",
    output:
        metrics="results/{experiment}/eval/pct/{budget}/{mode}/metrics.parquet",
        table="results/{experiment}/eval/pct/{budget}/{mode}/metrics.md",
    log:
        "results/{experiment}/logs/eval/pct_{budget}_{mode}.log",
    benchmark:
        "results/{experiment}/benchmarks/eval/pct_{budget}_{mode}.tsv"
    conda:
        ENV
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        budget=lambda wc: wc.budget,
        mode=lambda wc: wc.mode,
        seed=seed_param,
        input_size=config["pct"]["train"]["input_size"],
        pseudo=config["pct"]["pseudo"],
        dataset=config["dataset"]["name"],
        device=config["device"],
    script:
        "../stages/pct_eval.py"


# PCT's oracle (config `oracles`): the strong-only net trained with every training image labelled (budget
# ratio1, plain mode), scored on the same held-out images; its rows are method pct, variant strong_only,
# budget "1", mode plain.


use rule pct_eval as pct_eval_oracle with:
    input:
        unpack(pct_data_inputs),
        split="results/{experiment}/pct/ratio1/split.json",
        strong_only="results/{experiment}/pct/ratio1/plain/strong_only/model.pt",
    output:
        metrics="results/{experiment}/eval/pct/ratio1/oracle/metrics.parquet",
        table="results/{experiment}/eval/pct/ratio1/oracle/metrics.md",
    log:
        "results/{experiment}/logs/eval/pct_ratio1_oracle.log",
    benchmark:
        "results/{experiment}/benchmarks/eval/pct_ratio1_oracle.tsv"
    params:
        budget=PCT_ORACLE_BUDGET,
        mode="plain",


rule pct_tables:
    input:
        pct=pct_evals,
    output:
        table="results/{experiment}/tables/pct.md",
    log:
        "results/{experiment}/logs/pct_tables.log",
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../stages/pct_tables.py"
