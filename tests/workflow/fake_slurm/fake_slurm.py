"""Stand-ins for the SLURM commands that snakemake-executor-plugin-slurm 2.8 calls (no real cluster).

Every call appends one JSON line {"cmd", "argv", "stdin", "jobid"} to the file named by FAKE_SLURM_LOG,
under an exclusive lock (the plugin submits from two threads). Answers, in the formats the plugin parses:
  sbatch   prints the job id alone (the plugin passes --parsable); ids count up from 4242
  sacct    `--format=JobIdRaw,State` status query: "<id>|<state>" for every submitted job, the state from
           FAKE_SLURM_STATE (default FAILED); account, reason and node queries: nothing
  squeue   `--format=%i|%T`: the same lines as sacct
  sinfo    `-o %P`: a partition list with the default marked `*` (debug)
  scontrol `show config`: MaxArraySize and MinJobAge
  scancel  nothing
Usage (through the small sh wrappers next to this file): fake_slurm.py COMMAND [ARGS...]
"""

from __future__ import annotations

import fcntl
import json
import os
import sys

FIRST_JOB_ID = 4242
DEFAULT_PARTITION = "debug"


def _record(cmd: str, argv: list[str], stdin: str) -> str | None:
    """Append this call to the log; for sbatch, return the new job id (submission count + FIRST_JOB_ID)."""
    log_path = os.environ.get("FAKE_SLURM_LOG")
    if not log_path:
        sys.exit(f"fake {cmd}: FAKE_SLURM_LOG is not set")
    with open(log_path, "a+", encoding="utf-8") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.seek(0)
        calls = [json.loads(line) for line in log if line.strip()]
        jobid = None
        if cmd == "sbatch":
            jobid = str(FIRST_JOB_ID + sum(c["cmd"] == "sbatch" for c in calls))
        log.write(json.dumps({"cmd": cmd, "argv": argv, "stdin": stdin, "jobid": jobid}) + "\n")
        log.flush()
    return jobid


def _submitted_ids() -> list[str]:
    with open(os.environ["FAKE_SLURM_LOG"], encoding="utf-8") as log:
        calls = [json.loads(line) for line in log if line.strip()]
    return [c["jobid"] for c in calls if c["cmd"] == "sbatch"]


def _status_lines() -> str:
    state = os.environ.get("FAKE_SLURM_STATE", "FAILED")
    return "".join(f"{jobid}|{state}\n" for jobid in _submitted_ids())


def main() -> int:
    if len(sys.argv) < 2:
        sys.exit("usage: fake_slurm.py COMMAND [ARGS...]")
    cmd, argv = sys.argv[1], sys.argv[2:]
    # The plugin pipes the job script through stdin only with /dev/stdin (pass_command_as_script).
    stdin = sys.stdin.read() if cmd == "sbatch" and "/dev/stdin" in argv else ""
    jobid = _record(cmd, argv, stdin)
    if cmd == "sbatch":
        print(jobid)
    elif cmd == "sacct" and "--format=JobIdRaw,State" in argv:
        sys.stdout.write(_status_lines())
    elif cmd == "squeue" and "--format=%i|%T" in argv:
        sys.stdout.write(_status_lines())
    elif cmd == "sinfo":
        print(f"PARTITION\n{DEFAULT_PARTITION}*\ngpu")
    elif cmd == "scontrol" and argv[:2] == ["show", "config"]:
        print("MaxArraySize            = 1001\nMinJobAge               = 300 sec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
