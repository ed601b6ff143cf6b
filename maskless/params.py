"""The config boundary (issue 13 item 4): config sections -> rule params -> parameter dataclasses.

`section_params` gives a rule the algorithm keys of a section: the schema (maskless/config.schema.yaml)
marks every other key with `x-role` (workflow or wiring), so no rule lists keys. `from_config` is the one
way a stage turns those values (plus values derived from other sections or wildcards) into its dataclass.
tests/test_config_defaults.py checks each section against its dataclass, key for key and default for default.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from maskless.config import ConfigError, load_schema

ROLES = ("workflow", "wiring")


def _params_of(values: dict, node: dict) -> dict:
    out = {}
    props = node.get("properties", {})
    for k, v in values.items():
        sub = props.get(k, {})
        if sub.get("x-role") in ROLES:
            continue
        out[k] = _params_of(v, sub) if isinstance(v, dict) and "properties" in sub else v
    return out


def section_params(cfg: dict, section: str) -> dict:
    """A config section's algorithm keys: the rule `params` its stage builds its parameter dataclass from
    (with from_config), so that they, and only they, rerun the rule when they change.

    Left out, at any depth, is every key the schema marks with `x-role`: `workflow` (threads, enabled, shard
    and inference batch sizes, workers: how a result is computed, never what it is) and `wiring` (keys that
    choose inputs or the DAG, or that another rule reads: pretrain.weights, solo.inference, stego.train,
    pct.ratios, ...). The schema is the one place that says which key is which; no rule lists keys.
    """
    return _params_of(cfg[section], load_schema()["properties"][section])


def from_config(cls: type, values: dict, key: str, **derived: Any):
    """The one way config values become a parameter dataclass: `values` (section_params' output, or a
    sub-section of it) plus `derived` (values the caller takes from other sections or wildcards: seed, arch,
    ...). A field whose type is a dataclass is built from its dict the same way, recursively. A value that
    is not a field of cls, or a field given twice, is a ConfigError naming the config key (`key`.<name>),
    as is a dataclass's own check (its ValueError)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    twice = sorted(set(values) & set(derived))
    if unknown or twice:
        raise ConfigError(f"config keys {[f'{key}.{k}' for k in unknown + twice]} are not parameters of "
                          f"{cls.__module__}.{cls.__name__}" + (" (or are given twice)" if twice else ""))
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        sub = _dataclass_type(hints[name])
        kwargs[name] = from_config(sub, value, f"{key}.{name}") if sub and isinstance(value, dict) else value
    try:
        return cls(**kwargs, **derived)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config section {key!r}: {e}") from e


def _dataclass_type(hint: Any) -> type | None:
    """The dataclass in a field's type (`X`, `X | None`, `Optional[X]`), else None."""
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return t
    return None
