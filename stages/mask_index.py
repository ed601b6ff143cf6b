"""Rules freemask_index, solo_index, selftrain_labels_index: index every shard store of a stage; export the
masks as COCO results (for evaluation) and/or annotations (to train any detector), as the rule declares."""

from maskless.coco_export import export_coco
from maskless.stage_utils import begin
from maskless.store import build_index

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
build_index(list(smk.input.shards), smk.output.index)
if "results" in smk.output.keys():
    export_coco(index=smk.output.index, manifest=smk.input.manifest, out_json=smk.output.results,
                kind="results", max_per_image=params["max_dets"])
if "annotations" in smk.output.keys():
    export_coco(index=smk.output.index, manifest=smk.input.manifest, out_json=smk.output.annotations,
                kind="annotations")
