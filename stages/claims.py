"""Rule claims: each method's claim over the training seeds (maskless.eval.claims), as a markdown table."""

from maskless.eval.claims import claims_markdown, evaluate_claims, instance_claims, pct_claims, stego_claims
from maskless.eval.metrics import read_metrics
from maskless.io import write_json_atomic, write_text_atomic
from maskless.stage_utils import begin

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = begin(smk)
rows = read_metrics(list(smk.input))
claims = (instance_claims(exemplar_counts=params["exemplar_counts"], rounds=params["rounds"], oracle=params["oracle"])
          + stego_claims()
          + pct_claims(budgets=params["pct_budgets"], modes=params["pct_modes"], oracle_budget=params["pct_oracle"]))
results = evaluate_claims(rows, claims)
write_json_atomic(smk.output.json, results)
write_text_atomic(smk.output.table, claims_markdown(results, seeds=params["seeds"]))
