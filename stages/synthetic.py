"""Rule synthetic: generate the embedded default dataset (maskless.data.synthetic)."""

from pathlib import Path

from maskless.data.synthetic import SyntheticParams, generate
from maskless.params import from_config
from maskless.stage_utils import begin

params = begin(snakemake)  # noqa: F821 (injected by Snakemake)
cfg = params["synthetic"]
values = {**cfg, "objects_per_image": tuple(cfg["objects_per_image"]), "scale_range": tuple(cfg["scale_range"])}
out_dir = Path(snakemake.output.instances).parent  # noqa: F821
generate(str(out_dir), from_config(SyntheticParams, values, "synthetic", seed=params["seed"]))
