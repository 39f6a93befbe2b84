# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_blacklist's engine: plan the edit of one modprobe.d file, apply it, verify the effect.

Planning only reads; ``apply`` writes the file (atomically, only if it changes) and
unloads through kmod_load's planner; ``verify`` resolves every name with the engine's
own modprobe logic against the configuration as libkmod will read it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import typing as t

from .atomic import read_bytes
from .config import ModprobeConfig
from .config_edit import ModprobeConfEditor, check_module_name, edit_blacklist, module_key
from .errors import ConfigError, ModuleLookupError
from .lock import edit_locked
from .names import fnmatch
from .paths import KmodPaths
from .plan import CommandRunner, Plan, Planner, execute
from .resolver import ModuleDB

if t.TYPE_CHECKING:
    from .loader import Loader

# Where the usual initramfs generators put their image (initramfs-tools, dracut, mkinitrd).
INITRAMFS_NAMES = ("initrd.img-{}", "initramfs-{}.img", "initrd-{}", "initrd-{}.img")


def _decode(data: bytes | None) -> str | None:
    # surrogateescape keeps bytes that are not UTF-8 exactly as they were.
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _shown(text: str | None) -> str:
    """Text for a diff: bytes that are not UTF-8 become U+FFFD."""
    return _encode(text or "").decode("utf-8", "replace")


@dataclasses.dataclass
class BlacklistPlan:
    paths: KmodPaths
    path: str
    names: list[str]
    before: str | None
    after: str
    unload: Plan | None
    planner: Planner | None
    warnings: list[str]
    # The edit itself (text -> text), applied again under the file's lock by apply().
    edit: t.Callable[[str | None], str | None] | None = None

    @property
    def file_changed(self) -> bool:
        return self.after != (self.before or "")

    @property
    def changed(self) -> bool:
        return self.file_changed or bool(self.unload and self.unload.changed)

    def removed(self) -> list[str]:
        """Modules that had an entry in the file before and have none after."""
        after = ModprobeConfEditor(self.after).managed()
        return [k for k in ModprobeConfEditor(self.before).managed() if k not in after]

    def diff(self) -> list[dict[str, str]]:
        diffs = []
        if self.file_changed:
            diffs.append({"before_header": self.path, "after_header": self.path,
                          "before": _shown(self.before), "after": _shown(self.after)})
        return diffs + (self.unload.diff if self.unload else [])

    def initramfs(self) -> str | None:
        """The initramfs of the kernel release under root/boot, if there is one."""
        for pattern in INITRAMFS_NAMES:
            candidate = self.paths.under("boot", pattern.format(self.paths.kernel_release))
            if os.path.isfile(candidate):
                return candidate
        return None


def conf_path(paths: KmodPaths, path: str, warnings: list[str]) -> str:
    """The file under root, checked so that libkmod will really read it."""
    name = os.path.basename(path)
    if not os.path.isabs(path) or not name.endswith(".conf") or name.startswith("."):
        raise ConfigError(f"path {path!r} must be an absolute path to a *.conf file not starting "
                          "with '.': libkmod reads no other modprobe.d files", path=path)
    full = paths.under(os.path.normpath(path))  # normpath: '..' cannot climb out of root
    if os.path.isdir(full):
        raise ConfigError(f"path {full} is a directory", path=full)
    winner = _winner(paths, full)
    if winner is None:
        warnings.append(f"{full} is not in a modprobe.d directory libkmod reads "
                        f"({', '.join(paths.modprobe_dirs)}): it has no effect")
    elif winner != full:
        warnings.append(f"{full} has no effect: libkmod reads {winner} instead (same file name, "
                        "earlier directory)")
    return full


def _winner(paths: KmodPaths, full: str) -> str | None:
    """Which file libkmod reads under full's basename once full exists (None: full is not
    in a configuration directory). The first directory in libkmod's order wins."""
    directory, name = os.path.split(full)
    here = os.path.realpath(directory)
    if here not in {os.path.realpath(d) for d in paths.modprobe_dirs}:
        return None
    for d in paths.modprobe_dirs:
        if os.path.realpath(d) == here:
            return full
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    return None


def plan_blacklist(paths: KmodPaths, names: t.Sequence[str], state: str, mode: str, path: str,
                   exclusive: bool = False, unload: bool = False) -> BlacklistPlan:
    """Decide everything before anything is touched: bad names, a bad path, and modules
    in use (with unload) fail here."""
    names = [check_module_name(n) for n in names]
    warnings: list[str] = []
    full = conf_path(paths, path, warnings)
    try:
        before = _decode(read_bytes(full))
    except OSError as exc:
        raise ConfigError(f"Cannot read {full}: {exc.strerror}", path=full) from exc
    after = edit_blacklist(before, names, state, mode, exclusive)
    unload_plan = planner = None
    if unload and state == "present":
        planner = Planner(paths)
        loaded = [n for n in names if module_key(n) in planner.loaded]
        if loaded:
            unload_plan = planner.plan(loaded, "absent")
    return BlacklistPlan(paths, full, names, before, after, unload_plan, planner, warnings,
                         functools.partial(edit_blacklist, names=names, state=state, mode=mode,
                                           exclusive=exclusive))


