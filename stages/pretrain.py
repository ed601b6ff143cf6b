"""Rule pretrain: DenseCL pretraining, or validation of the given pretrain.weights."""

from maskless.dist import launch
from maskless.io import write_text_atomic
from maskless.params import from_config
from maskless.pretrain.densecl import DenseCLParams
from maskless.pretrain.train import train_densecl, use_given_weights
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
if params["weights"]:
    # a named weight arrives as input `given` (its cache file); a path is the param itself
    src = smk.input.given if "given" in smk.input.keys() else params["weights"]
    use_given_weights(src=src, out_weights=smk.output.weights, arch=params["densecl"]["arch"])
    write_text_atomic(smk.output.loss_log, "step,loss,loss_global,loss_dense,lr\n")
else:
    launch(
        train_densecl,  # in params["processes"] data-parallel processes (maskless/dist.py); 1: this process
        processes=params["processes"],
        log_file=smk.log[0],
        manifest=smk.input.manifest,
        out_weights=smk.output.weights,
        state_dir=params["state_dir"],
        params=from_config(DenseCLParams, params["densecl"], "pretrain", seed=params["seed"],
                           num_workers=smk.config["pretrain"]["num_workers"]),  # not a param: same result
        device=params["device"],
        threads=smk.threads,
        loss_log=smk.output.loss_log,
    )
