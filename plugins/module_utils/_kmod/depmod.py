# SPDX-License-Identifier: GPL-3.0-or-later
"""depmod in Python: the modules.* indexes of a module tree, byte-identical to kmod's.

``Depmod(paths, ...).build()`` only computes (nothing is written); ``write_indexes``
publishes the result file by file, leaving files whose bytes are unchanged untouched.
The order of everything follows tools/depmod.c of kmod 30: readdir-order walk with
depmod.d duplicate rules, hash-table module order re-sorted by modules.order, LIFO
topological sort, index tries. What differs between kmod 30 and kmod 34 (the .bin
layout, modules.weakdep, duplicate modules.order lines) follows the ``KmodGeneration``
(docs/kmod-generations.md).
"""

from __future__ import annotations

import array
import dataclasses
import errno
import functools
import hashlib
import itertools
import marshal
import multiprocessing
import os
import re
import stat
import sys
import typing as t

from . import atomic
from .depmod_config import BUILTIN, EXTERNAL, DepmodConfig, file_kind
from .elf import parse_module
from .errors import DependencyCycleError, KmodError
from .file import read_module_bytes
from .generation import KmodGeneration, detect_generation
from .hashtable import iteration_order
from .index_writer import IndexBuilder
from .names import MODULE_EXTENSIONS, alias_normalize, modname_normalize
from .lock import locked_dir, remove_stale_temps
from .paths import PathError, open_file, resolve_host

if t.TYPE_CHECKING:
    from .paths import KmodPaths

# kmod 30 writes these, in this order (depmod_output's depfiles[]); kmod >= 33 adds
# modules.weakdep after modules.softdep: KmodGeneration.depmod_files has the list per generation.
OUTPUT_FILES = (
    "modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep",
    "modules.symbols", "modules.symbols.bin", "modules.builtin.bin", "modules.builtin.alias.bin",
    "modules.devname",
)
# Bump when the cache file's structure changes. (Code changes are covered by _engine_digest.)
CACHE_FORMAT = 1
# Below this many modules to read, forking workers costs more than it saves.
_PARALLEL_MIN = 64
_PATH_MAX = 4096
_CACHE_FILES = 8  # module trees remembered per cache directory

# What depmod needs from one module, packed so that it crosses process boundaries
# (and the cache) cheaply: (error or None, export names, export CRCs, undefined names,
# undefined weak flags, undefined CRCs, [(modinfo key, value)] for alias/softdep/weakdep).
# Names are NUL-joined bytes, CRCs native u64 arrays, weak flags one byte each.
Scan = tuple[t.Optional[str], bytes, bytes, bytes, bytes, bytes, list[tuple[str, str]]]
# (size, mtime_ns, ctime_ns, inode, device): a file with the same key has the same content
StatKey = tuple[int, int, int, int, int]
T = t.TypeVar("T")


def scan_module(path: str) -> Scan:
    """What depmod reads from one module file. A file libkmod cannot open or parse
    yields the error and nothing else: depmod logs it and keeps the module, dependency-less."""
    try:
        data = read_module_bytes(path)[0]
        elf = parse_module(data, path)
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
        return _enc(self.name)

    @functools.cached_property
    def shown_path(self) -> bytes:
        """How modules.dep names the file: relative to the module directory if inside it."""
        return _enc(self.relpath if self.relpath is not None else self.path)

    @property
    def uncrelpath(self) -> str | None:
        """relpath cut after "dir/NAME.ko": the spelling modules.order uses."""
        if self.relpath is None:
            return None
        return self.relpath[:self.stem_len - (len(self.path) - len(self.relpath)) + 3]


@dataclasses.dataclass
class DepmodSummary:
    module_count: int
    warnings: list[str]
    unresolved: list[dict[str, str]]  # {"module", "path", "symbol"}; only when check_unresolved


@dataclasses.dataclass
class DepmodResult:
    files: dict[str, bytes]  # generation.depmod_files -> content
    modules: list[Module]  # array order
    warnings: list[str]
    unresolved: list[dict[str, str]]
    fingerprint: str  # of every input (see Depmod._inputs)
    scans: dict[str, Scan]
    stat_keys: dict[str, StatKey]
    generation: KmodGeneration = dataclasses.field(default_factory=KmodGeneration)


