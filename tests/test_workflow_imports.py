"""What the Snakefile imports while it plans stays free of torch: every `snakemake` call (a dry run, each test
of tests/workflow, a SLURM submission) parses the workflow, and torch's import alone doubled that (1.5 s to
2.9 s for the tiny config's dry run) when the image-count check reached torch through maskless.pct.losses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _workflow_modules() -> set[str]:
    """Every maskless module the Snakefile and rules/**/*.smk import, at top level or inside a function."""
    text = "\n".join(p.read_text() for p in [REPO / "Snakefile", *sorted((REPO / "rules").rglob("*.smk"))])
    return set(re.findall(r"^\s*(?:from|import) (maskless[\w.]*)", text, re.M))


def test_planning_the_workflow_does_not_import_torch():
    modules = sorted(_workflow_modules() | {"maskless.pct.split"})  # config.check_image_count's lazy import
    assert "maskless.config" in modules and "maskless.pct.budget" in modules
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print(sorted(m for m in sys.modules if m == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"planning imports torch: {modules}"
