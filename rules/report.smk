# The figures of the HTML report (`snakemake --report report.html` after a run): mask strips per stage,
# semantic colour maps, loss curves, metric charts and the exemplar gallery (maskless/report/).


include: "inputs/report.smk"


rule report_figures:
    input:
        # the files the figures draw, named (maskless.report.ReportInputs), and the rest of the run ("after")
        unpack(report_inputs),
    output:
        report(
            directory("results/{experiment}/report"),
            patterns=["{category,[a-z]+}_{name}.png"],
            category="{category}",
            caption="report/figures.rst",
        ),
    log:
        "results/{experiment}/logs/report_figures.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        n_images=config["report"]["n_images"],
        device=config["device"],
        input_keys=report_keys,  # what each file of a keyed input is of (variant and round, budget and mode, ...)
    script:
        "../stages/report_figures.py"
