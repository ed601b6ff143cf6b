"""Atomic file output, logging set-up, device choice and seeding shared by every stage.

Every file a stage writes goes to a temporary name in the same folder and is renamed into place, so a
killed job never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

log = logging.getLogger("maskless")


def file_mode(directory: bool = False) -> int:
    """The mode a plain open() or mkdir() gives under the process umask (0o644 / 0o755 under umask 022):
    mkstemp and mkdtemp make 0600 / 0700, which nobody else on a shared cluster folder could read."""
    umask = _umask()
    return (0o777 if directory else 0o666) & ~umask


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temp files and folders that a killed writer of `path` left beside it (`.<name>.*.tmp`,
    `.<name>.*.tmp.old`); return them. Snakemake gives each output one writer, so none is in use."""
    path = Path(path)
    prefix = f".{path.name}."
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    stale = [path.parent / n for n in names if n.startswith(prefix) and n.endswith((".tmp", ".tmp.old"))]
    for p in stale:
        log.warning("removing %s, left by a killed writer of %s", p, path)
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    return stale


def write_error(path: str | os.PathLike, error: BaseException) -> OSError:
    """An OSError naming `path` and the cause ('No space left on device', 'Permission denied', ...) of a
    failed write: the OSError itself or one in its context chain (torch's writer hides it behind a
    RuntimeError), else the error's text with the free space left beside `path`."""
    cause: BaseException | None = error
    while cause is not None and not (isinstance(cause, OSError) and cause.errno is not None):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return OSError(cause.errno, f"cannot write {path}: {os.strerror(cause.errno)}")
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    return OSError(f"cannot write {path} ({free}): {error}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file gets the umask's mode (file_mode). Temps a killed writer of `path` left are removed first. A
    failed write (disk full, no permission) raises an OSError naming `path` and the cause (write_error)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        raise write_error(path, e) from e
    finally:
        if tmp is not None and (tmp.exists() or tmp.is_symlink()):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path` (an old store is removed after).

    The folder gets the umask's mode; temps a killed writer of `path` left are removed first; a failed
    write raises an OSError naming `path` and the cause, as atomic_path."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, file_mode(directory=True))  # mkdtemp makes 0700
        yield tmp
        if path.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        raise write_error(path, e) from e
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_parquet_atomic(path: str | os.PathLike, table: "pyarrow.Table") -> None:  # noqa: F821
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through a Python file object, so that a failed write keeps its errno (torch's own file
    writer reports a full disk as 'basic_ios::clear: iostream error'); the bytes are the same."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to `log_file` (the Snakemake rule's log)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def pick_device(name: str = "auto") -> "torch.device":  # noqa: F821
    """'auto' -> cuda when available, else cpu. 'cuda' without CUDA is an error, not a silent fallback."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config key 'device' is {name!r} but CUDA is not available on this machine")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """Use the rule's `threads:` for torch's intra-op pool (Snakemake sets OMP/MKL, torch needs telling)."""
    import torch

    if threads and threads > 0:
        torch.set_num_threads(int(threads))


def flush_denormals() -> bool:
    """Treat subnormal float inputs and results as zero on the CPU (FTZ/DAZ) for the rest of this process;
    True when every thread of torch's intra-op pool does, checked on a subnormal probe.

    For a process of its own (a stage script), called once its thread count is set and before its first
    parallel op: torch.set_flush_denormal sets the calling thread only, and OpenMP's workers copy the
    setting of the thread that starts them, at the process's first parallel op. Where a parallel op ran
    before, the workers keep computing on subnormals and this returns False.

    Why: x86 CPUs compute on subnormals through microcode assists, and the dense CRF's bilateral weights
    (exp of minus a colour distance) are subnormal for a band of distances: with flush-to-zero the STEGO
    evaluation's CRF maps took 44 s instead of 102 on an Intel Xeon host, its metrics bit for bit the same
    (BENCHMARKS.md "STEGO on the synthetic data"). Values below 1.2e-38 only reach a result where nothing
    larger is added to them, so a stage that turns this on checks that its outputs do not move.
    """
    import torch

    if not torch.set_flush_denormal(True):  # a CPU without DAZ
        return False
    # half the smallest normal float32 (bits 0x00400000), made from integers so that no float conversion
    # on this thread flushes it first; x * 1 is 0 wherever a thread flushes, x elsewhere
    probe = torch.full((1 << 20,), 0x00400000, dtype=torch.int32).view(torch.float32)
    return int(torch.count_nonzero(probe * 1.0)) == 0