class Depmod:
    """One depmod run over ``paths.moddir``.

    ``config_paths``: depmod.d directories or files (default: paths.depmod_dirs).
    ``system_map``/``symvers``: kernel symbols, like ``depmod -F``/``-E``.
    ``check_unresolved``: report undefined symbols nothing provides, like ``depmod -e``.
    ``jobs``: worker processes for reading modules (default: usable CPUs).
    ``cache_file``: where parsed modules are remembered between runs (None: no cache).
    ``generation``: the kmod whose output to reproduce (default: ``detect_generation``).
    """

    def __init__(self, paths: KmodPaths, config_paths: list[str] | None = None,
                 system_map: str | None = None, symvers: str | None = None,
                 check_unresolved: bool = False, jobs: int | None = None,
                 cache_file: str | None = None,
                 extensions: tuple[str, ...] = MODULE_EXTENSIONS,
                 generation: KmodGeneration | None = None) -> None:
        self.paths = paths
        self.generation = generation if generation is not None else detect_generation(paths)
        self.dirname = paths.moddir
        self.config_paths = paths.depmod_dirs if config_paths is None else config_paths
        self.system_map = system_map
        self.symvers = symvers
        self.check_unresolved = check_unresolved
        self.jobs = jobs or len(os.sched_getaffinity(0))
        self.cache_file = cache_file
        self.extensions = extensions
        self.warnings: list[str] = []
        self._inputs_read: dict[str, bytes | None] = {}

    # -- discovery -------------------------------------------------------------------

    def find_modules(self, cfg: DepmodConfig) -> dict[str, Module]:
        """Walk the module directory, then each external one, resolving duplicate names."""
        _check_moddir(self.dirname)
        by_name: dict[str, Module] = {}
        by_uncrelpath: dict[str, Module] = {}
        skip = {"build", "source", *cfg.excludes}
        for top in [self.dirname, *reversed(cfg.externals)]:
            if os.path.isdir(top):
                self._walk(top, skip, cfg, by_name, by_uncrelpath)
        return by_name

    def _walk(self, top: str, skip: set[str], cfg: DepmodConfig,
              by_name: dict[str, Module], by_uncrelpath: dict[str, Module]) -> None:
        """Depth-first in readdir order, entering each directory as it is met, exactly as
        depmod visits them; a stack instead of recursion, so that no tree is too deep."""
        stack: list[t.Iterator[os.DirEntry[str]]] = []

        def enter(directory: str) -> None:
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
                    self.warnings.append(f"cannot stat {entry.path}: {_reason(exc)}")
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
        """depmod_module_is_higher_priority, quirks included (see kmod-reference §2.4)."""
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
        cached = self._cache.get("modules", {})
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

    @functools.cached_property
    def _cache(self) -> dict[str, t.Any]:
        if not self.cache_file:
            return {}
        try:
            with open(self.cache_file, "rb") as f:
                if not _trusted(os.fstat(f.fileno())):
                    return {}
                data = marshal.load(f)
        except (OSError, EOFError, ValueError, TypeError):
            return {}
        if not isinstance(data, dict) or data.get("format") != _cache_format() or data.get("moddir") != self.dirname:
            return {}
        return data

    def save_cache(self, result: DepmodResult) -> None:
        """Remember the parsed modules and a summary of result for the next run."""
        if not self.cache_file or _cache_format() is None:
            return
        summary = {
            "fingerprint": result.fingerprint,
            "digests": {name: hashlib.sha256(data).hexdigest() for name, data in result.files.items()},
            "module_count": len(result.modules), "warnings": result.warnings, "unresolved": result.unresolved,
        }
        modules = {p: (result.stat_keys[p], r) for p, r in result.scans.items()
                   if p in result.stat_keys and r[0] is None}
        data = marshal.dumps({"format": _cache_format(), "moddir": self.dirname, "modules": modules,
                              "summary": summary})
        cache_dir = os.path.dirname(self.cache_file)
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            with locked_dir(cache_dir) as locked:
                remove_stale_temps(cache_dir, locked, self.warnings)
                if os.path.lexists(self.cache_file) and not _trusted(os.lstat(self.cache_file)):
                    atomic.remove_if_exists(self.cache_file)
                atomic.write_if_changed(self.cache_file, data, 0o600)
                _prune_cache_dir(cache_dir, keep=self.cache_file)
        except (OSError, ValueError, KmodError) as exc:  # a cache that cannot be written only costs time
            self.warnings.append(f"cannot write cache {self.cache_file}: {exc}")

    def up_to_date(self) -> DepmodSummary | None:
        """The cached summary, if every input is as it was when it was made and every
        output file still has the bytes that run computed; None means build()."""
        summary = self._cache.get("summary")
        if not summary or summary["fingerprint"] != self._inputs[3]:
            return None
        for name, digest in summary["digests"].items():
            data = read_output(os.path.join(self.dirname, name))
            if data is None or hashlib.sha256(data).hexdigest() != digest:
                return None
        return DepmodSummary(summary["module_count"], summary["warnings"], summary["unresolved"])

    @functools.cached_property
    def _inputs(self) -> tuple[DepmodConfig, dict[str, Module], dict[str, StatKey], str]:
        """Configuration, the modules found, their stat keys, and a fingerprint of
        everything depmod's output depends on."""
        _check_moddir(self.dirname)
        check_outputs(self.dirname)  # before anything reads them (up_to_date does)
        cfg = DepmodConfig.load(self.config_paths, self.paths.kernel_release)
        self.warnings.extend(cfg.warnings)
        by_name = self.find_modules(cfg)
        keys: dict[str, StatKey] = {}
        for mod in by_name.values():
            try:
                st = os.stat(mod.path)
            except OSError:
                continue  # scan_module reports the error
            keys[mod.path] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        aux = [os.path.join(self.dirname, n) for n in ("modules.order", "modules.builtin", "modules.builtin.modinfo")]
        aux += [p for p in (self.symvers, self.system_map) if p]
        digest = hashlib.sha256(marshal.dumps((
            _cache_format(), self.dirname, self.paths.kernel_release, self.extensions, self.check_unresolved,
            self.symvers, self.system_map, self.generation.version, sorted((m.path, keys.get(m.path)) for m in by_name.values()),
            [(p, self._input(p)) for p in aux], list(self.warnings),
        )))
        return cfg, by_name, keys, digest.hexdigest()

    def _input(self, path: str) -> bytes | None:
        """An auxiliary input (modules.order, System.map, ...), read once per run."""
        if path not in self._inputs_read:
            label = {self.symvers: "symvers", self.system_map: "system_map"}.get(path, "")
            self._inputs_read[path] = read_input(path, label)
        return self._inputs_read[path]

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
            error, names, crcs, info = (scans[mod.path][i] for i in (0, 1, 2, 6))
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
        by_name, keys, fingerprint = self._inputs[1:]
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
        other_half = self._in_child(lambda warnings: _aliases(mods, warnings, pre))
        files["modules.dep"], files["modules.dep.bin"] = _deps(mods, pre)
        files["modules.symbols"], files["modules.symbols.bin"] = _symbols(symbols, pre)
        files["modules.softdep"] = _softdeps(mods)
        if gen.weakdep:
            files["modules.weakdep"] = _weakdeps(mods)
        files["modules.builtin.bin"] = _builtin_index(self.dirname, self.warnings, pre)
        files["modules.builtin.alias.bin"] = _builtin_alias_index(self.dirname, self.warnings, pre)
        files["modules.devname"] = _devnames(mods, self.warnings)
        files["modules.alias"], files["modules.alias.bin"] = other_half()
        return DepmodResult(files, mods, self.warnings, unresolved, fingerprint, scans, keys, gen)

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


