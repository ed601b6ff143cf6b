# Class-agnostic COCO evaluation of every instance output (each extractor's coarse masks, each SOLO variant
# and round), and the experiment's metrics table. The instance outputs are scored on the image set SCORED
# (rules/common.smk): the evaluation set (dataset.eval) when there is one, else the training images. The
# params method, variant, round and seed are the metric rows' columns (maskless/eval/metrics.py).


include: "inputs/eval.smk"


rule eval_instances:
    input:
        gt=instance_gt,
        predictions=f"results/{{experiment}}/{{extractor}}/{SCORED}/results.json",
    output:
        metrics="results/{experiment}/eval/{extractor}/metrics.parquet",
        table="results/{experiment}/eval/{extractor}/metrics.md",
    log:
        "results/{experiment}/logs/eval/{extractor}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dataset=evalset.eval_dataset_name(config),
        max_dets=config["eval"]["max_dets"],
        method=lambda wc: wc.extractor,
        variant="",
        round=0,
        seed=seed_param,
    script:
        "../stages/eval_instances.py"


rule eval_solo:
    input:
        gt=instance_gt,
        predictions=f"results/{{experiment}}/solo/{{variant}}/round{{round}}/pred/{SCORED}/results.json",
    output:
        metrics="results/{experiment}/eval/{variant}/round{round}/metrics.parquet",
        table="results/{experiment}/eval/{variant}/round{round}/metrics.md",
    log:
        "results/{experiment}/logs/eval/{variant}_round{round}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dataset=evalset.eval_dataset_name(config),
        max_dets=config["eval"]["max_dets"],
        method=lambda wc: solo_row_columns(wc)["method"],
        variant=lambda wc: solo_row_columns(wc)["variant"],
        round=lambda wc: int(wc.round),
        seed=seed_param,
    script:
        "../stages/eval_instances.py"


rule tables:
    input:
        instance=instance_evals,
        stego=stego_evals,
        pct=pct_evals,
    output:
        table="results/{experiment}/tables/metrics.md",
        paper=directory("results/{experiment}/tables/paper"),
    log:
        "results/{experiment}/logs/tables.log",
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../stages/tables.py"


# Quality of the masks each SOLO round trains on (maskless/eval/mask_quality.py): each extractor's, and each
# self-training round's relabelled masks, against the training images' ground truth.


rule mask_quality:
    input:
        index=mask_set_index,
        gt="results/{experiment}/data/train/instances_gt.json",
    output:
        quality="results/{experiment}/eval/masks/{masks}.json",
    log:
        "results/{experiment}/logs/eval/masks_{masks}.log",
    wildcard_constraints:
        masks="|".join(EXTRACTORS) + r"|(freesolo|exemplar_n\d+)_round\d+",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        name=lambda wc: wc.masks,
    script:
        "../stages/mask_quality.py"


rule mask_quality_table:
    input:
        lambda wc: [f"results/{wc.experiment}/eval/masks/{m}.json" for m in mask_sets()],
    output:
        table="results/{experiment}/tables/mask_quality.md",
    log:
        "results/{experiment}/logs/mask_quality_table.log",
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../stages/mask_quality.py"


# The claims table of a run over several training seeds (config `seeds`): each method's claim as mean +- std
# over the seeds' metric rows, with a verdict (maskless/eval/claims.py).


rule claims:
    input:
        claims_inputs,
    output:
        table="results/{experiment}/tables/claims.md",
        json="results/{experiment}/tables/claims.json",
    log:
        "results/{experiment}/logs/claims.log",
    wildcard_constraints:
        experiment=re.escape(EXP),
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        seeds=config["seeds"],
        exemplar_counts=config["exemplar"]["counts"] if instances_on() else [],
        rounds=config["selftrain"]["rounds"],
        oracle=config["oracles"],
        pct_budgets=lambda wc: pct_budget_texts(),
        pct_modes=["ctr" if c else "plain" for c in config["pct"]["contextrast"]],
        pct_oracle=lambda wc: pct_oracle_text(),
    script:
        "../stages/claims.py"
