# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Load/unload planning: desired module state vs the kernel's → ordered actions (execute.py acts).

``Planner.plan()`` only reads (module tree, modprobe.d, /proc, /sys) and returns a
``Plan``: per requested name what would happen, the actions in order, and a diff. The
same plan drives check mode and real runs; ``execute.execute()`` performs it.

Removal goes further than ``modprobe -r`` (``rmmod_do_module`` in kmod's tools/modprobe.c), which makes one pass
over the module's dep line: every module of the dependency closure (and softdeps) whose
refcount drops to 0 goes, dependents before their dependencies, iterated until nothing
more can go.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing as t

from . import kparams
from .atomic import read_file
from .config_edit import check_module_name, edit_modules_load, edit_options
from .elf import ModuleElf, read_module
from .errors import KmodError, ModuleLookupError
from .kstate import KernelState
from .lock import edit_locked, read_text
from .names import modname_from_path, modname_normalize, validate_name
from .paths import KmodPaths
from .resolver import Module, ModuleDB

MANAGED_HEADER = "# Managed by kernel.kmod.kmod_load\n"

# What the kernel showed after we loaded a module with params it normalizes (loop's
# max_part=4 shows 7): {kernel name: {"params": params, "shown": {param: value}}}. Under
# /run, so it lives as long as the loaded modules do.
PARAMS_RECORD = ("run", "kernel.kmod", "params.json")

ParamValue = t.Union[str, int, float, bool, None, t.List[t.Any]]


@dataclasses.dataclass(frozen=True)
class Insert:
    module: str
    path: str
    options: str


@dataclasses.dataclass(frozen=True)
class Remove:
    module: str


@dataclasses.dataclass(frozen=True)
class RunCommand:
    """An install/remove command from modprobe.d, run by /bin/sh like modprobe's system()."""

    module: str
    command: str
    options: str


@dataclasses.dataclass(frozen=True)
class SweepUnused:
    """After removals: remove any of ``candidates`` whose live refcount is now 0.

    Catches references the plan cannot see in advance (e.g. a crypto driver held by a
    removed module's transform, not listed as a holder).
    """

    # (module, modules naming it as softdep, the requested name it is removed for)
    candidates: tuple[tuple[str, tuple[str, ...], str], ...]


@dataclasses.dataclass(frozen=True)
class WriteFile:
    """Edit one configuration file: ``after`` is the planned content (None: remove the
    file); execute re-applies ``edit`` to the file's text under its lock, so that a
    concurrent writer's change since the plan is kept."""

    path: str
    after: bytes | None  # None: remove the file
    edit: t.Callable[[str | None], str | None] | None = dataclasses.field(default=None, compare=False)


Action = t.Union[Insert, Remove, RunCommand, SweepUnused, WriteFile]


@dataclasses.dataclass
class ModuleResult:
    """What happened (or would) to one requested name; ``as_dict`` is the module's RV."""

    name: str
    module: str | None = None
    kernel_name: str | None = None
    resolved: list[str] = dataclasses.field(default_factory=list)
    show_depends: list[str] = dataclasses.field(default_factory=list)
    action: str = "absent"
    inserted: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    commands: list[str] = dataclasses.field(default_factory=list)
    params_mismatch: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    params_unverified: list[str] = dataclasses.field(default_factory=list)
    params_normalized: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    params_overridden: dict[str, str] = dataclasses.field(default_factory=dict)
    files: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, t.Any]:
        # Shallow: the values are plain lists/dicts of strings (asdict's deep copy costs
        # a noticeable share of a 4000-name run).
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass
class Plan:
    results: list[ModuleResult]
    actions: list[Action]
    diff: list[dict[str, str]]
    # Actions execute() found already done: inserts the kernel refused with EEXIST.
    skipped: list[Action] = dataclasses.field(default_factory=list)
    params: str | None = None
    reload: bool = False
    # The planner that made the plan: execute() asks it about the kernel afterwards.
    planner: Planner | None = dataclasses.field(default=None, repr=False, compare=False)
    # Requested names execute() loaded with params (and read the parameters back).
    loaded_now: set[str] = dataclasses.field(default_factory=set)

    @property
    def changed(self) -> bool:
        return len(self.actions) > len(self.skipped)

    @property
    def moddir(self) -> str:
        return self.planner.paths.moddir if self.planner else ""

    @property
    def warnings(self) -> list[str]:
        """What the user should hear about the results, once per cause.

        Parameters the kernel does not show are worth a word only when this run loaded
        the module with them: on a rerun that changes nothing they are no news.
        """
        out = []
        for r in self.results:
            if r.params_mismatch and not self.reload:
                out.append(f"Module {r.kernel_name} is loaded with other parameters than requested: "
                           f"{', '.join(sorted(r.params_mismatch))} (reload=true applies them)")
            if r.params_normalized:
                shown = ", ".join(f"{k}={v['loaded']} (requested {v['requested']})"
                                  for k, v in sorted(r.params_normalized.items()))
                out.append(f"Module {r.kernel_name} keeps other parameter values than requested: {shown}. "
                           f"The module normalizes them; ask for the values it shows")
            if r.params_unverified and r.name in self.loaded_now:
                out.append(f"Module {r.kernel_name} is loaded; its parameters "
                           f"{', '.join(r.params_unverified)} are not readable, so they cannot be verified")
            for param, source in sorted(r.params_overridden.items()):
                out.append(f"Persistent option {param} of {r.module} will not hold at boot: "
                           f"{source} sets it again later")
        return out


