"""Rules mask_quality and mask_quality_table: how good a set of training masks is against the ground truth."""

from maskless.eval.mask_quality import run_mask_quality, run_quality_table
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
if smk.rule == "mask_quality_table":
    run_quality_table(inputs=list(smk.input), out_table=smk.output.table)
else:
    run_mask_quality(index=smk.input.index, gt=smk.input.gt, out_json=smk.output.quality, name=params["name"])
