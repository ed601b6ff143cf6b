"""Rule stego_train: frozen features, kNN table, STEGO head and probes."""

from maskless.params import from_config
from maskless.stage_utils import begin
from maskless.stego.stage import StegoStageParams, run_stego_train
from maskless.stego.train import StegoTrainParams

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
run_stego_train(
    manifest=smk.input.manifest,
    backbone=smk.input.backbone,
    gt=smk.input.get("gt"),  # only for the linear probe (an evaluation probe)
    out_model=smk.output.model,
    out_knn=smk.output.knn,
    loss_log=smk.output.loss_log,
    state_dir=params["state_dir"],
    params=from_config(StegoStageParams, params["stage"], "stego"),
    train_params=from_config(StegoTrainParams, params["train"], "stego.train", seed=params["seed"]),
    device=params["device"],
    threads=smk.threads,
)
