"""One writer per output folder: a pretraining run holds its folder, a second run into it stops at
once naming the holder, and a lock left by a killed run is taken over. Files written for users get
the modes open and mkdir give them."""

from __future__ import annotations

import csv
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fileio
import train_model
from conftest import pretrain_argv

ROOT = Path(__file__).resolve().parents[1]


RUN = ("train.warmup_steps=2", "train.checkpoint_every=1000")  # room for a few steps; no checkpoint on the way


def run_argv(data, out: Path, steps: int, *sets: str) -> list[str]:
    return pretrain_argv(data, out, steps, sets=(*RUN, *sets))


def start_pretraining(data, out: Path, steps: int) -> subprocess.Popen:
    """A real `train_model.py` in a child process, returned once it holds `out` (its pid in the lock)."""
    child = subprocess.Popen([sys.executable, str(ROOT / "train_model.py"), *run_argv(data, out, steps)],
                             cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = out / fileio.LOCK_NAME
    deadline = time.time() + 120
    while not (lock.is_file() and f"pid {child.pid} " in lock.read_text()):
        if child.poll() is not None:
            pytest.fail(f"the first run ended before it held its folder: {child.stderr.read()[-2000:]}")
        assert time.time() < deadline, "the first run never took its folder's lock"
        time.sleep(0.05)
    return child


def log_steps(out: Path) -> list[str]:
    with open(out / "log.csv", newline="") as fh:
        return [row["step"] for row in csv.DictReader(fh)]


def test_a_second_run_into_a_running_folder_stops_at_once_naming_the_holder(pretrain_files, tmp_path, capsys):
    out = tmp_path / "run"
    first = start_pretraining(pretrain_files, out, steps=100_000)
    try:
        seconds = [run_argv(pretrain_files, out, 4), run_argv(pretrain_files, out, 4, "train.lr=1e-3")]
        for second in seconds:  # the same settings, then other ones
            started = time.time()
            code = train_model.main(second)
            err = capsys.readouterr().err
            assert code == 2 and f"pid {first.pid} " in err and "in use by another pretraining run" in err, err
            assert time.time() - started < 10, "refused before any work"
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()
        first.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over(pretrain_files, tmp_path, capsys):
    out = tmp_path / "run"
    first = start_pretraining(pretrain_files, out, steps=100_000)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert f"pid {first.pid} " in (out / fileio.LOCK_NAME).read_text(), "the dead run's lock is still there"
    assert train_model.main(run_argv(pretrain_files, out, 3) + ["--overwrite"]) == 0, capsys.readouterr().err
    assert log_steps(out) == ["1", "2", "3"], "one run's rows, none doubled"
    assert f"pid {os.getpid()} " in (out / fileio.LOCK_NAME).read_text()


def test_a_refused_run_leaves_no_folder_behind(pretrain_files, tmp_path, capsys):
    out = tmp_path / "never"
    argv = run_argv(pretrain_files, out, 4)
    argv[argv.index("--corpus") + 1] = str(tmp_path / "missing.txt")
    assert train_model.main(argv) == 2
    assert "missing.txt does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_the_lock_names_the_holder_and_is_released_when_the_block_ends(tmp_path):
    folder = tmp_path / "f"
    with fileio.folder_lock(folder, "test"):
        (folder / "result.txt").write_text("x")
        child = subprocess.run([sys.executable, "-c", "import sys, fileio\n"
                                f"with fileio.folder_lock({str(folder)!r}, 'check'): pass"],
                               cwd=ROOT, capture_output=True, text=True)
        assert child.returncode != 0 and f"pid {os.getpid()} " in child.stderr and "FolderBusy" in child.stderr
    with fileio.folder_lock(folder, "test"):  # released: free again, in this process as in another
        pass


def modes(paths) -> dict[str, str]:
    return {str(p): stat.filemode(p.stat().st_mode) for p in paths}


def test_files_written_atomically_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        fileio.atomic_write_bytes(tmp_path / "a" / "b.json", b"{}")
        with fileio.atomic_writer(tmp_path / "c.bin") as fh:
            fh.write(b"x")
    finally:
        os.umask(old)
    assert modes([tmp_path / "a" / "b.json", tmp_path / "c.bin"]) == {
        str(tmp_path / "a" / "b.json"): "-rw-r--r--", str(tmp_path / "c.bin"): "-rw-r--r--"}
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file left"


def test_a_pretraining_run_writes_no_private_file(pretrain_files, tmp_path, capsys):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert train_model.main(run_argv(pretrain_files, out, 3)) == 0, capsys.readouterr().err
    finally:
        os.umask(old)
    private = {p: m for p, m in modes(out.rglob("*")).items() if m[4:] in ("------", "---x--")}
    assert not private, private
    assert stat.S_IMODE((out / "final" / "model.safetensors").stat().st_mode) == 0o644
