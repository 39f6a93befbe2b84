# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Module information exactly as kmod's ``modinfo`` reports it (tools/modinfo.c).

Fields come from the ELF ``.modinfo`` section (or ``modules.builtin.modinfo`` for
builtin modules), followed by the appended signature. ``format_modinfo`` renders
them byte for byte like ``modinfo NAME``; ``ModInfo.as_dict`` is the structured form.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import typing as t

from .atomic import read_file
from .config import ModprobeConfig
from .elf import read_module
from .errors import ModuleLookupError
from .generation import KmodGeneration, detect_generation
from .names import has_module_extension, modname_from_path
from .paths import KmodPaths
from .resolver import Module, ModuleDB
from .signature import ModuleSignature, hex_string, read_signature

# Keys a module may repeat; the dict form always gives them as lists.
LIST_KEYS = frozenset({"alias", "author", "firmware", "softdep", "weakdep", "import_ns"})
PARAM_KEYS = ("parm", "parmtype")


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter after modinfo's merge of ``parm`` and ``parmtype`` entries."""

    name: str
    description: str | None
    type: str | None


@dataclasses.dataclass(frozen=True)
class ModInfo:
    """Everything ``modinfo`` prints for one module.

    ``fields`` keeps modinfo's order and duplicates, signature fields included;
    ``filename`` is None for a builtin module.
    """

    name: str
    filename: str | None
    fields: tuple[tuple[str, str], ...]
    signature: ModuleSignature | None = None

    @property
    def builtin(self) -> bool:
        return self.filename is None

    @property
    def params(self) -> list[Param]:
        """Merged parameters in modinfo's print order: reverse order of first appearance."""
        return merge_params(self.fields)

    def as_dict(self) -> dict[str, t.Any]:
        """Facts form: each key once (a list when repeated or in LIST_KEYS), ``parm`` by name."""
        out: dict[str, t.Any] = {"filename": self.filename or "(builtin)", "builtin": self.builtin}
        if self.builtin:
            out["name"] = self.name
        for key, value in self.fields:
            if key in PARAM_KEYS:
                continue
            if key in LIST_KEYS:
                out.setdefault(key, []).append(value)
            elif key in out:
                previous = out[key]
                out[key] = (previous if isinstance(previous, list) else [previous]) + [value]
            else:
                out[key] = value
        out["parm"] = {p.name: {"description": p.description, "type": p.type} for p in self.params}
        return out


def merge_params(fields: t.Iterable[tuple[str, str]]) -> list[Param]:
    """tools/modinfo.c process_parm(): later descriptions/types override earlier ones.

    Entries without a ':' are skipped (modinfo reports them on stderr).
    """
    merged: dict[str, list[str | None]] = {}
    for key, value in fields:
        if key not in PARAM_KEYS or ":" not in value:
            continue
        name, _sep, text = value.partition(":")
        slot = merged.setdefault(name, [None, None])
        slot[0 if key == "parm" else 1] = text
    return [Param(name, desc, typ) for name, (desc, typ) in reversed(merged.items())]


def signature_fields(sig: ModuleSignature) -> list[tuple[str, str]]:
    """The five entries kmod_module_get_info() appends for a signed module."""
    return [
        ("sig_id", sig.id_type),
        ("signer", sig.signer),
        ("sig_key", hex_string(sig.key_id)),
        ("sig_hashalgo", sig.hash_algo),
        ("signature", hex_string(sig.signature)),
    ]


def modinfo_from_file(path: str, name: str | None = None) -> ModInfo:
    """ModInfo of a module file (plain or compressed); KmodError naming the file if unusable."""
    elf = read_module(path)
    fields = list(elf.modinfo)
    sig = read_signature(elf.data)
    if sig is not None:
        fields += signature_fields(sig)
    return ModInfo(name or modname_from_path(path), path, tuple(fields), sig)


