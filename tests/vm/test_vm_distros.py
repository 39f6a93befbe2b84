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

Both guests play one playbook at once (ansible runs the hosts side by side, one emulated
CPU each); the tests then check each host's results against what its kmod said.
"""

from __future__ import annotations

import re
import typing as t

import pytest

from qemu import VM, PlaybookResult, ansible_playbook

pytestmark = pytest.mark.vm

HOSTS = ["vm_trixie", "vm_bullseye"]
# kmod_depmod's input files, not written by depmod
INPUTS = {"modules.order", "modules.builtin", "modules.builtin.modinfo"}
# A part of the guest's tree small enough for a whole depmod under TCG in seconds, with
# dependencies, aliases, softdeps and symbols (netfilter and libraries: about 250 modules).
# (idempotence is the Debian 12 guests' and the unit tests' job: no second run here)
SMALL_TREE = ("kernel/net/netfilter", "kernel/net/ipv4/netfilter", "kernel/net/ipv6/netfilter",
              "kernel/lib", "kernel/drivers/net/dummy.ko*")
ALIAS_FILE = "/etc/modprobe.d/kmod-vm-test.alias"
DISABLE_FILE = "/etc/modprobe.d/kmod-vm-test.conf"
OURS, THEIRS = "/tmp/kmod-vm-ours", "/tmp/kmod-vm-theirs"
MODINFO = ("nbd", "nf_nat")
REL = "{{ kmod_vm_release }}"

TASKS = [
    {"name": "facts", "kernel.kmod.kmod_facts": {"gather_subset": ["loaded", "config", "modinfo"],
                                                 "modinfo": list(MODINFO)}},
    # nbd: its nbds_max is readable in /sys (dummy's numdummies is not)
    {"name": "load", "kernel.kmod.kmod_load": {"name": "nbd"}},
    {"name": "params", "ansible.builtin.command": "cat /sys/module/nbd/parameters/nbds_max"},
    {"name": "disable", "kernel.kmod.kmod_blacklist": {"name": ["nbd"], "mode": "disable", "path": DISABLE_FILE,
                                                       "unload": True}},
    {"name": "modprobe refused", "ansible.builtin.command": "modprobe nbd", "ignore_errors": True},
    {"name": "enable", "kernel.kmod.kmod_blacklist": {"name": ["nbd"], "state": "absent", "path": DISABLE_FILE}},
    {"name": "ours", "kernel.kmod.kmod_depmod": {"root": OURS, "kernel_release": REL}},
    # check mode: the guest's files stay for the byte comparison afterwards
    {"name": "theirs", "kernel.kmod.kmod_depmod": {"root": THEIRS, "kernel_release": REL}, "check_mode": True},
]


def guest(vm: VM, command: str) -> str:
    return vm.run(command, check=True).stdout


def _before(vm: VM) -> dict[str, t.Any]:
    """Set the guest up and ask its own tools what the modules should find."""
    rel = vm.image.release
    moddir = f"/lib/modules/{rel}"
    python, elftools = guest(vm, "python3 -c 'import sys, elftools; "
                                 "print(\"%d.%d\" % sys.version_info[:2], elftools.__version__)'").split()
    kmod = int(re.match(r"kmod version (\d+)", guest(vm, "kmod --version")).group(1))
    # An options line in a *.alias file: kmod 28 applies it, kmod 34 ignores the file.
    vm.put("options nbd nbds_max=3\n", ALIAS_FILE)
    # The small tree as a root of its own (its generation comes from the guest: source host);
    # a copy indexed by the guest's depmod.
    guest(vm, f"rm -rf {OURS} {THEIRS}; mkdir -p {OURS}{moddir} && cd {moddir} && "
              f"cp -a --parents {' '.join(SMALL_TREE)} {' '.join(INPUTS)} {OURS}{moddir}/ && "
              f"cp -a {OURS} {THEIRS} && depmod -b {THEIRS} {rel}")
    return {"python": python, "elftools": elftools, "kmod": kmod, "release": guest(vm, "uname -r").strip(),
            # the generation the engine should follow: kmod <= 28 behave as 28, 29 as itself (docs/kmod-generations.md)
            "gen": min(max(kmod, 28), 34), "moddir": moddir,
            "modprobe_c": guest(vm, "modprobe -c").splitlines(),
            "show": guest(vm, "modprobe --show-depends nbd").splitlines(),
            "modinfo": {name: guest(vm, f"modinfo {name}") for name in MODINFO}}


def _after(vm: VM, seen: dict[str, t.Any]) -> None:
    moddir = seen["moddir"]
    seen["loaded"] = guest(vm, "cat /proc/modules")
    seen["disable_file"] = guest(vm, f"cat {DISABLE_FILE} 2>/dev/null || true")
    seen["written"] = sorted(set(guest(vm, f"cd {THEIRS}{moddir} && ls modules.*").split()) - INPUTS)
    seen["differ"] = guest(vm, f"cd {THEIRS}{moddir} && for f in modules.*; do "
                               f"cmp -s $f {OURS}{moddir}/$f || echo $f; done").split()


@pytest.fixture(scope="module")
def played(vm_trixie: VM, vm_bullseye: VM) -> tuple[PlaybookResult, dict[str, dict[str, t.Any]]]:
    """The playbook's results, and per host what its own tools said before and after."""
    vms = [vm_trixie, vm_bullseye]
    seen: dict[str, dict[str, t.Any]] = {}
    try:
        for vm in vms:
            seen[vm.name] = _before(vm)
        res = ansible_playbook(vms, [{"name": "distros", "hosts": "all", "gather_facts": False, "tasks": TASKS}])
        for vm in vms:
            _after(vm, seen[vm.name])
    finally:
        for vm in vms:
            vm.run(f"rm -rf {ALIAS_FILE} {DISABLE_FILE} {OURS} {THEIRS}; modprobe -r nbd")
    assert res.rc == 0, res
    return res, seen


