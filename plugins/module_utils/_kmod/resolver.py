# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Name resolution and probe lists exactly as libkmod computes them for modprobe (kmod 30).

``ModuleDB`` opens the indexes and reads the configuration once; every query then
replays libkmod in a fresh module pool (``_Pool``), because libkmod's results depend on
its pooled module objects: a module reached through an alias is another object than the
same module reached by name, and "visited" marks live on those objects.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import os
import stat
import typing as t

from .config import Alias, Command, ModprobeConfig, Source
from .errors import IndexFormatError, InvalidNameError, ModuleLookupError
from .index import Index, load_index
from .names import (
    MODULE_EXTENSIONS, alias_normalize, fnmatch, modname_from_path, modname_normalize, validate_name)
from .paths import KmodPaths

_WILDCARD_CHARS = frozenset("*?[")
# Files looked at, at most, when searching the module directory for a module that is
# not indexed (only after a failed lookup): a real tree has about 6000.
_UNINDEXED_SCAN_LIMIT = 200_000
_DEPMOD_HINT = "run kernel.kmod.kmod_depmod (or depmod) to index {}"


@dataclasses.dataclass
class Module:
    """One result of a lookup (kmod_module_new_from_lookup), as libkmod sees it."""

    name: str
    alias: str | None = None  # the alias (config pattern or normalized query) it was reached by
    path: str | None = None  # absolute path from modules.dep, None for builtin/unknown
    builtin: bool = False
    install_command: str | None = None
    remove_command: str | None = None
    deps: list[str] = dataclasses.field(default_factory=list)  # modules.dep line order
    softdep_pre: list[str] = dataclasses.field(default_factory=list)
    softdep_post: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ProbeStep:
    """One entry of modprobe's probe list, in load order.

    kind: 'insmod' (path is None when modules.dep has no file for the module: modprobe
    prints nothing for it and inserting fails with ENOENT), 'builtin' (only without
    is_loaded: with it, builtin modules count as loaded) or 'install' (run command,
    with $CMDLINE_OPTS replaced by options, instead of inserting).
    required is False for softdeps: modprobe ignores their failures.
    """

    module: str
    kind: str
    path: str | None = None
    options: str | None = None
    command: str | None = None
    required: bool = False
    alias: str | None = None


@dataclasses.dataclass(frozen=True)
class Block:
    """Why loading a lookup result is prevented by configuration."""

    module: str
    reason: str  # 'blacklist' (reached through an alias) or 'install' (a true/false command)
    source: Source
    detail: str


def options_from_args(args: t.Sequence[str]) -> str | None:
    """modprobe's options_from_array: join option arguments, quoting a value with spaces."""
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and value[:1] not in ('"', "'") and " " in value:
            arg = f'{key}="{value}"'
        out.append(arg)
    return " ".join(out) if out else None


def _concat_options(config_opts: str | None, extra: str | None) -> str | None:
    """module_options_concat: config options always get a trailing space before extras."""
    if not config_opts and not extra:
        return None
    return (config_opts + " " if config_opts is not None else "") + (extra or "")


class _Mod:
    """A libkmod module object with its lazily filled fields and probe-walk marks."""

    __slots__ = ("name", "alias", "path", "dep_paths", "dep_init", "builtin", "install",
                 "install_init", "remove", "remove_init", "visited", "required", "ignorecmd")

    def __init__(self, name: str, alias: str | None) -> None:
        self.name = name
        self.alias = alias
        self.path: str | None = None
        self.dep_paths: list[str] = []  # modules.dep line order
        self.dep_init = False
        self.builtin: bool | None = None
        self.install: Command | None = None
        self.install_init = False
        self.remove: Command | None = None
        self.remove_init = False
        self.visited = self.required = self.ignorecmd = False


