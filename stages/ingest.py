"""Rules ingest and ingest_eval: validate a dataset's images (and annotations) and write the image manifest."""

from maskless.config import check_image_count
from maskless.data.ingest import ingest
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
kind = params["kind"]
if kind == "synthetic":
    images, annotations = smk.input.images, smk.input.instances
else:
    images, annotations = params["images"], params["annotations"]
ingest(
    kind=kind,
    images=images,
    annotations=annotations,
    manifest_out=smk.output.manifest,
    gt_out=smk.output.get("gt") or None,  # no ground truth for an image folder: the output list is empty
    on_bad_image=params["on_bad_image"],
    max_images=params["max_images"],
    split=params.get("split", "train"),  # ingest_eval: "eval" (the training ingest has no split param)
    summary_out=smk.output.summary,  # the counts: images, skipped, annotation fixes, conversions
    # The config's image-count checks on the usable images, before anything is written (the training set only).
    check_count=None if "split" in params else lambda n: check_image_count(smk.config, n, f"dataset {images}"),
)
