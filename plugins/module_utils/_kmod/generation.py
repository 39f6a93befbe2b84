# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Which kmod release the engine imitates on a target: its "generation".

kmod's user-visible output changed between kmod 28 (Debian 11), kmod 30 (Debian 12) and
kmod 34 (Debian 13);
docs/kmod-generations.md lists the differences with kmod source references. The engine
keeps the kmod major version it imitates in a ``KmodGeneration`` and asks it feature
questions (``preorder_index``, ``weakdep``...), so that a target is answered the way its
own kmod would answer.

Detection (``detect_generation``), first signal that answers wins:

1. ``compat`` given explicitly, or ``KmodPaths.kmod_compat`` (the modules' ``kmod_compat``
   option): ``30``, ``34``, any kmod major version; ``auto`` detects.
2. The kmod installed under root, read from files only (no program is run, so this works
   for a foreign ``root`` too):
   a. dpkg's status file (Debian, Ubuntu): the ``Version`` of the installed ``kmod`` or
      ``libkmod2`` package;
   b. the name of the shared library ``libkmod.so.2.X.Y`` in the usual library
      directories (every distribution: RHEL's rpm database is not readable without
      rpm, but the file name is): libtool's version-info maps one to one to a kmod
      release (2.4.0 = kmod 30 ... 2.5.0 = kmod 33, 2.5.1 = kmod 34; 2.3.x, kmod 26 to 29,
      is taken as 28).
3. The layout of the kernel's existing ``modules.dep.bin`` (written by the distro's
   depmod): root node right after the header = pre-order = kmod >= 34; otherwise
   post-order, kmod 33 if ``modules.weakdep`` is next to it, kmod 28 if
   ``modules.builtin.alias.bin`` is empty while ``modules.builtin.modinfo`` is not, else kmod 30.
4. For a ``root`` other than ``/`` that tells nothing (a bare module tree): the kmod of
   the system running the engine (2.), as its ``depmod -b`` would be the one to index it.
5. Nothing (no kmod installed, no index: minimal images, containers): the newest.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import typing as t

from .atomic import read_file
from .errors import KmodError

if t.TYPE_CHECKING:
    from .paths import KmodPaths

OLDEST = 28  # the oldest behaviour modelled (older kmod releases are taken as 28)
NEWEST = 34  # the newest behaviour modelled (newer kmod releases are taken as 34)
COMPAT_CHOICES = ("auto", "28", "30", "34")

# libkmod's libtool version-info (Makefile.am LIBKMOD_CURRENT/REVISION/AGE) as the
# library file's suffix, mapped to the kmod release that introduced it.
_LIBKMOD_SUFFIX = {
    (4, 0): 30, (4, 1): 31, (4, 2): 32,
    (5, 0): 33, (5, 1): 34,
}
_LIB_DIRS = ("lib", "lib64", "usr/lib", "usr/lib64", "usr/local/lib")
_LIBKMOD_RE = re.compile(r"^libkmod\.so\.2\.(\d+)\.(\d+)$")
_DPKG_PACKAGES = ("kmod", "libkmod2")
_INDEX_MAGIC = 0xB007F457
_DPKG_STATUS_MAX = 64 * 1024 * 1024  # a status file larger than this is not read


