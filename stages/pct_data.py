"""Rule pct_data: check the user files of pct.data once; write the PCT image manifest and labels.json."""

from maskless.data.voc import run_pct_data
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
run_pct_data(data=params["data"], manifest=smk.output.manifest, labels=smk.output.labels, threads=smk.threads)
