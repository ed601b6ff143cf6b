"""Rule freemask_shard: Free Mask coarse masks for one shard of images, into its own zarr store."""

from maskless.freemask import FreeMaskParams, run_freemask_shard
from maskless.params import from_config
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
run_freemask_shard(
    manifest=smk.input.manifest,
    weights=smk.input.weights,
    shard=int(smk.wildcards.shard),
    shard_size=params["shard_size"],
    out_store=smk.output.store,
    params=from_config(FreeMaskParams, {**params["freemask"], "scales": tuple(params["freemask"]["scales"])},
                       "freemask"),
    device=params["device"],
    threads=smk.threads,
    batch_size=params["batch_size"],
)
