# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The data behind kmod_facts: kernel state, module tree, configuration and boot lists.

``gather`` returns plain dicts/lists (JSON-ready). Subsets keep a fleet run cheap; the
kernel-wide values ("min") are always gathered.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

from .atomic import read_file
from .confdirs import first_by_basename
from .config import ModprobeConfig, Source
from .devices import scan_devices
from .elf import read_module
from .errors import KmodError, ModuleLookupError
from .kstate import KernelState, LoadedModule
from .modinfo import ModinfoReader, format_modinfo
from .names import modname_normalize, validate_name
from .paths import KmodPaths, resolve_host
from .resolver import ModuleDB

SUBSETS = ("loaded", "builtin", "config", "boot", "modinfo")
# Gathered only when named: a walk of sysfs and an alias lookup per device is more than
# a fleet-wide default run should pay for.
OPT_IN_SUBSETS = ("devices",)
DEBIAN_MODULES_FILE = "etc/modules"


def select_subsets(requested: t.Iterable[str]) -> set[str]:
    """setup-style gather_subset: names, 'all', 'min' and '!name' exclusions.

    As in setup, '!all' drops what 'all' would add but not subsets named explicitly,
    so ['!all', 'loaded'] gathers min and loaded.
    """
    named: set[str] = set()
    excluded: set[str] = set()
    include_all = exclude_all = False
    for item in requested:
        negate = item.startswith("!")
        name = item[1:] if negate else item
        if name == "all":
            exclude_all, include_all = (True, include_all) if negate else (exclude_all, True)
        elif name in SUBSETS or name in OPT_IN_SUBSETS:
            (excluded if negate else named).add(name)
        elif name != "min":
            raise KmodError(
                f"Bad subset {item!r} given to gather_subset; choose from all, min, "
                f"{', '.join(SUBSETS + OPT_IN_SUBSETS)} (each may be negated with '!')", subset=item)
    base = set(SUBSETS) if include_all and not exclude_all else set()
    return (base | named) - excluded


def _source(src: Source) -> dict[str, t.Any]:
    return {"file": src.path, "line": src.line}


