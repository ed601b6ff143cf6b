"""One source of defaults (issue 13 item 4): every key a config section shares with its parameter dataclass
has the same default in both, so a library user and a workflow user get the same method."""

from __future__ import annotations

import dataclasses

import pytest

from maskless.config import validate_config
from maskless.data.synthetic import SyntheticParams
from maskless.solo.eec import EECParams
from maskless.exemplar.refine import RefineParams
from maskless.exemplar.select import SelectParams
from maskless.freemask import FreeMaskParams
from maskless.pct.model import SegNetParams
from maskless.pct.train import PCTParams
from maskless.pretrain.densecl import DenseCLParams
from maskless.selftrain import RelabelParams
from maskless.solo.losses import SoloLossWeights
from maskless.solo.model import SoloModelParams
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
