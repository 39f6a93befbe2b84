# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""depmod.d configuration as kmod 30's depmod reads it (tools/depmod.c cfg_load).

Lists are kept in configuration order; the duplicate-resolution code walks them
in reverse, as depmod's prepend-built lists do.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat

from .confdirs import first_by_basename
from .paths import PathError, open_file, resolve_host

BUILTIN = "built-in"
EXTERNAL = "external"


@dataclasses.dataclass
class DepmodConfig:
    searches: list[str] = dataclasses.field(default_factory=list)  # paths, BUILTIN or EXTERNAL
    overrides: list[str] = dataclasses.field(default_factory=list)  # "subdir/modname"
    externals: list[str] = dataclasses.field(default_factory=list)  # absolute directories
    excludes: list[str] = dataclasses.field(default_factory=list)  # names skipped in the walk
    files: list[str] = dataclasses.field(default_factory=list)  # the files read, in order
    warnings: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def load(cls, config_paths: list[str], kernel_release: str) -> "DepmodConfig":
        """Read every *.conf of config_paths (dirs or files), merged by basename; earlier paths win."""
        cfg = cls()
        for path in config_files(config_paths):
            data = _read_regular(path, cfg.warnings)
            if data is None:
                continue
            cfg.files.append(path)
            for lineno, line in read_wrapped_lines(data):
                cfg._parse_line(path, lineno, line, kernel_release)
        if not cfg.searches:  # depmod's backward compatible default
            cfg.searches.append("updates")
        return cfg

    def _parse_line(self, path: str, lineno: int, line: bytes, kernel_release: str) -> None:
        if not line or line.startswith(b"#"):
            return
        tokens = [tok.decode("utf-8", "surrogateescape") for tok in re.split(rb"[\t ]+", line) if tok]
        if not tokens:
            return
        cmd, args = tokens[0], tokens[1:]
        if cmd == "search":
            self.searches.extend(args)
        elif cmd == "exclude":
            self.excludes.extend(args)
        elif cmd == "override" and len(args) >= 3:
            if kernel_matches(args[1], kernel_release):
                self.overrides.append(f"{args[2]}/{args[0]}")
        elif cmd == "external" and len(args) >= 2:
            if kernel_matches(args[0], kernel_release):
                self.externals.append(args[1])
        elif cmd in ("include", "make_map_files"):
            self.warnings.append(f"{path}:{lineno}: command {cmd} not implemented yet")
        else:
            self.warnings.append(f"{path}:{lineno}: ignoring bad line starting with '{cmd}'")


def _read_regular(path: str, warnings: list[str]) -> bytes | None:
    """A configuration file's bytes; None, with a warning, for what cannot be read or is not
    a regular file (a FIFO would block depmod forever, a device could act on open)."""
    try:
        st = os.stat(resolve_host(path))
        if not stat.S_ISREG(st.st_mode):
            warnings.append(f"{path}: not a regular file ({file_kind(st.st_mode)}), skipped")
            return None
        # O_NONBLOCK: should it have become a FIFO since, open must not wait for a writer
        fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK)  # confined to root
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                warnings.append(f"{path}: not a regular file ({file_kind(st.st_mode)}), skipped")
                return None
            return f.read()
    except OSError as exc:
        warnings.append(f"{path}: cannot read: {exc.strerror}")
    except PathError as exc:  # a symlink loop, a NUL byte (from the confined resolution)
        warnings.append(f"{path}: cannot read: {exc.msg}")
    except ValueError as exc:  # a NUL byte in the path
        warnings.append(f"{path!r}: cannot read: {exc}")
    return None


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return kind
    return "not a regular file"


def kernel_matches(pattern: str, kernel_release: str) -> bool:
    """'*', or an unanchored POSIX extended regex; one that does not compile never matches."""
    if pattern == "*":
        return True
    try:
        return re.search(pattern, kernel_release) is not None
    except re.error:
        return False


def config_files(config_paths: list[str]) -> list[str]:
    """cfg_files_list: *.conf files (not hidden, not directories) sorted by basename;
    a basename already seen in an earlier path is ignored. A path that is a file is
    taken as is."""
    return first_by_basename(config_paths, lambda name: not name.startswith(".") and len(name) >= 6
                             and name.endswith(".conf"))


def read_wrapped_lines(data: bytes) -> list[tuple[int, bytes]]:
    """kmod's freadline_wrapped: '\\'+newline continues a line, '\\'+c gives c.

    Returns (first line number, logical line) pairs.
    """
    lines = []
    buf = bytearray()
    lineno = 1
    start = 1
    i = 0
    n = len(data)
    while i < n:
        ch = data[i]
        i += 1
        if ch == 0x0A:
            lines.append((start, bytes(buf)))
            buf.clear()
            lineno += 1
            start = lineno
        elif ch == 0x5C:  # backslash
            if i < n and data[i] == 0x0A:
                lineno += 1
                i += 1
            elif i < n:
                buf.append(data[i])
                i += 1
            else:
                buf.append(0xFF)  # getc's EOF stored as a char, as kmod does
        else:
            buf.append(ch)
    if buf:
        lines.append((start, bytes(buf)))
    return lines
