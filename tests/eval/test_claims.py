"""The claims table (maskless.eval.claims): the verdict rule on crafted rows, worked out by hand."""

from __future__ import annotations

import dataclasses
import math

import pytest

from maskless.eval.claims import (Claim, Ref, claims_markdown, evaluate_claims, instance_claims, pct_claims,
                                  stego_claims, values_by_run, verdict)
from maskless.eval.metrics import metric_rows


def _rows(values: dict[str, list[float]], iou_type="segm", metric="AP", **columns):
    """Rows of methods over seeds: {method: [value of seed 0, seed 1, ...]}, with the other columns given."""
    rows = []
    for method, vals in values.items():
        for k, v in enumerate(vals):
            rows += metric_rows({iou_type: {metric: v}}, experiment=f"exp/seed{k}", method=method, dataset="d",
                                seed=k, **columns)
    return rows


CLAIM = Claim("freesolo beats freemask", Ref("freesolo", "segm", "AP"), Ref("freemask", "segm", "AP"))


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
    rows = _rows({"freesolo": [10.0, 12.0, 14.0, 30.0], "freemask": [9.0, 10.0, 11.0]})  # seed 3: no freemask
    other = Claim("oracle beats freemask", Ref("oracle", "segm", "AP"), Ref("freemask", "segm", "AP"))  # no rows
    (res,) = evaluate_claims(rows, [CLAIM, other])
    assert res["runs"] == ["exp/seed0", "exp/seed1", "exp/seed2"]
    assert res["diff"] == pytest.approx(2.0) and res["verdict"] == "holds"
    table = claims_markdown([res], seeds=[0, 1, 2])
    # A = 12.0 +- 2.0, B = 10.0 +- 1.0, d = (1, 2, 3): 2.0 +- 0.6
    assert ("| freesolo beats freemask | AP (freesolo vs freemask) | 12.0 +- 2.0 | 10.0 +- 1.0 | 2.0 +- 0.6 | holds "
            "| - | - |") in table
    assert claims_markdown([res], seeds=[0, 1, 2]) == table


def test_nan_values_are_left_out_and_duplicates_refused():
    rows = _rows({"freesolo": [1.0, float("nan"), 3.0, 4.0], "freemask": [0.0, 0.0, 0.0, 0.0]})
    (res,) = evaluate_claims(rows, [CLAIM])
    assert res["runs"] == ["exp/seed0", "exp/seed2", "exp/seed3"]
    with pytest.raises(ValueError, match="two rows of freesolo AP in run exp/seed0"):
        evaluate_claims(rows + _rows({"freesolo": [1.0]}), [CLAIM])


def test_refs_match_every_column():
    """A Ref takes the rows whose method, variant, round, budget, mode, iou_type and metric all equal its
    own: the ctr row is not the plain one's, budget 0.25 not 0.125's, round 1 not round 0's, variant
    pct_retrain not pct_hybrid's."""
    hybrid = Ref("pct", "semantic", "mIoU", variant="pct_hybrid", budget="0.125", mode="plain")
    rows = []
    for (variant, budget, mode), vals in {("pct_hybrid", "0.125", "plain"): [1.0, 2.0, 3.0],
                                          ("pct_hybrid", "0.125", "ctr"): [10.0, 20.0, 30.0],
                                          ("pct_hybrid", "0.25", "plain"): [100.0, 200.0, 300.0],
                                          ("pct_retrain", "0.125", "plain"): [7.0, 8.0, 9.0]}.items():
        rows += _rows({"pct": vals}, "semantic", "mIoU", variant=variant, budget=budget, mode=mode)
    rows += _rows({"freesolo": [5.0, 6.0, 7.0]}) + _rows({"freesolo": [50.0, 60.0, 70.0]}, round=1)
    pick = [(hybrid, [1.0, 2.0, 3.0]), (dataclasses.replace(hybrid, mode="ctr"), [10.0, 20.0, 30.0]),
            (dataclasses.replace(hybrid, budget="0.25"), [100.0, 200.0, 300.0]),
            (dataclasses.replace(hybrid, variant="pct_retrain"), [7.0, 8.0, 9.0]),
            (Ref("freesolo", "segm", "AP"), [5.0, 6.0, 7.0]),
            (Ref("freesolo", "segm", "AP", round=1), [50.0, 60.0, 70.0]),
            (dataclasses.replace(hybrid, metric="Acc"), []), (dataclasses.replace(hybrid, budget="0.5"), [])]
    for ref, want in pick:
        assert list(values_by_run(rows, ref).values()) == want, ref
    assert hybrid.label() == "pct_hybrid@0.125" and Ref("freesolo", "segm", "AP", round=1).label() == "freesolo r1"


