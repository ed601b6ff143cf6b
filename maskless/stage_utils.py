"""What every stage script does first: log to the rule's log, set torch's threads, record the params.

Stage scripts (stages/*.py) stay thin: they call `begin(snakemake)` and then one package function.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from maskless.io import set_threads, setup_logging, write_json_atomic
from maskless.record import environment

log = logging.getLogger("maskless.stage")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def begin(smk: Any, params_beside: str | None = None) -> dict:
    """Set up a stage run from the `snakemake` object; return its params as a plain dict.

    The resolved params are written as `<params_beside>.params.json` (default: beside the first output)
    so every output folder records what made it, with the resolved config, the seed, the git commit,
    package versions and devices (maskless.record.environment).
    """
    setup_logging(smk.log[0] if len(smk.log) else None)
    if "torch" in sys.modules:  # a stage computing with torch (imported at its top); the others skip its 1.3 s
        set_threads(smk.threads)  # import (Snakemake's OMP/MKL variables reach a torch imported later anyway)
    params = _plain(dict(smk.params.items()))
    log.info("rule %s: threads=%s params=%s", smk.rule, smk.threads, params)
    target = params_beside or str(smk.output[0])
    config = _plain(dict(getattr(smk, "config", {}) or {}))
    record = {"rule": smk.rule, "wildcards": dict(smk.wildcards.items()), "params": params,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "seed": params.get("seed", config.get("seed")),  # a seed run's own (config `seeds`)
              "config": config,
              "environment": environment()}
    out = Path(target)
    # A directory output (a zarr store) records its params inside itself, written by the stage.
    if not str(target).endswith(".zarr"):
        write_json_atomic(out.with_name(out.name + ".params.json"), record, indent=1)
    return params
