# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Configuration directories merged by file name, as kmod and systemd read them.

libkmod's ``conf_files_list`` (modprobe.d), depmod's ``cfg_files_list`` (depmod.d) and
systemd's ``conf_files_list`` (modules-load.d) agree: the files of several directories
form one list sorted by basename, and of the files sharing a basename only the one in
the earliest directory is read.
"""

from __future__ import annotations

import os
import stat
import typing as t

from .errors import KmodError
from .paths import resolve_host


def first_by_basename(dirs: t.Iterable[str], accept: t.Callable[[str], bool], *,
                      seed: t.Mapping[str, str] | None = None, present: t.Iterable[str] = (),
                      resolve: t.Callable[[str], str] | None = None,
                      warnings: list[str] | None = None) -> list[str]:
    """The files to read, sorted by basename in byte order (strcmp).

    For every basename ``accept`` takes, the file in the first of ``dirs`` that holds
    it; a path in ``dirs`` that is a file, not a directory, counts under its own
    basename (``modprobe -C FILE``). Entries that are directories are skipped.
    ``seed``: basename -> file taken before any directory. ``present``: files taken as
    existing though they may not be on disk yet (a planned edit), each in its own
    directory, compared through ``resolve`` (default: as given). ``warnings`` collects
    why a directory or entry was passed over.
    """
    same = resolve or (lambda p: p)
    planned: dict[str, list[str]] = {}
    for path in present:
        planned.setdefault(same(os.path.dirname(path)), []).append(path)
    found: dict[str, str] = dict(seed or {})
    for d in dirs:
        extra = {os.path.basename(p): p for p in planned.get(same(d), ())}
        try:
            st = os.stat(resolve_host(d))  # followed inside root, never to the host's files
        except (OSError, KmodError):
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            found.setdefault(os.path.basename(d), d)
            continue
        names: list[str] = []
        if st is not None:
            try:
                names = os.listdir(d)
            except OSError as e:
                if warnings is not None:
                    warnings.append(f"{d}: cannot list directory: {e.strerror}")
        for name in list(extra) + names:
            if not accept(name) or name in found:
                continue
            full = extra.get(name) or os.path.join(d, name)
            if name not in extra and _is_dir(full):
                if warnings is not None:
                    warnings.append(f"{full}: directories inside configuration directories are ignored")
                continue
            found[name] = full
    return [found[n] for n in sorted(found, key=lambda n: n.encode("utf-8", "surrogateescape"))]


def _is_dir(path: str) -> bool:
    # Followed inside root (an entry linking to /etc is ROOT/etc, never the host's).
    try:
        return stat.S_ISDIR(os.stat(resolve_host(path)).st_mode)
    except (OSError, KmodError):
        return False
