"""Rule selftrain_relabel: the next round's training masks of one shard, from the last round's predictions."""

from maskless.params import from_config
from maskless.selftrain import RelabelParams, relabel_shard
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
relabel_shard(
    predictions=smk.input.predictions,
    previous=smk.input.get("previous"),
    out_store=smk.output.store,
    params=from_config(RelabelParams, params["relabel"], "selftrain"),
)