@dataclasses.dataclass(frozen=True)
class KmodGeneration:
    """The kmod major version imitated, and where that answer came from.

    ``source`` is one of ``option``, ``dpkg``, ``libkmod``, ``index``, ``host``, ``default``;
    ``evidence`` names the file or value that decided it.
    """

    version: int = NEWEST
    source: str = "default"
    evidence: str = ""

    @property
    def preorder_index(self) -> bool:
        """.bin tries are written parent before children (depmod.c index_write, kmod 34)."""
        return self.version >= 34

    @property
    def weakdep(self) -> bool:
        """depmod writes modules.weakdep; libkmod reads it and ``weakdep`` lines (kmod 33)."""
        return self.version >= 33

    @property
    def conf_suffixes(self) -> tuple[str, ...]:
        """Suffixes of the modprobe.d files libkmod reads (kmod 33 dropped ``.alias``)."""
        return (".conf",) if self.version >= 33 else (".conf", ".alias")

    @property
    def modinfo_pad_capped(self) -> bool:
        """modinfo pads keys of 16+ characters with nothing, not |15 - len| spaces (kmod 34)."""
        return self.version >= 34

    @property
    def order_first_wins(self) -> bool:
        """A module listed twice in modules.order sorts by its first line (kmod 34), not its last."""
        return self.version >= 34

    @property
    def builtin_alias_inverted(self) -> bool:
        """depmod writes modules.builtin.alias.bin only when there is no builtin module: an
        empty index then, else a 0-byte file (kmod 28 took kmod_module_get_info's count for
        an error; f0a1360 fixed it in kmod 29)."""
        return self.version <= 28

    @property
    def depmod_files(self) -> tuple[str, ...]:
        """The files this generation's depmod writes, in its order (depmod_output's depfiles[])."""
        files = ["modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep"]
        if self.weakdep:
            files.append("modules.weakdep")
        files += ["modules.symbols", "modules.symbols.bin", "modules.builtin.bin", "modules.builtin.alias.bin",
                  "modules.devname"]
        return tuple(files)

    def as_result(self) -> dict[str, t.Any]:
        """What a module reports about it."""
        return {"version": self.version, "source": self.source, "evidence": self.evidence}


class KmodCompatError(KmodError):
    """The kmod_compat option names no generation we can imitate."""


def parse_compat(value: t.Any) -> int | None:
    """``auto``/None -> None (detect); ``28``/``30``/``34``/``34.2``/30 -> that major version."""
    if value is None or value == "" or value == "auto":
        return None
    text = value.strip() if isinstance(value, str) else repr(value)
    match = None
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        match = re.fullmatch(r"([0-9]{1,3})(?:\.[0-9]{1,3})?", str(value).strip())
    if match is None:
        shown = repr(text[:40])
        if len(shown) > 60:  # escapes (\U0001342f) make a repr up to 10 times its text
            shown = shown[:57] + "..."
        raise KmodCompatError(f"kmod_compat must be 'auto' or a kmod version such as 28, 30 or 34, not {shown}",
                              kmod_compat=text[:40])
    return _clamp(int(match.group(1)))


def _clamp(version: int) -> int:
    return min(max(version, OLDEST), NEWEST)


def detect_generation(paths: KmodPaths, compat: t.Any = None) -> KmodGeneration:
    """The generation for the system at ``paths.root`` (see the module docstring);
    ``compat`` defaults to ``paths.kmod_compat`` (the modules' kmod_compat option)."""
    if compat is None:
        compat = getattr(paths, "kmod_compat", None)
    forced = parse_compat(compat)
    if forced is not None:
        return KmodGeneration(forced, "option", str(compat))
    for probe in (_from_dpkg, _from_libkmod, _from_index):
        found = probe(paths)
        if found is not None:
            return found
    if paths.root != "/":
        host = dataclasses.replace(paths, root="/")
        for probe in (_from_dpkg, _from_libkmod):
            found = probe(host)
            if found is not None:
                return dataclasses.replace(found, source="host")
    return KmodGeneration(NEWEST, "default", "no kmod installation found")


def _dpkg_version(text: str) -> str | None:
    """The upstream version's major number ("34.2-2" -> "34", "1:30+20221128-1" -> "30")."""
    match = re.match(r"^(?:\d+:)?(\d+)", text.strip())
    return match.group(1) if match else None


def _dpkg_stanza(data: bytes, package: str) -> bytes | None:
    """The status stanza of package (found by its "Package:" line, not by parsing them all)."""
    needle = f"Package: {package}\n".encode()
    pos = 0 if data.startswith(needle) else data.find(b"\n" + needle)
    if pos < 0:
        return None
    end = data.find(b"\n\n", pos + 1)
    return data[pos:] if end < 0 else data[pos:end]