def format_params(params: str | t.Mapping[str, ParamValue] | None) -> str | None:
    """A params option as the string modprobe passes: dict items become k=v words.

    Values with blanks are quoted as modprobe quotes them (``k="a b"``), booleans become
    1/0, lists become comma-separated arrays, None gives a bare ``k``. Anything the kernel
    could not take back as asked (a newline, a quote inside a value, an unbalanced quote,
    a word that is no parameter) is refused with a KmodError naming ``params``.
    """
    return kparams.format_params(params, "params")


def _split_params(options: str) -> dict[str, str]:
    """Parameter -> value as the kernel splits an option string (bare ``k`` -> "")."""
    return {k: v or "" for k, v in kparams.kernel_args(options)}


def _same_value(requested: str, loaded: str) -> bool:
    """Whether a sysfs value shows the requested one (Y/N bools, ints in any base, arrays)."""
    if requested == loaded:
        return True
    req, got = requested.split(","), loaded.split(",")
    if len(req) != len(got):
        return False
    for r, g in zip(req, got):
        if r == g:
            continue
        if g in ("Y", "N"):
            # kstrtobool: the first character decides (y/Y/t/T/1/on vs n/N/f/F/0/off).
            truth = {"y": "Y", "t": "Y", "1": "Y", "n": "N", "f": "N", "0": "N"}
            key = "Y" if r.lower() == "on" else "N" if r.lower() == "off" else truth.get(r[:1].lower())
            if key == g or (r == "" and g == "Y"):
                continue
            return False
        try:
            if int(r, 0) != int(g, 0):
                return False
        except ValueError:
            return False
    return True


