# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Bounded, confined reads of a sysfs (or procfs) tree: attributes, links, listings.

The tree is the live system's (``/sys``) or a copy of one (unit tests). Everything read
stays inside the tree: a link leading out of it, a non-regular attribute or an
unreadable entry gives None plus a warning, never an exception, because one odd device
must not hide the others.
"""

from __future__ import annotations

import os
import stat
import typing as t

ATTR_LIMIT = 8192  # a modalias is at most a few KiB (PAGE_SIZE is sysfs' own limit)
_O_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class Tree:
    """One sysfs/procfs tree rooted at ``root``, shown to users as ``shown`` (``/sys``)."""

    def __init__(self, root: str, shown: str, warnings: list[str] | None = None) -> None:
        self.root = os.path.realpath(root)
        self.shown = shown
        self.warnings = warnings if warnings is not None else []

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *(p.lstrip("/") for p in parts))

    def show(self, path: str) -> str:
        """The path as it reads on the system (``/sys/...``), for results and messages."""
        rel = os.path.relpath(path, self.root)
        return self.shown if rel == "." else os.path.join(self.shown, rel)

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + "/")

    def warn(self, path: str, why: str) -> None:
        self.warnings.append(f"{self.show(path) if self.inside(path) else path}: skipped: {why}")

    def resolve(self, path: str) -> str | None:
        """Where ``path`` leads (all links followed), None (and a warning) outside the tree."""
        real = os.path.realpath(path)
        if not self.inside(real):
            self.warn(path, "it leads out of " + self.shown)
            return None
        if os.path.islink(real):  # realpath stops at a loop without an error
            self.warn(path, "a symlink loop")
            return None
        return real

    def link(self, path: str) -> str | None:
        """The resolved target of the symlink ``path``; None if it is no symlink or escapes."""
        if not os.path.islink(path):
            return None
        return self.resolve(path)

    def read(self, path: str, limit: int = ATTR_LIMIT) -> str | None:
        """A regular file's text (at most ``limit`` bytes, stripped); None if absent or unreadable."""
        real = self.resolve(path) if os.path.lexists(path) else None
        if real is None:
            return None
        try:
            fd = os.open(real, _O_READ | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.warn(path, exc.strerror or str(exc))
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                self.warn(path, "not a regular file")
                return None
            data = os.read(fd, limit)
        except OSError as exc:
            self.warn(path, exc.strerror or str(exc))
            return None
        finally:
            os.close(fd)
        return data.decode("utf-8", "surrogateescape").strip()

    def listdir(self, path: str) -> list[str]:
        """Sorted entries of a directory; [] if absent, a warning if unreadable."""
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            self.warn(path, exc.strerror or str(exc))
            return []

    def walk(self, top: str, limit: int) -> t.Iterator[tuple[str, list[str]]]:
        """(directory, file names) below ``top`` without following links, at most ``limit``
        directories (a warning if cut short)."""
        seen = 0
        for dirpath, dirs, files in os.walk(top, onerror=lambda e: self.warn(e.filename, e.strerror or str(e))):
            seen += 1
            if seen > limit:
                self.warn(top, f"more than {limit} directories; the rest is not read")
                return
            dirs.sort()
            yield dirpath, files
