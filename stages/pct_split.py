"""Rule pct_split: held-out / strong / weak images and every image's tags for one label budget."""

from maskless.pct.stage import SplitParams, run_pct_split
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
# eval_fraction: a param only for the dataset-ground-truth source (the val list is the held-out set otherwise).
run_pct_split(manifest=smk.input.manifest, gt=smk.input.gt, out=smk.output.split,
              params=SplitParams.from_budget(smk.wildcards.budget, stratified=params["stratified"],
                                             seed=params["seed"],
                                             **({"eval_fraction": params["eval_fraction"]}
                                                if "eval_fraction" in params else {})))
