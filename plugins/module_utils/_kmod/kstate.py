# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The running kernel's module state: /proc/modules, /sys/module/*, taint, cmdline.

Everything is read below ``KmodPaths.root`` so that a fixture tree can carry its own
/proc and /sys. Formats follow the kernel (kernel/module/procfs.c, kernel/module/sysfs.c,
Documentation/admin-guide/tainted-kernels.rst) and kmod's libkmod-module.c readers.
"""

from __future__ import annotations

import dataclasses
import os

from .atomic import read_file
from .errors import KernelStateError, KmodError
from .names import modname_normalize
from .paths import KmodPaths

# /proc/modules state column (kernel/module/procfs.c: m_show).
MODULE_STATES = ("Live", "Loading", "Unloading")

# Values of /sys/module/NAME/initstate, plus kmod's "builtin" which only the index knows.
INITSTATES = ("live", "coming", "going", "builtin")

# Documentation/admin-guide/tainted-kernels.rst: bit -> (letter, description).
# Bit 0 prints 'G' when clear; every other bit prints nothing when clear.
TAINT_FLAGS: dict[int, tuple[str, str]] = {
    0: ("P", "proprietary module was loaded"),
    1: ("F", "module was force loaded"),
    2: ("S", "kernel running on an out of specification system"),
    3: ("R", "module was force unloaded"),
    4: ("M", "processor reported a Machine Check Exception (MCE)"),
    5: ("B", "bad page referenced or some unexpected page flags"),
    6: ("U", "taint requested by userspace application"),
    7: ("D", "kernel died recently, i.e. there was an OOPS or BUG"),
    8: ("A", "an ACPI table was overridden by user"),
    9: ("W", "kernel issued warning"),
    10: ("C", "staging driver was loaded"),
    11: ("I", "workaround for bug in platform firmware applied"),
    12: ("O", "externally-built (\"out-of-tree\") module was loaded"),
    13: ("E", "unsigned module was loaded"),
    14: ("L", "soft lockup occurred"),
    15: ("K", "kernel has been live patched"),
    16: ("X", "auxiliary taint, defined for and used by distros"),
    17: ("T", "kernel was built with the struct randomization plugin"),
    18: ("N", "an in-kernel test has been run"),
    19: ("J", "userspace used a mutating debug operation in fwctl"),
}

# The pseudo-holder /proc/modules lists for a module with init but no exit function.
PERMANENT = "[permanent]"


@dataclasses.dataclass(frozen=True)
class LoadedModule:
    """One /proc/modules line.

    ``refcount`` is None on kernels built without CONFIG_MODULE_UNLOAD (they print
    '-'); ``address`` is None when the kernel hides it (printed as zero to
    unprivileged readers); ``taint`` holds the module's taint letters, '' if none.
    """

    name: str
    size: int
    refcount: int | None
    holders: tuple[str, ...]
    permanent: bool
    state: str
    address: str | None
    taint: str


@dataclasses.dataclass(frozen=True)
class TaintFlag:
    bit: int
    letter: str
    description: str


@dataclasses.dataclass(frozen=True)
class Taint:
    """/proc/sys/kernel/tainted decoded; ``text`` is the kernel's print_tainted() letters."""

    value: int
    flags: tuple[TaintFlag, ...]

    @property
    def text(self) -> str:
        return "".join(f.letter for f in self.flags)


def decode_taint(value: int) -> Taint:
    """Split a taint mask into its documented flags (unknown bits get letter '?')."""
    flags = []
    bit = 0
    while value >> bit:
        if value >> bit & 1:
            letter, desc = TAINT_FLAGS.get(bit, ("?", f"unknown taint bit {bit}"))
            flags.append(TaintFlag(bit, letter, desc))
        bit += 1
    return Taint(value, tuple(flags))


def parse_proc_modules(text: str, source: str = "/proc/modules") -> dict[str, LoadedModule]:
    """Parse /proc/modules text; a malformed line raises KernelStateError naming it."""
    result: dict[str, LoadedModule] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            module = _parse_proc_line(fields)
        except (ValueError, IndexError) as exc:
            raise KernelStateError(
                f"Malformed line {lineno} in {source}: {line!r}", path=source, line=lineno) from exc
        result[module.name] = module
    return result


def _parse_proc_line(fields: list[str]) -> LoadedModule:
    # name size refcnt holders state address [(taint)]; holders end in ',' or are '-'.
    if len(fields) < 6 or fields[4] not in MODULE_STATES:
        raise ValueError("unexpected fields")
    name, size, refcnt, used_by, state, address = fields[:6]
    holders = tuple(h for h in used_by.split(",") if h and h != "-")
    taint = ""
    if len(fields) > 6:
        # "(OE)", "(OE-)", "(+)": the trailing -/+ repeats the state column.
        taint = fields[6].strip("()").rstrip("+-")
    return LoadedModule(
        name=name,
        size=int(size),
        refcount=None if refcnt == "-" else int(refcnt),
        holders=tuple(h for h in holders if h != PERMANENT),
        permanent=PERMANENT in holders,
        state=state,
        address=None if int(address, 16) == 0 else address,
        taint=taint,
    )


