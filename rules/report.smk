# The figures of the HTML report (`snakemake --report report.html` after a run): mask strips per stage,
# semantic colour maps, loss curves, metric charts and the exemplar gallery (maskless/report.py).


rule report_figures:
    input:
        report_inputs,
    output:
        report(
            directory("results/{experiment}/report"),
            patterns=["{category,[a-z]+}_{name}.png"],
            category="{category}",
            caption="report/figures.rst",
        ),
    log:
        "results/{experiment}/logs/report_figures.log",
    params:
        n_images=config["report"]["n_images"],
        device=config["device"],
        eval_set=eval_set() is not None,  # mask strips of the evaluation set (maskless/evalset.py)
        pct_data=config["pct"]["data"] is not None,  # PCT strips of pct.data's images and labels
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    script:
        "../stages/report_figures.py"
