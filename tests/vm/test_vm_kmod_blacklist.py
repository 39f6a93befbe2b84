# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_blacklist on real kernels in qemu: disable, modprobe fails, remove, it loads again."""

from __future__ import annotations

import pytest

from qemu import VM

pytestmark = pytest.mark.vm

CONF = "/etc/modprobe.d/kernel-kmod-blacklist.conf"


def loaded(vm: VM) -> set[str]:
    return {line.split()[0] for line in vm.run("cat /proc/modules", check=True).stdout.splitlines()}


def task(title: str, ignore_errors: bool = False, **args) -> dict:
    out = {"name": title, "kernel.kmod.kmod_blacklist": args}
    if ignore_errors:
        out["ignore_errors"] = True
    return out


def entry(result, name: str) -> dict:
    return next(m for m in result["modules"] if m["name"] == name)


def test_disable_unload_modprobe_fails_then_loads_again(vm_6_1: VM) -> None:
    # One Debian 12 kernel (6.12 runs the blacklist test below); the Debian 13 and 11
    # guests disable and unload with their own kernels and modprobe (test_vm_distros.py).
    vm = vm_6_1
    vm.run("modprobe -r libcrc32c; modprobe dummy", check=True)
    assert "dummy" in loaded(vm) and "libcrc32c" not in loaded(vm)
    try:
        res = vm.ansible_tasks([
            task("disable", name=["dummy", "libcrc32c"], mode="disable", unload=True),
            task("again", name=["dummy", "libcrc32c"], mode="disable", unload=True),
        ])
        assert res.rc == 0, res
        disable = res.task("disable")
        assert disable["changed"] is True
        assert entry(disable, "dummy")["unloaded"] == ["dummy"]
        assert entry(disable, "dummy")["blocked"] and entry(disable, "libcrc32c")["blocked"]
        assert res.task("again")["changed"] is False
        assert "dummy" not in loaded(vm)

        # The real modprobe of the guest: explicit loads and dependency pulls fail.
        for name in ("dummy", "libcrc32c", "nf_conntrack"):
            probe = vm.run(["modprobe", name])
            assert probe.returncode != 0, (name, probe)
        assert not {"dummy", "libcrc32c", "nf_conntrack"} & loaded(vm)

        res = vm.ansible_tasks([task("allow", name=["dummy", "libcrc32c"], state="absent")])
        assert res.rc == 0, res
        assert res.task("allow")["changed"] is True
        assert not entry(res.task("allow"), "dummy")["blocked"]
        vm.run("modprobe dummy && modprobe libcrc32c", check=True)
        assert {"dummy", "libcrc32c"} <= loaded(vm)
    finally:
        vm.run(f"rm -f {CONF}; modprobe -r dummy libcrc32c")


def test_blacklist_stops_alias_only_and_in_use(vm_6_12: VM) -> None:
    vm = vm_6_12
    try:
        res = vm.ansible_tasks([task("blacklist", name="dummy")])
        assert res.rc == 0, res
        blacklisted = entry(res.task("blacklist"), "dummy")
        assert blacklisted["alias_blocked"] and not blacklisted["blocked"]
        # What modprobe does with a blacklist: the alias loads nothing, the name still loads.
        vm.run("modprobe rtnl-link-dummy", check=True)
        assert "dummy" not in loaded(vm)
        vm.run("modprobe dummy", check=True)
        assert "dummy" in loaded(vm)

        vm.run("modprobe nf_nat", check=True)
        before = vm.run(f"cat {CONF}", check=True).stdout
        res = vm.ansible_tasks([task("in use", ignore_errors=True, name="nf_conntrack", unload=True)])
        busy = res.task("in use")
        assert busy.get("failed") and "nf_conntrack is in use" in busy["msg"] and "nf_nat" in busy["msg"]
        assert vm.run(f"cat {CONF}", check=True).stdout == before, "a failed task changes no file"
        assert "nf_conntrack" in loaded(vm)
    finally:
        vm.run(f"rm -f {CONF}; modprobe -r dummy nf_nat; modprobe -r nf_conntrack nf_defrag_ipv4 nf_defrag_ipv6 libcrc32c")
