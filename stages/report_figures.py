"""Rule report_figures: the PNG figures of the Snakemake HTML report (maskless.report)."""

from maskless.report import build_report_figures
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
figures = build_report_figures(f"results/{smk.wildcards.experiment}", smk.output[0], n_images=params["n_images"],
                               device=params["device"], eval_set=params["eval_set"], pct_data=params["pct_data"])
