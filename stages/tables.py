"""Rule tables: every metric of the experiment in one markdown table."""

from maskless.eval.metrics import metrics_markdown, read_metrics
from maskless.io import write_text_atomic
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
begin(smk)
write_text_atomic(smk.output.table, metrics_markdown(read_metrics([*smk.input.metrics, *smk.input.solo, *smk.input.stego])))
