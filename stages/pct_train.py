"""Rules pct_strong_only, pct_train and pct_retrain: one model of a (label budget, mode) family."""

from maskless.dist import launch
from maskless.pct.stage import read_split, run_pct_train, train_params
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
kind = params["kind"]
split = read_split(smk.input.split)
launch(
    run_pct_train,  # in params["processes"] data-parallel processes (maskless/dist.py); 1: this process
    processes=params["processes"],
    log_file=smk.log[0],
    kind=kind,
    split_path=smk.input.split,
    manifest=smk.input.manifest,
    gt=smk.input.gt,
    params=train_params(params["pct"], kind=kind, mode=smk.wildcards.mode, arch=params["arch"],
                        num_classes=split["num_classes"], seed=params["seed"],
                        num_workers=smk.config["pct"]["train"]["num_workers"]),  # not a param: same result
    out=smk.output.model,
    loss_log=smk.output.loss_log,
    state_dir=params["state_dir"],
    backbone=smk.input.get("backbone"),
    pseudo=smk.input.get("pseudo"),
    device=params["device"],
    threads=smk.threads,
)
