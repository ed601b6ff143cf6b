"""Rule pct_tables: the PCT rows of every label ratio and mode in one table (mIoU and Acc per ratio)."""

from maskless.eval.metrics import metrics_markdown, read_metrics
from maskless.io import write_text_atomic
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
begin(smk)
write_text_atomic(smk.output.table, metrics_markdown(read_metrics(list(smk.input.pct))))
