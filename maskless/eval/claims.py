"""The claims table: each method's headline claim as a comparison over training seeds (config `seeds`).

A claim compares two metric rows of every seed's run, A (the method) and B (what it claims to beat), on one
metric: e.g. FreeSOLO's SOLO round 0 against its own Free Mask masks on mask AP. For n seeds with both
values the table gives A and B as mean +- sample std, the paired difference d_i = A_i - B_i as mean +- its
standard error se = std(d) / sqrt(n), and a verdict:

    holds          mean(d) > 2 se and mean(d) > 0   (A beats B by more than twice the seed noise)
    does not hold  mean(d) < -2 se and mean(d) < 0  (B beats A by more than that)
    within noise   otherwise
    too few seeds  n < 3 (no verdict)

Pairing by seed removes what the methods share within a run (the backbone, the data split). Two more
columns put the pair in context where the pipeline measures them: an oracle bound (the same model with the
answer: SOLO trained on the ground truth, STEGO's supervised linear probe, PCT with every label) and a
trivial baseline (a constant prediction). Rows come from maskless.eval.metrics; a Ref picks its rows by
their columns (method, variant, round, budget, mode, iou_type, metric), and the experiment column tells the
seeds' runs apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from maskless.eval.metrics import fmt_value, stage_label

MIN_SEEDS = 3
NOISE_SE = 2.0  # |mean difference| must exceed this many standard errors for a verdict either way


@dataclass(frozen=True)
class Ref:
    """One metric of what a run scored: the rows whose columns equal these (maskless.eval.metrics)."""

    method: str
    iou_type: str
    metric: str
    variant: str = ""
    round: int = 0
    budget: str = ""
    mode: str = ""

    def matches(self, row: dict) -> bool:
        return all(row[k] == getattr(self, k) for k in ("method", "variant", "round", "budget", "mode",
                                                        "iou_type", "metric"))

    def label(self) -> str:
        label = stage_label(self.method, self.variant, self.budget, self.mode)
        return label + (f" r{self.round}" if self.round else "")


@dataclass(frozen=True)
class Claim:
    text: str  # what the paper claims, in words
    a: Ref  # the method
    b: Ref  # what it claims to beat
    oracle: Ref | None = None  # an upper bound on the same metric, where the pipeline trains one
    trivial: Ref | None = None  # a trivial baseline on the same metric, where there is one


def instance_claims(*, exemplar_counts: list[int], rounds: int, oracle: bool) -> list[Claim]:
    """FreeSOLO's and Exemplar-FreeSOLO's claims on class-agnostic mask AP / AR100."""
    def ref(method, metric, round=0, variant=""):
        return Ref(method, "segm", metric, variant=variant, round=round)

    orc = (lambda metric: ref("oracle", metric)) if oracle else (lambda metric: None)
    claims = [Claim("FreeSOLO: SOLO beats its own coarse masks (Free Mask)", ref("freesolo", "AP"),
                    ref("freemask", "AP"), orc("AP"))]
    if rounds >= 1:
        claims.append(Claim("FreeSOLO: self-training round 1 beats round 0", ref("freesolo", "AP", 1),
                            ref("freesolo", "AP"), orc("AP")))
    claims += [Claim(f"Exemplar-FreeSOLO ({n} exemplars) beats FreeSOLO on recall",
                     ref("exemplar", "AR100", variant=str(n)), ref("freesolo", "AR100"), orc("AR100"))
               for n in exemplar_counts]
    return claims


def stego_claims() -> list[Claim]:
    """STEGO's claims: its cluster probe beats k-means on the raw features and a constant map (mIoU over all
    pixels and over object pixels only)."""
    def ref(method, metric, variant=""):
        return Ref(method, "semantic", metric, variant=variant, mode="plain" if method == "stego" else "")

    return [Claim(f"STEGO beats {name} ({metric})", ref("stego", metric, "cluster"), ref(other, metric),
                  ref("stego", metric, "linear"), ref("constant", metric) if metric == "mIoU" else None)
            for metric in ("mIoU", "obj_mIoU") for other, name in (("kmeans", "k-means"), ("constant", "a constant map"))
            if not (other == "constant" and metric == "obj_mIoU")]


def pct_claims(*, budgets: list[str], modes: list[str], oracle_budget: str | None) -> list[Claim]:
    """PCT's claims per label budget (the rows' budget column) and mode (plain | ctr)."""
    def ref(model, mode, budget):
        return Ref("pct", "semantic", "mIoU", variant=model, budget=budget, mode=mode)

    orc = ref("strong_only", "plain", oracle_budget) if oracle_budget else None
    claims = []
    for budget in budgets:
        for mode in modes:
            tag = f"{'Contextrast, ' if mode == 'ctr' else ''}{budget} labelled"
            claims.append(Claim(f"PCT Hybrid beats strong-only ({tag})", ref("pct_hybrid", mode, budget),
                                ref("strong_only", mode, budget), orc))
            claims.append(Claim(f"PCT retrain beats strong-only ({tag})", ref("pct_retrain", mode, budget),
                                ref("strong_only", mode, budget), orc))
        if {"plain", "ctr"} <= set(modes):
            claims.append(Claim(f"Contextrast beats plain PCT Hybrid ({budget} labelled)",
                                ref("pct_hybrid", "ctr", budget), ref("pct_hybrid", "plain", budget), orc))
    return claims


def values_by_run(rows: list[dict], ref: Ref) -> dict[str, float]:
    """{experiment: value} of `ref` over the rows (NaN values left out)."""
    out = {}
    for r in rows:
        if ref.matches(r):
            if r["experiment"] in out:
                raise ValueError(f"claims: two rows of {ref.label()} {ref.metric} in run {r['experiment']}")
            if not math.isnan(r["value"]):
                out[r["experiment"]] = float(r["value"])
    return out


def verdict(diffs: list[float]) -> tuple[str, float, float]:
    """(verdict, mean difference, its standard error) of paired differences A_i - B_i (module doc)."""
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    if n == 0:
        return "no data", math.nan, math.nan
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if n < MIN_SEEDS:
        return f"too few seeds ({n})", mean, se
    if mean > 0 and mean > NOISE_SE * se:
        return "holds", mean, se
    if mean < 0 and -mean > NOISE_SE * se:
        return "does not hold", mean, se
    return "within noise", mean, se


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return f"{fmt_value(float(np.mean(values)))} +- {fmt_value(std)}"


def evaluate_claims(rows: list[dict], claims: list[Claim]) -> list[dict]:
    """One result per claim whose A and B rows exist in some run: the pair's values per seed, the summary and
    the verdict. Claims with no rows (something the config did not run) are left out."""
    out = []
    for c in claims:
        a, b = values_by_run(rows, c.a), values_by_run(rows, c.b)
        runs = sorted(set(a) & set(b))
        if not runs:
            continue
        word, mean, se = verdict([a[r] - b[r] for r in runs])
        extra = {k: (list(values_by_run(rows, ref).values()) if ref else None)
                 for k, ref in (("oracle", c.oracle), ("trivial", c.trivial))}
        out.append({"claim": c.text, "metric": f"{c.a.metric} ({c.a.label()} vs {c.b.label()})", "runs": runs,
                    "a": [a[r] for r in runs], "b": [b[r] for r in runs],
                    "diff": None if math.isnan(mean) else mean, "se": None if math.isnan(se) else se,
                    "verdict": word, **extra})
    return out


def claims_markdown(results: list[dict], *, seeds: list[int]) -> str:
    """The claims table (byte-for-byte deterministic for the same results)."""
    lines = [
        f"## Claims over {len(seeds)} training seeds ({', '.join(map(str, seeds))})",
        "",
        "A and B: mean +- sample std over the seeds; A - B: mean paired difference +- its standard error.",
        f"Verdict: holds if A - B > {NOISE_SE:g} standard errors, does not hold if B - A is, else within noise "
        f"(at least {MIN_SEEDS} seeds). Oracle: the same metric of an upper bound (SOLO on the ground truth, "
        "STEGO's linear probe, PCT with every label); trivial: a constant map.",
        "",
        "| claim | metric (A vs B) | A | B | A - B | verdict | oracle | trivial |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        diff = f"{fmt_value(r['diff'])} +- {fmt_value(r['se'])}"
        extra = [_mean_std(r[k]) if r[k] is not None else "-" for k in ("oracle", "trivial")]
        lines.append(f"| {r['claim']} | {r['metric']} | {_mean_std(r['a'])} | {_mean_std(r['b'])} | {diff} | "
                     f"{r['verdict']} | {extra[0]} | {extra[1]} |")
    if not results:
        lines.append("| (no claim's rows were found) | | | | | | | |")
    return "\n".join(lines) + "\n"
