"""Per-rule wall time and peak memory of a finished run, from Snakemake's `benchmark:` records.

    .venv/bin/python bench/run_report.py results/synthetic

Prints a markdown table (rule, jobs, summed seconds, largest max RSS) and the total. Not a test.
"""

from __future__ import annotations

import sys
from pathlib import Path

from maskless.record import benchmark_rows, family_totals


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv else "results/synthetic")
    bench = root / "benchmarks"
    if not bench.is_dir():
        raise SystemExit(f"no benchmark records under {bench}: run the workflow first")
    totals = family_totals(benchmark_rows(root))
    seconds = {k: v["seconds"] for k, v in totals.items()}
    rss = {k: v["max_rss_mb"] for k, v in totals.items()}
    jobs = {k: v["jobs"] for k, v in totals.items()}
    print(f"command: .venv/bin/python bench/run_report.py {root}\n")
    print("| rule | jobs | seconds (sum) | max RSS (MB) |\n|---|---|---|---|")
    for rule in sorted(seconds, key=lambda r: -seconds[r]):
        print(f"| {rule} | {jobs[rule]} | {seconds[rule]:.1f} | {rss[rule]:.0f} |")
    print(f"| total | {sum(jobs.values())} | {sum(seconds.values()):.1f} | |")


if __name__ == "__main__":
    main(sys.argv[1:])
