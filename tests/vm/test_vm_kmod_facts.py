# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_facts on real kernels in qemu, compared with the guest's /proc, /sys, lsmod and modinfo."""

from __future__ import annotations

import pytest

from qemu import VM

pytestmark = pytest.mark.vm

MODINFO_NAMES = ["dummy", "virtio_blk", "crc32c", "ext4"]


def facts(vm: VM, **args) -> dict:
    res = vm.ansible_tasks([{"name": "facts", "kernel.kmod.kmod_facts": args}])
    assert res.rc == 0, res
    return res.task("facts")["ansible_facts"]["kmod"]


def guest(vm: VM, command: str) -> str:
    return vm.run(command, check=True).stdout


def test_facts_match_proc_sys_lsmod(vm: VM) -> None:
    vm.run("modprobe dummy", check=True)
    try:
        kmod = facts(vm, modinfo=MODINFO_NAMES)
        proc = guest(vm, "cat /proc/modules").splitlines()
        lsmod = guest(vm, "lsmod").splitlines()[1:]
        filenames = guest(vm, "modinfo -n " + " ".join(line.split()[0] for line in proc)).splitlines()
        modinfo_text = {name: guest(vm, f"modinfo {name}") for name in MODINFO_NAMES}
        # Every readable parameter of every loaded module, as the guest's shell reads it.
        params = guest(vm, "for f in /sys/module/*/parameters/*; do v=$(cat \"$f\" 2>/dev/null) && "
                           "printf '%s\\t%s\\n' \"$f\" \"$v\"; done").splitlines()
        state = {path: guest(vm, f"cat {path} 2>/dev/null || true").strip() for path in
                 ("/proc/sys/kernel/tainted", "/sys/module/module/parameters/sig_enforce",
                  "/sys/module/compression")}
    finally:
        vm.run("modprobe -r dummy", check=True)

    assert kmod["modules_supported"] is True
    assert kmod["kernel_release"] == vm.image.release
    assert kmod["taint"]["value"] == int(state["/proc/sys/kernel/tainted"])
    assert kmod["sig_enforce"] == (state["/sys/module/module/parameters/sig_enforce"] == "Y")
    assert kmod["compression"] == (state["/sys/module/compression"] or None)

    # Same modules in the kernel's order; size, use count and holders as lsmod prints them.
    assert list(kmod["loaded"]) == [line.split()[0] for line in proc]
    for line in lsmod:
        name, size, used, *rest = line.split()
        entry = kmod["loaded"][name]
        assert (entry["size"], entry["refcount"]) == (int(size), int(used)), name
        assert sorted(entry["holders"]) == sorted(rest[0].split(",") if rest else []), name
        assert entry["state"] == "Live" and entry["initstate"] == "live"
    assert [kmod["loaded"][line.split()[0]]["filename"] for line in proc] == filenames
    expected_params: dict[str, dict[str, str]] = {}
    for line in params:
        path, _sep, value = line.partition("\t")
        module, param = path.split("/")[3], path.split("/")[5]
        expected_params.setdefault(module, {})[param] = value
    for name, entry in kmod["loaded"].items():
        assert entry["parameters"] == expected_params.get(name, {}), name
    assert any(entry["parameters"] for entry in kmod["loaded"].values())

    for name in MODINFO_NAMES:
        assert kmod["modinfo"][name]["text"] == modinfo_text[name], name
    assert set(kmod["builtin"]) >= {line.rsplit("/", 1)[1].split(".")[0].replace("-", "_") for line in
                                    guest(vm, f"cat /lib/modules/{vm.image.release}/modules.builtin").split()}
