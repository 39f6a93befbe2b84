# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Read and write files the safe way.

Writes happen only when content changes, via temp file + fsync + rename, in a directory
opened through ``paths.open_dir`` (confined to the root the path lies under, O_NOFOLLOW
component by component, missing directories created inside that root). The last
component is never written through: on the live system the rename replaces a symlink
there by a regular file (as before); under a confined root a symlink there is refused. Reads open with O_NONBLOCK and refuse anything but a
regular file, so a FIFO or a device cannot block or feed us forever.
"""

from __future__ import annotations

import os
import secrets
import stat

from .paths import NotRegularFileError, PathError, check_path_value, confining_root, open_dir, open_file

TEMP_PREFIX = ".kmod-"  # lock.find_stale_temps removes such files that a killed run left
_O_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_file(path: str, limit: int | None = None, missing_ok_notdir: bool = False) -> bytes | None:
    """The content of the regular file ``path`` (at most ``limit`` bytes), None if it does
    not exist (nor, with ``missing_ok_notdir``, when a parent is not a directory).

    Symlinks are followed, inside the root the path lies under. NotRegularFileError for
    a directory, FIFO, device or socket; PathError for any other failure, naming the file.
    """
    missing: tuple[type[OSError], ...] = (FileNotFoundError, NotADirectoryError) if missing_ok_notdir \
        else (FileNotFoundError,)
    try:
        fd = open_file(path, _O_READ)
    except missing:
        return None
    except OSError as exc:
        raise PathError(f"Cannot read {path}: {exc.strerror}", path=path) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"Cannot read {path}: it is {_kind(st.st_mode)}, not a regular file",
                                      path=path)
        # The file is regular: clear O_NONBLOCK's effect by plain reads to EOF.
        chunks = []
        remaining = limit
        while remaining is None or remaining > 0:
            chunk = os.read(fd, 1 << 20 if remaining is None else min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            if remaining is not None:
                remaining -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise PathError(f"Cannot read {path}: {exc.strerror}", path=path) from exc
    finally:
        os.close(fd)


def read_bytes(path: str) -> bytes | None:
    """File content, or None if it does not exist (PathError if it cannot be read)."""
    return read_file(path)


def write_if_changed(path: str, data: bytes, mode: int = 0o644) -> bool:
    """Atomically replace path with data unless it already holds exactly that.

    Returns True when the file was written. A failure leaves the old file intact and
    raises PathError naming the file.
    """
    check_path_value(path, "path")
    if read_bytes(path) == data:
        return False
    directory, name = os.path.split(path)
    if not name:
        raise PathError(f"Cannot write {path}: not a file name", path=path)
    try:
        dfd = open_dir(directory or ".", create=True)
    except OSError as exc:
        raise PathError(f"Cannot write {path}: {exc.strerror}", path=path) from exc
    try:
        if confining_root(path) is not None:
            _refuse_symlink(dfd, name, path)
        tmp = _write_temp(dfd, path, data, mode)
        try:
            _rename_in(dfd, tmp, name)
        except OSError as exc:
            _unlink_quietly(tmp, dfd)
            raise PathError(f"Cannot write {path}: {exc.strerror}", path=path) from exc
        _fsync_quietly(dfd)  # makes the rename itself durable where the filesystem allows
    finally:
        os.close(dfd)
    return True


def _refuse_symlink(dfd: int, name: str, path: str) -> None:
    # Inside an image, neither write through a symlink nor replace it: replacing would
    # copy its target's content (say the image's /etc/shadow) into a 0644 file. A link
    # that appears after this check is replaced by the rename, never written through.
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PathError(f"Cannot write {path}: {exc.strerror}", path=path) from exc
    if stat.S_ISLNK(st.st_mode):
        raise PathError(f"Cannot write {path}: it is a symbolic link inside root, which is neither followed "
                        "nor replaced; edit its target or remove the link", path=path)


def _write_temp(dfd: int, path: str, data: bytes, mode: int) -> str:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _attempt in range(100):
        tmp = TEMP_PREFIX + secrets.token_hex(4)
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
        except FileExistsError:
            continue
        except OSError as exc:
            raise PathError(f"Cannot write {path}: {exc.strerror}", path=path) from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
        except OSError as exc:
            _unlink_quietly(tmp, dfd)
            raise PathError(f"Cannot write {path}: {exc.strerror}", path=path) from exc
        return tmp
    raise PathError(f"Cannot write {path}: no free temporary file name", path=path)


def remove_if_exists(path: str) -> bool:
    """Remove path (a symlink there is removed, not its target); True if it existed."""
    check_path_value(path, "path")
    directory, name = os.path.split(path)
    try:
        dfd = open_dir(directory or ".")
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise PathError(f"Cannot remove {path}: {exc.strerror}", path=path) from exc
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise PathError(f"Cannot remove {path}: {exc.strerror}", path=path) from exc
    else:
        _fsync_quietly(dfd)
    finally:
        os.close(dfd)
    return True


def _rename_in(dfd: int, src: str, dst: str) -> None:
    # Rename within the directory fd (never a path resolved again). /proc/self/fd/N names
    # that directory itself; os.rename(a, b) keeps the call simple to fault-inject.
    proc = f"/proc/self/fd/{dfd}"
    if os.path.isdir(proc):
        os.rename(f"{proc}/{src}", f"{proc}/{dst}")
    else:
        os.rename(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd)


def _unlink_quietly(name: str, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


def _fsync_quietly(dfd: int) -> None:
    # Not every filesystem allows fsync on a directory, which is harmless.
    try:
        os.fsync(dfd)
    except OSError:
        pass
