# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Carry out a kmod_load ``Plan``: inserts, removals, modprobe.d commands, file edits.

The deciding is ``plan.Planner``'s; this file only acts, in the plan's order, and
records on the plan what the kernel said (a module it already had, the name it
registered a file under, the parameters it shows after a load).
"""

from __future__ import annotations

import os
import typing as t

from .errors import KmodError, LoaderError
from .lock import edit_locked
from .loader import Loader, Syscalls
from .plan import Insert, ModuleResult, Plan, Planner, Remove, RunCommand, SweepUnused


class CommandRunner(t.Protocol):
    def __call__(self, command: str, env: dict[str, str]) -> tuple[int, str, str]:
        ...


def shell_runner(run_command: t.Callable[..., tuple[int, str, str]]) -> CommandRunner:
    """A runner for modprobe.d install/remove commands: ``/bin/sh -c``, as modprobe's
    system() runs them, through ``run_command(argv, environ_update=env)`` (AnsibleModule's)."""

    def run(command: str, env: dict[str, str]) -> tuple[int, str, str]:
        return run_command(["/bin/sh", "-c", command], environ_update=env)

    return run


def execute(plan: Plan, syscalls: Syscalls | Loader | None, run: CommandRunner | None) -> None:
    """Perform the plan's actions in order; the first failure stops (KmodError).

    ``syscalls`` is wrapped in a ``Loader`` that knows what the kernel decompresses
    itself (a ready ``Loader`` is taken as is; None only for plans that load nothing).
    """
    planner = plan.planner
    if planner is None:
        raise KmodError("internal error: execute() needs a plan made by Planner.plan()")
    loader = syscalls if isinstance(syscalls, Loader) or syscalls is None \
        else Loader(syscalls, planner.kstate.compression())
    for action in plan.actions:
        if isinstance(action, Insert):
            if not _loader(loader).insert(action.path, action.module, action.options):
                _already_loaded(plan, action)
        elif isinstance(action, Remove):
            _loader(loader).remove(action.module)
        elif isinstance(action, RunCommand):
            command = action.command.replace("$CMDLINE_OPTS", action.options)
            rc, _out, err = _runner(run)(command, {"MODPROBE_MODULE": action.module})
            if rc != 0:
                raise KmodError(f"Command for module {action.module} failed (exit {rc}): "
                                f"{command}: {err.strip()}", module=action.module, rc=rc)
        elif isinstance(action, SweepUnused):
            _sweep(action, _loader(loader), planner, plan.results)
        elif action.edit is not None:
            # Re-read and re-edit under the lock: another run may have changed the file.
            edit_locked(action.path, action.edit)
        else:
            after = None if action.after is None else action.after.decode("utf-8", "surrogateescape")
            edit_locked(action.path, lambda _text: after)
    # Modules this run inserted itself (an install command may not pass params on).
    inserted = {a.module for a in plan.actions if isinstance(a, Insert) and a not in plan.skipped}
    for result in plan.results:
        loaded_it = result.kernel_name in inserted
        for module in result.inserted:
            _report_kernel_name(result, module, planner)
        if plan.params and loaded_it:
            _check_loaded_params(result, plan.params, planner)
            plan.loaded_now.add(result.name)


def _loader(loader: Loader | None) -> Loader:
    if loader is None:
        raise KmodError("internal error: a plan that loads or removes modules needs the kernel's syscalls")
    return loader


def _runner(run: CommandRunner | None) -> CommandRunner:
    if run is None:
        raise KmodError("internal error: a plan that runs modprobe.d commands needs a command runner")
    return run


def _sweep(action: SweepUnused, loader: Loader, planner: Planner,
           results: list[ModuleResult]) -> None:
    by_name = {r.name: r for r in reversed(results)}
    progress = True
    while progress:
        progress = False
        for module, owners, requested in action.candidates:
            removed = by_name[requested].removed
            if module in removed or planner.kstate.refcnt(module) != 0 \
                    or any(planner.kstate.initstate(o) is not None for o in owners):
                continue
            try:
                gone = loader.remove(module)
            except LoaderError:
                continue  # as modprobe -r, a dependency that cannot go now is left alone
            if gone:
                removed.append(module)
                progress = True


def _already_loaded(plan: Plan, action: Insert) -> None:
    """The kernel has a module of that name (EEXIST, as modprobe takes it): not a change.

    The plan did not see it: a load between plan and execute, or a dependency whose file
    registers under another loaded name (files are read only for requested names).
    """
    plan.skipped.append(action)
    for result in plan.results:
        if action.module in result.inserted:
            result.inserted.remove(action.module)
            if not result.inserted and not result.commands and result.action == "loaded":
                result.action = "already_loaded"
    for diff in plan.diff:
        if diff.get("after_header") == "loaded modules" and action.module not in diff["before"].split():
            diff["after"] = "".join(f"{m}\n" for m in diff["after"].split() if m != action.module)
    plan.diff[:] = [d for d in plan.diff if d["before"] != d["after"]]


def _check_loaded_params(result: ModuleResult, params: str, planner: Planner) -> None:
    """After inserting the module with params: what the kernel shows that differs was normalized."""
    differ, result.params_unverified = planner.shown_params(result.kernel_name or "", params)
    result.params_normalized = differ
    planner.record_params(result.kernel_name or "", params, differ)


def _report_kernel_name(result: ModuleResult, module: str, planner: Planner) -> None:
    """After a real load, learn the kernel name of the requested module from its file."""
    if result.module == module and result.kernel_name == module and not result.name.startswith("/"):
        found = planner.db.lookup_exact(module)
        if found and found[0].path and os.path.exists(found[0].path):
            result.kernel_name = planner.kernel_name_of_file(found[0].path)
            result.inserted[result.inserted.index(module)] = result.kernel_name
