"""Seconds that `snakemake -n` takes on a finished run, and whether it would rerun anything.

    .venv/bin/python bench/dryrun.py [--configfile config.yaml] [--repeat 3]

Run it after `make demo` (or with the configfile of a finished run). Not a test: prints figures only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configfile", default="config.yaml")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", args.configfile]
    times, nothing = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        nothing.append("Nothing to be done" in proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
    print(f"command: .venv/bin/python bench/dryrun.py --configfile {args.configfile} --repeat {args.repeat}")
    print(f"snakemake -n seconds: min {min(times):.2f}, max {max(times):.2f} over {args.repeat} runs")
    print(f"nothing to rerun: {all(nothing)}")


if __name__ == "__main__":
    main()
