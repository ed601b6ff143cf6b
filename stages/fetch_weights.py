"""Rule fetch_weights: download one named weights file into the cache (hash checked, renamed into place)."""

from maskless.models.registry import fetch
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk, params_beside=smk.log[0])  # the cache holds only weights files
fetch(params["entry"], smk.output[0], timeout=params["timeout"])
