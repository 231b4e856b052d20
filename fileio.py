"""Writing files safely: atomic replacement with the permissions users expect, one writer per run
folder, and the folder of an installed data package.

Files a user, another account or a container reads (tokenizers, models, results, caches) get the
modes `open` and `mkdir` would give them (0644 and 0755 under the usual umask 022), even when
they were written through a private temporary file (0600) and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path


def umask() -> int:
    """The process's umask (reading it means setting it: it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from `open`: 0644 under umask 022."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode a new folder gets from `mkdir`: 0755 under umask 022."""
    return 0o777 & ~umask()


def give_normal_modes(folder: str | Path) -> None:
    """Give `folder` and everything under it the modes of `mkdir` and `open`: a folder made by mkdtemp
    (0700) or files written by a library through private temporary files (0600) become readable."""
    folder = Path(folder)
    folder.chmod(dir_mode())
    for path in folder.rglob("*"):
        path.chmod(dir_mode() if path.is_dir() else file_mode())


@contextlib.contextmanager
def atomic_writer(path: str | Path):
    """Open a temporary file beside `path` for writing (binary); when the block ends without an
    error, fsync it, give it a normal file mode and rename it over `path`: a reader sees the old
    file or the new one, never half of one. On an error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (`atomic_writer`)."""
    with atomic_writer(path) as fh:
        fh.write(data)


def installed_package_dir(module: str, pip_spec: str) -> Path:
    """The folder of an installed package that ships data (a corpus, a model), or a
    FileNotFoundError that says how to install it (`make setup` installs them all)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {pip_spec} is not installed: "
                                f"`pip install --no-deps {pip_spec}` (make setup does this)")
    return Path(list(spec.submodule_search_locations)[0])


# --------------------------------------------------------------------------- one writer per folder

LOCK_NAME = ".lock"


class FolderBusy(RuntimeError):
    """Another live process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "run"):
    """Hold `folder`'s lock while the block runs: a second process that asks for it stops at once
    with FolderBusy, naming the holder's pid, host and start time.

    The lock is an advisory `flock` on ``<folder>/.lock``, which the kernel releases when its
    holder exits in any way (kill -9 included): a lock left by a dead run is taken over without
    a question. The file itself stays, holding the last holder's pid, for the message; a folder the
    lock made and nothing else filled is removed again."""
    import fcntl

    folder = Path(folder)
    made = not folder.exists()
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as err:
        raise OSError(err.errno, f"output folder {folder} is not writable: {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "an unknown process"
            raise FolderBusy(f"{folder} is in use by another {what} ({holder}): wait for it to end, "
                             "or give this run another output folder") from None
        stamp = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp.encode(), 0)
        yield path
    finally:
        emptied = made and [p.name for p in folder.iterdir()] == [LOCK_NAME]
        if emptied:
            path.unlink(missing_ok=True)  # while still held: no other process holds this file
        os.close(fd)  # closing the descriptor releases the flock
        if emptied:
            with contextlib.suppress(OSError):
                folder.rmdir()