class FactsGatherer:
    """Collects the facts of one root/kernel release; each part can be called alone."""

    def __init__(self, paths: KmodPaths) -> None:
        self.paths = paths
        self.kstate = KernelState(paths)
        self._config: ModprobeConfig | None = None
        self._db: ModuleDB | None = None
        self._module_names: list[str] | None = None
        self.warnings: list[str] = []

    @property
    def config(self) -> ModprobeConfig:
        if self._config is None:
            self._config = ModprobeConfig.load(self.paths)
        return self._config

    @property
    def db(self) -> ModuleDB:
        """The indexes only, as lsmod/modinfo use them (configuration plays no part)."""
        if self._db is None:
            self._db = ModuleDB(self.paths, ModprobeConfig())
        return self._db

    def gather(self, subsets: set[str], modinfo_names: t.Sequence[str] = (),
               sysfs_root: str = "/sys") -> tuple[dict[str, t.Any], list[str]]:
        """(facts, warnings). Modules named in ``modinfo_names`` are gathered whatever the
        subsets: naming them is asking for them. Devices come from ``sysfs_root``, the
        running kernel's."""
        warnings = self.warnings
        if modinfo_names:
            subsets = subsets | {"modinfo"}
        facts = self.kernel()
        facts["gathered_subsets"] = sorted(subsets)
        if "loaded" in subsets:
            facts["loaded"] = self.loaded()
        if "builtin" in subsets:
            facts["builtin"] = self.builtin()
        if "config" in subsets:
            facts["config"] = self.config_view()
        if "boot" in subsets:
            facts["modules_load"] = self.modules_load()
        if modinfo_names:
            facts["modinfo"] = self.modinfo(modinfo_names, warnings)
        if "devices" in subsets:
            facts["devices"] = self.devices(sysfs_root)
        return facts, warnings

    def devices(self, sysfs_root: str = "/sys") -> list[dict[str, t.Any]]:
        """Present devices with a modalias, their driver and candidate modules (devices.py);
        candidates as modprobe resolves them, with this root's configuration."""
        db = ModuleDB(self.paths, self.config)
        return [dev.as_dict() for dev in scan_devices(db, sysfs_root, self.warnings)]

    def kernel(self) -> dict[str, t.Any]:
        """The 'min' subset: cheap kernel-wide values."""
        taint = self.kstate.tainted()
        return {
            "kernel_release": self.paths.kernel_release,
            "moddir": self.paths.moddir,
            "modules_supported": self.kstate.supported,
            "taint": None if taint is None else {
                "value": taint.value,
                "text": taint.text,
                "flags": [dataclasses.asdict(f) for f in taint.flags],
            },
            "sig_enforce": self.kstate.sig_enforce(),
            "compression": self.kstate.compression(),
        }

    def loaded(self) -> dict[str, dict[str, t.Any]]:
        """/proc/modules with sysfs details and the file each module came from."""
        return {name: self._loaded_entry(mod) for name, mod in self.kstate.loaded().items()}

    def _loaded_entry(self, mod: LoadedModule) -> dict[str, t.Any]:
        coresize = self.kstate.coresize(mod.name)
        path, file_module = self.module_file(mod.name)
        return {
            "name": mod.name,
            # lsmod prints coresize and falls back on /proc/modules, so do we.
            "size": mod.size if coresize is None else coresize,
            "refcount": mod.refcount,
            "holders": list(mod.holders),
            "permanent": mod.permanent,
            "state": mod.state,
            "initstate": self.kstate.initstate(mod.name),
            "taint": mod.taint,
            "address": mod.address,
            "parameters": self.kstate.parameters(mod.name),
            "filename": path,
            "file_module": file_module,
        }

    def module_file(self, kernel_name: str) -> tuple[str | None, str | None]:
        """(path, modules.dep name) of a loaded module, (None, None) if the tree lacks it.

        The kernel knows a module by its .gnu.linkonce.this_module name, which may
        differ from the file's (dkms' nvidia-current.ko loads as nvidia). When the
        name is not in modules.dep, files named NAME_* or *_NAME are read to find it.
        """
        found = self.db.lookup_exact(kernel_name)
        if found and found[0].path is not None:
            return found[0].path, found[0].name
        if self._module_names is None:
            self._module_names = self.db.module_names()
        for name in self._module_names:
            if not (name.startswith(kernel_name + "_") or name.endswith("_" + kernel_name)):
                continue
            line = self.db.depline(name)
            path = self.db.abspath(line.partition(":")[0]) if line else None
            if path is None:
                continue
            try:
                elf = read_module(path)
            except KmodError:
                continue
            if modname_normalize(elf.this_module_name or "") == kernel_name:
                return path, name
        return None, None

    def builtin(self) -> list[str]:
        """modules.builtin and /sys/module entries without initstate, sorted."""
        index = self.db.index("modules.builtin")
        names = {key for key, _value in index.dump()} if index is not None else set()
        names.update(self.kstate.sysfs_builtin())
        return sorted(names)

    def config_view(self) -> dict[str, t.Any]:
        """Every effective modprobe.d directive with the file and line it came from."""
        cfg = self.config
        return {
            "aliases": [{"alias": a.pattern, "module": a.modname, **_source(a.source)} for a in cfg.aliases],
            "options": [{"module": o.modname, "options": o.options, **_source(o.source)} for o in cfg.options],
            "install": [{"module": c.modname, "command": c.command, **_source(c.source)} for c in cfg.install],
            "remove": [{"module": c.modname, "command": c.command, **_source(c.source)} for c in cfg.remove],
            "softdeps": [{"module": s.modname, "pre": list(s.pre), "post": list(s.post), **_source(s.source)}
                         for s in cfg.softdeps],
            "weakdeps": [{"module": w.modname, "deps": list(w.deps), **_source(w.source)} for w in cfg.weakdeps],
            "blacklist": [{"module": b.modname, **_source(b.source)} for b in cfg.blacklist],
            "files": list(cfg.files),
            "warnings": list(cfg.warnings),
        }

    def modules_load(self) -> list[dict[str, t.Any]]:
        """Modules loaded at boot, in systemd-modules-load's order, then Debian's /etc/modules.

        modules-load.d: *.conf sorted by basename, the first directory holding a basename
        wins; one name per line, '#' and ';' start comments. The kernel command line's
        modules-load=/rd.modules-load= come first, as systemd reads them first.
        """
        entries = self._cmdline_modules_load()
        seen_files: set[str] = set()
        for path in self._modules_load_files():
            seen_files.add(self._real(path))
            entries += self._read_list(path, with_args=False)
        debian = self.paths.under(DEBIAN_MODULES_FILE, follow=False)
        # Debian links /etc/modules-load.d/modules.conf to /etc/modules: read it once.
        if self._real(debian) not in seen_files:
            entries += self._read_list(debian, with_args=True)
        return entries

    def _real(self, path: str) -> str:
        # Where a symlink leads, inside root (never the host's files).
        try:
            return os.path.realpath(path) if not self.paths.confined else resolve_host(path)
        except KmodError:
            return path

    def _modules_load_files(self) -> list[str]:
        # systemd skips hidden files (and backups) like libkmod does
        return first_by_basename(self.paths.modules_load_dirs,
                                 lambda name: name.endswith(".conf") and not name.startswith("."))

    def _read_list(self, path: str, with_args: bool) -> list[dict[str, t.Any]]:
        # Like systemd-modules-load, a file that cannot be read (a FIFO, a directory, a
        # symlink loop) is reported and skipped; nothing may block.
        try:
            data = read_file(path)
        except KmodError as exc:
            self.warnings.append(f"{path}: skipped: {exc.msg}")
            return []
        if data is None:
            return []
        lines = data.decode("utf-8", "surrogateescape").splitlines()
        entries = []
        for lineno, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            name, _sep, args = line.partition(" ") if with_args else (line, "", "")
            entry = {"module": name, "file": path, "line": lineno}
            if with_args:
                entry["args"] = args.strip()
            entries.append(entry)
        return entries

    def _cmdline_modules_load(self) -> list[dict[str, t.Any]]:
        cmdline = self.kstate.kernel_cmdline() or ""
        entries = []
        for word in cmdline.split():
            key, eq, value = word.partition("=")
            if eq and key in ("modules-load", "rd.modules-load"):
                entries += [{"module": m, "file": self.paths.proc("cmdline"), "line": 0}
                            for m in value.split(",") if m]
        return entries

    def modinfo(self, names: t.Sequence[str], warnings: list[str]) -> dict[str, t.Any]:
        """modinfo of each name: the first match's fields, ``others`` for further matches of
        an alias, ``text`` = modinfo's output for all of them; None (and a warning) if unknown."""
        reader = ModinfoReader(self.paths, self.db)
        result: dict[str, t.Any] = {}
        for name in names:
            validate_name(name)
            try:
                infos = reader.lookup(name)
            except ModuleLookupError as exc:
                warnings.append(exc.msg)
                result[name] = None
                continue
            entry = infos[0].as_dict()
            entry["others"] = [info.as_dict() for info in infos[1:]]
            entry["text"] = "".join(format_modinfo(info, reader.generation) for info in infos)
            result[name] = entry
        return result
