"""The report's inputs (ReportInputs, filled by the workflow) and what its figure modules share: the strip
height and the order keys of SOLO variants, PCT label budgets and modes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from maskless.pct.budget import budget_text, parse_budget
from maskless.pct.stage import MODES

__all__ = ["ReportInputs", "PCT_RUNS", "STRIP_HEIGHT", "first_seen", "budget_key", "mode_key", "budget_kind",
           "budget_words"]

STRIP_HEIGHT = 192  # px of each side_by_side panel
PCT_RUNS = ("strong_only", "pct", "retrain")  # PCT training runs of a budget and mode, in pipeline order


@dataclass(frozen=True)
class ReportInputs:
    """The files the report draws, each with what it is of; None / empty: not drawn. Paths are strings.

    Keyed lists hold tuples whose last item is the path: solo (variant, round, prediction index), pct
    (budget wildcard "ratio0.125" / "count92", mode, retrained model.pt), solo_losses (variant, round,
    loss.csv), pct_losses (budget, mode, run of PCT_RUNS, loss.csv), pct_metrics (budget, mode,
    metrics.parquet), pools (exemplar count, pool folder).
    """

    manifest: str | None = None  # the training images (mask strips without an evaluation set, semantic strips)
    ground_truth: str | None = None  # their COCO instances
    eval_manifest: str | None = None  # the evaluation set (dataset.eval): the mask strips show its images ...
    eval_ground_truth: str | None = None  # ... and its ground truth
    freemask: str | None = None  # the Free Mask index on the images of the mask strips
    solo: Sequence[tuple[str, int, str]] = ()  # SOLO predictions on those images
    backbone: str | None = None  # the frozen backbone STEGO predicts on
    stego: str | None = None  # the STEGO model
    pct: Sequence[tuple[str, str, str]] = ()  # PCT retrained models
    pct_manifest: str | None = None  # pct.data's images ...
    pct_labels: str | None = None  # ... and labels (given: PCT learnt from them, not from the dataset)
    pretrain_loss: str | None = None
    solo_losses: Sequence[tuple[str, int, str]] = ()
    stego_loss: str | None = None
    pct_losses: Sequence[tuple[str, str, str, str]] = ()
    metrics: Sequence[str] = ()  # instance and STEGO metric rows (maskless.eval.metrics)
    pct_metrics: Sequence[tuple[str, str, str]] = ()  # PCT's metric rows of each budget and mode
    pools: Sequence[tuple[int, str]] = ()  # exemplar pools

    @classmethod
    def from_workflow(cls, files: Mapping[str, str | Sequence[str]], keys: Mapping[str, Sequence]) -> ReportInputs:
        """From a rule's named inputs (field -> path, or -> [path]) and the keys of its keyed lists (field ->
        [key], a key a list of the tuple's items before the path, in the paths' order). A name that is no
        field is an error, but "after" (inputs that only order the rule after the rest of the run)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(files) - fields - {"after"} | set(keys) - fields)
        if unknown:
            raise ValueError(f"report inputs: unknown names {unknown}; known: {sorted(fields)}")
        values: dict = {}
        for name, value in files.items():
            if name == "after":
                continue
            if name not in keys:
                values[name] = str(value) if isinstance(value, (str, Path)) else [str(v) for v in value]
                continue
            paths, name_keys = [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value], keys[name]
            if len(paths) != len(name_keys):
                raise ValueError(f"report inputs: {len(paths)} files of {name} but {len(name_keys)} keys")
            values[name] = [(*(key if isinstance(key, (list, tuple)) else [key]), path)
                            for key, path in zip(name_keys, paths)]
        missing = sorted(set(keys) - set(files))
        if missing:
            raise ValueError(f"report inputs: keys of {missing} but no files")
        return cls(**values)


def first_seen(variants: list[str]) -> dict[str, int]:
    """{SOLO variant: its place in the order given}: the workflow gives the variants in pipeline order
    (solo_variants in rules/inputs/solo.smk), so the report keeps it rather than reading it from their names."""
    return {v: i for i, v in enumerate(dict.fromkeys(variants))}


def budget_key(budget: str) -> tuple:
    """Sort key of a PCT label budget ("ratio0.125", "count92": the budget wildcard,
    maskless.pct.budget.parse_budget): ratios before counts, each by value."""
    ratio, count = parse_budget(budget)
    return (0, ratio, budget) if ratio is not None else (1, float(count), budget)


def mode_key(mode: str) -> tuple:
    """PCT modes in pipeline order (plain, then ctr), others after by name."""
    return (MODES.index(mode), "") if mode in MODES else (len(MODES), mode)


def budget_kind(budget: str) -> str:
    """"ratio" or "count": the kind of a label budget wildcard (budget_key)."""
    return "ratio" if budget_key(budget)[0] == 0 else "count"


def budget_words(budget: str) -> str:
    """"label ratio 0.125" of ratio0.125, "label count 92" of count92."""
    return f"label {budget_kind(budget)} {budget_text(budget)}"
