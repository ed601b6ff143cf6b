"""Rule freemask_index: index every shard's masks; export them as COCO results and annotations."""

from maskless.stage_utils import begin
from maskless.coco_export import export_coco
from maskless.store import build_index

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
build_index(list(smk.input.shards), smk.output.index)
export_coco(index=smk.output.index, manifest=smk.input.manifest, out_json=smk.output.results,
            kind="results", max_per_image=params["max_dets"])
export_coco(index=smk.output.index, manifest=smk.input.manifest, out_json=smk.output.annotations,
            kind="annotations")