def apply(plan: BlacklistPlan, loader: Loader, run: CommandRunner) -> None:
    """Write the file first, so that nothing autoloads a module again once it is gone.

    The edit is made again under the file's lock on the text found then, so concurrent
    runs keep each other's entries; the plan then shows what was really written.
    """
    if plan.file_changed:
        if plan.edit is not None:
            plan.before, after = edit_locked(plan.path, plan.edit)
            plan.after = after or ""
        else:
            edit_locked(plan.path, lambda _text: plan.after)
    if plan.unload and plan.planner:
        execute(plan.unload, loader, run, plan.planner)


def effective_config(plan: BlacklistPlan) -> ModprobeConfig:
    """The configuration libkmod reads once the plan is applied (in check mode, the file's
    new text is read from a temporary copy that takes its place)."""
    on_disk = _decode(read_bytes(plan.path))
    if (on_disk or "") == plan.after or _winner(plan.paths, plan.path) != plan.path:
        return ModprobeConfig.load(plan.paths)
    with tempfile.TemporaryDirectory(prefix="kmod-blacklist-") as tmp:
        copy = os.path.join(tmp, os.path.basename(plan.path))
        with open(copy, "wb") as f:
            f.write(_encode(plan.after))
        # A file given as a configuration path counts under its basename, before the
        # directories, so it stands in for plan.path.
        config = ModprobeConfig.load(plan.paths, config_paths=[copy] + plan.paths.modprobe_dirs)
    for entries in (config.aliases, config.options, config.install, config.remove,
                    config.blacklist, config.softdeps, config.weakdeps):
        entries[:] = [dataclasses.replace(e, source=dataclasses.replace(e.source, path=plan.path))
                      if e.source.path == copy else e for e in entries]
    config.files = [plan.path if f == copy else f for f in config.files]
    return config


def verify(plan: BlacklistPlan, config: ModprobeConfig | None = None) -> list[dict[str, t.Any]]:
    """Per name, what the file says and what the engine's resolution makes of it."""
    config = config or effective_config(plan)
    db = ModuleDB(plan.paths, config)
    edited = ModprobeConfEditor(plan.after)
    aliases = _aliases_by_module(db)
    removed = {r.name: r.removed for r in (plan.unload.results if plan.unload else [])}
    results = []
    for name in plan.names:
        key = module_key(name)
        results.append({
            "name": name,
            "blacklisted": key in edited.blacklisted(),
            "disabled": key in edited.disabled(),
            "alias_blocked": _alias_blocked(db, key, aliases.get(key, [])),
            "blocked": db.is_blocked(name),
            "elsewhere": [
                {"file": e.source.path, "line": e.source.line, "directive": text}
                for e, text in _entries_for(config, key) if e.source.path != plan.path],
            "unloaded": removed.get(name, []),
        })
    return results


def _aliases_by_module(db: ModuleDB) -> dict[str, list[str]]:
    """Every alias of modules.alias and of the configuration, by the module it names."""
    by_module: dict[str, list[str]] = {}
    index = db.index("modules.alias")
    for alias, module in index.dump() if index is not None else ():
        by_module.setdefault(module, []).append(alias)
    for entry in db.config.aliases:
        by_module.setdefault(entry.modname, []).append(entry.pattern)
    return by_module


def _alias_blocked(db: ModuleDB, key: str, aliases: list[str]) -> bool:
    """The module is blacklisted, and resolving each of its aliases (as modprobe would)
    yields it only as a blocked result."""
    if not any(b.modname == key for b in db.config.blacklist):
        return False
    for alias in aliases:
        try:
            found = [m for m in db.lookup(alias) if m.name == key]
            blocked = {b.module for b in db.blocked_by(alias)}
        except ModuleLookupError:
            continue  # a pattern that does not match its own text resolves to nothing
        if found and key not in blocked:
            return False
    return True


def _entries_for(config: ModprobeConfig, key: str) -> t.Iterator[tuple[t.Any, str]]:
    """Blacklist and install entries that apply to a module, with their text."""
    for b in config.blacklist:
        if b.modname == key:
            yield b, f"blacklist {b.modname}"
    for c in config.install:
        if fnmatch(c.modname, key):
            yield c, f"install {c.modname} {c.command}"
