"""One config boundary (issue 13 item 4): every key a config section shares with its parameter dataclass has
the same default in both, so a library user and a workflow user get the same method; and each section's
algorithm keys (maskless.params.section_params: the schema's x-role keys left out) are exactly its
dataclass's fields, less the ones named below with where their value comes from."""

from __future__ import annotations

import dataclasses

import pytest

from maskless.config import validate_config

from maskless.params import section_params
from maskless.data.synthetic import SyntheticParams
from maskless.solo.eec import EECParams
from maskless.exemplar.pool import PoolParams
from maskless.exemplar.refine import RefineParams
from maskless.exemplar.select import SelectParams
from maskless.freemask import FreeMaskParams
from maskless.pct.contextrast import ContextrastParams
from maskless.pct.model import SegNetParams
from maskless.pct.train import PCTParams
from maskless.pretrain.densecl import DenseCLParams
from maskless.selftrain import RelabelParams
from maskless.solo.losses import SoloLossWeights
from maskless.solo.inference import SoloInferenceParams
from maskless.solo.model import SoloModelParams
from maskless.solo.targets import SoloGeometry
from maskless.solo.train import SoloTrainParams
from maskless.stego.stage import StegoStageParams
from maskless.stego.train import StegoTrainParams

SECTIONS = {
    "synthetic": SyntheticParams, "pretrain": DenseCLParams, "freemask": FreeMaskParams, "solo": SoloTrainParams,
    "solo.model": SoloModelParams, "solo.loss": SoloLossWeights, "selftrain": RelabelParams, "exemplar.select": SelectParams,
    "exemplar.refine": RefineParams, "exemplar.eec": EECParams, "stego": StegoStageParams,
    "stego.train": StegoTrainParams, "pct.model": SegNetParams, "pct.train": PCTParams,
}


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _same(a, b) -> bool:
    """Equal, floats within 1e-4 relative (the schema writes 2/3 as 0.6667)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == pytest.approx(b, rel=1e-4)
    return a == b


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_defaults_equal_the_dataclass_defaults(section):
    values = validate_config({})
    for part in section.split("."):
        values = values[part]
    shared = [f for f in dataclasses.fields(SECTIONS[section]) if f.name in values
              and not isinstance(values[f.name], dict)]
    assert shared, f"section {section} shares no key with {SECTIONS[section].__name__}"
    differ = {f.name: (values[f.name], _plain(_default(f))) for f in shared
              if not _same(values[f.name], _plain(_default(f)))}
    assert not differ, f"{section}: schema default vs dataclass default differ: {differ}"


# Each section's dataclass and the fields it does not take from that section, with their source. Anything
# else must be a key of the section, and every algorithm key a field (extra: keys a translator consumes).
BOUNDARY = {
    "synthetic": (SyntheticParams, {"seed": "config seed"}),
    "pretrain": (DenseCLParams, {"seed": "config seed",
                                 "num_workers": "pretrain.num_workers (x-role workflow: passed beside the params)"}),
    "freemask": (FreeMaskParams, {}),
    "solo": (SoloTrainParams, {"seed": "config seed", "eec": "exemplar.eec, for the exemplar variants",
                               "num_workers": "solo.num_workers (x-role workflow: passed beside the params)"}),
    "solo.model": (SoloModelParams, {"arch": "pretrain.arch", "emb_dim": "freemask.embedding_dim",
                                     "grids": "solo.geometry.grids", "levels": "solo.geometry.levels",
                                     "backbone_norm": "the backbone checkpoint's norm"}),
    "solo.geometry": (SoloGeometry, {"mask_stride": "fixed by the model: the mask branch's stride 4"}),
    "solo.loss": (SoloLossWeights, {}),
    "solo.inference": (SoloInferenceParams, {}),
    "selftrain": (RelabelParams, {}),
    "exemplar": (PoolParams, {"pivot_seed": "config seed"}),
    "exemplar.select": (SelectParams, {"count": "the {n_exemplars} wildcard (exemplar.counts)",
                                       "seed": "config seed"}),
    "exemplar.refine": (RefineParams, {"inference": "SoloInferenceParams' defaults (not configurable)"}),
    "exemplar.eec": (EECParams, {}),
    "stego": (StegoStageParams, {}),
    "stego.train": (StegoTrainParams, {"seed": "config seed"}),
    "pct.model": (SegNetParams, {"arch": "pretrain.arch", "num_classes": "the split's classes",
                                 "backbone_norm": "the backbone checkpoint's norm"}),
    "pct.train": (PCTParams, {"seed": "config seed", "use_contextrast": "the {mode} wildcard (pct.contextrast)",
                              "model": "pct.model", "contextrast": "pct.contextrast_params",
                              "num_workers": "pct.train.num_workers (x-role workflow: passed beside the params)"}),
    "pct.contextrast_params": (ContextrastParams, {}),
}
CONSUMED = {"solo.geometry": {"levels"}, "pct.train": {"retrain_steps"}}  # keys a translator turns into fields


def _algorithm_keys(section: str) -> set[str]:
    """The section's keys as its rule gets them: section_params' for a section and its nested parts; a
    wiring sub-section (solo.inference, stego.train, exemplar.eec) goes whole to the rule that reads it."""
    cfg = validate_config({})
    top, *rest = section.split(".")
    values, raw = section_params(cfg, top), cfg[top]
    for part in rest:
        raw = raw[part]
        values = values[part] if part in values else raw
    return set(values)


@pytest.mark.parametrize("section", sorted(BOUNDARY))
def test_each_section_maps_one_to_one_onto_its_dataclass(section):
    cls, derived = BOUNDARY[section]
    fields = {f.name for f in dataclasses.fields(cls)}
    keys = _algorithm_keys(section) - CONSUMED.get(section, set())
    assert set(derived) <= fields, f"{section}: {sorted(set(derived) - fields)} are not fields of {cls.__name__}"
    assert keys == fields - set(derived), (f"{section}: keys without a field {sorted(keys - fields)}, fields "
                                           f"without a key or a source {sorted(fields - set(derived) - keys)}")


def test_workflow_and_wiring_keys_never_reach_a_stage():
    """pct.train.num_workers (nested) and the top-level workflow / wiring keys are not rule params."""
    cfg = validate_config({})
    assert "num_workers" in cfg["pct"]["train"] and "num_workers" not in section_params(cfg, "pct")["train"]
    solo = section_params(cfg, "solo")
    assert not {"threads", "predict_threads", "predict_batch_size", "inference", "masks"} & set(solo)
    assert not {"threads", "enabled", "shard_size", "batch_size", "backbone"} & set(section_params(cfg, "freemask"))


def test_every_x_role_is_a_known_role():
    """A misspelt role would leave its key among a rule's params without a word."""
    from maskless.config import load_schema
    from maskless.params import ROLES

    def roles(node):
        if isinstance(node, dict):
            if "x-role" in node:
                yield node["x-role"]
            for v in node.values():
                yield from roles(v)

    found = list(roles(load_schema()))
    assert len(found) >= 35 and set(found) <= set(ROLES), sorted(set(found) - set(ROLES))