@functools.lru_cache(maxsize=None)
def _cache_format() -> str | None:
    """CACHE_FORMAT plus a digest of the engine's source and the Python version: a cache
    made by other code (an older collection) is never used. None when the source is not
    available, which disables the cache."""
    digest = hashlib.sha256(f"{CACHE_FORMAT} {sys.version}".encode())
    for name in (__name__, *(f"{__package__}.{m}" for m in (
            "atomic", "depmod_config", "elf", "errors", "file", "hashtable", "index_writer", "names"))):
        module = sys.modules.get(name)
        loader = getattr(getattr(module, "__spec__", None), "loader", None)
        try:
            source = loader.get_source(name) if loader is not None else None
        except (ImportError, OSError):
            source = None
        if source is None:
            return None
        # Ansible's collection loader returns bytes, importlib's loaders str
        digest.update(source if isinstance(source, bytes) else source.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _prune_cache_dir(directory: str, keep: str, limit: int = _CACHE_FILES) -> None:
    """Keep the cache files of the most recently indexed module trees only (a host has a
    few kernels; removed kernels and scratch trees must not pile up)."""
    others = []
    for entry in os.scandir(directory):
        if entry.name.startswith("depmod-") and entry.name.endswith(".marshal") and entry.path != keep:
            others.append((entry.stat().st_mtime_ns, entry.path))
    for _mtime, path in sorted(others, reverse=True)[limit - 1:]:
        atomic.remove_if_exists(path)


def _trusted(st: os.stat_result) -> bool:
    """Only a cache this user wrote and nobody else can change is used."""
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def default_cache_file(paths: KmodPaths, cache_dir: str = "/var/cache/kernel-kmod") -> str:
    """One cache file per module directory, outside the tree it describes."""
    digest = hashlib.sha256(os.fsencode(paths.moddir)).hexdigest()[:16]
    return os.path.join(cache_dir, f"depmod-{digest}.marshal")


def stale_files(moddir: str, files: dict[str, bytes]) -> list[str]:
    """The output files whose bytes on disk differ (or which are missing)."""
    return [name for name, data in files.items() if read_output(os.path.join(moddir, name)) != data]


def write_indexes(moddir: str, files: dict[str, bytes]) -> list[str]:
    """Atomically replace each file whose bytes differ; returns the names written."""
    return publish(moddir, files).written


@dataclasses.dataclass
class Published:
    written: list[str]  # output files replaced
    removed: list[str]  # temporary files of killed runs removed
    warnings: list[str]


def publish(moddir: str, files: dict[str, bytes]) -> Published:
    """Write the files whose bytes differ, each atomically, holding the directory's lock;
    first remove what killed runs left (see remove_stale_temps)."""
    for name in files:
        check_output(os.path.join(moddir, name))
    warnings: list[str] = []
    with locked_dir(moddir) as locked:
        removed = remove_stale_temps(moddir, locked, warnings)
        written = [name for name in files if atomic.write_if_changed(os.path.join(moddir, name), files[name], 0o644)]
    return Published(written, removed, warnings)


def _check_moddir(moddir: str) -> None:
    try:
        st = os.stat(moddir)
    except FileNotFoundError:
        raise KmodError(f"Module directory {moddir} does not exist", path=moddir) from None
    except (OSError, ValueError) as exc:
        raise KmodError(f"Module directory {moddir!r} cannot be used: {_reason(exc)}", path=moddir) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise KmodError(f"Module directory {moddir} is {file_kind(st.st_mode)}, not a directory", path=moddir)


def check_output(path: str) -> None:
    """An index file we are to replace must be a regular file or absent. A directory cannot
    be replaced; a symlink (even one into the tree) or a FIFO is refused rather than read
    through (a FIFO would block forever) or silently replaced: say so, naming it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise KmodError(f"Index file {path!r} cannot be used: {_reason(exc)}", path=path) from exc
    if stat.S_ISREG(st.st_mode):
        return
    kind = file_kind(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                kind = "a symlink loop"
    raise KmodError(f"Index file {path} is {kind}, not a regular file: kmod_depmod will not replace it; "
                    "remove it and run again", path=path)


def check_outputs(moddir: str, names: t.Iterable[str] = OUTPUT_FILES) -> None:
    """check_output for every index file."""
    for name in names:
        check_output(os.path.join(moddir, name))


def read_output(path: str) -> bytes | None:
    """An index file's bytes (None if absent), once check_output allows it."""
    check_output(path)
    return read_input(path)


def read_input(path: str, option: str = "") -> bytes | None:
    """The bytes of an input file; None if it does not exist (or is a dangling symlink).
    Anything else that is not a regular file (a directory, a symlink loop, a FIFO, a
    device) is a KmodError naming it (and option, the module option that named it); a
    FIFO or device is never opened."""
    what = f"{path} (option {option})" if option else path
    try:
        st = os.stat(resolve_host(path))
    except PathError as exc:  # a NUL byte, a symlink loop: say which option named the file
        raise KmodError(f"Cannot read {what}: {exc.msg}", path=path) from exc
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KmodError(f"Cannot read {what}: {_reason(exc)}", path=path) from exc
    try:
        if not stat.S_ISREG(st.st_mode):
            raise KmodError(f"{what} is {file_kind(st.st_mode)}, not a regular file", path=path)
        fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK)  # never waits, even on a FIFO; confined to root
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise KmodError(f"{what} is {file_kind(st.st_mode)}, not a regular file", path=path)
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KmodError(f"Cannot read {what}: {_reason(exc)}", path=path) from exc


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.ELOOP:
            return "a symlink loop (too many levels of symbolic links)"
        return exc.strerror or str(exc)
    return str(exc)  # ValueError: e.g. "embedded null byte"