def builtin_modinfo(moddir: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """modules.builtin.modinfo as {module: fields}, like libkmod-builtin.c reads it.

    Records are NUL-terminated ``module.key=value``; a module's fields are the first
    contiguous run of its records. A record without a '.' ends the file for libkmod too.
    """
    # read_file: confined to root, regular files only (a FIFO there must not block).
    raw = read_file(os.path.join(moddir, "modules.builtin.modinfo"), missing_ok_notdir=True)
    if raw is None:
        return {}
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for record in raw.decode("utf-8", "surrogateescape").split("\0"):
        module, dot, rest = record.partition(".")
        if not dot:
            break
        if module != current:
            current = module if module not in result else None
            if current is not None:
                result[current] = []
        if current is not None:
            key, _sep, value = rest.partition("=")
            result[current].append((key, value))
    return {name: tuple(fields) for name, fields in result.items()}


def format_modinfo(info: ModInfo, generation: KmodGeneration | None = None) -> str:
    """The exact text ``modinfo`` prints for this module (default format, '\\n' separator),
    as the given generation's modinfo prints it (default: the newest)."""
    capped = (generation or KmodGeneration()).modinfo_pad_capped
    lines = []
    if info.builtin:
        lines.append(f"{'name:':<16}{info.name}")
    lines.append(f"{'filename:':<16}{info.filename or '(builtin)'}")
    for key, value in info.fields:
        if key in PARAM_KEYS:
            continue
        # printf("%s:%-*s", key, 15 - keylen, ""): kmod <= 33 pads a key longer than 15 by
        # the negative width's absolute value; kmod 34 caps keylen at 15 (no padding).
        pad = max(15 - len(key), 0) if capped else abs(15 - len(key))
        lines.append(f"{key}:{' ' * pad}{value}")
    for p in info.params:
        if p.description is None:
            text = f"{p.name}:{p.type}"
        elif p.type is not None:
            text = f"{p.name}:{p.description} ({p.type})"
        else:
            text = f"{p.name}:{p.description}"
        lines.append(f"{'parm:':<16}{text}")
    return "".join(line + "\n" for line in lines)


class ModinfoReader:
    """Finds modules in one kernel's tree and reads their modinfo.

    modinfo runs libkmod without any modprobe.d configuration, so names resolve through
    the indexes alone: a ModuleDB over an empty ModprobeConfig.
    """

    def __init__(self, paths: KmodPaths, db: ModuleDB | None = None,
                 generation: KmodGeneration | None = None) -> None:
        self.paths = paths
        self.generation = generation if generation is not None else detect_generation(paths)
        self.db = db if db is not None else ModuleDB(paths, ModprobeConfig())
        self._builtin_fields: dict[str, tuple[tuple[str, str], ...]] | None = None

    def lookup(self, name: str) -> list[ModInfo]:
        """``modinfo NAME``: a module file by path, else every module the name or alias
        resolves to; ModuleLookupError if none."""
        if has_module_extension(name) and _is_regular_file(name):
            return [modinfo_from_file(name)]
        return [self._read(mod) for mod in self.db.lookup(name)]

    def by_name(self, name: str) -> ModInfo:
        """``modinfo -m NAME``: modules.dep, then the builtin indexes, no aliases."""
        found = self.db.lookup_exact(name)
        if not found:
            raise ModuleLookupError(
                f"Module {name} not found in {self.paths.moddir_shown}", name=name, moddir=self.paths.moddir_shown)
        return self._read(found[0])

    def _read(self, mod: Module) -> ModInfo:
        if mod.builtin:
            return self.builtin(mod.name)
        if mod.path is None:
            raise ModuleLookupError(
                f"Module {mod.name} is named by an index but has no file in modules.dep",
                name=mod.name, moddir=self.paths.moddir)
        return modinfo_from_file(mod.path, mod.name)

    def builtin(self, modname: str) -> ModInfo:
        """A builtin module: only its modules.builtin.modinfo fields (none on old kernels)."""
        if self._builtin_fields is None:
            self._builtin_fields = builtin_modinfo(self.paths.moddir)
        return ModInfo(modname, None, self._builtin_fields.get(modname, ()))


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