class _Pool:
    """One libkmod context's module pool: what a single modprobe invocation sees."""

    def __init__(self, db: "ModuleDB") -> None:
        self.db = db
        self.mods: dict[str, _Mod] = {}

    # --- module objects (kmod_module_new_from_*) ---

    def by_name(self, name: str) -> _Mod:
        name = modname_normalize(name)
        mod = self.mods.get(name)
        if mod is None:
            mod = self.mods[name] = _Mod(name, None)
        return mod

    def by_alias(self, alias: str, name: str) -> _Mod:
        key = f"{name}\\{alias}"
        mod = self.mods.get(key)
        if mod is None:
            mod = self.mods[key] = _Mod(name, alias)
        return mod

    def by_path(self, path: str) -> _Mod:
        mod = self.by_name(modname_from_path(path))
        if mod.path is None:
            mod.path = path
        mod.builtin = False
        return mod

    def parse_depline(self, mod: _Mod, line: str) -> None:
        if mod.dep_init:
            return
        mod.dep_init = True
        head, sep, tail = line.partition(":")
        if not sep:
            return
        if mod.path is None:
            mod.path = self.db.abspath(head)
        mod.dep_paths = [self.db.abspath(p) for p in tail.replace("\t", " ").split(" ") if p]

    def load_deps(self, mod: _Mod) -> None:
        if not mod.dep_init:
            line = self.db.depline(mod.name)
            if line is not None:
                self.parse_depline(mod, line)

    def get_path(self, mod: _Mod) -> str | None:
        if mod.path is None and not mod.dep_init:
            self.load_deps(mod)
        return mod.path

    def deps(self, mod: _Mod) -> list[_Mod]:
        """kmod_module_get_dependencies: reverse line order, i.e. deepest first."""
        self.load_deps(mod)
        return [self.by_path(p) for p in reversed(mod.dep_paths)]

    def is_builtin(self, mod: _Mod) -> bool:
        if mod.builtin is None:
            mod.builtin = self.db.in_builtin_index(mod.name)
        return mod.builtin

    def install_command(self, mod: _Mod) -> Command | None:
        if not mod.install_init:
            mod.install, mod.install_init = self.db.memo(self.db.config.install_for, mod.name), True
        return mod.install

    def remove_command(self, mod: _Mod) -> Command | None:
        if not mod.remove_init:
            mod.remove, mod.remove_init = self.db.memo(self.db.config.remove_for, mod.name), True
        return mod.remove

    # --- kmod_module_new_from_lookup ---

    def lookup(self, query: str) -> list[_Mod]:
        try:
            name = alias_normalize(query)
        except ValueError as e:
            raise InvalidNameError(f"Invalid module name or alias {query!r}: {e}", name=query) from e
        db = self.db
        found = [self.by_alias(a.pattern, a.modname) for a in db.config_aliases(name)]
        if found:
            return found
        if ":" not in name:
            line = db.depline(name)
            if line is not None:
                mod = self.by_name(name)
                self.parse_depline(mod, line)
                return [mod]
        if name.startswith("symbol:"):
            found = [self.by_alias(name, v) for v in db.wild("modules.symbols", name)]
            if found:
                return found
        for commands, attr in ((db.config.install, "install"), (db.config.remove, "remove")):
            cmd = next((c for c in commands if c.modname == name), None)
            if cmd is not None:
                mod = self.by_name(cmd.modname)
                setattr(mod, attr, cmd)
                setattr(mod, attr + "_init", True)
                return [mod]
        found = [self.by_alias(name, v) for v in db.wild("modules.alias", name)]
        if found:
            return found
        if db.in_builtin_index(name):
            mod = self.by_name(name)
            mod.builtin = True
            return [mod]
        found = [self.by_alias(name, v) for v in db.wild("modules.builtin.alias", name)]
        for mod in found:
            mod.builtin = True
        return found

    # --- kmod_module_probe_insert_module ---

    def softdeps(self, mod: _Mod) -> tuple[list[_Mod], list[_Mod]]:
        soft = self.db.memo(self.db.config.softdep_for, mod.name)
        if soft is None:
            return [], []
        return self._lookup_all(soft.pre), self._lookup_all(soft.post)

    def _lookup_all(self, names: t.Iterable[str]) -> list[_Mod]:
        out: list[_Mod] = []
        for n in names:
            try:
                out += self.lookup(n)
            except InvalidNameError:
                continue  # libkmod: "failed to lookup soft dependency, continuing anyway"
        return out

    def _fill_softdep(self, mod: _Mod, out: list[_Mod]) -> None:
        pre, post = self.softdeps(mod)
        for p in pre:
            self._probe_list(p, False, out)
        out.append(mod)
        # a module with softdeps never runs its install command
        mod.ignorecmd = bool(pre or post)
        for p in post:
            self._probe_list(p, False, out)

    def _probe_list(self, mod: _Mod, required: bool, out: list[_Mod]) -> None:
        if mod.visited:
            return
        mod.visited = True
        deps = self.deps(mod)
        if required:
            mod.required = True
            for d in deps:
                d.required = True
        for d in deps:
            self._fill_softdep(d, out)
        self._fill_softdep(mod, out)

    def probe(self, mod: _Mod, extra_options: str | None,
              is_loaded: t.Callable[[str], bool] | None) -> list[ProbeStep]:
        def in_kernel(m: _Mod) -> bool:
            return is_loaded is not None and (self.is_builtin(m) or is_loaded(m.name))

        if in_kernel(mod):
            return []
        if mod.alias is not None and self.db.config.is_blacklisted(mod.name):
            return []
        for m in self.mods.values():
            m.visited = m.required = False
        order: list[_Mod] = []
        self._probe_list(mod, True, order)
        steps = []
        for m in order:
            if in_kernel(m):
                continue
            options = _concat_options(self.db.memo(self.db.config.options_for, m.name, m.alias),
                                      extra_options if m is mod else None)
            cmd = self.install_command(m)
            if cmd is not None and not m.ignorecmd:
                step = ProbeStep(m.name, "install", None, options, cmd.command)
            else:
                path = self.get_path(m)
                kind = "builtin" if path is None and self.is_builtin(m) else "insmod"
                step = ProbeStep(m.name, kind, path, options)
            step.required, step.alias = m.required, m.alias
            steps.append(step)
        return steps

    def public(self, mod: _Mod) -> Module:
        self.load_deps(mod)
        soft = self.db.memo(self.db.config.softdep_for, mod.name)
        install, remove = self.install_command(mod), self.remove_command(mod)
        return Module(
            name=mod.name, alias=mod.alias, path=self.get_path(mod), builtin=self.is_builtin(mod),
            install_command=install.command if install else None,
            remove_command=remove.command if remove else None,
            deps=[modname_from_path(p) for p in mod.dep_paths],
            softdep_pre=list(soft.pre) if soft else [], softdep_post=list(soft.post) if soft else [])


