"""Rule exemplar_pool: mine the Exemplar-FreeSOLO exemplar pool with `count` exemplar images."""

from maskless.exemplar.pool import PoolParams, build_pool
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
cfg = dict(params["pool"])
cfg.pop("rounds", None)  # a SOLO setting of the exemplar variants (older runs passed it here)
select = {**cfg.pop("select"), "count": params["n_exemplars"], "seed": params["seed"]}
grabcut = {**cfg.pop("grabcut"), "seed": params["seed"]}
build_pool(
    manifest=smk.input.manifest,
    solo_weights=smk.input.solo,
    masks_index=smk.input.masks,
    out_pool=smk.output.pool,
    params=PoolParams(select=select, grabcut=grabcut, refine=cfg.pop("refine"), pivot_seed=params["seed"], **cfg),
    device=params["device"],
    threads=smk.threads,
)
