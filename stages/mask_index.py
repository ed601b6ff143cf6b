"""Rules masks_index, solo_index, selftrain_labels_index, gt_masks_index: index every shard store of a stage;
export the masks as COCO results (for evaluation) and/or annotations (to train any detector), as the rule
declares, in one pass over the store (each mask decoded and RLE-encoded once for both files)."""

from maskless.coco_export import export_coco_files
from maskless.stage_utils import begin
from maskless.store import build_index

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
build_index(list(smk.input.shards), smk.output.index)
outputs = set(smk.output.keys())
if outputs & {"results", "annotations"}:
    export_coco_files(index=smk.output.index, manifest=smk.input.manifest,
                      results=smk.output.results if "results" in outputs else None,
                      annotations=smk.output.annotations if "annotations" in outputs else None,
                      max_per_image=params["max_dets"])