class KernelState:
    """Read-only view of the kernel's module state under ``paths.root``."""

    def __init__(self, paths: KmodPaths) -> None:
        self.paths = paths

    @property
    def supported(self) -> bool:
        """False on kernels (or containers) without loadable module support."""
        return os.path.isfile(self.paths.proc("modules"))

    def loaded(self) -> dict[str, LoadedModule]:
        """/proc/modules by module name, in the kernel's order; {} if unsupported."""
        path = self.paths.proc("modules")
        text = self._read(path)
        return {} if text is None else parse_proc_modules(text, path)

    def initstate(self, name: str, builtin: bool = False) -> str | None:
        """kmod's kmod_module_get_initstate: 'live', 'coming', 'going', 'builtin' or None.

        Builtin knowledge comes from modules.builtin, so callers pass ``builtin``; as in
        kmod, a /sys/module dir without initstate counts as 'coming', not builtin.
        """
        if builtin:
            return "builtin"
        directory = self._module_dir(name)
        text = self._read(os.path.join(directory, "initstate"))
        if text is None:
            return "coming" if os.path.isdir(directory) else None
        state = text.rstrip("\n")
        if state not in INITSTATES[:3]:
            raise KernelStateError(
                f"Unknown module state {state!r} in {directory}/initstate", module=name)
        return state

    def refcnt(self, name: str) -> int | None:
        """/sys/module/NAME/refcnt, None if the module is not loaded (or cannot unload)."""
        return self._read_int(os.path.join(self._module_dir(name), "refcnt"))

    def coresize(self, name: str) -> int | None:
        """/sys/module/NAME/coresize: the size lsmod prints."""
        return self._read_int(os.path.join(self._module_dir(name), "coresize"))

    def holders(self, name: str) -> list[str]:
        """Modules using NAME (/sys/module/NAME/holders), sorted."""
        return sorted(self._listdir(os.path.join(self._module_dir(name), "holders")))

    def parameters(self, name: str) -> dict[str, str]:
        """Readable files under /sys/module/NAME/parameters, value without the newline.

        Write-only and root-only parameters are left out rather than failing.
        """
        directory = os.path.join(self._module_dir(name), "parameters")
        result = {}
        for param in sorted(self._listdir(directory)):
            try:
                data = read_file(os.path.join(directory, param), missing_ok_notdir=True)
            except KmodError:
                continue
            if data is None:
                continue
            value = data.decode("utf-8", "replace")
            result[param] = value[:-1] if value.endswith("\n") else value
        return result

    def sysfs_modules(self) -> list[str]:
        """Every /sys/module entry (loaded modules and builtins with parameters or version)."""
        return sorted(e for e in self._listdir(self.paths.sys("module"))
                      if os.path.isdir(self.paths.sys("module", e)))

    def sysfs_builtin(self) -> list[str]:
        """/sys/module entries without initstate: builtin code that registered sysfs attributes."""
        return [name for name in self.sysfs_modules()
                if not os.path.exists(self.paths.sys("module", name, "initstate"))]

    def compression(self) -> str | None:
        """/sys/module/compression: 'zstd', 'xz', 'gzip' or None (no in-kernel decompression)."""
        text = self._read(self.paths.sys("module", "compression"))
        return (text or "").strip() or None

    def kernel_cmdline(self) -> str | None:
        text = self._read(self.paths.proc("cmdline"))
        return None if text is None else text.rstrip("\n")

    def tainted(self) -> Taint | None:
        path = self.paths.proc("sys", "kernel", "tainted")
        value = self._read_int(path)
        return None if value is None else decode_taint(value)

    def sig_enforce(self) -> bool | None:
        """True when only validly signed modules load; None if the kernel has no signing."""
        text = self._read(self.paths.sys("module", "module", "parameters", "sig_enforce"))
        return None if text is None else text.strip() in ("Y", "1")

    def _module_dir(self, name: str) -> str:
        return self.paths.sys("module", modname_normalize(name))

    @staticmethod
    def _read(path: str) -> str | None:
        # Regular files only (a FIFO would block), inside root; missing is None.
        try:
            data = read_file(path, missing_ok_notdir=True)
        except KmodError as exc:
            raise KernelStateError(exc.msg, path=path) from exc
        return None if data is None else data.decode("utf-8", "replace")

    def _read_int(self, path: str) -> int | None:
        text = self._read(path)
        if text is None:
            return None
        try:
            return int(text.strip())
        except ValueError:
            raise KernelStateError(f"Not an integer in {path}: {text.strip()!r}", path=path) from None

    @staticmethod
    def _listdir(path: str) -> list[str]:
        try:
            return os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except (OSError, ValueError) as exc:
            raise KernelStateError(f"Cannot list {path}: {getattr(exc, 'strerror', None) or exc}",
                                   path=path) from exc
