"""Rule solo_predict: SOLOv2 predictions for one shard of images, into its own zarr store."""

from maskless.params import from_config
from maskless.solo.inference import SoloInferenceParams
from maskless.solo.predict import predict_shard
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
predict_shard(
    manifest=smk.input.manifest,
    weights=smk.input.weights,
    shard=int(smk.wildcards.shard),
    shard_size=params["shard_size"],
    out_store=smk.output.store,
    params=from_config(SoloInferenceParams, params["inference"], "solo.inference"),
    input_size=params["input_size"],
    device=params["device"],
    threads=smk.threads,
    batch_size=params["batch_size"],
)
