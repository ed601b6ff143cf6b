# Input functions and helpers of rules/report.smk (functions only: snakemake --lint keeps them apart from rules).


def report_files(exp):
    """What the report figures draw (the fields of maskless.report.ReportInputs), exactly the files this run
    makes: field -> path, or -> [path] (metrics), or -> {key: path} with the key saying what the file is of
    (variant and round, budget and mode (and PCT run), exemplar count)."""
    wc = SimpleNamespace(experiment=exp)
    files = {
        "manifest": f"results/{exp}/data/train/manifest.parquet",
        "metrics": instance_evals(wc) + stego_evals(wc),
    }
    if has_ground_truth():
        files["ground_truth"] = f"results/{exp}/data/train/instances_gt.json"
    if SCORED == "eval":
        files["eval_manifest"] = f"results/{exp}/data/eval/manifest.parquet"
        files["eval_ground_truth"] = f"results/{exp}/data/eval/instances_gt.json"
    stego_pretrain = (
        config["stego"]["enabled"] and config["stego"]["backbone"] == "pretrain"
    )
    if (
        instances_on()
        or stego_pretrain
        or (pct_on() and config["pct"]["backbone"] == "pretrain")
    ):
        files["pretrain_loss"] = f"results/{exp}/pretrain/loss.csv"
    if instances_on():
        if "freemask" in EXTRACTORS:  # the report's "Free Mask" strip
            files["freemask"] = f"results/{exp}/freemask/{SCORED}/index.parquet"
        # every round's predictions where the rounds are scored, else the last round's (run_outputs)
        files["solo"] = {
            (v, r): f"results/{exp}/solo/{v}/round{r}/pred/{SCORED}/index.parquet"
            for v in solo_variants()
            for r in (
                range(variant_rounds(v) + 1)
                if instance_evals(wc)
                else [variant_rounds(v)]
            )
        }
        files["solo_losses"] = {
            (v, r): f"results/{exp}/solo/{v}/round{r}/loss.csv"
            for v in solo_variants()
            for r in range(variant_rounds(v) + 1)
        }
        files["pools"] = {
            n: f"results/{exp}/exemplar/n{n}/pool" for n in config["exemplar"]["counts"]
        }
    if config["stego"]["enabled"]:
        files |= {
            "backbone": backbone_file("stego", exp),
            "stego": f"results/{exp}/stego/model.pt",
            "stego_loss": f"results/{exp}/stego/loss.csv",
        }
    if pct_on():
        files["pct"] = {
            (b, m): f"results/{exp}/pct/{b}/{m}/retrain/model.pt"
            for b, m in pct_families()
        }
        files["pct_losses"] = {
            (b, m, run): f"results/{exp}/pct/{b}/{m}/{run}/loss.csv"
            for b, m in pct_families()
            for run in ("strong_only", "pct", "retrain")
        }
        files["pct_metrics"] = dict(zip(pct_families(), pct_evals(wc)))
        if config["pct"]["data"] is not None:
            data = pct_data_inputs(wc)
            files |= {"pct_manifest": data["manifest"], "pct_labels": data["gt"]}
    return {name: value for name, value in files.items() if value}


def report_inputs(wildcards):
    """The named inputs of the report figures: report_files' paths, and as "after" everything else the run
    makes, so the report figures come last."""
    files = report_files(wildcards.experiment)
    return {
        **{n: list(v.values()) if isinstance(v, dict) else v for n, v in files.items()},
        "after": run_outputs(wildcards.experiment, report=False),
    }


def report_keys(wildcards):
    """The keys of report_files' keyed inputs, in their paths' order (a param: the figures name them)."""
    return {
        name: [list(k) if isinstance(k, tuple) else k for k in v]
        for name, v in report_files(wildcards.experiment).items()
        if isinstance(v, dict)
    }
