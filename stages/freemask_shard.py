"""Rule freemask_shard: Free Mask coarse masks for one shard of images, into its own zarr store."""

from maskless.freemask import FreeMaskParams, run_freemask_shard
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
fm = dict(params["freemask"])
fm["scales"] = tuple(fm["scales"])
run_freemask_shard(
    manifest=smk.input.manifest,
    weights=smk.input.weights,
    shard=int(smk.wildcards.shard),
    shard_size=params["shard_size"],
    out_store=smk.output.store,
    params=FreeMaskParams(**fm),
    device=params["device"],
    threads=smk.threads,
    batch_size=params["batch_size"],
)
