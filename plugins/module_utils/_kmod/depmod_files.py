# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The files kmod_depmod reads and writes, with an error that names the file.

Inputs (``modules.order``, ``modules.builtin``, System.map, ...) must be regular files or
absent; index files that a run replaces must be regular files or absent; ``publish``
replaces index files atomically under the module directory's lock (lock.locked_dir).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import typing as t

from . import atomic
from .depmod_config import file_kind
from .errors import KmodError
from .lock import locked_dir, remove_stale_temps
from .paths import PathError, open_file, resolve_host

# (size, mtime_ns, ctime_ns, inode, device): the file (or directory) is as it was when the key
# was taken. ctime cannot be set back by anyone but the clock, so a file rewritten with its
# old size and mtime still differs.
StatKey = t.Tuple[int, int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def path_key(path: str) -> StatKey | None:
    """stat_key of path (symlinks followed), None if it cannot be stat'ed."""
    try:
        return stat_key(os.stat(path))
    except (OSError, ValueError):
        return None


def walk_listing(directory: str, skip: t.Collection[str], extensions: tuple[str, ...]) -> list[str] | None:
    """The entries of directory that depmod's walk enters or reads, in readdir order (None
    if it cannot be listed). The module directory's own StatKey cannot vouch for it: every
    index file written there changes it."""
    names = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name in skip:
                    continue
                try:
                    if entry.is_dir() or entry.name.endswith(extensions):
                        names.append(entry.name)
                except OSError:
                    names.append(entry.name + "/?")
    except (OSError, ValueError):
        return None
    return names


def check_moddir(moddir: str) -> None:
    try:
        st = os.stat(moddir)
    except FileNotFoundError:
        raise KmodError(f"Module directory {moddir} does not exist", path=moddir) from None
    except (OSError, ValueError) as exc:
        raise KmodError(f"Module directory {moddir!r} cannot be used: {reason(exc)}", path=moddir) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise KmodError(f"Module directory {moddir} is {file_kind(st.st_mode)}, not a directory", path=moddir)


def check_output(path: str) -> None:
    """An index file we are to replace must be a regular file or absent. A directory cannot
    be replaced; a symlink (even one into the tree) or a FIFO is refused rather than read
    through (a FIFO would block forever) or silently replaced: say so, naming it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise KmodError(f"Index file {path!r} cannot be used: {reason(exc)}", path=path) from exc
    if stat.S_ISREG(st.st_mode):
        return
    kind = file_kind(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                kind = "a symlink loop"
    raise KmodError(f"Index file {path} is {kind}, not a regular file: kmod_depmod will not replace it; "
                    "remove it and run again", path=path)


def read_outputs(moddir: str, names: t.Iterable[str]) -> dict[str, bytes | None]:
    """The bytes of each index file (None if absent), each read once; every name is checked
    first, so that a refused file fails the run before anything is read."""
    names = list(names)
    for name in names:
        check_output(os.path.join(moddir, name))
    return {name: read_input(os.path.join(moddir, name)) for name in names}


def _input_stat(path: str, what: str) -> os.stat_result | None:
    try:
        st = os.stat(resolve_host(path))
    except PathError as exc:  # a NUL byte, a symlink loop: say which option named the file
        raise KmodError(f"Cannot read {what}: {exc.msg}", path=path) from exc
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KmodError(f"Cannot read {what}: {reason(exc)}", path=path) from exc
    if not stat.S_ISREG(st.st_mode):
        raise KmodError(f"{what} is {file_kind(st.st_mode)}, not a regular file", path=path)
    return st


def input_key(path: str, option: str = "") -> StatKey | None:
    """stat_key of an input file, None if it does not exist; the errors of read_input."""
    st = _input_stat(path, f"{path} (option {option})" if option else path)
    return None if st is None else stat_key(st)


def read_input(path: str, option: str = "") -> bytes | None:
    """The bytes of an input file; None if it does not exist (or is a dangling symlink).
    Anything else that is not a regular file (a directory, a symlink loop, a FIFO, a
    device) is a KmodError naming it (and option, the module option that named it); a
    FIFO or device is never opened."""
    what = f"{path} (option {option})" if option else path
    if _input_stat(path, what) is None:
        return None
    try:
        fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK)  # never waits, even on a FIFO; confined to root
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise KmodError(f"{what} is {file_kind(st.st_mode)}, not a regular file", path=path)
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KmodError(f"Cannot read {what}: {reason(exc)}", path=path) from exc


@dataclasses.dataclass
class Published:
    written: list[str]  # output files replaced
    removed: list[str]  # temporary files of killed runs removed
    warnings: list[str]


def publish(moddir: str, files: dict[str, bytes]) -> Published:
    """Write the files whose bytes differ, each atomically, holding the directory's lock;
    first remove what killed runs left (see remove_stale_temps)."""
    for name in files:
        check_output(os.path.join(moddir, name))
    warnings: list[str] = []
    with locked_dir(moddir) as locked:
        removed = remove_stale_temps(moddir, locked, warnings)
        written = [name for name in files if atomic.write_if_changed(os.path.join(moddir, name), files[name], 0o644)]
    return Published(written, removed, warnings)


def reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.ELOOP:
            return "a symlink loop (too many levels of symbolic links)"
        return exc.strerror or str(exc)
    return str(exc)  # ValueError: e.g. "embedded null byte"
