"""The claims table (maskless.eval.claims): the verdict rule on crafted rows, worked out by hand."""

from __future__ import annotations

import math

import pytest

from maskless.eval.claims import (Claim, Ref, claims_markdown, evaluate_claims, instance_claims, pct_claims,
                                  pct_stage, stego_claims, verdict)
from maskless.eval.metrics import metric_rows


def _rows(values: dict[str, list[float]], iou_type="segm", metric="AP"):
    """Rows of stages over seeds: {stage: [value of seed 0, seed 1, ...]}."""
    rows = []
    for stage, vals in values.items():
        for k, v in enumerate(vals):
            rows += metric_rows({iou_type: {metric: v}}, experiment=f"exp/seed{k}", stage=stage, round=0,
                                dataset="d")
    return rows


CLAIM = Claim("a beats b", Ref("a", 0, "segm", "AP"), Ref("b", 0, "segm", "AP"))


def test_verdict_rule_by_hand():
    # d = (1, 2, 3): mean 2, std 1, se 1/sqrt(3) = 0.577; 2 > 2 * 0.577 -> holds
    word, mean, se = verdict([1.0, 2.0, 3.0])
    assert word == "holds" and mean == pytest.approx(2.0) and se == pytest.approx(1 / math.sqrt(3))
    # d = (-1, 0, 4): mean 1, std sqrt(7) = 2.646, se 1.528; 1 < 3.055 -> within noise
    word, mean, se = verdict([-1.0, 0.0, 4.0])
    assert word == "within noise" and mean == pytest.approx(1.0) and se == pytest.approx(math.sqrt(7 / 3))
    # d = (-2, -2.5, -1.5): mean -2, std 0.5, se 0.289 -> does not hold
    assert verdict([-2.0, -2.5, -1.5])[0] == "does not hold"
    # two seeds give no verdict, whatever the difference
    assert verdict([5.0, 6.0])[0] == "too few seeds (2)"
    # equal differences: se 0; a positive mean holds, zero is within noise
    assert verdict([1.0, 1.0, 1.0])[0] == "holds"
    assert verdict([0.0, 0.0, 0.0])[0] == "within noise"


def test_evaluate_pairs_by_seed_and_skips_missing_seeds_and_claims():
    rows = _rows({"a": [10.0, 12.0, 14.0, 30.0], "b": [9.0, 10.0, 11.0]})  # seed 3 has no b: left out
    other = Claim("c beats b", Ref("c", 0, "segm", "AP"), Ref("b", 0, "segm", "AP"))  # no c rows: no line
    (res,) = evaluate_claims(rows, [CLAIM, other])
    assert res["runs"] == ["exp/seed0", "exp/seed1", "exp/seed2"]
    assert res["diff"] == pytest.approx(2.0) and res["verdict"] == "holds"
    table = claims_markdown([res], seeds=[0, 1, 2])
    # A = 12.0 +- 2.0, B = 10.0 +- 1.0, d = (1, 2, 3): 2.0 +- 0.6
    assert "| a beats b | AP (a vs b) | 12.0 +- 2.0 | 10.0 +- 1.0 | 2.0 +- 0.6 | holds | - | - |" in table
    assert claims_markdown([res], seeds=[0, 1, 2]) == table


def test_nan_values_are_left_out_and_duplicates_refused():
    rows = _rows({"a": [1.0, float("nan"), 3.0, 4.0], "b": [0.0, 0.0, 0.0, 0.0]})
    (res,) = evaluate_claims(rows, [CLAIM])
    assert res["runs"] == ["exp/seed0", "exp/seed2", "exp/seed3"]
    with pytest.raises(ValueError, match="two rows of a AP in run exp/seed0"):
        evaluate_claims(rows + _rows({"a": [1.0]}), [CLAIM])


def test_claim_lists_follow_the_config():
    inst = instance_claims(exemplar_counts=[4, 8], rounds=0, oracle=True)
    assert [c.a.stage for c in inst] == ["freesolo", "exemplar_n4", "exemplar_n8"]  # no round-1 claim
    assert all(c.oracle.stage == "oracle" for c in inst)
    assert instance_claims(exemplar_counts=[], rounds=1, oracle=False)[1].a == Ref("freesolo", 1, "segm", "AP")
    assert {c.b.stage for c in stego_claims()} == {"kmeans", "constant"}
    pct = pct_claims(budgets=["0.125"], modes=["plain", "ctr"], oracle_budget="1")
    assert pct_stage("pct_hybrid", "ctr", "0.125") == "pct_hybrid+ctr@0.125"
    assert pct[-1].a.stage == "pct_hybrid+ctr@0.125" and pct[-1].b.stage == "pct_hybrid@0.125"
    assert all(c.oracle.stage == "strong_only@1" for c in pct)
