# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""depmod in Python: the modules.* indexes of a module tree, byte-identical to kmod's.

``Depmod(paths, ...).build()`` only computes (nothing is written): it walks the tree,
reads the modules (in worker processes), links symbols into dependencies and sorts
them; depmod_output.py turns that into each file's bytes, depmod_plan.py decides what
to write and publishes it, depmod_cache.py remembers a run for the next one.
The order of everything follows tools/depmod.c of kmod 30: readdir-order walk with
depmod.d duplicate rules, hash-table module order re-sorted by modules.order, LIFO
topological sort, index tries. What differs between kmod 30 and kmod 34 (the .bin
layout, modules.weakdep, duplicate modules.order lines) follows the ``KmodGeneration``
(docs/kmod-generations.md).
"""

from __future__ import annotations

import array
import dataclasses
import functools
import itertools
import multiprocessing
import os
import re
import typing as t

from . import depmod_output as output
from .depmod_config import BUILTIN, EXTERNAL, DepmodConfig
from .depmod_files import (
    StatKey, check_moddir, check_output, input_key, path_key, read_input, reason, walk_listing)
from .elf import read_module
from .errors import DependencyCycleError, KmodError
from .generation import KmodGeneration, detect_generation
from .hashtable import iteration_order
from .names import MODULE_EXTENSIONS, modname_normalize
from .paths import resolution_cache

if t.TYPE_CHECKING:
    from .paths import KmodPaths

# kmod 30 writes these, in this order (depmod_output's depfiles[]); kmod >= 33 adds
# modules.weakdep after modules.softdep: KmodGeneration.depmod_files has the list per generation.
OUTPUT_FILES = (
    "modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep",
    "modules.symbols", "modules.symbols.bin", "modules.builtin.bin", "modules.builtin.alias.bin",
    "modules.devname",
)
# Below this many modules to read, forking workers costs more than it saves.
_PARALLEL_MIN = 64
_PATH_MAX = 4096

# What depmod needs from one module, packed so that it crosses process boundaries
# (and the cache) cheaply: (error or None, export names, export CRCs, undefined names,
# undefined weak flags, undefined CRCs, [(modinfo key, value)] for alias/softdep/weakdep).
# Names are NUL-joined bytes, CRCs native u64 arrays, weak flags one byte each.
Scan = t.Tuple[t.Optional[str], bytes, bytes, bytes, bytes, bytes, t.List[t.Tuple[str, str]]]
T = t.TypeVar("T")


def scan_module(path: str) -> Scan:
    """What depmod reads from one module file. A file libkmod cannot open or parse
    yields the error and nothing else: depmod logs it and keeps the module, dependency-less."""
    try:
        elf = read_module(path)
    except KmodError as exc:
        return exc.msg, b"", b"", b"", b"", b"", []
    exports = elf.exports_raw()
    undefined = elf.undefined_raw()
    return (
        None,
        b"\0".join(name for name, _crc in exports),
        array.array("Q", [crc for _name, crc in exports]).tobytes(),
        b"\0".join(sym[0] for sym in undefined),
        bytes(sym[2] for sym in undefined),
        array.array("Q", [sym[1] for sym in undefined]).tobytes(),
        [(k, v) for k, v in elf.modinfo if k in _INFO_KEYS],
    )


_INFO_KEYS = ("alias", "softdep", "weakdep")


def _names(blob: bytes) -> list[bytes]:
    return blob.split(b"\0") if blob else []


@dataclasses.dataclass(eq=False)
class Module:
    name: str
    path: str  # dirname + "/" + relative path, or the external file's path
    relpath: str | None  # relative to the module directory; None outside it
    stem_len: int  # len of path up to the end of the module name ("dir/NAME")
    idx: int = 0
    sort_idx: int = 1
    dep_sort_idx: int = 0
    users: int = 0
    deps: list["Module"] = dataclasses.field(default_factory=list)
    info: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @functools.cached_property
    def name_bytes(self) -> bytes:
        return output.enc(self.name)

    @functools.cached_property
    def shown_path(self) -> bytes:
        """How modules.dep names the file: relative to the module directory if inside it."""
        return output.enc(self.relpath if self.relpath is not None else self.path)

    @property
    def uncrelpath(self) -> str | None:
        """relpath cut after "dir/NAME.ko": the spelling modules.order uses."""
        if self.relpath is None:
            return None
        return self.relpath[:self.stem_len - (len(self.path) - len(self.relpath)) + 3]


@dataclasses.dataclass
class DepmodResult:
    files: dict[str, bytes]  # generation.depmod_files -> content
    modules: list[Module]  # array order
    warnings: list[str]
    unresolved: list[dict[str, str]]
    scans: dict[str, Scan]
    stat_keys: dict[str, StatKey]  # of each module file, taken before it was read
    generation: KmodGeneration = dataclasses.field(default_factory=KmodGeneration)
    # what depmod_cache needs to vouch for a later run: the directories walked and the input
    # files (path, option, StatKey or None if absent), keys taken before reading
    dirs: list[tuple[str, StatKey | None]] = dataclasses.field(default_factory=list)
    inputs: list[tuple[str, str, StatKey | None]] = dataclasses.field(default_factory=list)
    listing: tuple[list[str], tuple[str, ...], list[str] | None] | None = None  # see Depmod.listing


class Depmod:
    """One depmod run over ``paths.moddir``.

    ``config_paths``: depmod.d directories or files (default: paths.depmod_dirs).
    ``system_map``/``symvers``: kernel symbols, like ``depmod -F``/``-E``.
    ``check_unresolved``: report undefined symbols nothing provides, like ``depmod -e``.
    ``jobs``: worker processes for reading modules (default: usable CPUs).
    ``known``: modules parsed before, by path, each with its file's StatKey then
    (DepmodCache.scans); a file whose key is unchanged is not read again.
    ``generation``: the kmod whose output to reproduce (default: ``detect_generation``).
    ``config``: depmod.d as already loaded from config_paths (default: load it).
    """

    def __init__(self, paths: KmodPaths, config_paths: list[str] | None = None,
                 system_map: str | None = None, symvers: str | None = None,
                 check_unresolved: bool = False, jobs: int | None = None,
                 known: dict[str, tuple[StatKey, Scan]] | None = None,
                 extensions: tuple[str, ...] = MODULE_EXTENSIONS,
                 generation: KmodGeneration | None = None, config: DepmodConfig | None = None) -> None:
        self.paths = paths
        self.generation = generation if generation is not None else detect_generation(paths)
        self.dirname = paths.moddir
        self.config_paths = paths.depmod_dirs if config_paths is None else config_paths
        self.system_map = system_map
        self.symvers = symvers
        self.check_unresolved = check_unresolved
        self.jobs = jobs or len(os.sched_getaffinity(0))
        self.known = known or {}
        self.extensions = extensions
        self.warnings: list[str] = []
        self.dirs: list[tuple[str, StatKey | None]] = []  # every directory walked but dirname
        # dirname's entries as the walk saw them: (skip, extensions, walk_listing(...))
        self.listing: tuple[list[str], tuple[str, ...], list[str] | None] | None = None
        self.inputs: dict[str, tuple[str, StatKey | None, bytes | None]] = {}  # path -> option, key, bytes
        self._config = config

    @property
    def config(self) -> DepmodConfig:
        if self._config is None:
            self._config = DepmodConfig.load(self.config_paths, self.paths.kernel_release)
        return self._config

    # -- discovery -------------------------------------------------------------------

    def find_modules(self, cfg: DepmodConfig) -> dict[str, Module]:
        """Walk the module directory, then each external one, resolving duplicate names."""
        check_moddir(self.dirname)
        by_name: dict[str, Module] = {}
        by_uncrelpath: dict[str, Module] = {}
        skip = {"build", "source", *cfg.excludes}
        for top in [self.dirname, *reversed(cfg.externals)]:
            if os.path.isdir(top):
                self._walk(top, skip, cfg, by_name, by_uncrelpath)
            else:  # one that appears later must be walked then
                self.dirs.append((top, path_key(top)))
        return by_name

    def _walk(self, top: str, skip: set[str], cfg: DepmodConfig,
              by_name: dict[str, Module], by_uncrelpath: dict[str, Module]) -> None:
        """Depth-first in readdir order, entering each directory as it is met, exactly as
        depmod visits them; a stack instead of recursion, so that no tree is too deep."""
        stack: list[t.Any] = []  # os.scandir iterators

        def enter(directory: str) -> None:
            # the key before the listing: an entry added or removed after it changes the key
            if directory == self.dirname:
                self.listing = (sorted(skip), self.extensions, walk_listing(directory, skip, self.extensions))
            else:
                self.dirs.append((directory, path_key(directory)))
            if len(directory) >= _PATH_MAX:  # where depmod's openat fails too
                self.warnings.append(f"path too long, not searched: {directory[:200]}...")
                return
            try:
                stack.append(os.scandir(directory))
            except OSError as exc:
                self.warnings.append(f"could not open directory {directory}: {exc.strerror}")

        enter(top)
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop().close()
            elif entry.name in skip:
                continue
            else:
                try:
                    is_dir = entry.is_dir()
                    is_module = not is_dir and entry.is_file() and entry.name.endswith(self.extensions)
                except OSError as exc:  # e.g. a symlink loop: depmod reports it and goes on
                    self.warnings.append(f"cannot stat {entry.path}: {reason(exc)}")
                    continue
                if is_dir:
                    enter(entry.path)
                elif is_module:
                    self._add(entry.path, cfg, by_name, by_uncrelpath)

    def _add(self, path: str, cfg: DepmodConfig, by_name: dict[str, Module],
             by_uncrelpath: dict[str, Module]) -> None:
        base = path.rfind("/") + 1
        name = modname_normalize(path[base:])
        stem_len = base + len(name)
        old = by_name.get(name)
        if old is not None:
            if self._existing_wins(cfg, old, path, stem_len):
                return
            del by_name[name]
            if old.uncrelpath is not None:
                by_uncrelpath.pop(old.uncrelpath, None)
        inside = path.startswith(self.dirname) and path[len(self.dirname):len(self.dirname) + 1] == "/"
        mod = Module(name, path, path[len(self.dirname) + 1:] if inside else None, stem_len)
        unc = mod.uncrelpath
        if unc is not None:
            if unc in by_uncrelpath:
                self.warnings.append(f"could not add module {path}: File exists")
                return
            by_uncrelpath[unc] = mod
        by_name[name] = mod

    def _existing_wins(self, cfg: DepmodConfig, old: Module, new_path: str, new_stem_len: int) -> bool:
        """depmod_module_is_higher_priority (tools/depmod.c), quirks included."""
        def rel(path: str, stem_len: int) -> str | None:
            if path.startswith(self.dirname):
                return path[len(self.dirname) + 1:stem_len]
            return None

        def under(path: str, top: str) -> bool:
            return len(path) > len(top) and path[len(top)] == "/" and path.startswith(top)

        new_rel, old_rel = rel(new_path, new_stem_len), rel(old.path, old.stem_len)
        new_stem, old_stem = new_path[:new_stem_len], old.path[:old.stem_len]
        for override in reversed(cfg.overrides):  # the last override line wins
            if new_rel == override:
                return False
            if old_rel == override:
                return True
        i = 0
        builtin_prio = old_prio = new_prio = -1
        for search in reversed(cfg.searches):
            if search == BUILTIN:
                builtin_prio = i
            elif search == EXTERNAL:
                for ext in reversed(cfg.externals):
                    if under(new_stem, ext):
                        new_prio = i
                    if under(old_stem, ext):
                        old_prio = i
                    i += 1
            elif new_rel is not None and under(new_rel, search):
                new_prio = i
            elif old_rel is not None and under(old_rel, search):
                old_prio = i
            i += 1
        new_prio = builtin_prio if new_prio < 0 else new_prio
        old_prio = builtin_prio if old_prio < 0 else old_prio
        return new_prio <= old_prio

    def order(self, by_name: dict[str, Module]) -> list[Module]:
        """Hash-table order, then stable-sorted by modules.order (depmod_modules_sort)."""
        mods = [by_name[os.fsdecode(k)] for k in iteration_order(map(os.fsencode, by_name), 512)]
        data = self._input(os.path.join(self.dirname, "modules.order"))
        if data is not None:
            lines = data.split(b"\n")
            if lines[-1]:
                self.warnings.append(f"{self.dirname}/modules.order:{len(lines)} corrupted line misses '\\n'")
            else:
                by_unc = {m.uncrelpath: m for m in mods if m.uncrelpath is not None}
                total = len(lines)  # lines + 1, as depmod counts
                first_wins = self.generation.order_first_wins
                for lineno, line in enumerate(lines[:-1], 1):
                    mod = by_unc.get(os.fsdecode(line))
                    if mod is not None and not (first_wins and mod.sort_idx < 0):
                        # kmod <= 33: the last occurrence counts; kmod 34: the first
                        mod.sort_idx = lineno - total
                mods.sort(key=lambda m: m.sort_idx)
        for idx, mod in enumerate(mods):
            mod.idx = idx
        return mods

    # -- reading modules ---------------------------------------------------------------

    def scan(self, mods: list[Module], keys: dict[str, StatKey]) -> dict[str, Scan]:
        """scan_module for every module, in parallel, reusing cached results of unchanged files."""
        with resolution_cache():  # each module directory resolved once per process
            return self._scan(mods, keys)

    def _scan(self, mods: list[Module], keys: dict[str, StatKey]) -> dict[str, Scan]:
        cached = self.known
        results: dict[str, Scan] = {}
        todo = []
        for mod in mods:
            hit = cached.get(mod.path)
            if hit is not None and mod.path in keys and tuple(hit[0]) == keys[mod.path]:
                results[mod.path] = hit[1]
            else:
                todo.append(mod.path)
        if len(todo) >= _PARALLEL_MIN and self.jobs > 1:
            workers = min(self.jobs, len(todo) // _PARALLEL_MIN + 1)
            try:
                pool = multiprocessing.get_context("fork").Pool(workers)
            except (OSError, ImportError) as exc:  # e.g. no /dev/shm for the pool's semaphores
                self.warnings.append(f"reading modules in one process: {exc}")
            else:
                # big chunks: each round trip costs more than reading a few modules
                with pool:
                    results.update(zip(todo, pool.imap(scan_module, todo, chunksize=len(todo) // (workers * 8) + 1)))
                return results
        results.update((path, scan_module(path)) for path in todo)
        return results

    def _input(self, path: str) -> bytes | None:
        """An input file (modules.order, System.map, ...), read once per run; its StatKey
        is taken first, for the cache."""
        if path not in self.inputs:
            option = {self.symvers: "symvers", self.system_map: "system_map"}.get(path, "")
            key = input_key(path, option)
            self.inputs[path] = (option, key, read_input(path, option) if key is not None else None)
        return self.inputs[path][2]

    # -- symbols and dependencies ------------------------------------------------------

    def kernel_symbols(self) -> dict[bytes, tuple[Module | None, int]]:
        """Symbols of vmlinux from Module.symvers (preferred, like depmod) or System.map."""
        symbols: dict[bytes, tuple[Module | None, int]] = {}
        if self.symvers:
            for crc, name in _read_symvers(self.symvers, self.warnings, self._input(self.symvers)):
                symbols[name] = (None, crc)
        elif self.system_map:
            for name in _read_system_map(self.system_map, self.warnings, self._input(self.system_map)):
                symbols[name] = (None, 0)
            if not symbols:  # e.g. Debian's placeholder: every kernel symbol would look unresolved
                raise KmodError(f"System.map {self.system_map} lists no exported (__ksymtab_) symbols",
                                path=self.system_map)
        else:
            return symbols
        symbols[b"__this_module"] = (None, 0)
        symbols[b"_GLOBAL_OFFSET_TABLE_"] = (None, 0)
        symbols.setdefault(b"TOC.", (None, 0))
        return symbols

    def link(self, mods: list[Module], scans: dict[str, Scan],
             symbols: dict[bytes, tuple[Module | None, int]]) -> list[dict[str, str]]:
        """Exports into symbols, undefined symbols into module deps; returns unresolved ones."""
        for mod in mods:
            scan = scans[mod.path]
            error, names, crcs, info = scan[0], scan[1], scan[2], scan[6]
            if error is not None:
                self.warnings.append(f"failed to load symbols from {mod.path}: {error}")
            # the last module (in array order) exporting a name owns it
            symbols.update(zip(_names(names), zip(itertools.repeat(mod), array.array("Q", crcs))))
            mod.info = info
        unresolved = []
        report = self.check_unresolved and bool(self.symvers or self.system_map)
        check_crcs = report and bool(self.symvers)
        get = symbols.get
        for mod in mods:
            names, weak, crcs = scans[mod.path][3:6]
            seen: set[Module] = set()
            wanted_crcs = array.array("Q", crcs) if check_crcs else None
            for i, name in enumerate(_names(names)):
                found = get(name[1:] if name[:1] == b"." else name)
                if found is None:
                    if report and not weak[i]:
                        unresolved.append({"module": mod.name, "path": mod.path, "symbol": os.fsdecode(name)})
                    continue
                owner = found[0]
                if wanted_crcs is not None and not weak[i] and found[1] != wanted_crcs[i]:
                    self.warnings.append(f"{mod.path} disagrees about version of symbol {os.fsdecode(name)}")
                if owner is not None and owner not in seen:
                    seen.add(owner)
                    mod.deps.append(owner)
                    owner.users += 1
        return unresolved

    @staticmethod
    def sort_dependencies(mods: list[Module]) -> None:
        """depmod_calculate_dependencies: LIFO topological sort; a cycle is fatal."""
        users = [m.users for m in mods]
        stack = [m.idx for m in mods if m.users == 0]
        done = 0
        while stack:
            mod = mods[stack.pop()]
            mod.dep_sort_idx = done
            done += 1
            for dep in mod.deps:
                users[dep.idx] -= 1
                if users[dep.idx] == 0:
                    stack.append(dep.idx)
        if done < len(mods):
            raise DependencyCycleError(_describe_cycles([m for m in mods if users[m.idx] > 0]),
                                       cycle=[m.name for m in mods if users[m.idx] > 0])
        for mod in mods:
            mod.deps.sort(key=lambda d: d.dep_sort_idx)

    # -- the whole run -------------------------------------------------------------

    def build(self) -> DepmodResult:
        """Compute every output file; raises KmodError (e.g. DependencyCycleError) instead."""
        check_moddir(self.dirname)
        for name in self.generation.depmod_files:  # fail before the work, not when publishing
            check_output(os.path.join(self.dirname, name))
        cfg = self.config
        self.warnings.extend(cfg.warnings)
        by_name = self.find_modules(cfg)
        keys: dict[str, StatKey] = {}
        for mod in by_name.values():
            key = path_key(mod.path)
            if key is not None:  # else scan_module reports the error
                keys[mod.path] = key
        for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):  # fail early
            self._input(os.path.join(self.dirname, name))
        mods = self.order(by_name)
        symbols = self.kernel_symbols()
        scans = self.scan(mods, keys)
        unresolved = self.link(mods, scans, symbols)
        self.sort_dependencies(mods)
        gen = self.generation
        pre = gen.preorder_index
        files = dict.fromkeys(gen.depmod_files, b"")
        # The alias trie is the biggest part: build it in a forked child (which inherits
        # mods) while this process builds the others.
        other_half = self._in_child(lambda warnings: output.aliases(mods, warnings, pre))
        files["modules.dep"], files["modules.dep.bin"] = output.deps(mods, pre)
        files["modules.symbols"], files["modules.symbols.bin"] = output.symbols(symbols, pre)
        files["modules.softdep"] = output.softdeps(mods)
        if gen.weakdep:
            files["modules.weakdep"] = output.weakdeps(mods)
        builtin = self._input(os.path.join(self.dirname, "modules.builtin"))
        files["modules.builtin.bin"] = output.builtin_index(builtin, self.warnings, pre)
        modinfo = self._input(os.path.join(self.dirname, "modules.builtin.modinfo"))
        files["modules.builtin.alias.bin"] = output.builtin_alias_index(
            modinfo, self.warnings, pre, gen.builtin_alias_inverted)
        files["modules.devname"] = output.devnames(mods, self.warnings)
        files["modules.alias"], files["modules.alias.bin"] = other_half()
        inputs = [(path, option, key) for path, (option, key, _data) in self.inputs.items()]
        return DepmodResult(files, mods, self.warnings, unresolved, scans, keys, gen,
                            self.dirs, inputs, self.listing)

    def _in_child(self, work: t.Callable[[list[str]], T]) -> t.Callable[[], T]:
        """Start work(warnings) in a forked process; the returned function waits for its
        result. Without a second CPU, or if the child fails, work runs in this process."""
        def here() -> T:
            return work(self.warnings)

        if self.jobs < 2:
            return here
        ctx = multiprocessing.get_context("fork")
        try:
            receiver, sender = ctx.Pipe(duplex=False)
        except OSError:
            return here

        def child() -> None:
            warnings: list[str] = []
            sender.send((work(warnings), warnings))

        proc = ctx.Process(target=child, daemon=True)
        try:
            proc.start()
        except OSError:
            return here
        sender.close()

        def result() -> T:
            try:
                value, warnings = receiver.recv()
            except (EOFError, OSError):  # the child died: do it here
                proc.join()
                return here()
            proc.join()
            self.warnings.extend(warnings)
            return value
        return result


def _read_symvers(path: str, warnings: list[str], data: bytes | None = None) -> list[tuple[int, bytes]]:
    """Module.symvers lines "crc<TAB>symbol<TAB>vmlinux<TAB>..." (depmod_load_symvers)."""
    data = _read_config_file(path, "Module.symvers", data)
    out = []
    for lineno, line in enumerate(output.fgets_lines(data), 1):
        tokens = [tok for tok in re.split(rb"[ \t]", line) if tok]
        if len(tokens) < 3 or tokens[2] != b"vmlinux":
            continue
        if not re.fullmatch(rb"\s*[+-]?(0[xX])?[0-9a-fA-F]+", tokens[0]):
            warnings.append(f"{path}:{lineno} Invalid symbol version {os.fsdecode(tokens[0])}")
            continue
        out.append((int(tokens[0], 16) % 2**64, tokens[1]))
    return out


def _read_system_map(path: str, warnings: list[str], data: bytes | None = None) -> list[bytes]:
    """System.map lines "addr type __ksymtab_NAME" (depmod_load_system_map)."""
    data = _read_config_file(path, "System.map", data)
    out = []
    for lineno, line in enumerate(output.fgets_lines(data), 1):
        parts = line.rstrip(b"\n").split(b" ", 2)
        if len(parts) < 3:
            warnings.append(f"{path}:{lineno}: invalid line: {os.fsdecode(line)}")
            continue
        if parts[2].startswith(b"__ksymtab_"):
            out.append(parts[2][len(b"__ksymtab_"):])
    return out


def _read_config_file(path: str, what: str, data: bytes | None = None) -> bytes:
    """The file of option system_map/symvers (data: already read); it must exist."""
    option = "symvers" if what == "Module.symvers" else "system_map"
    if data is None:
        data = read_input(path, option)
    if data is None:
        raise KmodError(f"could not load {what} {path} (option {option}): No such file or directory",
                        path=path, option=option)
    return data


def _describe_cycles(stuck: list[Module]) -> str:
    """Like depmod_report_cycles: each cycle once, as "a -> b -> a"."""
    members = set(stuck)
    cycles = []
    reported: set[Module] = set()
    for start in stuck:
        if start in reported:
            continue
        # follow deps inside the stuck set until a module repeats
        path, pos = [start], {start: 0}
        node: Module | None = start
        while node is not None:
            node = next((d for d in node.deps if d in members), None)
            if node is None or node in reported:
                break
            if node in pos:
                cycle = path[pos[node]:]
                reported.update(cycle)
                cycles.append(" -> ".join(m.name for m in cycle + [node]))
                break
            pos[node] = len(path)
            path.append(node)
    lines = [f"Cycle detected: {c}" for c in cycles]
    lines.append(f"Found {len(stuck)} modules in dependency cycles!")
    return "\n".join(lines)
