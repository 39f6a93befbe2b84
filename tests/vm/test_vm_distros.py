# SPDX-License-Identifier: GPL-3.0-or-later
"""The four modules on other Debian releases, each with its own kernel, kmod and Python:
Debian 13 (trixie's 6.12 kernel, kmod 34, Python 3.13) and Debian 11 (bullseye's 5.10
kernel, kmod 28, Python 3.9, pyelftools 0.27).

What is new here and is tested (the rest is the Debian 12 guests' job): the modules run
on that Python; the generation is detected from the guest's kmod and reported by all four
modules; kmod_depmod writes exactly what the guest's depmod writes (kmod 34's pre-order
.bin files and modules.weakdep on trixie) and leaves a tree the guest's depmod indexed
alone; modprobe.d `*.alias` files count only where the guest's modprobe reads them (kmod
< 33); modinfo's text is the guest's modinfo's; modules of the guest's own kernel load,
take options and obey a disable file. The oracle is always the guest's kmod or kernel.
"""

from __future__ import annotations

import re

import pytest

from qemu import VM

pytestmark = pytest.mark.vm

# kmod_depmod's input files, not written by depmod
INPUTS = {"modules.order", "modules.builtin", "modules.builtin.modinfo"}
# A part of the guest's tree small enough for a whole depmod under TCG in seconds, with
# dependencies, aliases, softdeps and symbols (netfilter and libraries: about 250 modules).
SMALL_TREE = ("kernel/net/netfilter", "kernel/net/ipv4/netfilter", "kernel/net/ipv6/netfilter",
              "kernel/lib", "kernel/drivers/net/dummy.ko*")
ALIAS_FILE = "/etc/modprobe.d/kmod-vm-test.alias"
DISABLE_FILE = "/etc/modprobe.d/kmod-vm-test.conf"


def guest(vm: VM, command: str) -> str:
    return vm.run(command, check=True).stdout


def kmod_major(vm: VM) -> int:
    return int(re.match(r"kmod version (\d+)", guest(vm, "kmod --version")).group(1))


def generation(vm: VM) -> int:
    """The generation the engine should follow: the guest's kmod version, where the engine
    models it (kmod <= 30 behave as 30, docs/kmod-generations.md)."""
    return min(max(kmod_major(vm), 30), 34)


def test_runtime(distro_vm: VM) -> None:
    """Each guest is the platform its name says (so the tests below prove what they claim)."""
    vm = distro_vm
    python, elftools = guest(vm, "python3 -c 'import sys, elftools; "
                                 "print(\"%d.%d\" % sys.version_info[:2], elftools.__version__)'").split()
    kmod = guest(vm, "kmod --version").split()[2]
    expected = {"trixie": ("3.13", "34"), "bullseye": ("3.9", "28")}[vm.key]
    assert (python, kmod.split(".")[0]) == expected
    if vm.key == "bullseye":
        assert elftools == "0.27"  # the oldest pyelftools supported (Debian 11's package)
    assert guest(vm, "uname -r").strip() == vm.image.release


