# SPDX-License-Identifier: GPL-3.0-or-later
"""Write files the safe way: only when content changes, via temp file + fsync + rename."""

from __future__ import annotations

import os
import tempfile

from .errors import KmodError


def read_bytes(path: str) -> bytes | None:
    """File content, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_if_changed(path: str, data: bytes, mode: int = 0o644) -> bool:
    """Atomically replace path with data unless it already holds exactly that.

    Returns True when the file was written. A failure leaves the old file intact.
    """
    if read_bytes(path) == data:
        return False
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".kmod-", dir=directory)
    except OSError as exc:
        raise KmodError(f"Cannot write {path}: {exc.strerror}", path=path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise KmodError(f"Cannot write {path}: {exc.strerror}", path=path) from exc
    _fsync_dir(directory)
    return True


def remove_if_exists(path: str) -> bool:
    """Remove path; True if it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise KmodError(f"Cannot remove {path}: {exc.strerror}", path=path) from exc
    _fsync_dir(os.path.dirname(path) or ".")
    return True


def _fsync_dir(directory: str) -> None:
    # Make the rename itself durable; not every filesystem allows it, which is harmless.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
