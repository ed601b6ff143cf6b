"""PCT label budgets, the `budget` wildcard: "ratio<r>" for a value of pct.ratios (a fraction of the training
images keeps pixel labels), "count<n>" for a value of pct.counts (exactly n images do). No torch here: the
workflow's rule files read budgets while Snakemake builds the DAG."""

from __future__ import annotations

import re

_BUDGET = re.compile(r"^(ratio)([0-9]*\.?[0-9]+)$|^(count)([0-9]+)$")


def parse_budget(budget: str) -> tuple[float | None, int | None]:
    """(ratio, None) of "ratio<r>" or (None, count) of "count<n>"; ValueError otherwise."""
    m = _BUDGET.match(str(budget))
    if not m:
        raise ValueError(f"PCT label budget {budget!r} is neither ratio<r> nor count<n>")
    return (float(m.group(2)), None) if m.group(1) else (None, int(m.group(4)))


def budget_name(*, ratio: float | None = None, count: int | None = None) -> str:
    """The `budget` wildcard of a label ratio ("ratio0.125") or label count ("count92")."""
    if (ratio is None) == (count is None):
        raise ValueError("budget_name: give exactly one of ratio and count")
    return f"ratio{ratio_name(ratio)}" if ratio is not None else f"count{int(count)}"


def budget_text(budget: str) -> str:
    """The part of a budget written after "@" in metric rows: "ratio0.125" -> "0.125", "count92" -> "92" (the
    per-ratio table then has a column per ratio or count, maskless.eval.metrics.ratio_table)."""
    ratio, count = parse_budget(budget)
    return ratio_name(ratio) if ratio is not None else str(count)


def ratio_name(ratio: float) -> str:
    """The wildcard form of a label ratio (0.125 -> "0.125")."""
    return f"{float(ratio):g}"
