"""Per-rule wall time and peak memory of a finished run, from Snakemake's `benchmark:` records.

    .venv/bin/python bench/run_report.py results/synthetic

Prints a markdown table (rule, jobs, summed seconds, largest max RSS) and the total. Not a test.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv else "results/synthetic")
    bench = root / "benchmarks"
    if not bench.is_dir():
        raise SystemExit(f"no benchmark records under {bench}: run the workflow first")
    seconds: dict[str, float] = defaultdict(float)
    rss: dict[str, float] = defaultdict(float)
    jobs: dict[str, int] = defaultdict(int)
    for tsv in sorted(bench.rglob("*.tsv")):
        # One line per job family: shard jobs (freemask/3.tsv, solo/<variant>/round<r>/pred_3.tsv) together.
        parts = list(tsv.relative_to(bench).with_suffix("").parts)
        parts[-1] = re.sub(r"_\d+$|^\d+$", "", parts[-1])
        rule = "/".join(p for p in parts if p)
        with open(tsv) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                seconds[rule] += float(row["s"])
                rss[rule] = max(rss[rule], float(row["max_rss"]) if row["max_rss"] != "NA" else 0.0)
                jobs[rule] += 1
    print(f"command: .venv/bin/python bench/run_report.py {root}\n")
    print("| rule | jobs | seconds (sum) | max RSS (MB) |\n|---|---|---|---|")
    for rule in sorted(seconds, key=lambda r: -seconds[r]):
        print(f"| {rule} | {jobs[rule]} | {seconds[rule]:.1f} | {rss[rule]:.0f} |")
    print(f"| total | {sum(jobs.values())} | {sum(seconds.values()):.1f} | |")


if __name__ == "__main__":
    main(sys.argv[1:])