def _read_regular(path: str, limit: int) -> bytes | None:
    """Up to limit bytes of a regular file inside root; None for anything else (a FIFO
    must not block, a missing or odd file just gives no evidence)."""
    try:
        return read_file(path, limit, missing_ok_notdir=True)
    except KmodError:
        return None


def _from_dpkg(paths: KmodPaths) -> KmodGeneration | None:
    status = paths.under("var/lib/dpkg/status")
    data = _read_regular(status, _DPKG_STATUS_MAX)
    if data is None:
        return None
    for name in _DPKG_PACKAGES:
        stanza = _dpkg_stanza(data, name)
        if stanza is None:
            continue
        fields = dict(re.findall(r"^([A-Za-z][\w-]*):[ \t]*(.*)$", stanza.decode("utf-8", "replace"), re.M))
        if not fields.get("Status", "").endswith(" installed"):
            continue
        major = _dpkg_version(fields.get("Version", ""))
        if major is not None:
            return KmodGeneration(_clamp(int(major)), "dpkg", f"{status}: {name} {major}")
    return None


def _lib_dirs(paths: KmodPaths) -> t.Iterator[str]:
    for rel in _LIB_DIRS:
        top = paths.under(rel)
        yield top
        try:
            entries = sorted(os.listdir(top))
        except OSError:
            continue
        for name in entries:  # multiarch: lib/x86_64-linux-gnu and friends
            if "-linux" in name:
                yield os.path.join(top, name)


def _from_libkmod(paths: KmodPaths) -> KmodGeneration | None:
    best: tuple[int, str] | None = None
    for directory in _lib_dirs(paths):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for name in entries:
            match = _LIBKMOD_RE.match(name)
            if match is None:
                continue
            minor, rev = int(match.group(1)), int(match.group(2))
            if (minor, rev) in _LIBKMOD_SUFFIX:
                version = _LIBKMOD_SUFFIX[(minor, rev)]
            elif minor < 4:
                version = 28  # 2.3.x: kmod 26 to 29 (RHEL 9's and Debian 11's is 28)
            else:
                version = NEWEST  # newer than any release we know
            if best is None or version > best[0]:
                best = (version, os.path.join(directory, name))
    if best is None:
        return None
    return KmodGeneration(_clamp(best[0]), "libkmod", best[1])


def index_is_preorder(data: bytes) -> bool | None:
    """True for kmod 34's layout (root right after the header), False for the older
    post-order one, None when the bytes do not tell (no index, empty trie, not an index)."""
    if len(data) <= 12:
        return None
    magic, _version, root = struct.unpack(">III", data[:12])
    if magic != _INDEX_MAGIC:
        return None
    # A non-empty trie has a root with children (the root has no prefix), so at least two
    # nodes: post-order puts the root last, never at offset 12.
    return (root & 0x0FFFFFFF) == 12


def _from_index(paths: KmodPaths) -> KmodGeneration | None:
    dep_bin = paths.module_index("modules.dep.bin")
    head = _read_regular(dep_bin, 13)
    if head is None:
        return None
    preorder = index_is_preorder(head)
    if preorder is None:
        return None
    if preorder:
        return KmodGeneration(34, "index", f"{dep_bin}: pre-order")
    weakdep = os.path.exists(paths.module_index("modules.weakdep"))
    if not weakdep and _builtin_alias_left_empty(paths):
        return KmodGeneration(28, "index", f"{dep_bin}: post-order, 0-byte modules.builtin.alias.bin")
    return KmodGeneration(33 if weakdep else 30, "index", f"{dep_bin}: post-order")


def _builtin_alias_left_empty(paths: KmodPaths) -> bool:
    """kmod 28's mark: a 0-byte modules.builtin.alias.bin next to a non-empty
    modules.builtin.modinfo (kmod 29 and later write the index whenever that file names modules)."""
    alias_bin = paths.module_index("modules.builtin.alias.bin")
    modinfo = paths.module_index("modules.builtin.modinfo")
    try:
        return os.stat(alias_bin).st_size == 0 and os.stat(modinfo).st_size > 0
    except OSError:
        return False