# -- output builders (depmod_output's callbacks) --------------------------------------

def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # os.fsencode, minus its overhead


def _closure(mod: Module, memo: dict[int, frozenset[Module]]) -> frozenset[Module]:
    found = memo.get(mod.idx)
    if found is None:
        acc: set[Module] = set()
        for dep in mod.deps:
            acc.add(dep)
            acc |= _closure(dep, memo)
        found = memo[mod.idx] = frozenset(acc)
    return found


def _deps(mods: list[Module], preorder: bool) -> tuple[bytes, bytes]:
    text = []
    index = IndexBuilder()
    memo: dict[int, frozenset[Module]] = {}
    for mod in mods:
        deps = sorted(_closure(mod, memo), key=lambda d: d.dep_sort_idx)
        line = mod.shown_path + b":" + b"".join(b" " + d.shown_path for d in deps)
        text.append(line + b"\n")
        index.insert(mod.name_bytes, line, mod.idx)
    return b"".join(text), index.to_bytes(preorder)


def _aliases(mods: list[Module], warnings: list[str], preorder: bool) -> tuple[bytes, bytes]:
    text = [b"# Aliases extracted from modules themselves.\n"]
    index = IndexBuilder()
    for mod in mods:
        name = mod.name_bytes
        for key, value in mod.info:
            if key != "alias":
                continue
            text.append(b"alias " + _enc(value) + b" " + name + b"\n")
            try:
                normalized = alias_normalize(value) if "[" in value or "]" in value else value.replace("-", "_")
            except ValueError:
                warnings.append(f"Unmatched bracket in {value}")
                continue
            index.insert(_enc(normalized), name, mod.idx)
    return b"".join(text), index.to_bytes(preorder)


