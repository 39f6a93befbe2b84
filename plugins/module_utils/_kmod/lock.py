# SPDX-License-Identifier: GPL-3.0-or-later
"""Read-modify-write of one configuration file under an exclusive lock.

Two runs that edit the same file (kmod_blacklist on ten hosts that share a root, or
kmod_load ``persistent`` and kmod_blacklist in one play) must not lose each other's
entries. ``edit_locked`` holds the lock of the file's directory while it re-reads the
file, applies the edit to what it finds and writes the result atomically: a plan made
earlier (for check mode and the diff) is recomputed on the fresh text.

The lock is a POSIX record lock (``fcntl.lockf``) on a hidden file in the directory:
libkmod reads no hidden files and only ``*.conf``, systemd-modules-load only ``*.conf``.
POSIX locks are what NFS locks (lockd, NFSv4), so hosts that share a root over NFS
exclude each other too (not on a mount with ``nolock``, where Linux keeps locks local to
each host). The lock file is never removed: a run could otherwise lock a new file while
another still holds the old one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import time
import typing as t

from .atomic import read_bytes, remove_if_exists, write_if_changed
from .errors import KmodError
from .paths import open_dir

# Not ".kmod-*": that is the prefix of atomic.py's temporary files, which may be cleaned.
LOCK_NAME = ".kernel-kmod.lock"
LOCK_TIMEOUT = 120.0


@contextlib.contextmanager
def directory_lock(directory: str, timeout: float = LOCK_TIMEOUT) -> t.Iterator[str]:
    """Hold the exclusive lock of a configuration directory (created if missing)."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        # open_dir creates missing directories inside the root the path lies under.
        dfd = open_dir(directory, create=True)
        try:
            fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise KmodError(f"Cannot create the lock file {path}: {exc.strerror}", path=path) from exc
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise KmodError(f"Cannot lock {path}: {exc.strerror} (edits of this directory are "
                                    f"locked so that concurrent runs lose nothing)", path=path) from exc
            if time.monotonic() >= deadline:
                raise KmodError(f"Timed out after {timeout:.0f}s waiting for the lock {path}, held by "
                                f"another process", path=path)
            time.sleep(delay * (0.5 + random.random()))  # nosec - jitter, not security
            delay = min(delay * 2, 0.1)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _decode(data: bytes | None) -> str | None:
    # surrogateescape keeps bytes that are not UTF-8 exactly as they were.
    return None if data is None else data.decode("utf-8", "surrogateescape")


def read_text(path: str) -> str | None:
    """A configuration file's text (None: it does not exist), bytes kept via surrogateescape."""
    try:
        return _decode(read_bytes(path))
    except OSError as exc:
        raise KmodError(f"Cannot read {path}: {exc.strerror}", path=path) from exc


def edit_locked(path: str, edit: t.Callable[[str | None], str | None],
                mode: int = 0o644) -> tuple[str | None, str | None]:
    """Under the directory's lock: read path, apply edit (text or None for a missing
    file -> new text, or None to remove the file), write it if it changed.

    Returns (before, after) as found and written under the lock.
    """
    with directory_lock(os.path.dirname(path) or "."):
        before = read_text(path)
        after = edit(before)
        if after != before:
            if after is None:
                remove_if_exists(path)
            else:
                write_if_changed(path, after.encode("utf-8", "surrogateescape"), mode)
    return before, after