@pytest.mark.parametrize("host", HOSTS)
def test_runtime(played, host: str) -> None:
    """Each guest is the platform its name says (so the tests below prove what they claim)."""
    res, seen = played
    seen = seen[host]
    expected = {"vm_trixie": ("3.13", 34), "vm_bullseye": ("3.9", 28)}[host]
    assert (seen["python"], seen["kmod"]) == expected
    if host == "vm_bullseye":
        assert seen["elftools"] == "0.27"  # the oldest pyelftools supported (Debian 11's package)
    assert res.task("facts", host)["ansible_facts"]["kmod"]["kernel_release"] == seen["release"]


@pytest.mark.parametrize("host", HOSTS)
def test_generation_detected_and_reported(played, host: str) -> None:
    res, seen = played
    seen = seen[host]
    live = {"version": seen["gen"], "source": "dpkg", "evidence": f"/var/lib/dpkg/status: kmod {seen['kmod']}"}
    for name in ("facts", "load", "disable", "enable"):
        assert res.task(name, host)["kmod_generation"] == live, name
    # a root with no kmod of its own: the kmod of the system running the module
    assert res.task("ours", host)["kmod_generation"] == {**live, "source": "host"}


@pytest.mark.parametrize("host", HOSTS)
def test_facts_config_and_modinfo(played, host: str) -> None:
    res, seen = played
    seen = seen[host]
    kmod = res.task("facts", host)["ansible_facts"]["kmod"]
    for name, text in seen["modinfo"].items():
        assert kmod["modinfo"][name]["text"] == text, name
    ours = [f"options {o['module']} {o['options']}" for o in kmod["config"]["options"]]
    assert ours == [line for line in seen["modprobe_c"] if line.startswith("options ")]
    assert ("options nbd nbds_max=3" in ours) is (seen["gen"] < 33)


@pytest.mark.parametrize("host", HOSTS)
def test_load_options_disable(played, host: str) -> None:
    res, seen = played
    seen = seen[host]
    load = res.task("load", host)
    assert load["changed"] is True and load["modules"][0]["show_depends"] == seen["show"]
    from_alias = seen["gen"] < 33
    assert seen["show"][-1].endswith(" nbds_max=3 ") is from_alias, seen["show"]
    assert (res.task("params", host)["stdout"] == "3") is from_alias
    assert res.task("disable", host)["changed"] is True
    assert res.task("modprobe refused", host)["rc"] != 0, "the guest's modprobe must obey our disable file"
    assert res.task("enable", host)["changed"] is True
    assert not re.search(r"^nbd ", seen["loaded"], re.M)
    assert not re.search(r"^(blacklist|install) nbd\b", seen["disable_file"], re.M), seen["disable_file"]


@pytest.mark.parametrize("host", HOSTS)
def test_depmod_equals_the_guests_depmod(played, host: str) -> None:
    res, seen = played
    seen = seen[host]
    files = seen["written"]
    assert len(files) == (11 if seen["gen"] >= 33 else 10), files  # modules.weakdep from kmod 33
    # Every file, kmod 28's 0-byte modules.builtin.alias.bin included (docs/kmod-generations.md).
    assert seen["differ"] == [], f"not byte-identical to the guest's depmod: {seen['differ']}"
    assert sorted(res.task("ours", host)["files_changed"]) == files
    assert res.task("theirs", host)["files_changed"] == []
