# Semi/weakly supervised PCT (with the optional Contextrast loss) per label ratio: split -> strong-only
# baseline, PCT pair -> pseudo labels of the weak images -> retrain -> evaluation on held-out images.
# Wildcards: ratio (a value of pct.ratios, e.g. 0.125), mode (plain | ctr = with Contextrast).


rule pct_split:
    input:
        manifest="results/{experiment}/data/manifest.parquet",
        gt="results/{experiment}/data/instances_gt.json",
    output:
        split="results/{experiment}/pct/ratio{ratio}/split.json",
    log:
        "results/{experiment}/logs/pct/ratio{ratio}/split.log",
    params:
        eval_fraction=config["pct"]["eval_fraction"],
        stratified=config["pct"]["stratified"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        "../stages/pct_split.py"


rule pct_strong_only:
    input:
        unpack(lambda wc: pct_train_inputs(wc, "strong_only")),
    output:
        model="results/{experiment}/pct/ratio{ratio}/{mode}/strong_only/model.pt",
        loss_log="results/{experiment}/pct/ratio{ratio}/{mode}/strong_only/loss.csv",
    log:
        "results/{experiment}/logs/pct/ratio{ratio}/{mode}/strong_only.log",
    benchmark:
        "results/{experiment}/benchmarks/pct/ratio{ratio}/{mode}/strong_only.tsv"
    params:
        **pct_train_params("strong_only"),
        state_dir=lambda wc: f"results/{wc.experiment}/_state/pct/ratio{wc.ratio}/{wc.mode}/strong_only",
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["train_processes"],
    conda:
        ENV
    script:
        "../stages/pct_train.py"


rule pct_train:
    input:
        unpack(lambda wc: pct_train_inputs(wc, "pct")),
    output:
        model="results/{experiment}/pct/ratio{ratio}/{mode}/pct/model.pt",
        loss_log="results/{experiment}/pct/ratio{ratio}/{mode}/pct/loss.csv",
    log:
        "results/{experiment}/logs/pct/ratio{ratio}/{mode}/pct.log",
    benchmark:
        "results/{experiment}/benchmarks/pct/ratio{ratio}/{mode}/pct.tsv"
    params:
        **pct_train_params("pct"),
        state_dir=lambda wc: f"results/{wc.experiment}/_state/pct/ratio{wc.ratio}/{wc.mode}/pct",
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=config["train_processes"],
    conda:
        ENV
    script:
        "../stages/pct_train.py"


rule pct_pseudo:
    input:
        split="results/{experiment}/pct/ratio{ratio}/split.json",
        manifest="results/{experiment}/data/manifest.parquet",
        model="results/{experiment}/pct/ratio{ratio}/{mode}/pct/model.pt",
    output:
        labels=directory("results/{experiment}/pct/ratio{ratio}/{mode}/pseudo"),
    log:
        "results/{experiment}/logs/pct/ratio{ratio}/{mode}/pseudo.log",
    benchmark:
        "results/{experiment}/benchmarks/pct/ratio{ratio}/{mode}/pseudo.tsv"
    params:
        input_size=config["pct"]["train"]["input_size"],
        pseudo=config["pct"]["pseudo"],
        device=config["device"],
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    conda:
        ENV
    script:
        "../stages/pct_pseudo.py"


rule pct_retrain:
    input:
        unpack(lambda wc: pct_train_inputs(wc, "retrain")),
    output:
        model="results/{experiment}/pct/ratio{ratio}/{mode}/retrain/model.pt",
        loss_log="results/{experiment}/pct/ratio{ratio}/{mode}/retrain/loss.csv",
    log:
        "results/{experiment}/logs/pct/ratio{ratio}/{mode}/retrain.log",
    benchmark:
        "results/{experiment}/benchmarks/pct/ratio{ratio}/{mode}/retrain.tsv"
    params:
        **pct_train_params("retrain"),
        state_dir=lambda wc: f"results/{wc.experiment}/_state/pct/ratio{wc.ratio}/{wc.mode}/retrain",
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["train_processes"],
    conda:
        ENV
    script:
        "../stages/pct_train.py"


rule pct_eval:
    input:
        split="results/{experiment}/pct/ratio{ratio}/split.json",
        manifest="results/{experiment}/data/manifest.parquet",
        gt="results/{experiment}/data/instances_gt.json",
        strong_only="results/{experiment}/pct/ratio{ratio}/{mode}/strong_only/model.pt",
        pct="results/{experiment}/pct/ratio{ratio}/{mode}/pct/model.pt",
        retrain="results/{experiment}/pct/ratio{ratio}/{mode}/retrain/model.pt",
        pseudo="results/{experiment}/pct/ratio{ratio}/{mode}/pseudo",
    output:
        metrics="results/{experiment}/eval/pct/ratio{ratio}/{mode}/metrics.parquet",
        table="results/{experiment}/eval/pct/ratio{ratio}/{mode}/metrics.md",
    log:
        "results/{experiment}/logs/eval/pct_ratio{ratio}_{mode}.log",
    benchmark:
        "results/{experiment}/benchmarks/eval/pct_ratio{ratio}_{mode}.tsv"
    params:
        input_size=config["pct"]["train"]["input_size"],
        pseudo=config["pct"]["pseudo"],
        dataset=config["dataset"]["name"],
        device=config["device"],
    threads: config["pct"]["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    script:
        "../stages/pct_eval.py"


rule pct_tables:
    input:
        pct=pct_evals,
    output:
        table="results/{experiment}/tables/pct.md",
    log:
        "results/{experiment}/logs/pct_tables.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    localrule: True
    conda:
        ENV
    script:
        "../stages/pct_tables.py"
