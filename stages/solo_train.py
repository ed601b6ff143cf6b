"""Rule solo_train: SOLOv2 on the coarse masks of round 0 (Free Mask) or of a self-training round."""

from maskless.dist import launch
from maskless.solo.train import params_from_config, train_solo
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
launch(
    train_solo,  # in params["processes"] data-parallel processes (maskless/dist.py); 1: this process
    processes=params["processes"],
    log_file=smk.log[0],
    manifest=smk.input.manifest,
    masks_index=smk.input.masks,
    backbone=smk.input.backbone,
    init_weights=smk.input.get("init"),  # finetune rounds only
    exemplar_pool=smk.input.get("pool"),  # Exemplar-FreeSOLO variants only
    out_weights=smk.output.weights,
    loss_log=smk.output.loss_log,
    state_dir=params["state_dir"],
    params=params_from_config(params["solo"], arch=params["arch"], emb_dim=params["emb_dim"], seed=params["seed"],
                              eec=params["eec"], num_workers=smk.config["solo"]["num_workers"]),  # not a param
    device=params["device"],
    threads=smk.threads,
)
