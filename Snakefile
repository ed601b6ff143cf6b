# maskless: images -> manifest -> backbone -> coarse masks -> SOLO rounds -> metrics -> tables.
#
# Paths (one folder per experiment, `experiment` in the config):
#   data/synthetic/<experiment>/                  generated dataset (dataset.kind: synthetic)
#   results/<experiment>/data/manifest.parquet    image manifest (+ instances_gt.json when ground truth exists)
#   results/<experiment>/pretrain/backbone.pt     DenseCL backbone (or the given pretrain.weights)
#   results/<experiment>/freemask/shards/<k>.zarr one mask store per shard of images
#   results/<experiment>/freemask/index.parquet   masks of all shards; results.json / annotations.json in COCO
#   results/<experiment>/solo/round<r>/          SOLOv2 of self-training round r: model.pt, pred/<k>.zarr,
#                                                 index.parquet, results.json; labels/ (r >= 1: its masks)
#   results/<experiment>/eval/<stage>/metrics.*   COCO AP/AR rows (parquet) and a markdown table
#                                                 (eval/solo/round<r>/ for each SOLO round)
#   results/<experiment>/tables/metrics.md        every metric of the experiment in one table
#   results/<experiment>/_state/                  resumable training state (never a rule output)
#   results/<experiment>/logs/, benchmarks/       rule logs and Snakemake benchmark records

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/freemask.smk"
include: "rules/solo.smk"
include: "rules/exemplar.smk"
include: "rules/stego.smk"
include: "rules/eval.smk"


rule all:
    input:
        get_final_outputs(),
    localrule: True
    default_target: True
