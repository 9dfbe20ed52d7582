"""One writer per train dir: an OS advisory lock on `<train_dir>/.lock`.

The lock is flock(2) on POSIX and msvcrt.locking on Windows: the OS drops it when the
process ends, however it ends, so a SIGKILL never leaves a stale lock behind (the file
itself stays; an unlocked file means nothing). The holder writes its pid into the file
so that a second writer can name it. Readers (eval, predict, load) take no lock.
"""

import os
from pathlib import Path

from .errors import MnistcError

LOCK_FILE = ".lock"


class TrainDirLocked(MnistcError):
    """Another process is training in this directory."""


class TrainDirLock:
    """Hold the train dir's lock for a `with` block; TrainDirLocked if another process has it."""

    def __init__(self, train_dir):
        self.path = Path(train_dir) / LOCK_FILE
        self.fd = None

    def __enter__(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise MnistcError(
                f"{self.path}: cannot open the train dir's lock: {error.strerror or error}"
            ) from None
        try:
            locked = _try_lock(fd)
        except OSError as error:  # a file system without locks (some network mounts)
            os.close(fd)
            raise MnistcError(
                f"{self.path}: cannot lock the train dir: {error.strerror or error}"
            ) from None
        if not locked:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise TrainDirLocked(
                f"{self.path.parent} is in use by {who} (another training run "
                "writes there); wait for it or use another --train-dir"
            )
        try:  # only a courtesy to the next writer: a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)  # closing releases the lock
            self.fd = None
        return False


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except (OSError, AttributeError):
        return None
    return int(text) if text.isdigit() else None


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd):
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
else:
    import fcntl

    def _try_lock(fd):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
