"""Rule pct_eval: mIoU and pixel accuracy of a (label budget, mode) family's models on the held-out images."""

from maskless.pct.budget import budget_text
from maskless.pct.stage import run_pct_eval
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
run_pct_eval(split_path=smk.input.split, manifest=smk.input.manifest, gt=smk.input.gt,
             models={"strong_only": smk.input.strong_only, "pct": smk.input.pct, "retrain": smk.input.retrain},
             pseudo=smk.input.pseudo, out_metrics=smk.output.metrics, out_table=smk.output.table,
             experiment=smk.wildcards.experiment, dataset=params["dataset"], ratio=budget_text(smk.wildcards.budget),
             mode=smk.wildcards.mode, input_size=params["input_size"], scales=params["pseudo"]["scales"],
             flip=params["pseudo"]["flip"], device=params["device"], threads=smk.threads)
