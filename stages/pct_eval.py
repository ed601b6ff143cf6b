"""Rule pct_eval: mIoU and pixel accuracy of a (label budget, mode) family's models on the held-out images."""

from maskless.pct.budget import budget_text
from maskless.pct.stage import run_pct_eval
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
# Rule pct_eval_oracle gives only the strong-only net (budget and mode are params: it has neither wildcard).
run_pct_eval(split_path=smk.input.split, manifest=smk.input.manifest, gt=smk.input.gt,
             models={k: smk.input[k] for k in ("strong_only", "pct", "retrain") if k in smk.input.keys()},
             pseudo=smk.input.get("pseudo"), out_metrics=smk.output.metrics, out_table=smk.output.table,
             experiment=smk.wildcards.experiment, dataset=params["dataset"], budget=budget_text(params["budget"]),
             mode=params["mode"], seed=params["seed"], input_size=params["input_size"],
             scales=params["pseudo"]["scales"], flip=params["pseudo"]["flip"], device=params["device"],
             threads=smk.threads)
