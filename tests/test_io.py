"""Atomic writes (maskless.io, issue 17): the umask's file modes, temps of a killed writer removed by the
rerun, and disk / permission errors that name the file and the cause."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile

import pytest
import torch

from maskless import io


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_results_get_the_umask_mode(tmp_path, umask_027):
    io.write_text_atomic(tmp_path / "metrics.md", "x")
    io.torch_save_atomic({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with io.atomic_dir(tmp_path / "paper") as d:
        (d / "t.csv").write_text("a")
    assert oct(os.stat(tmp_path / "metrics.md").st_mode & 0o777) == oct(0o640)  # mkstemp alone: 0o600
    assert oct(os.stat(tmp_path / "model.pt").st_mode & 0o777) == oct(0o640)
    assert oct(os.stat(tmp_path / "paper").st_mode & 0o777) == oct(0o750)
    assert io.file_mode() == 0o640 and io.file_mode(directory=True) == 0o750


def test_torch_save_atomic_is_loadable_and_deterministic(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "step": 3}
    io.torch_save_atomic(obj, tmp_path / "a.pt")
    io.torch_save_atomic(obj, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()  # not named after its temp
    back = torch.load(tmp_path / "a.pt", weights_only=True)
    assert torch.equal(back["w"], obj["w"]) and back["step"] == 3


def test_killed_writers_temps_are_removed_by_the_rerun(tmp_path):
    """A writer killed with SIGKILL inside atomic_dir / atomic_path leaves its temp; the next write of the same
    path removes it (and leaves other outputs' temps alone)."""
    code = ("import os, signal, sys; from maskless import io\n"
            "with io.atomic_dir(sys.argv[1] + '/0.zarr') as d:\n"
            "    (d / 'chunk').write_text('partial')\n"
            "    with io.atomic_path(sys.argv[1] + '/paper.md') as t:\n"
            "        t.write_text('partial')\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)])
    assert proc.returncode == -9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[0].startswith(".0.zarr.") and left[1].startswith(".paper.md.")
    with io.atomic_dir(tmp_path / "0.zarr") as d:
        (d / "chunk").write_text("whole")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left[0] == ".paper.md." + left[0].split(".paper.md.")[1] and left[1:] == ["0.zarr"]
    io.write_text_atomic(tmp_path / "paper.md", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.zarr", "paper.md"]
    assert (tmp_path / "0.zarr" / "chunk").read_text() == "whole"


def test_full_disk_on_a_checkpoint_names_the_file_and_the_cause(tmp_path, monkeypatch):
    """The temp file is a link to /dev/full, whose writes fail with ENOSPC as on a full disk (torch's own
    writer said 'basic_ios::clear: iostream error')."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    real = tempfile.mkstemp

    def full_temp(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)
        return os.open(name, os.O_WRONLY), name

    monkeypatch.setattr(io.tempfile, "mkstemp", full_temp)
    target = tmp_path / "solo" / "model.pt"
    with pytest.raises(OSError, match=r"cannot write .*solo/model.pt: No space left on device") as e:
        io.torch_save_atomic({"w": torch.zeros(100_000)}, target)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match=r"cannot write .*metrics.md: No space left on device"):
        io.write_text_atomic(tmp_path / "metrics.md", "x" * 100_000)
    assert not target.exists() and list((tmp_path / "solo").iterdir()) == []  # no temp or link left


def test_a_failed_write_without_an_errno_names_the_file_and_free_space(tmp_path):
    with pytest.raises(OSError, match=r"cannot write .*x.bin \([0-9.]+ MiB free there\): boom"):
        with io.atomic_path(tmp_path / "x.bin"):
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="not a write error"):  # other errors pass through unchanged
        with io.atomic_path(tmp_path / "x.bin"):
            raise ValueError("not a write error")


def test_an_unwritable_place_names_the_file(tmp_path):
    (tmp_path / "results").write_text("a file where a folder should be")
    with pytest.raises(OSError, match=r"cannot write .*results/eval/metrics.md: (File exists|Not a directory)"):
        io.write_text_atomic(tmp_path / "results" / "eval" / "metrics.md", "x")


def _in_fresh_process(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU has no flush-to-zero (DAZ) mode")
def test_flush_denormals_reaches_every_thread_only_before_the_first_parallel_op():
    """OpenMP's workers copy the flush-to-zero setting of the thread that starts them (at the first parallel
    op): set first, the 2-thread probe is all zeros; after a parallel op, the worker still keeps subnormals
    and the function says so."""
    start = "import torch; torch.set_num_threads(2); from maskless.io import flush_denormals; "
    assert _in_fresh_process(start + "print(flush_denormals())") == "True"
    assert _in_fresh_process(start + "torch.ones(1 << 20).mul(2.0); print(flush_denormals())") == "False"
