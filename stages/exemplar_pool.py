"""Rule exemplar_pool: mine the Exemplar-FreeSOLO exemplar pool with `count` exemplar images."""

from maskless.exemplar.pool import PoolParams, build_pool
from maskless.params import from_config
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
pool = params["pool"]
values = {**pool, "select": {**pool["select"], "count": params["n_exemplars"], "seed": params["seed"]},
          "grabcut": {**pool["grabcut"], "seed": params["seed"]}}
build_pool(
    manifest=smk.input.manifest,
    solo_weights=smk.input.solo,
    masks_index=smk.input.masks,
    out_pool=smk.output.pool,
    params=from_config(PoolParams, values, "exemplar", pivot_seed=params["seed"]),
    device=params["device"],
    threads=smk.threads,
)
