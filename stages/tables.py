"""Rule tables: every metric of the experiment in one markdown table, and the paper tables (markdown, CSV,
LaTeX: maskless.eval.paper_tables) in one folder written whole."""

from maskless.eval.metrics import metrics_markdown, read_metrics
from maskless.eval.paper_tables import write_paper_tables
from maskless.io import atomic_dir, write_text_atomic
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
begin(smk)
rows = read_metrics([*smk.input.instance, *smk.input.stego, *smk.input.pct])
with atomic_dir(smk.output.paper) as tmp:
    write_paper_tables(rows, tmp)
write_text_atomic(smk.output.table, metrics_markdown(rows))