def _softdeps(mods: list[Module]) -> bytes:
    text = [b"# Soft dependencies extracted from modules themselves.\n"]
    for mod in mods:
        text.extend(b"softdep " + mod.name_bytes + b" " + _enc(v) + b"\n" for k, v in mod.info if k == "softdep")
    return b"".join(text)


def _weakdeps(mods: list[Module]) -> bytes:
    """modules.weakdep (kmod >= 33, depmod.c output_weakdeps): one line per weakdep= string."""
    text = [b"# Weak dependencies extracted from modules themselves.\n"]
    for mod in mods:
        text.extend(b"weakdep " + mod.name_bytes + b" " + _enc(v) + b"\n" for k, v in mod.info if k == "weakdep")
    return b"".join(text)


def _symbols(symbols: dict[bytes, tuple[Module | None, int]], preorder: bool) -> tuple[bytes, bytes]:
    text = [b"# Aliases for symbols, used by symbol_request().\n"]
    index = IndexBuilder()
    for key in iteration_order(symbols, 2048):
        owner = symbols[key][0]
        if owner is None:
            continue
        text.append(b"alias symbol:" + key + b" " + owner.name_bytes + b"\n")
        index.insert(b"symbol:" + key, owner.name_bytes, owner.idx)
    return b"".join(text), index.to_bytes(preorder)


def _fgets_lines(data: bytes) -> list[bytes]:
    """Lines as fgets returns them: split after each newline, which they keep."""
    lines = data.split(b"\n")
    last = lines.pop()
    return [line + b"\n" for line in lines] + ([last] if last else [])