def _parse_record(raw: bytes | None) -> dict[str, t.Any]:
    """The params record's entries; {} for a missing or garbled file."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("shown"), dict)}


class Planner:
    """Plans kmod_load for one system root: module tree, configuration and kernel state."""

    def __init__(self, paths: KmodPaths, db: ModuleDB | None = None,
                 kstate: KernelState | None = None) -> None:
        self.paths = paths
        self.db = db or ModuleDB(paths)
        self.kstate = kstate or KernelState(paths)
        self.loaded = self.kstate.loaded()
        self._elves: dict[str, ModuleElf] = {}
        self._knames: dict[str, str] = {}  # file path -> kernel name, for every file read
        self._orphans: set[str] | None = None
        self._record: dict[str, t.Any] | None = None

    # --- module identity -------------------------------------------------------------

    def _elf(self, path: str) -> ModuleElf:
        if path not in self._elves:
            self._elves[path] = read_module(path)
        return self._elves[path]

    def kernel_name_of_file(self, path: str) -> str:
        """The name the kernel registers a module file under (.gnu.linkonce.this_module)."""
        if path not in self._knames:
            # Only the name is kept: holding every image read would cost their whole size.
            elf = self._elves.get(path) or read_module(path)
            self._knames[path] = modname_normalize(elf.this_module_name or elf.get("name")
                                                   or modname_from_path(path))
        return self._knames[path]

    def _missing_providers(self, path: str, loading: set[str]) -> dict[str, list[str]]:
        """Modules that export what the file needs but are not loaded: module -> symbols.

        Symbols modules.symbols does not know come from the kernel image itself.
        """
        index = self.db.index("modules.symbols")
        missing: dict[str, list[str]] = {}
        if index is None:
            return missing
        for symbol, _crc, weak in self._elf(path).undefined():
            provider = None if weak else index.search(f"symbol:{symbol}")
            if provider and modname_normalize(provider) not in self.loaded.keys() | loading:
                missing.setdefault(modname_normalize(provider), []).append(symbol)
        return missing

    def _has_orphans(self) -> bool:
        """Whether some loaded module is unknown to the tree by file name.

        Only then can a module file be loaded under another name (a dkms
        ``nvidia-current.ko`` registering as ``nvidia``), so only then are files read.
        """
        if self._orphans is None:
            self._orphans = {n for n in self.loaded if not self.db.lookup_exact(n)}
        return bool(self._orphans)

    def kernel_name(self, module: Module, read: bool = False) -> str:
        """The name the kernel has (or would register) the module under.

        The file name, unless the file says otherwise: a file is read when it was read
        before, when some loaded module is unknown by file name (a dkms
        ``nvidia-current.ko`` loaded as ``nvidia``), or with ``read`` (a requested module)
        when the kernel does not have its file name but has other modules: a copy
        ``e2edummy.ko`` of ``dummy.ko`` registers as ``dummy``, a name the tree also knows.
        Loading a file whose name the kernel has loaded reads nothing.
        """
        name = modname_normalize(module.name)
        if not module.path or name in self.loaded:
            return name
        if module.path in self._knames:
            return self._knames[module.path]
        if (read and self.loaded) or self._has_orphans():
            try:
                return self.kernel_name_of_file(module.path)
            except KmodError:
                # An unreadable file: the insert reports it; for removal it is not loaded.
                return name
        return name

    # --- planning ----------------------------------------------------------------------

    def plan(self, names: t.Sequence[str], state: str = "present", params: str | None = None,
             reload: bool = False, persistent: str | None = None) -> Plan:
        for name in names:
            validate_name(name)
        if params is not None and len(names) != 1:
            raise KmodError("params apply to one module: give exactly one name with params",
                            names=list(names))
        if state == "present":
            results, actions, runtime_diff = self._plan_present(names, params, reload)
        else:
            results, actions, runtime_diff = self._plan_absent(names)
        diff = [runtime_diff] if runtime_diff else []
        if persistent:
            for result in results:
                for action, file_diff in self._plan_files(result, persistent, params):
                    actions.append(action)
                    result.files.append(action.path)
                    diff.append(file_diff)
        return Plan(results, actions, diff, params=params, reload=reload, planner=self)

    def _plan_present(self, names: t.Sequence[str], params: str | None,
                      reload: bool) -> tuple[list[ModuleResult], list[Action], dict[str, str] | None]:
        results: list[ModuleResult] = []
        actions: list[Action] = []
        will_load: set[str] = set()
        removed: set[str] = set()

        def is_loaded(name: str) -> bool:
            key = modname_normalize(name)
            if key in will_load or (key in self.loaded and key not in removed):
                return True
            if key in self.loaded or not (self._knames or self._has_orphans()):
                return False  # no file read, no orphan: the file name is the kernel name
            found = self.db.lookup_exact(key)
            kname = self.kernel_name(found[0]) if found else key
            return kname != key and (kname in will_load or (kname in self.loaded and kname not in removed))

        for name in names:
            result = ModuleResult(name)
            results.append(result)
            if name.startswith("/"):
                self._plan_insmod(result, params, actions, will_load, is_loaded)
                continue
            modules = self.db.lookup(name)
            self._describe(result, modules)
            result.show_depends = self.db.show_depends(name, params)
            for module in modules:
                kname = self.kernel_name(module, read=True)
                if params and kname in self.loaded and not module.builtin:
                    self._compare_params(result, kname, params)
                    if result.params_mismatch and reload:
                        self._check_unused([kname], set())
                        actions.append(Remove(kname))
                        result.removed.append(kname)
                        removed.add(kname)
            for step in self.db.probe_steps(name, params, is_loaded):
                if step.kind == "builtin":
                    continue
                if step.kind == "install":
                    command = step.command or ""
                    if params:  # our params would reach /bin/sh through $CMDLINE_OPTS
                        kparams.check_command_options(params, command, f"loading {step.module}")
                    actions.append(RunCommand(step.module, command, step.options or ""))
                    result.commands.append(command)
                    kname = modname_normalize(step.module)
                elif step.path is None:
                    if not step.required:
                        continue  # modprobe ignores softdeps that fail
                    raise ModuleLookupError(
                        f"Module {step.module} (reached through {name}) has no file in "
                        f"{self.paths.moddir}/modules.dep", name=name)
                else:
                    # By the kernel's name for the file when it was read, else its file name.
                    kname = self._knames.get(step.path, modname_normalize(step.module))
                    actions.append(Insert(kname, step.path, step.options or ""))
                result.inserted.append(kname)
                will_load.add(kname)
            result.action = self._present_action(result, modules, is_loaded)
        before = sorted(k for k in self._touched(results) if k in self.loaded)
        after = sorted(k for k in self._touched(results)
                       if (k in self.loaded and k not in removed) or k in will_load)
        return results, actions, self._runtime_diff(before, after)

    def _present_action(self, result: ModuleResult, modules: list[Module],
                        is_loaded: t.Callable[[str], bool]) -> str:
        if result.inserted or result.commands:
            return "loaded"
        if all(m.builtin for m in modules):
            return "builtin"
        if any(m.builtin or is_loaded(m.name) for m in modules):
            return "already_loaded"
        return "blacklisted"

    def _plan_insmod(self, result: ModuleResult, params: str | None, actions: list[Action],
                     will_load: set[str], is_loaded: t.Callable[[str], bool]) -> None:
        """An absolute path: that file alone, like insmod."""
        path = result.name
        self._elf(path)  # parsed once for the name and the symbols
        kname = self.kernel_name_of_file(path)
        result.module = modname_from_path(path)
        result.kernel_name = kname
        result.resolved = [kname]
        options = params or ""
        result.show_depends = [f"insmod {path} {options}"]
        if is_loaded(kname):
            if params:
                self._compare_params(result, kname, params)
            result.action = "already_loaded"
            return
        missing = self._missing_providers(path, will_load)
        if missing:
            needs = "; ".join(f"{m} ({', '.join(syms[:3])}{', ...' if len(syms) > 3 else ''})"
                              for m, syms in missing.items())
            raise ModuleLookupError(f"Cannot load {path} alone: it needs symbols from modules that "
                                    f"are not loaded: {needs}. Load those first, or load the module "
                                    f"by name to get its dependencies", name=path,
                                    missing=sorted(missing))
        actions.append(Insert(kname, path, options))
        result.inserted.append(kname)
        will_load.add(kname)
        result.action = "loaded"

    def _describe(self, result: ModuleResult, modules: list[Module]) -> None:
        result.resolved = [modname_normalize(m.name) for m in modules]
        result.module = result.resolved[0]
        result.kernel_name = self.kernel_name(modules[0], read=True)

    def _compare_params(self, result: ModuleResult, kname: str, params: str) -> None:
        """Sort the loaded module's view of params into mismatch, normalized, unverified.

        A value differs only by the kernel's normalization when our last load of this
        module with exactly these params showed that same value (the params record): a
        reload would show it again, so it is not a mismatch and does not reload.
        """
        recorded = self.params_record().get(kname, {})
        shown = recorded.get("shown", {}) if recorded.get("params") == params else {}
        differ, unverified = self.shown_params(kname, params)
        result.params_unverified += [k for k in unverified if k not in result.params_unverified]
        for key, values in differ.items():
            if shown.get(key) == values["loaded"]:
                result.params_normalized[key] = values
            else:
                result.params_mismatch[key] = values

    def shown_params(self, kname: str, params: str) -> tuple[dict[str, dict[str, str]], list[str]]:
        """(params sysfs shows with another value: requested and loaded, params it does not show)."""
        loaded = self.kstate.parameters(kname)
        differ: dict[str, dict[str, str]] = {}
        unverified: list[str] = []
        for key, value in _split_params(params).items():
            got = loaded.get(key.replace("-", "_"))
            if got is None:
                # Parameters with permission 0 are not in sysfs: nothing to compare.
                unverified.append(key)
            elif not _same_value(value, got):
                differ[key] = {"requested": value, "loaded": got}
        return differ, unverified

    def params_record(self) -> dict[str, t.Any]:
        """The params record; {} when missing or unreadable (it only saves reloads)."""
        if self._record is None:
            self._record = {}
            try:
                self._record = _parse_record(read_file(self.paths.under(*PARAMS_RECORD), 1 << 20))
            except KmodError:
                pass  # a directory, a FIFO...: the record only saves reloads
        return self._record

    def record_params(self, kname: str, params: str, normalized: dict[str, dict[str, str]]) -> None:
        """After loading kname with params: remember what the kernel normalized (or forget)."""
        entry = {"params": params, "shown": {k: v["loaded"] for k, v in normalized.items()}}

        def edit(text: str | None) -> str | None:
            # Under the lock, on what is there now: concurrent runs keep each other's entries.
            record = _parse_record((text or "").encode("utf-8", "surrogateescape"))
            if normalized:
                record[kname] = entry
            elif record.pop(kname, None) is None:
                return text
            return json.dumps(record, sort_keys=True, indent=1) + "\n"

        if not normalized and kname not in self.params_record():
            return
        try:
            _before, after = edit_locked(self.paths.under(*PARAMS_RECORD, follow=False), edit)
        except KmodError:
            return  # e.g. a read-only /run: only the next run's reload is not saved
        self._record = _parse_record((after or "").encode("utf-8", "surrogateescape"))

    def _touched(self, results: list[ModuleResult]) -> set[str]:
        return {n for r in results for n in (r.resolved + r.inserted + r.removed + [r.kernel_name or ""]) if n}

    @staticmethod
    def _runtime_diff(before: list[str], after: list[str]) -> dict[str, str] | None:
        if before == after:
            return None
        return {"before_header": "loaded modules", "after_header": "loaded modules",
                "before": "".join(f"{m}\n" for m in before),
                "after": "".join(f"{m}\n" for m in after)}

    # --- removal -------------------------------------------------------------------------

    def _refs(self) -> dict[str, list[t.Any]]:
        """Simulated kernel references: name -> [refcount, set of module holders]."""
        return {name: [lm.refcount or 0, set(lm.holders)] for name, lm in self.loaded.items()}

    def _check_unused(self, targets: list[str], also_removed: set[str]) -> None:
        """Fail, naming holders and refcount, if a target stays in use after the others go."""
        for m in targets:
            if self.loaded[m].permanent or self.loaded[m].refcount is None:
                raise KmodError(f"Module {m} cannot be removed: the kernel cannot unload it "
                                f"(it has no exit function, or module unloading is not built in)",
                                name=m)
        refs = self._refs()
        pending = list(targets)
        while pending:
            free = [m for m in pending if refs[m][0] == 0]
            if not free:
                busy = pending[0]
                refcnt, holders = self.loaded[busy].refcount or 0, self.loaded[busy].holders
                users = (f"used by {', '.join(holders)}" if holders
                         else "used by a process or device, not by other modules")
                raise KmodError(f"Module {busy} is in use ({users}; refcount {refcnt}): "
                                f"nothing was removed", name=busy, holders=list(holders),
                                refcount=refcnt)
            for m in free:
                pending.remove(m)
                self._drop(refs, m)
        for m in also_removed:
            self._drop(refs, m)

    @staticmethod
    def _drop(refs: dict[str, list[t.Any]], module: str) -> None:
        refs.pop(module, None)
        for ref in refs.values():
            if module in ref[1]:
                ref[1].discard(module)
                ref[0] = max(ref[0] - 1, 0)

    def _plan_absent(self, names: t.Sequence[str]
                     ) -> tuple[list[ModuleResult], list[Action], dict[str, str] | None]:
        results: list[ModuleResult] = []
        actions: list[Action] = []
        targets: dict[str, ModuleResult] = {}
        closures: dict[str, list[str]] = {}
        for name in names:
            result = ModuleResult(name)
            results.append(result)
            for key, module in self._removal_targets(result):
                if module is not None and module.remove_command:
                    actions.append(RunCommand(key, module.remove_command, ""))
                    result.commands.append(module.remove_command)
                    continue
                targets.setdefault(key, result)
                closures[key] = self._closure(module) if module is not None else self._uses(key)
        self._check_unused(list(targets), set())
        owners = self._softdep_owners(list(targets) + [m for c in closures.values() for m in c])
        order = self._removal_order(targets, closures, owners)
        for kname, result in order:
            actions.append(Remove(kname))
            result.removed.append(kname)
        gone = {r for r, _result in order}
        sweep: dict[str, tuple[str, tuple[str, ...], str]] = {}
        for top, members in closures.items():
            for m in members:
                if m not in gone:
                    sweep.setdefault(m, (m, tuple(sorted(owners.get(m, ()))), targets[top].name))
        if order and sweep:
            actions.append(SweepUnused(tuple(sweep.values())))
        for result in results:
            if result.removed or result.commands:
                result.action = "removed"
        before = sorted(m for m, _result in order)
        return results, actions, self._runtime_diff(before, [])

    def _removal_targets(self, result: ModuleResult) -> list[tuple[str, Module | None]]:
        """(kernel name, module) of each loaded module that a name means for removal."""
        name = result.name
        if name.startswith("/"):
            kname = self.kernel_name_of_file(name)
            result.module, result.kernel_name, result.resolved = modname_from_path(name), kname, [kname]
            found = self.db.lookup_exact(result.module)
            return [(kname, found[0] if found else None)] if kname in self.loaded else []
        try:
            modules = self.db.lookup(name)
        except ModuleLookupError:
            key = modname_normalize(name)
            if key not in self.loaded:
                raise
            # Loaded, but not from this tree: it can still be removed, like rmmod does.
            result.module = result.kernel_name = key
            result.resolved = [key]
            return [(key, None)]
        self._describe(result, modules)
        result.show_depends = self.db.show_depends(name, None)
        for module in modules:
            if module.builtin:
                raise KmodError(f"Module {module.name} is builtin: it is part of the kernel image "
                                f"and cannot be removed", name=name)
        return [(k, m) for m in modules if (k := self.kernel_name(m, read=True)) in self.loaded]

    def _uses(self, name: str) -> list[str]:
        """What the kernel says a module uses, transitively (for modules the tree lacks)."""
        out: list[str] = []
        pending = [name]
        while pending:
            holder = pending.pop(0)
            for used, lm in self.loaded.items():
                if holder in lm.holders and used not in out:
                    out.append(used)
                    pending.append(used)
        return out

    def _closure(self, module: Module) -> list[str]:
        """Everything loading the module pulls in (deps, softdeps, theirs), dependents first."""
        try:
            steps = self.db.probe_steps(module.name)
        except KmodError:
            return [modname_normalize(d) for d in module.deps]
        names = [modname_normalize(s.module) for s in reversed(steps) if s.kind != "builtin"]
        return [n for n in dict.fromkeys(names) if n != modname_normalize(module.name)]

    def _softdep_owners(self, names: t.Iterable[str]) -> dict[str, set[str]]:
        """softdep module -> the loaded modules that name it: it stays while they do."""
        owners: dict[str, set[str]] = {}
        for name in names:
            if name not in self.loaded:
                continue
            for module in self.db.lookup_exact(name):
                for soft in module.softdep_pre + module.softdep_post:
                    try:
                        found = self.db.lookup(soft)
                    except KmodError:
                        continue  # modprobe ignores softdeps it cannot resolve
                    for m in found:
                        owners.setdefault(modname_normalize(m.name), set()).add(name)
        return owners

    def _removal_order(self, targets: dict[str, ModuleResult], closures: dict[str, list[str]],
                       owners: dict[str, set[str]]) -> list[tuple[str, ModuleResult]]:
        """Targets, then every closure member whose simulated refcount reaches 0."""
        refs = self._refs()
        order: list[tuple[str, ModuleResult]] = []
        pending = list(targets)
        while pending:  # _check_unused made sure this ends
            for m in [m for m in pending if refs[m][0] == 0]:
                pending.remove(m)
                self._drop(refs, m)
                order.append((m, targets[m]))
        # A softdep counts as held by each loaded module that names it.
        for soft, by in owners.items():
            for owner in by & refs.keys():
                if soft in refs:
                    refs[soft][0] += 1
                    refs[soft][1].add(owner)
        progress = True
        while progress:
            progress = False
            for top, members in closures.items():
                for m in members:
                    if m in refs and refs[m][0] == 0 and m not in targets \
                            and self.loaded[m].refcount is not None and not self.loaded[m].permanent:
                        self._drop(refs, m)
                        order.append((m, targets[top]))
                        progress = True
        return order

    # --- persistent files ----------------------------------------------------------------

    def _plan_files(self, result: ModuleResult, persistent: str,
                    params: str | None) -> t.Iterator[tuple[WriteFile, dict[str, str]]]:
        if result.name.startswith("/"):
            raise KmodError(f"persistent needs a module name from the module tree, not the file "
                            f"path {result.name}", name=result.name)
        if result.module is None:
            return
        # Both the file names and the lines we write hold the module name.
        module = check_module_name(result.module)
        load_conf = self.paths.under("etc/modules-load.d", f"{module}.conf", follow=False)
        opts_conf = self.paths.under("etc/modprobe.d", f"{module}.conf", follow=False)
        present = persistent == "present"
        yield from self._edit(load_conf, lambda text: edit_modules_load(text, module, present, MANAGED_HEADER))
        if present and params is None:
            return
        options = None
        if present and params is not None:
            kparams.check_params(params, "params")
            # Blanks around the words mean nothing to the kernel (quotes are balanced).
            options = params.strip(" ") or None
        if options:
            install = self.db.config.install_for(module)
            if install is not None:
                kparams.check_command_options(options, install.command, str(install.source))
            result.params_overridden = self._overriding_options(module, opts_conf, options)
        yield from self._edit(opts_conf, lambda text: edit_options(text, module, options, MANAGED_HEADER))

    def _overriding_options(self, module: str, opts_conf: str, params: str) -> dict[str, str]:
        """Our persistent params that a later ``options`` line sets again, with its source.

        modprobe joins every matching options line in configuration order (files sorted by
        basename, the kernel command line last) and the kernel keeps the last value of a
        parameter, so such a line wins at boot (systemd's own systemd.conf sets
        ``options dummy numdummies=0``, which beats ``/etc/modprobe.d/dummy.conf``).
        """
        wanted = _split_params(params).keys()
        ours = os.path.basename(opts_conf)
        overridden: dict[str, str] = {}
        for entry in self.db.config.options:
            if entry.modname != module or entry.source.path == opts_conf:
                continue
            if entry.source.line == 0 or os.path.basename(entry.source.path) > ours:
                for key in wanted & _split_params(entry.options).keys():
                    overridden[key] = str(entry.source)
        return overridden

    def _edit(self, path: str, edit: t.Callable[[str | None], str | None]
              ) -> t.Iterator[tuple[WriteFile, dict[str, str]]]:
        before = read_text(path)
        after = edit(before)
        if after == before:
            return
        yield (WriteFile(path, None if after is None else after.encode("utf-8", "surrogateescape"), edit),
               {"before_header": path, "after_header": path,
                "before": before or "", "after": after or ""})
