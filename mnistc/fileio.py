"""Atomic file writes: the one way mnistc puts a file on disk.

A file is written to a temporary name in its own folder, flushed and fsynced, renamed over
the target, and the folder is fsynced so that the rename itself is durable. A reader sees
either the old file or the whole new one; a failure (disk full, a kill, Ctrl-C) leaves the
old file and no temporary behind.
"""

import contextlib
import errno
import os
import secrets
from pathlib import Path


def temp_name(final):
    """A dot-prefixed, suffixed sibling of `final`: no pattern for finished files matches it."""
    final = Path(final)
    return final.with_name(f".{final.name}.tmp-{secrets.token_hex(6)}")


def fsync_directory(directory):
    """Make a rename in `directory` durable. Windows cannot open a folder and a few file
    systems refuse fsync on one; there the OS's own ordering is all there is."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path, before_replace=None):
    """Yield a binary file to write; on a normal exit it becomes `path` atomically.

    `before_replace` runs once the new content is durable but not yet visible (the
    checkpoint manager prunes old checkpoints there). On any exception the temporary file
    is removed and the exception propagates; `path` is untouched.
    """
    path = Path(path)
    temp = temp_name(path)
    try:
        with open(temp, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_directory(path.parent)


def atomic_write(path, chunks, before_replace=None):
    """Write the byte chunks to `path` atomically (see atomic_output)."""
    with atomic_output(path, before_replace) as file:
        for chunk in chunks:
            file.write(chunk)