def test_live_system(distro_vm: VM) -> None:
    vm = distro_vm
    gen = generation(vm)
    # An options line in a *.alias file: kmod 28 applies it, kmod 34 ignores the file.
    # nbd: its nbds_max is readable in /sys (dummy's numdummies is not).
    vm.put("options nbd nbds_max=3\n", ALIAS_FILE)
    try:
        modprobe_c = guest(vm, "modprobe -c")
        show = guest(vm, "modprobe --show-depends nbd").splitlines()
        modinfo = {name: guest(vm, f"modinfo {name}") for name in ("nbd", "nf_nat")}
        res = vm.ansible_tasks([
            {"name": "facts", "kernel.kmod.kmod_facts": {"gather_subset": ["loaded", "config"],
                                                         "modinfo": ["nbd", "nf_nat"]}},
            {"name": "load", "kernel.kmod.kmod_load": {"name": "nbd"}},
            {"name": "params", "ansible.builtin.command": "cat /sys/module/nbd/parameters/nbds_max"},
            {"name": "disable", "kernel.kmod.kmod_blacklist": {"name": ["nbd"], "mode": "disable",
                                                               "path": DISABLE_FILE, "unload": True}},
            {"name": "modprobe refused", "ansible.builtin.command": "modprobe nbd", "ignore_errors": True},
            {"name": "enable", "kernel.kmod.kmod_blacklist": {"name": ["nbd"], "state": "absent",
                                                              "path": DISABLE_FILE}},
        ])
        loaded = guest(vm, "cat /proc/modules")
        still = guest(vm, f"cat {DISABLE_FILE} 2>/dev/null || true")
    finally:
        vm.run(f"rm -f {ALIAS_FILE} {DISABLE_FILE}; modprobe -r nbd")
    assert res.rc == 0, res

    expected = {"version": gen, "source": "dpkg", "evidence": f"/var/lib/dpkg/status: kmod {kmod_major(vm)}"}
    for name in ("facts", "load", "disable", "enable"):
        assert res.task(name)["kmod_generation"] == expected, name

    kmod = res.task("facts")["ansible_facts"]["kmod"]
    for name, text in modinfo.items():
        assert kmod["modinfo"][name]["text"] == text, name
    ours = [f"options {o['module']} {o['options']}" for o in kmod["config"]["options"]]
    assert ours == [line for line in modprobe_c.splitlines() if line.startswith("options ")]
    assert ("options nbd nbds_max=3" in ours) is (gen < 33)

    load = res.task("load")
    assert load["changed"] is True and load["modules"][0]["show_depends"] == show
    assert (show[-1].endswith(" nbds_max=3 ")) is (gen < 33), show
    assert (res.task("params")["stdout"] == "3") is (gen < 33)
    assert res.task("disable")["changed"] is True
    refused = res.task("modprobe refused")
    assert refused["rc"] != 0, "the guest's modprobe must obey the disable file we wrote"
    assert not re.search(r"^nbd ", loaded, re.M) and still == ""


def test_depmod_equals_the_guests_depmod(distro_vm: VM) -> None:
    vm = distro_vm
    rel = vm.image.release
    gen = generation(vm)
    moddir = f"/lib/modules/{rel}"
    ours, theirs = "/tmp/kmod-vm-ours", "/tmp/kmod-vm-theirs"
    # The small tree as a root of its own; its generation comes from the guest (source host).
    guest(vm, f"rm -rf {ours} {theirs}; mkdir -p {ours}{moddir} && cd {moddir} && "
              f"cp -a --parents {' '.join(SMALL_TREE)} {' '.join(INPUTS)} {ours}{moddir}/ && "
              f"cp -a {ours} {theirs} && depmod -b {theirs} {rel}")
    try:
        res = vm.ansible_tasks([
            {"name": "ours", "kernel.kmod.kmod_depmod": {"root": ours, "kernel_release": rel}},
            {"name": "again", "kernel.kmod.kmod_depmod": {"root": ours, "kernel_release": rel}},
            {"name": "theirs", "kernel.kmod.kmod_depmod": {"root": theirs, "kernel_release": rel}},
        ])
        assert res.rc == 0, res
        written = guest(vm, f"cd {theirs}{moddir} && ls modules.*").split()
        differ = guest(vm, f"cd {theirs}{moddir} && for f in modules.*; do "
                           f"cmp -s $f {ours}{moddir}/$f || echo $f; done").split()
    finally:
        vm.run(f"rm -rf {ours} {theirs}")

    files = sorted(set(written) - INPUTS)
    assert len(files) == (11 if gen >= 33 else 10), files  # modules.weakdep from kmod 33
    assert differ == [], f"not byte-identical to the guest's depmod: {differ}"
    assert sorted(res.task("ours")["files_changed"]) == files
    assert res.task("ours")["kmod_generation"]["version"] == gen
    assert res.task("ours")["kmod_generation"]["source"] == "host"
    for name in ("again", "theirs"):
        assert res.task(name)["changed"] is False, (name, res.task(name).get("files_changed"))
