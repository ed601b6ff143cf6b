"""Execution profiles: dry runs with both profiles, `snakemake --lint`, and the SLURM profile's sbatch calls.

Every Snakemake run works in a temporary `--directory` (the Snakefile's configfile and includes resolve from
the repository), so nothing lands in the repository's results/ or .snakemake/.

The SLURM runs put the fakes of fake_slurm/ first on PATH: fake `sbatch` logs its argv and prints a job id,
fake `sacct` reports every job COMPLETED, so Snakemake finds the outputs missing after a 1 s latency-wait and
stops. The tests assert on the logged submissions only; the jobs never run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
TINY = REPO / "tests" / "workflow" / "tiny.yaml"
PROFILES = REPO / "profiles"
FAKE_SLURM = Path(__file__).resolve().parent / "fake_slurm"
EXP = yaml.safe_load(TINY.read_text())["experiment"]

# Fast failure for the fake cluster: no retries, first status check after 1 s.
FAST_SLURM = [
    "--profile", str(PROFILES / "slurm"),
    "--latency-wait", "0",
    "--retries", "0",
    "--slurm-init-seconds-before-status-checks", "1",
    "--seconds-between-status-checks", "1",
]  # fmt: skip
GPU_FLAGS = {"--gpus", "--gres", "-G", "--gpus-per-node", "--gpus-per-task", "--gpus-per-socket"}


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the venv's Snakemake on the repository's Snakefile and the tiny config, working in `workdir`.

    Targets must come first in `args`: --configfile takes every following word that is not an option.
    """
    cmd = [sys.executable, "-m", "snakemake", *args, "--snakefile", str(SNAKEFILE)]
    cmd += ["--directory", str(workdir), "--configfile", str(TINY)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def option_values(argv: list[str], name: str) -> list[str]:
    """Values of an sbatch option in either spelling: `-t 480`, `--mem 32000` or `--cpus-per-task=8`."""
    values = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg.split("=", 1)[1])
    return values


def touch(workdir: Path, paths: list[str]) -> None:
    """Create empty input files (a `.zarr` or trailing `/` path as a folder)."""
    for rel in paths:
        path = workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith((".zarr", "/")):
            path.mkdir()
        else:
            path.touch()


# ---------------------------------------------------------------- profile files (fast)


def load_profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["local", "slurm"])
def test_profile_reruns_incomplete_files(name):
    """DESIGN.md Known traps: without --rerun-incomplete a hard kill stops the next run."""
    assert load_profile(name)["rerun-incomplete"] is True


def test_no_default_profile_folder():
    """DESIGN.md Known traps: an empty profiles/default/ makes every snakemake call fail."""
    assert not (PROFILES / "default").exists()


def test_slurm_profile_never_sets_both_gpu_and_gres():
    """Both `gpu` and `gres` give sbatch `--gres=gpu:1 --gpus=1` (DESIGN.md Known traps)."""
    profile = load_profile("slurm")
    assert profile["executor"] == "slurm"
    assert "gpu" not in profile["default-resources"] and "gres" not in profile["default-resources"]
    for rule, resources in profile["set-resources"].items():
        assert not ("gpu" in resources and "gres" in resources), rule
    for rule in ("freemask_shard", "solo_predict", "pct_pseudo"):
        assert profile["set-resources"][rule]["gpu"] == 1, rule
    for rule in ("pretrain", "solo_train", "pct_strong_only", "pct_train", "pct_retrain"):
        assert "gpu" not in profile["set-resources"][rule], rule  # the rule's gpu = config train_processes


# ---------------------------------------------------------------- dry runs and lint


@pytest.mark.workflow
@pytest.mark.parametrize("name", ["local", "slurm"])
def test_dry_run_with_profile(name, tmp_path):
    proc = snakemake(tmp_path, "-n", "--profile", str(PROFILES / name))
    assert proc.returncode == 0, output_of(proc)
    assert "This was a dry-run" in output_of(proc)
    assert "rule synthetic:" in output_of(proc)  # the DAG starts from the generated dataset
    assert not (tmp_path / "results").exists()  # a dry run writes no outputs


@pytest.mark.workflow
def test_lint_is_clean(tmp_path):
    """`snakemake --lint` exits 1 and prints `Lints for rule ...` for every complaint."""
    proc = snakemake(tmp_path, "--lint")
    assert proc.returncode == 0, output_of(proc)
    assert "Lints for" not in output_of(proc)


