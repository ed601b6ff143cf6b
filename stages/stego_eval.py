"""Rule stego_eval: mIoU and pixel accuracy of the STEGO probes (with and without CRF) and of k-means."""

from maskless.io import flush_denormals
from maskless.params import from_config
from maskless.stage_utils import begin, log
from maskless.stego.stage import StegoStageParams, run_stego_eval

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
# The CRF's bilateral weights hold subnormal floats; flushing them made its maps 2.3x faster on an Intel
# host, bit for bit the same (maskless.io.flush_denormals). First, before any parallel op of this process.
log.info("flush-to-zero on every CPU thread: %s", "yes" if flush_denormals() else "no (the CRF runs slower)")
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
