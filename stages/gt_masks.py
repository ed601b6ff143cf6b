"""Rule gt_masks_shard: one shard of the ground-truth masks, the oracle SOLO variant's training masks."""

from maskless.data.gt_masks import write_gt_shard
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
write_gt_shard(manifest=smk.input.manifest, gt=smk.input.gt, shard=int(smk.wildcards.shard),
               shard_size=params["shard_size"], out_store=smk.output.store, embedding_dim=params["embedding_dim"])
