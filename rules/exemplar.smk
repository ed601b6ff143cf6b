# Exemplar-FreeSOLO's exemplar pool (EKA): <count> exemplar images chosen from the dataset, GrabCut coarse
# foreground, crop, refinement with the round-0 FreeSOLO SOLO, mask-guided embeddings. The pool feeds the
# EEC term of the exemplar_n<count> SOLO variant (rules/solo.smk). exemplar.counts is a sweep.


rule exemplar_pool:
    input:
        manifest="results/{experiment}/data/train/manifest.parquet",
        solo="results/{experiment}/solo/freesolo/round0/model.pt",
        masks=lambda wc: training_masks(wc.experiment, "freesolo", 0),  # solo.masks
    output:
        pool=directory("results/{experiment}/exemplar/n{n_exemplars}/pool"),
    log:
        "results/{experiment}/logs/exemplar/n{n_exemplars}.log",
    benchmark:
        "results/{experiment}/benchmarks/exemplar/n{n_exemplars}.tsv"
    conda:
        ENV
    threads: config["exemplar"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    params:
        pool=section_params(config, "exemplar"),
        n_exemplars=lambda wc: int(wc.n_exemplars),
        seed=seed_param,
        device=config["device"],
    script:
        "../stages/exemplar_pool.py"