def _read_optional(path: str, warnings: list[str]) -> bytes | None:  # pylint: disable=unused-argument
    """An optional input in the module directory: None if missing; KmodError if unusable."""
    return read_input(path)


def _builtin_index(dirname: str, warnings: list[str], preorder: bool) -> bytes:
    """modules.builtin.bin; 0 bytes when modules.builtin is missing, as depmod publishes it."""
    data = _read_optional(os.path.join(dirname, "modules.builtin"), warnings)
    if data is None:
        return b""
    index = IndexBuilder()
    for line in _fgets_lines(data):
        if not line[:1].isalpha():
            warnings.append(f"Invalid modules.builtin line: {line.decode(errors='replace')}")
            continue
        # path_to_modname: basename, cut at the first '.', '-' -> '_' (a newline
        # survives when the line has no '.', as in kmod)
        base = line.rsplit(b"/", 1)[-1]
        index.insert(base.split(b".", 1)[0].replace(b"-", b"_"), b"", 0)
    return index.to_bytes(preorder)


def _builtin_alias_index(dirname: str, warnings: list[str], preorder: bool) -> bytes:
    """modules.builtin.alias.bin from modules.builtin.modinfo, with the stream parser's quirks."""
    data = _read_optional(os.path.join(dirname, "modules.builtin.modinfo"), warnings)
    if data is None:
        return b""
    index = IndexBuilder()
    pos, end = 0, len(data)

    def read_to(stop: int) -> tuple[bytes, bool]:
        # flush_stream_to: read until stop, NUL or EOF; True if it ended at stop
        nonlocal pos
        start = pos
        while pos < end and data[pos] != stop and data[pos] != 0:
            pos += 1
        chunk, ok = data[start:pos], pos < end and data[pos] == stop
        pos += 1 if pos < end else 0
        return chunk, ok

    while pos < end:
        modname, ok = read_to(0x2E)  # '.'
        if not ok or not modname:
            continue
        key, ok = read_to(0x3D)  # '='
        if not ok or key != b"alias":
            read_to(0)
            continue
        value, ok = read_to(0)
        if not ok or not value:
            continue
        try:
            alias = alias_normalize(os.fsdecode(value))
        except ValueError:
            warnings.append(f"Unmatched bracket in {os.fsdecode(value)}")
            continue
        index.insert(_enc(alias), modname, 0)
    return index.to_bytes(preorder)


_MAJOR_MINOR = {
    b"c": re.compile(rb"char-major-\s*([+-]?\d+)-\s*([+-]?\d+)"),
    b"b": re.compile(rb"block-major-\s*([+-]?\d+)-\s*([+-]?\d+)"),
}


def _devnames(mods: list[Module], warnings: list[str]) -> bytes:
    text = []
    for mod in mods:
        devname = None
        node = None
        for key, value in mod.info:
            if key != "alias":
                continue
            raw = _enc(value)
            if raw.startswith(b"devname:"):
                devname = raw[len(b"devname:"):]
            else:
                for kind, pattern in _MAJOR_MINOR.items():
                    m = pattern.match(raw)
                    if m:  # sscanf("%u") wraps negative numbers
                        node = kind + b"%d:%d" % (int(m[1]) % 2**32, int(m[2]) % 2**32)
                        break
            if node is not None and devname is not None:
                break
        if devname is None:
            continue
        if node is None:
            warnings.append(f"Module '{mod.name}' has devname ({os.fsdecode(devname)}) "
                            "but lacks major and minor information. Ignoring.")
            continue
        if not text:
            text.append(b"# Device nodes to trigger on-demand module loading.\n")
        text.append(mod.name_bytes + b" " + devname + b" " + node + b"\n")
    return b"".join(text)


def _read_symvers(path: str, warnings: list[str], data: bytes | None = None) -> list[tuple[int, bytes]]:
    """Module.symvers lines "crc<TAB>symbol<TAB>vmlinux<TAB>..." (depmod_load_symvers)."""
    data = _read_config_file(path, "Module.symvers", data)
    out = []
    for lineno, line in enumerate(_fgets_lines(data), 1):
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
    for lineno, line in enumerate(_fgets_lines(data), 1):
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
        node = start
        while True:
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
