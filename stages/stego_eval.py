"""Rule stego_eval: mIoU and pixel accuracy of the STEGO probes (with and without CRF) and of k-means."""

from maskless.params import from_config
from maskless.stage_utils import begin
from maskless.stego.stage import StegoStageParams, run_stego_eval

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
run_stego_eval(
    manifest=smk.input.manifest,
    backbone=smk.input.backbone,
    model=smk.input.model,
    gt=smk.input.gt,
    out_metrics=smk.output.metrics,
    out_table=smk.output.table,
    experiment=smk.wildcards.experiment,
    dataset=params["dataset"],
    params=from_config(StegoStageParams, params["stage"], "stego"),
    crf={} if params["crf"] else None,
    flip=params["flip"],
    seed=params["seed"],
    device=params["device"],
    threads=smk.threads,
)
