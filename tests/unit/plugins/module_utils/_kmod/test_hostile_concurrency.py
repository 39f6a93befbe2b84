# SPDX-License-Identifier: GPL-3.0-or-later
"""Concurrent writers: real processes, not threads (POSIX locks are
per process), that all plan on the same old text and then apply at once. Without the
lock and the re-read under it, every writer but the last loses its entries."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import traceback

import pytest
from fake_kernel import FakeKernel

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.blacklist import apply, plan_blacklist
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KmodError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.lock import LOCK_NAME, directory_lock
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.execute import execute
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.plan import Planner, WriteFile

CTX = multiprocessing.get_context("fork")
BLACKLIST_CONF = "/etc/modprobe.d/kernel-kmod-blacklist.conf"


def _run(target, *args) -> multiprocessing.process.BaseProcess:
    def guarded() -> None:
        try:
            target(*args)
        except BaseException:  # report, then fail the process
            traceback.print_exc()
            os._exit(1)
        os._exit(0)

    proc = CTX.Process(target=guarded)
    proc.start()
    return proc


def _join(procs: list[multiprocessing.process.BaseProcess]) -> None:
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)


def blacklister(root: str, release: str, names: list[str], mode: str, path: str, barrier) -> None:
    plan = plan_blacklist(KmodPaths(root, release), names, "present", mode, path)
    assert plan.file_changed
    barrier.wait(60)  # everybody has planned on the same old text
    apply(plan, None, None)  # type: ignore[arg-type]  # no unload: needs no loader


def persistent_loader(root: str, release: str, name: str, params: str, barrier) -> None:
    planner = Planner(KmodPaths(root, release))
    plan = planner.plan([name], params=params, persistent="present")
    # The module is loaded already: the plan only writes files.
    assert plan.actions and all(isinstance(a, WriteFile) for a in plan.actions)
    barrier.wait(60)
    execute(plan, None, None)  # writes files only: needs no syscalls


def kmod_entries(root, release: str, confdir) -> list[str]:
    out = subprocess.run(["modprobe", "-c", "-d", str(root), "-S", release, "-C", str(confdir)],
                         capture_output=True, check=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith(("blacklist ", "install ", "options dummy"))]


@pytest.mark.parametrize("mode", ["blacklist", "disable"])
def test_concurrent_blacklist_edits_keep_every_entry(scratch_kernel, mode):
    tree = scratch_kernel("6.1")
    confdir = tree.root / "etc/modprobe.d"
    confdir.mkdir(parents=True)
    (confdir / "kernel-kmod-blacklist.conf").write_text("# theirs\nblacklist old\n")
    names = [f"mod{i}" for i in range(12)]
    barrier = CTX.Barrier(len(names))
    _join([_run(blacklister, str(tree.root), tree.release, [n], mode, BLACKLIST_CONF, barrier) for n in names])
    entries = kmod_entries(tree.root, tree.release, confdir)
    assert sorted(e for e in entries if e.startswith("blacklist ")) == sorted(
        ["blacklist old"] + [f"blacklist {n}" for n in names])
    if mode == "disable":
        assert sorted(e for e in entries if e.startswith("install ")) == sorted(
            f"install {n} /bin/false" for n in names)
    assert (confdir / "kernel-kmod-blacklist.conf").read_text().startswith("# theirs\nblacklist old\n")
    # The lock is a hidden file that libkmod never reads.
    assert os.listdir(confdir) and LOCK_NAME in os.listdir(confdir)


def test_persistent_and_blacklist_on_one_file_keep_all(scratch_kernel):
    tree = scratch_kernel("6.1")
    kernel = FakeKernel(tree.root, tree.release)
    modules = ["dummy", "veth", "ifb", "nlmon"]  # no dependencies: loaded as they are
    for name in modules:
        kernel.load(name)
    confdir = tree.root / "etc/modprobe.d"
    confdir.mkdir(parents=True)
    (confdir / "dummy.conf").write_text("alias my-dummy dummy\n")
    blacklisted = [f"blk{i}" for i in range(6)]
    values = {"dummy": [f"numdummies={i}" for i in range(3)]}
    jobs = [(persistent_loader, name, params) for name in modules for params in values.get(name, ["x=1"])]
    barrier = CTX.Barrier(len(jobs) + len(blacklisted))
    procs = [_run(fn, str(tree.root), tree.release, name, params, barrier) for fn, name, params in jobs]
    procs += [_run(blacklister, str(tree.root), tree.release, [n], "blacklist", "/etc/modprobe.d/dummy.conf",
                   barrier) for n in blacklisted]
    _join(procs)
    entries = kmod_entries(tree.root, tree.release, confdir)
    assert sorted(e for e in entries if e.startswith("blacklist ")) == [f"blacklist {n}" for n in blacklisted]
    options = [e for e in entries if e.startswith("options dummy")]
    assert len(options) == 1 and options[0].split(" ", 2)[2] in values["dummy"]
    assert "alias my-dummy dummy" in (confdir / "dummy.conf").read_text()
    for name in modules:
        assert (tree.root / f"etc/modules-load.d/{name}.conf").read_text().splitlines()[-1] == name
        if name != "dummy":
            assert (confdir / f"{name}.conf").read_text().splitlines()[-1] == f"options {name} x=1"


def _try_lock(directory: str, report: str) -> None:
    try:
        with directory_lock(directory, timeout=0.3):
            message = "locked"
    except KmodError as err:
        message = err.msg
    with open(report, "w", encoding="utf-8") as f:
        f.write(message)


def test_a_held_lock_times_out_with_a_message(tmp_path):
    conf, report = tmp_path / "conf", tmp_path / "report"
    with directory_lock(str(conf)):
        _join([_run(_try_lock, str(conf), str(report))])
        message = report.read_text()
    assert "Timed out" in message and LOCK_NAME in message
    _join([_run(_try_lock, str(conf), str(report))])  # released: the next one gets it
    assert report.read_text() == "locked"