def test_claim_lists_follow_the_config():
    inst = instance_claims(exemplar_counts=[4, 8], rounds=0, oracle=True)
    assert [(c.a.method, c.a.variant) for c in inst] == [("freesolo", ""), ("exemplar", "4"), ("exemplar", "8")]
    assert [c.a.label() for c in inst] == ["freesolo", "exemplar_n4", "exemplar_n8"]  # no round-1 claim
    assert all(c.oracle == Ref("oracle", "segm", c.a.metric) for c in inst)
    assert instance_claims(exemplar_counts=[], rounds=1, oracle=False)[1].a == Ref("freesolo", "segm", "AP", round=1)
    stego = stego_claims()
    assert {c.b.method for c in stego} == {"kmeans", "constant"}
    assert all(c.a == Ref("stego", "semantic", c.a.metric, variant="cluster", mode="plain") for c in stego)
    assert all(c.oracle == Ref("stego", "semantic", c.a.metric, variant="linear", mode="plain") for c in stego)
    pct = pct_claims(budgets=["0.125"], modes=["plain", "ctr"], oracle_budget="1")
    assert pct[-1].a == Ref("pct", "semantic", "mIoU", variant="pct_hybrid", budget="0.125", mode="ctr")
    assert pct[-1].b == Ref("pct", "semantic", "mIoU", variant="pct_hybrid", budget="0.125", mode="plain")
    assert [pct[-1].a.label(), pct[-1].b.label()] == ["pct_hybrid+ctr@0.125", "pct_hybrid@0.125"]
    assert all(c.oracle == Ref("pct", "semantic", "mIoU", variant="strong_only", budget="1", mode="plain")
               for c in pct)
    assert pct[0].oracle.label() == "strong_only@1"


def test_pct_claim_lines_read_the_rows_columns():
    """PCT's claims on rows written with columns: the metric column names the pair as the table always did;
    the oracle's rows (strong_only, plain, budget 1) fill the oracle column."""
    rows = []
    for (variant, mode), vals in {("pct_hybrid", "ctr"): [4.0, 5.0, 6.0], ("pct_hybrid", "plain"): [1.0, 2.0, 3.0],
                                  ("strong_only", "plain"): [1.0, 1.0, 1.0]}.items():
        rows += _rows({"pct": vals}, "semantic", "mIoU", variant=variant, budget="0.125", mode=mode)
    rows += _rows({"pct": [90.0, 92.0, 94.0]}, "semantic", "mIoU", variant="strong_only", budget="1", mode="plain")
    results = evaluate_claims(rows, pct_claims(budgets=["0.125"], modes=["plain", "ctr"], oracle_budget="1"))
    table = claims_markdown(results, seeds=[0, 1, 2])
    # Hybrid vs strong-only (plain): d = (0, 1, 2), 1.0 +- 0.6 (se = 1 / sqrt 3), 1.0 < 2 se: within noise;
    # Contextrast vs plain Hybrid: d = (3, 3, 3), se 0: holds; oracle 92.0 +- 2.0
    assert ("| PCT Hybrid beats strong-only (0.125 labelled) | mIoU (pct_hybrid@0.125 vs strong_only@0.125) | "
            "2.0 +- 1.0 | 1.0 +- 0.0 | 1.0 +- 0.6 | within noise | 92.0 +- 2.0 | - |") in table
    assert ("| Contextrast beats plain PCT Hybrid (0.125 labelled) | mIoU (pct_hybrid+ctr@0.125 vs "
            "pct_hybrid@0.125) | 5.0 +- 1.0 | 2.0 +- 1.0 | 3.0 +- 0.0 | holds | 92.0 +- 2.0 | - |") in table
    assert len(results) == 2  # no ctr strong-only and no retrain rows: those claims are left out
