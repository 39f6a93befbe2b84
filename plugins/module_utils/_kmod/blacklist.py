# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""kmod_blacklist's engine: plan the edit of one modprobe.d file, apply it, verify the effect.

Planning only reads; ``apply`` writes the file (atomically, only if it changes) and
unloads through kmod_load's planner; ``verify`` resolves every name with the engine's
own modprobe logic against the configuration as libkmod will read it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat
import typing as t

from .atomic import read_bytes
from .confdirs import first_by_basename
from .config import ModprobeConfig
from .config_edit import ModprobeConfEditor, check_module_name, edit_blacklist, module_key
from .errors import ConfigError, ModuleLookupError
from .lock import edit_locked
from .names import fnmatch
from .paths import KmodPaths, check_path_value, resolve_host
from .execute import CommandRunner, execute
from .plan import Plan, Planner
from .resolver import ModuleDB

if t.TYPE_CHECKING:
    from .loader import Syscalls

# Where the usual initramfs generators put their image (initramfs-tools, dracut, mkinitrd).
INITRAMFS_NAMES = ("initrd.img-{}", "initramfs-{}.img", "initrd-{}", "initrd-{}.img")


def _decode(data: bytes | None) -> str | None:
    # surrogateescape keeps bytes that are not UTF-8 exactly as they were.
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _shown(text: str | None) -> str:
    """Text for a diff: bytes that are not UTF-8 become U+FFFD."""
    return (text or "").encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclasses.dataclass
class BlacklistPlan:
    paths: KmodPaths
    path: str
    names: list[str]
    before: str | None
    after: str
    unload: Plan | None
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
    """The file under root, checked so that libkmod will really read it.

    Under a root other than '/', its directory is resolved like a chroot would (symlinks
    followed inside the image, never out of it) and a symlink as the file itself is
    refused (writing would copy its target's content); on the live system the write
    replaces such a link by a regular file, as before.
    """
    check_path_value(path, "path")
    name = os.path.basename(path)
    if not os.path.isabs(path) or not name.endswith(".conf") or name.startswith("."):
        raise ConfigError(f"path {path!r} must be an absolute path to a *.conf file not starting "
                          "with '.': libkmod reads no other modprobe.d files", path=path)
    full = paths.under(os.path.normpath(path), follow=False)  # '..' cannot climb out of root
    if paths.confined and os.path.islink(full):
        raise ConfigError(f"path {full} is a symbolic link inside root: kernel.kmod neither follows nor "
                          "replaces it there (set path to the file itself, or remove the link)", path=full)
    if _isdir(resolve_host(full)):
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
    dirs = paths.modprobe_dirs
    if paths.resolve(os.path.dirname(full)) not in {paths.resolve(d) for d in dirs}:
        return None
    name = os.path.basename(full)
    files = first_by_basename(dirs, lambda n: n == name, present=[full], resolve=paths.resolve)
    return files[0] if files else None


def _isdir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def plan_blacklist(paths: KmodPaths, names: t.Sequence[str], state: str, mode: str, path: str,
                   exclusive: bool = False, unload: bool = False) -> BlacklistPlan:
    """Decide everything before anything is touched: bad names, a bad path, and modules
    in use (with unload) fail here."""
    names = [check_module_name(n) for n in names]
    warnings: list[str] = []
    full = conf_path(paths, path, warnings)
    # Inside root (a symlink there is followed inside the image); a FIFO, a directory or
    # a symlink loop is a PathError naming the file.
    before = _decode(read_bytes(full))
    after = edit_blacklist(before, names, state, mode, exclusive)
    unload_plan = None
    if unload and state == "present":
        planner = Planner(paths)
        loaded = [n for n in names if module_key(n) in planner.loaded]
        if loaded:
            unload_plan = planner.plan(loaded, "absent")
    return BlacklistPlan(paths, full, names, before, after, unload_plan, warnings,
                         functools.partial(edit_blacklist, names=names, state=state, mode=mode,
                                           exclusive=exclusive))


def apply(plan: BlacklistPlan, syscalls: Syscalls | None, run: CommandRunner | None) -> None:
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
    if plan.unload:
        execute(plan.unload, syscalls, run)


def effective_config(plan: BlacklistPlan) -> ModprobeConfig:
    """The configuration libkmod reads once the plan is applied (in check mode too: the
    file's new text is read in place of what is on disk)."""
    return ModprobeConfig.load(plan.paths, texts={plan.path: plan.after})


def verify(plan: BlacklistPlan, config: ModprobeConfig | None = None) -> list[dict[str, t.Any]]:
    """Per name, what the file says and what the engine's resolution makes of it.

    The cost follows the names asked: the file and the configuration are indexed once,
    and each name is resolved once (twice when it has an alias spelled like itself).
    """
    config = config or effective_config(plan)
    db = ModuleDB(plan.paths, config)  # a failed lookup's hint is built only when shown
    edited = ModprobeConfEditor(plan.after)
    blacklisted, disabled = set(edited.blacklisted()), set(edited.disabled())
    keys = {module_key(name) for name in plan.names}
    self_named = _aliases_by_module(db, keys)
    in_config = {b.modname for b in config.blacklist}
    entries = _entries_by_key(config, keys)
    removed = {r.name: r.removed for r in (plan.unload.results if plan.unload else [])}
    results = []
    for name in plan.names:
        key = module_key(name)
        results.append({
            "name": name,
            "blacklisted": key in blacklisted,
            "disabled": key in disabled,
            "alias_blocked": key in in_config and _alias_blocked(db, key, key in self_named),
            "blocked": db.is_blocked(name),
            "elsewhere": [
                {"file": e.source.path, "line": e.source.line, "directive": text}
                for e, text in entries.get(key, ()) if e.source.path != plan.path],
            "unloaded": removed.get(name, []),
        })
    return results


def _aliases_by_module(db: ModuleDB, keys: set[str]) -> set[str]:
    """The modules among keys that have an alias (modules.alias or configuration) spelled
    like their own name, '-' and '_' alike: one pass over the aliases for every name."""
    found = {a.modname for a in db.config.aliases
             if a.modname in keys and a.pattern.replace("-", "_") == a.modname}
    index = db.index("modules.alias")
    for alias, module in index.dump() if index is not None and keys - found else ():
        if module in keys and len(alias) == len(module) and alias.replace("-", "_") == module:
            found.add(module)
    return found


def _alias_blocked(db: ModuleDB, key: str, self_named: bool) -> bool:
    """The blacklisted module is never loaded through one of its aliases.

    modprobe applies a blacklist only to results it reached through an alias: every alias
    lookup of a blacklisted module is blocked, except an alias spelled like the module's
    own name (lookup normalises it), which libkmod resolves to the module by name first.
    """
    if not self_named:
        return True
    try:
        found = [m for m in db.lookup(key) if m.name == key]
        blocked = {b.module for b in db.blocked_by(key)}
    except ModuleLookupError:
        return True  # resolves to nothing
    return not found or key in blocked


def _entries_by_key(config: ModprobeConfig, keys: set[str]) -> dict[str, list[tuple[t.Any, str]]]:
    """Blacklist and install entries that apply to each module, with their text, in
    configuration order (install patterns matched like libkmod)."""
    out: dict[str, list[tuple[t.Any, str]]] = {}
    for b in config.blacklist:
        if b.modname in keys:
            out.setdefault(b.modname, []).append((b, f"blacklist {b.modname}"))
    for c in config.install:
        matched = [c.modname] if c.modname in keys else [k for k in keys if fnmatch(c.modname, k)]
        for key in matched:
            out.setdefault(key, []).append((c, f"install {c.modname} {c.command}"))
    return out
