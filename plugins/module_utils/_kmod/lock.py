# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
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

Module directories are locked differently (``locked_dir``): kmod_depmod takes a ``flock``
on the directory itself, so no lock file is left in a tree that the kernel package owns.
Under either lock no other writer of ours is busy in the directory, so temporary files
of ``atomic.write_if_changed`` found there were left by a killed run and are removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import re
import stat
import time
import typing as t

from . import atomic
from .atomic import read_bytes, remove_if_exists, write_if_changed
from .errors import KmodError
from .paths import open_dir

# Not ".kmod-*": that is the prefix of atomic.py's temporary files, which may be cleaned.
LOCK_NAME = ".kernel-kmod.lock"
LOCK_TIMEOUT = 120.0
# atomic.write_if_changed's temporary files: tempfile.mkstemp(prefix=".kmod-") in the target's
# directory, i.e. the prefix and 8 random characters (atomic.TEMP_PREFIX).
TEMP_PREFIX = atomic.TEMP_PREFIX
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[a-z0-9_]{8}\Z")
# Where the directory cannot be locked (a filesystem without flock), only temporary files
# this old are taken as left by a killed run: a live write finishes within seconds.
STALE_TEMP_AGE = 3600
# How long a run waits for another one to finish publishing into the same directory.
LOCK_WAIT = 120


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
    directory = os.path.dirname(path) or "."
    with directory_lock(directory):
        # Every writer of ours in this directory holds this lock: temporary files found
        # now were left by a killed run.
        remove_stale_temps(directory, True, [])
        before = read_text(path)
        after = edit(before)
        if after != before:
            if after is None:
                remove_if_exists(path)
            else:
                write_if_changed(path, after.encode("utf-8", "surrogateescape"), mode)
    return before, after


@contextlib.contextmanager
def locked_dir(directory: str, wait: float | None = None) -> t.Iterator[bool]:
    """Hold an exclusive flock on the directory itself (no lock file to leave behind) while
    writing into it; yields False where the filesystem cannot lock. Every kmod_depmod run
    takes it to publish, so a temporary file found while holding it belongs to no live run."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:
        raise KmodError(f"Cannot open directory {directory}: {getattr(exc, 'strerror', None) or exc}",
                        path=directory) from exc
    wait = LOCK_WAIT if wait is None else wait
    try:
        deadline = time.monotonic() + wait
        locked = False
        while not locked:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError as exc:
                if time.monotonic() >= deadline:
                    raise KmodError(f"Another process has held the lock on {directory} for {wait:g} s "
                                    "(another kmod_depmod writing there?); nothing was written",
                                    path=directory) from exc
                time.sleep(0.05)
            except OSError:  # no flock here (some network filesystems): go on unlocked
                break
        yield locked
    finally:
        os.close(fd)  # releases the lock


def find_stale_temps(directory: str, locked: bool = True) -> list[str]:
    """Names of the temporary files atomic.write_if_changed left in directory when its
    process was killed: our name pattern, regular files (never a symlink), owned by us.
    Without the lock (locked False), only those older than STALE_TEMP_AGE: a younger one
    may be written right now by a run that could not lock either."""
    found = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not _TEMP_NAME.match(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                    continue
                if not locked and time.time() - st.st_mtime < STALE_TEMP_AGE:
                    continue
                found.append(entry.name)
    except (OSError, ValueError):
        return []
    return sorted(found)


def remove_stale_temps(directory: str, locked: bool, warnings: list[str]) -> list[str]:
    """Remove find_stale_temps(directory, locked); returns the names removed."""
    removed = []
    for name in find_stale_temps(directory, locked):
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            continue
        except OSError as exc:
            warnings.append(f"cannot remove stale temporary file {directory}/{name}: {exc.strerror}")
            continue
        removed.append(name)
    return removed
