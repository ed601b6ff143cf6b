"""Rule pct_split: held-out / strong / weak images and every image's tags for one label ratio."""

from maskless.pct.stage import SplitParams, run_pct_split
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
run_pct_split(manifest=smk.input.manifest, gt=smk.input.gt, out=smk.output.split,
              params=SplitParams(ratio=float(smk.wildcards.ratio), eval_fraction=params["eval_fraction"],
                                 stratified=params["stratified"], seed=params["seed"]))
