"""Rule eval_instances / eval_solo: class-agnostic COCO AP/AR (segm and bbox) of one stage's predictions."""

from maskless.eval.coco import run_eval
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
run_eval(
    gt=smk.input.gt,
    predictions=smk.input.predictions,
    out_metrics=smk.output.metrics,
    out_table=smk.output.table,
    experiment=smk.wildcards.experiment,
    method=params["method"],
    variant=params["variant"],
    round=params["round"],
    dataset=params["dataset"],
    seed=params["seed"],
    max_dets=params["max_dets"],
)