def test_snakefmt_check_is_clean():
    """`snakefmt --check` (the Snakemake workflow catalog's formatting standard, run by `make lint`) passes on
    the Snakefile and every rule file: it exits 1 naming each file it would change."""
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules/"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, output_of(proc)


# ---------------------------------------------------------------- fake SLURM submissions


@dataclass
class SlurmRun:
    output: str
    calls: list[dict]  # every fake SLURM call: {"cmd", "argv", "stdin", "jobid"}

    def sbatch_by_rule(self) -> dict[str, list[str]]:
        """The sbatch argv of each submitted rule, by the plugin's `--comment rule_<name>_wildcards_...`."""
        out = {}
        for call in self.calls:
            if call["cmd"] == "sbatch":
                comment = option_values(call["argv"], "--comment")[0]
                out[comment.removeprefix("rule_").split("_wildcards_")[0]] = call["argv"]
        return out


def run_fake_slurm(workdir: Path, targets: list[str], rules: list[str], inputs: list[str],
                   extra: tuple[str, ...] = ()) -> SlurmRun:
    """Make `targets` with only `rules` allowed (the inputs, created empty, count as source files); `extra`
    arguments go to Snakemake."""
    bin_dir = workdir.parent / "bin"
    bin_dir.mkdir()
    for src in FAKE_SLURM.iterdir():
        if src.is_file():  # copied and made executable: a checkout may lose the mode bits
            shutil.copyfile(src, bin_dir / src.name)
            (bin_dir / src.name).chmod(0o755)
    log = workdir.parent / "slurm_calls.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # never a real job context
    env.update(
        PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]),
        FAKE_SLURM_LOG=str(log),
        FAKE_SLURM_STATE="COMPLETED",
        XDG_CACHE_HOME=str(workdir.parent / "cache"),
    )
    touch(workdir, inputs)
    proc = snakemake(workdir, *targets, "--allowed-rules", *rules, *FAST_SLURM, *extra, env=env)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    # The fake sacct's COMPLETED was read: Snakemake went on to look for the outputs no job made.
    missing = "completed successfully, but some output files are missing"
    assert proc.returncode == 1 and missing in output_of(proc), f"{targets}\n{output_of(proc)}"
    return SlurmRun(output=output_of(proc), calls=calls)


@pytest.fixture(scope="module")
def gpu_and_cpu_jobs(tmp_path_factory) -> SlurmRun:
    """pretrain (GPU) and pct_split (CPU, needs only the manifest and the ground truth), submitted together.

    Not synthetic: it is upstream of pretrain (via ingest), and {experiment} only matches the config's.
    Not eval_instances: it makes Snakemake evaluate masks_index's input function on the empty manifest.
    """
    workdir = tmp_path_factory.mktemp("slurm_a") / "wd"
    targets = [f"results/{EXP}/pretrain/backbone.pt", f"results/{EXP}/pct/ratio0.5/split.json"]
    inputs = [f"results/{EXP}/data/train/manifest.parquet", f"results/{EXP}/data/train/instances_gt.json"]
    return run_fake_slurm(workdir, targets, ["pretrain", "pct_split"], inputs)


VARIANTS = ("freesolo", "exemplar_n2")  # tiny.yaml: exemplar.counts [2], selftrain.rounds 1


