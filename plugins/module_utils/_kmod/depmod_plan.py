# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""kmod_depmod's plan and apply: decide which index files change (computing them only
when the cache cannot vouch for the ones on disk), then publish them.

``plan_depmod`` reads each index file once and never writes; check mode stops there.
``apply`` writes the changed files atomically under the directory's lock, removes what
killed runs left, and saves the cache.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

from .depmod_cache import DepmodCache, DepmodSummary, default_cache_file, options_key
from .depmod_config import DepmodConfig
from .depmod_files import check_moddir, publish, read_outputs
from .errors import KmodError
from .generation import KmodGeneration, detect_generation
from .lock import find_stale_temps
from .names import MODULE_EXTENSIONS
from .paths import check_path_value

if t.TYPE_CHECKING:
    from .depmod import DepmodResult
    from .paths import KmodPaths

# The text indexes whose changes the diff shows, line by line (modules.symbols would
# add hundreds of lines per module for little insight).
DIFF_FILES = ("modules.dep", "modules.alias", "modules.softdep", "modules.devname")


@dataclasses.dataclass
class DepmodPlan:
    moddir: str
    generation: KmodGeneration
    files_changed: list[str]  # index files whose bytes differ, in the generation's order
    files: dict[str, bytes]  # their new bytes
    module_count: int
    warnings: list[str]
    unresolved: list[dict[str, str]]
    leftovers: list[str]  # temporary files of killed runs (removed by apply)
    cache: DepmodCache | None
    cache_key: tuple[t.Any, ...] = ()  # options_key of this run
    result: DepmodResult | None = None  # None when the cache vouched for the files on disk
    old: dict[str, bytes | None] = dataclasses.field(default_factory=dict)  # DIFF_FILES as they were

    @property
    def changed(self) -> bool:
        return bool(self.files_changed or self.leftovers)

    def diff(self) -> dict[str, str]:
        """Lines that disappear from or appear in modules.dep, .alias, .softdep and .devname:
        modules added, removed, or with other dependencies or aliases (not index bytes)."""
        before: list[str] = []
        after: list[str] = []
        new = self.result.files if self.result is not None else {}
        for name in DIFF_FILES if new else ():
            old_lines = set((self.old.get(name) or b"").decode("utf-8", "replace").splitlines())
            new_lines = set(new[name].decode("utf-8", "replace").splitlines())
            removed, added = sorted(old_lines - new_lines), sorted(new_lines - old_lines)
            if removed or added:
                before += [f"# {name}"] + removed
                after += [f"# {name}"] + added
        header = f"{self.moddir} (changed lines of {', '.join(DIFF_FILES)})"
        return {"before_header": header, "after_header": header,
                "before": "".join(line + "\n" for line in before), "after": "".join(line + "\n" for line in after)}

    def leftover_warning(self, applied: bool) -> str | None:
        if not self.leftovers:
            return None
        return (f"{'Removed' if applied else 'Would remove'} {len(self.leftovers)} temporary file(s) "
                f"left in {self.moddir} by an interrupted run: {', '.join(self.leftovers)}")


def plan_depmod(paths: KmodPaths, config_dirs: list[str] | None = None, system_map: str | None = None,
                symvers: str | None = None, check_unresolved: bool = False, jobs: int = 0,
                cache_dir: str | None = None) -> DepmodPlan:
    """The plan of one depmod run. Paths are as the user gave them (under ``paths.root``);
    ``cache_dir`` None: no cache."""
    if jobs < 0:
        raise KmodError(f"jobs must be 0 (one per CPU) or more, not {jobs}")
    # KmodPaths checks root and kernel_release (one component starting "N.N", as depmod's
    # is_version_number); the other paths are checked here to name their option.
    for option, value in (("system_map", system_map), ("symvers", symvers), ("cache_dir", cache_dir)):
        if value:
            check_path_value(value, option)
    for value in config_dirs or ():
        check_path_value(value, "config_dirs")
    system_map = paths.under(system_map) if system_map else None
    symvers = paths.under(symvers) if symvers else None
    if check_unresolved and not (system_map or symvers):
        system_map = paths.under("boot", f"System.map-{paths.kernel_release}")
        if not os.path.isfile(system_map):
            raise KmodError(f"check_unresolved needs the kernel's symbols: {system_map} does not exist; "
                            "set system_map or symvers", path=system_map)
    config_paths = paths.depmod_dirs if config_dirs is None else [paths.under(d) for d in config_dirs]
    moddir = paths.moddir
    generation = detect_generation(paths)
    check_moddir(moddir)
    old = read_outputs(moddir, generation.depmod_files)  # the only read of the index files
    cfg = DepmodConfig.load(config_paths, paths.kernel_release)
    cache = DepmodCache(default_cache_file(paths, cache_dir), moddir) if cache_dir else None
    key = options_key(moddir, paths.kernel_release, cfg, generation, MODULE_EXTENSIONS, check_unresolved,
                      symvers, system_map)
    if cache is not None:
        known = cache.up_to_date(key, old)
        if known is not None:
            return _unchanged(moddir, generation, known, cache)
    # Only now load the builder: compiling it and its ELF reader costs every AnsiballZ run
    # about 0.1 s, which a run the cache vouches for does not pay.
    from .depmod import Depmod  # pylint: disable=import-outside-toplevel
    depmod = Depmod(paths, config_paths=config_paths, system_map=system_map, symvers=symvers,
                    check_unresolved=check_unresolved, jobs=jobs or None, generation=generation, config=cfg,
                    known=cache.scans() if cache is not None else None)
    result = depmod.build()
    changed = [name for name, data in result.files.items() if old.get(name) != data]
    return DepmodPlan(
        moddir, generation, changed, {name: result.files[name] for name in changed}, len(result.modules),
        result.warnings, result.unresolved, find_stale_temps(moddir), cache, key, result,
        {name: old.get(name) for name in DIFF_FILES})


def _unchanged(moddir: str, generation: KmodGeneration, known: DepmodSummary, cache: DepmodCache) -> DepmodPlan:
    return DepmodPlan(moddir, generation, [], {}, known.module_count, list(known.warnings), known.unresolved,
                      find_stale_temps(moddir), cache)


def apply(plan: DepmodPlan) -> None:
    """Publish the plan's files (removing what killed runs left) and save the cache."""
    published = publish(plan.moddir, plan.files)
    plan.leftovers = published.removed
    plan.warnings.extend(published.warnings)
    if plan.cache is not None and plan.result is not None:
        plan.cache.save(plan.cache_key, plan.result, plan.warnings)
