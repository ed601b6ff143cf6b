"""Rule pct_pseudo: Pseudo-Net's labels of the weak images, restricted to their tags."""

from maskless.pct.stage import run_pct_pseudo
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
run_pct_pseudo(split_path=smk.input.split, manifest=smk.input.manifest, model=smk.input.model,
               out_dir=smk.output.labels, input_size=params["input_size"], scales=params["pseudo"]["scales"],
               flip=params["pseudo"]["flip"], device=params["device"], threads=smk.threads)
