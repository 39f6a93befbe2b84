# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""kmod_depmod's cache: what one run over a module tree learnt, for the next run.

One file per module tree (``default_cache_file``): a magic line, then two marshal objects
one after the other (the first one's size before it, in 8 bytes little-endian), so that a
run where nothing changed reads only the first, small one:

1. the header: the engine's digest (``cache_format``), the module directory and the
   *state* of the last run that published: a key of the options and depmod.d that shape
   the output, the entries of the module directory that the walk uses (its own StatKey
   changes with every index file written), the ``StatKey`` of every other directory
   walked, every module and every input
   file (modules.order, modules.builtin, modules.builtin.modinfo, System.map,
   Module.symvers), the SHA-256 of every index file written, and the summary reported;
2. the parsed modules (``depmod.Scan``) by path, each with its file's StatKey.

``up_to_date`` vouches for a run only if every one of those is as recorded: adding,
removing or renaming a module changes its directory's mtime and ctime, replacing one
changes its inode, rewriting one (even with its old size and mtime) its ctime; the
index files are compared by content. Any difference means a build, which reuses the
parsed modules whose StatKey is unchanged. A cache someone else could have written is
ignored; a cache made by other code (another version of the collection or Python) too.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import marshal
import os
import sys
import typing as t

from . import atomic
from .depmod_files import StatKey, input_key, path_key, stat_key, walk_listing
from .errors import KmodError
from .lock import locked_dir, remove_stale_temps

if t.TYPE_CHECKING:
    from .depmod import DepmodResult, Scan
    from .depmod_config import DepmodConfig
    from .generation import KmodGeneration
    from .paths import KmodPaths

# Bump when the cache file's structure changes. (Code changes are covered by cache_format.)
CACHE_FORMAT = 2
CACHE_FILES = 8  # module trees remembered per cache directory
_MAGIC = b"kernel.kmod depmod cache\n"
# The engine files whose code decides depmod's output: a change in any of them is a miss.
_ENGINE = ("atomic", "confdirs", "depmod", "depmod_cache", "depmod_config", "depmod_files", "depmod_output", "elf",
           "errors", "file", "generation", "hashtable", "index_writer", "names", "paths")


@dataclasses.dataclass
class DepmodSummary:
    module_count: int
    warnings: list[str]
    unresolved: list[dict[str, str]]  # {"module", "path", "symbol"}; only when check_unresolved


def options_key(moddir: str, kernel_release: str, cfg: DepmodConfig, generation: KmodGeneration,
                extensions: tuple[str, ...], check_unresolved: bool, symvers: str | None,
                system_map: str | None) -> tuple[t.Any, ...]:
    """Everything besides the files that decides the output (and the warnings)."""
    return (moddir, kernel_release, tuple(extensions), check_unresolved, symvers, system_map,
            generation.version, tuple(cfg.searches), tuple(cfg.overrides), tuple(cfg.externals),
            tuple(cfg.excludes), tuple(cfg.files), tuple(cfg.warnings))


def default_cache_file(paths: KmodPaths, cache_dir: str = "/var/cache/kernel-kmod") -> str:
    """One cache file per module directory, outside the tree it describes."""
    digest = hashlib.sha256(os.fsencode(paths.moddir)).hexdigest()[:16]
    return os.path.join(cache_dir, f"depmod-{digest}.marshal")


class DepmodCache:
    """The cache file ``path`` of the module directory ``moddir``."""

    def __init__(self, path: str, moddir: str) -> None:
        self.path = path
        self.moddir = moddir
        self._offset = 0  # where the parsed modules start
        self._key: StatKey | None = None  # of the file state was read from

    @functools.cached_property
    def state(self) -> dict[str, t.Any] | None:
        """The last run's state, None if there is no usable cache."""
        if cache_format() is None:
            return None
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if not _trusted(st):
                    return None
                # marshal.load(f) would call f.readinto once per value: slow; one read instead
                start = f.read(len(_MAGIC) + 8)
                size = int.from_bytes(start[len(_MAGIC):], "little")
                if start[:len(_MAGIC)] != _MAGIC or size > st.st_size:
                    return None
                header = marshal.loads(f.read(size))
                self._offset, self._key = len(start) + size, stat_key(st)
        except (OSError, EOFError, ValueError, TypeError, MemoryError):
            return None
        if (not isinstance(header, dict) or header.get("format") != cache_format()
                or header.get("moddir") != self.moddir):
            return None
        return header.get("state") or None

    def scans(self) -> dict[str, tuple[StatKey, Scan]]:
        """The parsed modules by path (empty if there is no usable cache)."""
        if self.state is None:
            return {}
        try:
            with open(self.path, "rb") as f:
                if stat_key(os.fstat(f.fileno())) != self._key:  # replaced since: its header was not checked
                    return {}
                f.seek(self._offset)
                scans = marshal.loads(f.read())
        except (OSError, EOFError, ValueError, TypeError, MemoryError):
            return {}
        return scans if isinstance(scans, dict) else {}

    def up_to_date(self, options: tuple[t.Any, ...], outputs: dict[str, bytes | None]) -> DepmodSummary | None:
        """The last run's summary if every input is as it was then and every index file
        (``outputs``: their bytes now) holds what it wrote; None means build."""
        state = self.state
        try:
            return self._vouch(state, options, outputs) if state is not None else None
        except (KeyError, TypeError, ValueError, AttributeError):  # a cache of unexpected shape
            return None

    def _vouch(self, state: dict[str, t.Any], options: tuple[t.Any, ...],
               outputs: dict[str, bytes | None]) -> DepmodSummary | None:
        if state["options"] != options or set(state["outputs"]) != set(outputs):
            return None
        # the inputs first: one that is not a regular file is an error (KmodError), as in a build
        if any(input_key(path, option) != key for path, option, key in state["inputs"]):
            return None
        skip, extensions, listing = state["listing"]
        if walk_listing(self.moddir, skip, tuple(extensions)) != listing:
            return None
        if any(path_key(path) != key for path, key in state["dirs"]):
            return None
        if any(path_key(path) != key for path, key in state["modules"]):
            return None
        for name, digest in state["outputs"].items():
            data = outputs[name]
            if data is None or hashlib.sha256(data).digest() != digest:
                return None
        return DepmodSummary(*state["summary"])

    def save(self, options: tuple[t.Any, ...], result: DepmodResult, warnings: list[str]) -> None:
        """Remember result (whose files are now on disk) of a run with options (options_key)
        for the next run; a cache that cannot be written only costs time: a warning says why."""
        if cache_format() is None:
            return
        state = {
            "options": options,
            "inputs": result.inputs, "dirs": result.dirs, "listing": result.listing,
            "modules": [(m.path, result.stat_keys.get(m.path)) for m in result.modules],
            "outputs": {name: hashlib.sha256(data).digest() for name, data in result.files.items()},
            "summary": (len(result.modules), result.warnings, result.unresolved),
        }
        scans = {p: (result.stat_keys[p], r) for p, r in result.scans.items()
                 if p in result.stat_keys and r[0] is None}
        header = marshal.dumps({"format": cache_format(), "moddir": self.moddir, "state": state})
        data = _MAGIC + len(header).to_bytes(8, "little") + header + marshal.dumps(scans)
        cache_dir = os.path.dirname(self.path)
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            with locked_dir(cache_dir) as locked:
                remove_stale_temps(cache_dir, locked, warnings)
                if os.path.lexists(self.path) and not _trusted(os.lstat(self.path)):
                    atomic.remove_if_exists(self.path)
                atomic.write_if_changed(self.path, data, 0o600)
                _prune_cache_dir(cache_dir, keep=self.path)
        except (OSError, ValueError, KmodError) as exc:
            warnings.append(f"cannot write cache {self.path}: {exc}")


@functools.lru_cache(maxsize=None)
def cache_format() -> str | None:
    """CACHE_FORMAT plus a digest of the engine's source and the Python version: a cache
    made by other code (an older collection) is never used. None when the source is not
    available, which disables the cache. The sources are found without importing them
    (a run that the cache vouches for never loads the builder)."""
    digest = hashlib.sha256(f"{CACHE_FORMAT} {sys.version}".encode())
    for name in (f"{__package__}.{m}" for m in _ENGINE):
        try:
            spec = importlib.util.find_spec(name)
            loader = spec.loader if spec is not None else None
            source = loader.get_source(name) if loader is not None else None  # type: ignore[attr-defined]
        except (ImportError, OSError, AttributeError, ValueError):
            source = None
        if source is None:
            return None
        # Ansible's collection loader returns bytes, importlib's loaders str
        digest.update(source if isinstance(source, bytes) else source.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _prune_cache_dir(directory: str, keep: str, limit: int = CACHE_FILES) -> None:
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