class ModuleDB:
    """The module tree and configuration of one root and kernel release, opened once."""

    def __init__(self, paths: KmodPaths, config: ModprobeConfig | None = None) -> None:
        self.paths = paths
        self.config = config if config is not None else ModprobeConfig.load(paths)
        self.moddir = paths.moddir  # resolved: where the indexes are read
        self.shown_moddir = paths.moddir_shown  # what module paths and messages say, as kmod
        self._indexes: dict[str, Index | None] = {}
        self._deplines: dict[str, str | None] = {}
        self._builtin: dict[str, bool] = {}
        self._wild: dict[tuple[str, str], list[str]] = {}
        self._memo: dict[tuple[t.Any, ...], t.Any] = {}
        self._module_files: dict[str, list[str]] | None = None

    # --- index access, cached: the same names come back through deps and softdeps ---

    def index(self, name: str) -> Index | None:
        if name not in self._indexes:
            text = "modules.builtin.modinfo" if name == "modules.builtin.alias" else name
            for path in (f"{self.moddir}/{name}.bin", f"{self.moddir}/{text}"):
                state = _file_state(path)
                # a FIFO would block the reader forever; a loop would pass for a missing file
                if state not in ("missing", "file", "a directory"):
                    raise IndexFormatError(f"{path} is {state}: cannot read the index", path=path)
                if state != "missing":
                    break  # like libkmod, the text file only counts without the .bin
            self._indexes[name] = load_index(self.moddir, name)
        return self._indexes[name]

    def abspath(self, path: str) -> str:
        if path.startswith("/"):
            # An absolute path in an image's modules.dep means the image's file.
            return self.paths.under(path) if self.paths.confined else path
        return f"{self.shown_moddir}/{path}"

    def depline(self, name: str) -> str | None:
        if name not in self._deplines:
            idx = self.index("modules.dep")
            self._deplines[name] = idx.search(name) if idx is not None else None
        return self._deplines[name]

    def in_builtin_index(self, name: str) -> bool:
        if name not in self._builtin:
            idx = self.index("modules.builtin")
            self._builtin[name] = idx is not None and idx.search(name) is not None
        return self._builtin[name]

    def wild(self, index: str, key: str) -> list[str]:
        if (index, key) not in self._wild:
            idx = self.index(index)
            self._wild[index, key] = idx.search_wild(key) if idx is not None else []
        return self._wild[index, key]

    def memo(self, query: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        """A configuration query, answered once per arguments (fnmatch over every entry
        for each module of each probe list is the resolver's hot spot)."""
        key = (query.__name__,) + args
        if key not in self._memo:
            self._memo[key] = query(*args)
        return self._memo[key]

    def config_aliases(self, name: str) -> list[Alias]:
        return [a for a in self.config.aliases if fnmatch(a.pattern, name)]

    def _resolve(self, name: str) -> tuple[_Pool, list[_Mod]]:
        """A fresh pool and the lookup results of name (raises when there are none)."""
        validate_name(name)
        pool = _Pool(self)
        found = pool.lookup(name)
        if not found:
            raise self._not_found(name)
        return pool, found

    # --- public API ---

    def lookup(self, name: str) -> list[Module]:
        """Every module ``name`` resolves to, in kmod's lookup order (modprobe's list).

        Raises InvalidNameError for names modprobe could never mean and ModuleLookupError,
        with close matches, when nothing is found.
        """
        pool, found = self._resolve(name)
        return [pool.public(m) for m in found]

    def lookup_exact(self, name: str) -> list[Module]:
        """kmod_module_new_from_name_lookup: the module named ``name`` (modules.dep, then
        builtin, then builtin aliases), without config or alias lookups; [] if none."""
        validate_name(name)
        pool = _Pool(self)
        key = modname_normalize(name)
        line = self.depline(key)
        if line is not None:
            mod = pool.by_name(key)
            pool.parse_depline(mod, line)
            found = [mod]
        elif self.in_builtin_index(key):
            found = [pool.by_name(key)]
            found[0].builtin = True
        else:
            found = [pool.by_alias(key, v) for v in self.wild("modules.builtin.alias", key)][:1]
            for mod in found:
                mod.builtin = True
        return [pool.public(m) for m in found]

    def probe_steps(self, name: str, extra_options: str | None = None,
                    is_loaded: t.Callable[[str], bool] | None = None) -> list[ProbeStep]:
        """modprobe's probe list for ``name``: every lookup result in turn, dependencies and
        softdeps first, with merged options (extra_options apply to each result itself).

        Without is_loaded this is ``modprobe --show-depends`` (nothing counts as loaded);
        with it (module name -> loaded?), loaded and builtin modules are skipped, as plain
        modprobe does. Results blacklisted and reached through an alias give no steps.
        """
        pool, found = self._resolve(name)
        steps: list[ProbeStep] = []
        for mod in found:
            steps += pool.probe(mod, extra_options, is_loaded)
        return steps

    def show_depends(self, name: str, extra_options: str | None = None) -> list[str]:
        """Exactly the lines ``modprobe --show-depends NAME [OPTIONS]`` prints."""
        lines = []
        for step in self.probe_steps(name, extra_options):
            opts = step.options or ""
            if step.kind == "install":
                lines.append(f"install {step.command} {opts}")
            elif step.kind == "builtin":
                lines.append(f"builtin {step.module}")
            elif step.path is not None:
                lines.append(f"insmod {step.path} {opts}")
        return lines

    def blocked_by(self, name: str) -> list[Block]:
        """For each lookup result of ``name`` that configuration keeps from loading, why:
        a blacklist entry (applies only to results reached through an alias) or an install
        command that only runs true/false. Unknown names raise ModuleLookupError."""
        pool, found = self._resolve(name)
        blocks = []
        for mod in found:
            entry = next((b for b in self.config.blacklist if b.modname == mod.name), None)
            if mod.alias is not None and entry is not None:
                blocks.append(Block(mod.name, "blacklist", entry.source, f"blacklist {mod.name}"))
                continue
            cmd = pool.install_command(mod)
            pre, post = pool.softdeps(mod)
            if cmd is not None and not (pre or post) and _is_noop_command(cmd.command):
                blocks.append(Block(mod.name, "install", cmd.source, f"install {cmd.modname} {cmd.command}"))
        return blocks

    def is_blocked(self, name: str) -> bool:
        """True when every module ``name`` resolves to is kept from loading by configuration."""
        try:
            found = self.lookup(name)
        except ModuleLookupError:
            return False
        return len(self.blocked_by(name)) == len(found)

    def resolve_alias(self, name: str) -> list[str]:
        """Exactly what ``modprobe --resolve-alias NAME`` prints: the name of every lookup
        result (one per matching alias, so repeats are kept); [] when there is none."""
        validate_name(name)
        return [m.name for m in _Pool(self).lookup(name)]

    def module_names(self) -> list[str]:
        idx = self.index("modules.dep")
        return list(dict(idx.dump())) if idx is not None else []

    def _not_found(self, name: str) -> ModuleLookupError:
        return _NotFound(self, name)

    def not_found_message(self, name: str) -> tuple[str, dict[str, t.Any]]:
        """The message of a failed lookup, with close matches ("did you mean") and why the
        tree may lack the module, and its result keys. Costly: it compares the name with
        every module and alias of the tree, so it is built only when shown (_NotFound)."""
        candidates = set(self.module_names())
        builtin_idx = self.index("modules.builtin")
        if builtin_idx is not None:
            candidates.update(dict(builtin_idx.dump()))
        alias_idx = self.index("modules.alias")
        if alias_idx is not None:
            candidates.update(k for k in dict(alias_idx.dump()) if not _WILDCARD_CHARS & set(k))
        candidates.update(a.pattern for a in self.config.aliases)
        try:
            key = alias_normalize(name)
        except ValueError:
            key = name
        close = difflib.get_close_matches(key, sorted(candidates), n=5, cutoff=0.75)
        why, unindexed = self._why_not_indexed(key)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        details: dict[str, t.Any] = {"name": name, "close_matches": close}
        if unindexed:
            details["unindexed"] = unindexed
        return f"Module {name} not found in directory {self.shown_moddir}{why}{hint}", details

    def _why_not_indexed(self, key: str) -> tuple[str, list[str]]:
        """The answer to "it can't find the module I just copied": the tree has no usable
        modules.dep, or a module file of this name lies in the tree but is not indexed.
        Returns (text to append to the message, those files). Only on the failure path."""
        try:
            st = os.stat(self.moddir)
        except FileNotFoundError:
            return " (the directory does not exist)", []
        except (OSError, ValueError) as exc:
            return f" (the directory cannot be used: {_reason(exc)})", []
        if not stat.S_ISDIR(st.st_mode):
            return " (it is not a directory)", []
        dep = f"{self.moddir}/modules.dep"
        states = [_file_state(dep + ".bin"), _file_state(dep)]
        broken = [f"{p} is {s}" for p, s in zip((dep + ".bin", dep), states) if s not in ("missing", "file")]
        if broken:
            return f" ({'; '.join(broken)}; {_DEPMOD_HINT.format('the tree')})", []
        if states == ["missing", "missing"]:
            return (f" (it has no modules.dep: the tree was never indexed; "
                    f"{_DEPMOD_HINT.format('the tree')})"), []
        if ":" in key or _WILDCARD_CHARS & set(key):
            return "", []  # an alias, not a file name
        files = self._unindexed_files().get(modname_normalize(key), [])
        if not files:
            return "", []
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        one = len(files) == 1
        return (f" (but {shown} {'is' if one else 'are'} there and not in modules.dep: copied in after "
                f"the indexes were last built? {_DEPMOD_HINT.format('it' if one else 'them')})"), files

    def _unindexed_files(self) -> dict[str, list[str]]:
        """Module name -> module files under moddir that modules.dep does not list (walked
        once per ModuleDB, without following symlinked directories, skipping build/source
        as depmod does, and bounded)."""
        if self._module_files is None:
            indexed = set(self.module_names())
            found: dict[str, list[str]] = {}
            seen = 0
            for top, dirs, names in os.walk(self.moddir, onerror=lambda exc: None):
                dirs[:] = sorted(d for d in dirs if d not in ("build", "source"))
                for fname in sorted(names):
                    if fname.endswith(MODULE_EXTENSIONS):
                        modname = modname_normalize(fname)
                        if modname not in indexed:
                            found.setdefault(modname, []).append(os.path.join(top, fname))
                seen += len(names) + len(dirs)
                if seen > _UNINDEXED_SCAN_LIMIT:
                    break
            self._module_files = found
        return self._module_files


class _NotFound(ModuleLookupError):
    """A failed lookup whose message (and result keys) are built on first use: most failed
    lookups are caught and dropped (softdeps, verification of blacklisted names, aliases
    probed for blocking), and building the hint costs a dump of three indexes and difflib."""

    def __init__(self, db: ModuleDB, name: str) -> None:  # pylint: disable=super-init-not-called
        # (KmodError.__init__ would assign msg and details, which are built lazily here)
        Exception.__init__(self, name)  # pylint: disable=non-parent-init-called
        self._db: ModuleDB | None = db
        self._name = name
        self._built: tuple[str, dict[str, t.Any]] | None = None

    def _build(self) -> tuple[str, dict[str, t.Any]]:
        if self._built is None:
            db = t.cast(ModuleDB, self._db)  # set until the message is built
            self._built = db.not_found_message(self._name)
            self._db = None  # the tree is not kept alive by an error someone holds on to
        return self._built

    @property
    def msg(self) -> str:  # type: ignore[override]  # read-only here: built once, on demand
        return self._build()[0]

    @property
    def details(self) -> dict[str, t.Any]:  # type: ignore[override]
        return self._build()[1]

    def __str__(self) -> str:
        return self.msg


def _file_state(path: str) -> str:
    """'missing', 'file', or what is wrong with an index file, for messages."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"  # also a dangling symlink: libkmod sees no file either
    except (OSError, ValueError) as exc:
        return _reason(exc)
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "a symlink loop"
    return getattr(exc, "strerror", None) or str(exc)


def _is_noop_command(command: str) -> bool:
    """An install command that only runs true or false: the module is never inserted."""
    words = command.split()
    return bool(words) and os.path.basename(words[0]) in ("true", "false")
