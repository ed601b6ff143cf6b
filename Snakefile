# maskless: images -> manifest -> backbone -> coarse masks -> SOLO rounds (FreeSOLO, Exemplar-FreeSOLO),
# STEGO, PCT -> metrics -> tables.
#
# Paths (one folder per experiment, `experiment` in the config; every path is a literal of the rule that writes
# it or of one helper in rules/common.smk; {images} is `train`, the dataset, or `eval`, dataset.eval):
#   data/synthetic/<experiment>/                  generated dataset (dataset.kind: synthetic)
#   results/<experiment>/data/<images>/manifest.parquet
#                                                 image manifest (+ instances_gt.json when ground truth exists,
#                                                 ingest_summary.json: counts and conversions)
#   results/<experiment>/pretrain/backbone.pt     DenseCL backbone (or the given pretrain.weights)
#   results/<experiment>/<extractor>/<images>/shards/<k>.zarr
#                                                 coarse masks of an extractor (EXTRACTORS below: freemask), one
#                                                 mask store per shard of images; index.parquet over the shards,
#                                                 results.json / annotations.json in COCO beside it
#   results/<experiment>/solo/<variant>/round<r>/ SOLOv2 (variant freesolo | exemplar_n<count>) of round r:
#                                                 model.pt, loss.csv; pred/<images>/{shards/<k>.zarr,
#                                                 index.parquet, results.json} (its predictions); labels/ and
#                                                 labels.parquet (r >= 1: the relabelled masks it trained on)
#   results/<experiment>/exemplar/n<count>/pool   exemplar pool of Exemplar-FreeSOLO
#   results/<experiment>/stego/                   STEGO head and probes (model.pt), kNN table
#   results/<experiment>/pct/<budget>/            PCT per label budget (ratio<r> | count<n>): split.json;
#                                                 <mode>/{strong_only,pct,retrain}/model.pt,
#                                                 <mode>/pseudo/<id>.png (mode plain | ctr)
#   results/<experiment>/pct/data/                PCT's checked user files (pct.data): manifest, labels.json
#   results/<experiment>/eval/<stage>/metrics.*   metric rows (parquet; columns: maskless/eval/metrics.py) and a
#                                                 markdown table: eval/<extractor>, eval/<variant>/round<r>,
#                                                 eval/stego, eval/pct/<budget>/<mode>; instance outputs are
#                                                 scored on the `eval` images when there are some, else `train`
#   results/<experiment>/eval/masks/<masks>.json  quality of the masks a SOLO round trains on (<extractor>,
#                                                 <variant>_round<r>); tables/mask_quality.md has them all
#   results/<experiment>/tables/metrics.md        every metric of the experiment in one table (pct.md: PCT's)
#   results/<experiment>/tables/paper/            paper tables as markdown, CSV and LaTeX
#   results/<experiment>/report/                  figures of `snakemake --report report.html`
#   results/<experiment>/record.json              config, versions, git commit, each job's time and memory
#   results/<experiment>/seed<k>/...              with config `seeds` a list: each seed's run, laid out as above;
#                                                 results/<experiment>/tables/claims.md compares the methods
#   results/<experiment>/data/gt_masks/           ground-truth masks as a mask store (config `oracles`: the
#                                                 oracle SOLO variant, solo/oracle/round0/, trains on them);
#                                                 PCT's oracle: pct/ratio1/plain/strong_only/ (every training
#                                                 image labelled), scored in eval/pct/ratio1/oracle/
#   results/<experiment>/_state/                  resumable training state (never a rule output)
#   results/<experiment>/logs/, benchmarks/       rule logs and Snakemake benchmark records

import os

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# Coarse-mask extractors: name -> its rule file. An extractor's rule writes one mask store per shard of an
# image set, results/{experiment}/<name>/{images}/shards/{shard}.zarr (maskless/store.py); everything after
# it is shared: the index and COCO exports (rules/masks.smk), its instance metrics and mask quality
# (rules/eval.smk), and SOLO round 0 trains on the one config `solo.masks` names. A new extractor is one
# module, one rule file and one entry here.
EXTRACTORS = {"freemask": "rules/freemask.smk"}


include: "rules/common.smk"
include: "rules/weights.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/masks.smk"
include: "rules/solo.smk"
include: "rules/exemplar.smk"
include: "rules/stego.smk"
include: "rules/pct.smk"
include: "rules/eval.smk"
include: "rules/report.smk"


for _extractor_rules in EXTRACTORS.values():

    include: _extractor_rules


rule all:
    default_target: True
    input:
        get_final_outputs(),
    localrule: True


onsuccess:
    # results/<experiment>/record.json: config, seed, git commit, versions, devices, each job's time and memory.
    from maskless.record import write_run_record

    for run in RUNS:  # the experiment, or each seed's run under it
        if os.path.isdir(f"results/{run}"):
            write_run_record(f"results/{run}", config)