@pytest.fixture(scope="module")
def shard_and_local_jobs(tmp_path_factory) -> SlurmRun:
    """freemask_shard (GPU) and the localrule tables in one run."""
    workdir = tmp_path_factory.mktemp("slurm_b") / "wd"
    targets = [f"results/{EXP}/freemask/train/shards/0.zarr", f"results/{EXP}/tables/metrics.md"]
    inputs = [f"results/{EXP}/data/train/manifest.parquet", f"results/{EXP}/pretrain/backbone.pt"]
    inputs.append(f"results/{EXP}/eval/freemask/metrics.parquet")
    inputs += [f"results/{EXP}/eval/{v}/round{r}/metrics.parquet" for v in VARIANTS for r in (0, 1)]
    inputs.append(f"results/{EXP}/eval/stego/metrics.parquet")
    inputs += [f"results/{EXP}/eval/pct/ratio0.5/{m}/metrics.parquet" for m in ("plain", "ctr")]
    return run_fake_slurm(workdir, targets, ["freemask_shard", "tables"], inputs)


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("fixture", "rule", "minutes", "mem_mb", "cpus"),
    [
        # profiles/slurm: pretrain runtime "8h" = 8 * 60 = 480 min, mem_mb 32000, set-threads 8
        ("gpu_and_cpu_jobs", "pretrain", "480", "32000", "8"),
        # profiles/slurm: freemask_shard runtime "2h" = 120 min, mem_mb 16000, set-threads 4
        ("shard_and_local_jobs", "freemask_shard", "120", "16000", "4"),
    ],
)
def test_gpu_rule_sbatch_arguments(fixture, rule, minutes, mem_mb, cpus, request):
    run = request.getfixturevalue(fixture)
    argv = run.sbatch_by_rule()[rule]
    assert option_values(argv, "-t") == [minutes]
    assert option_values(argv, "--mem") == [mem_mb]
    assert option_values(argv, "--cpus-per-task") == [cpus]
    gpu_requests = [a for a in argv if a.split("=", 1)[0] in GPU_FLAGS]
    assert gpu_requests == ["--gpus=1"]  # exactly one GPU request, never --gres as well
    assert option_values(argv, "-p") == ["debug"]  # no partition in the profile: sinfo's default (debug*)
    assert f"--target-jobs '{rule}:experiment={EXP}" in option_values(argv, "--wrap")[0]


@pytest.mark.workflow
def test_training_rules_request_train_processes_gpus(tmp_path):
    """train_processes: 2 (data-parallel training on 2 GPUs) -> the training rule asks SLURM for 2 GPUs."""
    run = run_fake_slurm(tmp_path / "wd", [f"results/{EXP}/pretrain/backbone.pt"], ["pretrain"],
                         [f"results/{EXP}/data/train/manifest.parquet"], extra=("--config", "train_processes=2"))
    argv = run.sbatch_by_rule()["pretrain"]
    assert [a for a in argv if a.split("=", 1)[0] in GPU_FLAGS] == ["--gpus=2"]


@pytest.mark.workflow
def test_cpu_rule_sbatch_arguments(gpu_and_cpu_jobs):
    """pct_split declares runtime=10, mem_mb=2000, threads 1 and no GPU; the profile leaves it alone."""
    argv = gpu_and_cpu_jobs.sbatch_by_rule()["pct_split"]
    assert option_values(argv, "-t") == ["10"]
    assert option_values(argv, "--mem") == ["2000"]
    assert option_values(argv, "--cpus-per-task") == ["1"]
    assert option_values(argv, "--ntasks") == ["1"]
    assert not [a for a in argv if a.split("=", 1)[0] in GPU_FLAGS]


@pytest.mark.workflow
def test_each_job_submitted_once_and_its_id_parsed(gpu_and_cpu_jobs):
    """Two independent jobs: two sbatch calls, ids 4242 and 4243 (the fake counts from 4242)."""
    assert sorted(gpu_and_cpu_jobs.sbatch_by_rule()) == ["pct_split", "pretrain"]
    assert sorted(c["jobid"] for c in gpu_and_cpu_jobs.calls if c["cmd"] == "sbatch") == ["4242", "4243"]
    assert "SLURM jobid 4242" in gpu_and_cpu_jobs.output and "SLURM jobid 4243" in gpu_and_cpu_jobs.output


@pytest.mark.workflow
def test_localrule_runs_on_the_login_node(shard_and_local_jobs):
    """`tables` is a localrule: Snakemake runs it itself (it fails on the empty input; that is fine here)."""
    assert sorted(shard_and_local_jobs.sbatch_by_rule()) == ["freemask_shard"]
    assert "localrule tables:" in shard_and_local_jobs.output


@pytest.mark.workflow
def test_instance_branch_switch(tmp_path):
    """freemask.enabled: false (configs/voc.yaml) leaves out Free Mask and everything built on it; the other
    branches and the tables stay."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg.setdefault("freemask", {})["enabled"] = False
    (tmp_path / "off.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--snakefile", str(SNAKEFILE),
           "--directory", str(tmp_path), "--configfile", str(tmp_path / "off.yaml")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    out = output_of(proc)
    assert proc.returncode == 0, out
    for rule in ("freemask_shard", "solo_train", "exemplar_pool", "selftrain_relabel", "eval_instances"):
        assert f"rule {rule}:" not in out, rule
    for rule in ("pretrain", "stego_train", "pct_train", "tables", "report_figures"):
        assert f"rule {rule}:" in out, rule
