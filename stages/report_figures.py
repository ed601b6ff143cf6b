"""Rule report_figures: the PNG figures of the Snakemake HTML report (maskless.report) of the named inputs."""

from maskless.report import ReportInputs, build_report_figures
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
inputs = ReportInputs.from_workflow(dict(smk.input.items()), params["input_keys"])
figures = build_report_figures(inputs, smk.output[0], n_images=params["n_images"], device=params["device"])
