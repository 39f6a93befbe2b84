# SPDX-License-Identifier: GPL-3.0-or-later
"""Device facts and blacklist impact on real kernels in qemu, against the guest's sysfs and kmod."""

from __future__ import annotations

import pytest

from qemu import VM

pytestmark = pytest.mark.vm

# For every device with a modalias: path, modalias, where the driver and driver/module links
# lead (empty if absent) and what the guest's modprobe resolves, once per distinct modalias.
GUEST_DEVICES = r"""
import os, subprocess
resolved = {}
for top, dirs, files in os.walk("/sys/devices"):
    if "modalias" not in files:
        continue
    with open(top + "/modalias") as f:
        alias = f.read().strip()
    if alias not in resolved:
        out = subprocess.run(["modprobe", "--resolve-alias", alias], capture_output=True, text=True).stdout
        resolved[alias] = " ".join(out.split())
    driver, module = (os.path.realpath(p) if os.path.islink(p) else "" for p in (top + "/driver", top + "/driver/module"))
    builtin = "" if not driver else "0" if module and os.path.exists(module + "/initstate") else "1"
    print("\t".join([top, alias, driver, module, builtin, resolved[alias]]))
"""
ROOT_DISK_SYS = "readlink -f /sys/dev/block/$(mountpoint -d /)"
BLACKLIST_FILE = "/etc/modprobe.d/kmod-vm-impact.conf"


def test_device_facts_equal_sysfs_and_modprobe(vm: VM) -> None:
    res = vm.ansible_tasks([{"name": "facts", "kernel.kmod.kmod_facts": {"gather_subset": ["min", "devices"]}}])
    assert res.rc == 0, res
    assert not res.task("facts").get("warnings"), res
    devices = {d["path"]: d for d in res.task("facts")["ansible_facts"]["kmod"]["devices"]}
    guest = {}
    for line in vm.run(["python3", "-c", GUEST_DEVICES], check=True).stdout.splitlines():
        path, modalias, driver, module, builtin, resolved = line.split("\t")
        guest[path] = (modalias, driver.rsplit("/", 1)[-1] or None, module.rsplit("/", 1)[-1] or None,
                       {"": None, "0": False, "1": True}[builtin], resolved.split())
    assert sorted(devices) == sorted(guest)
    for path, dev in devices.items():
        assert (dev["modalias"], dev["driver"], dev["driver_module"], dev["driver_builtin"],
                dev["modules"]) == guest[path], path
    # the root disk: virtio_blk, a loadable module on both kernels
    root_disk = vm.run(ROOT_DISK_SYS, check=True).stdout.strip()
    disk = next(d for p, d in devices.items() if root_disk.startswith(p + "/") and d["bus"] == "virtio")
    assert (disk["driver_module"], disk["driver_builtin"]) == ("virtio_blk", False)


def blacklist_task(title: str, check: bool = False, **args) -> dict:
    return {"name": title, "kernel.kmod.kmod_blacklist": dict(path=BLACKLIST_FILE, **args),
            "ignore_errors": True, "check_mode": check}


def blacklist(vm: VM, **args) -> dict:
    return vm.ansible_tasks([blacklist_task("blacklist", **args)]).task("blacklist").result


# The two impact tests run on one kernel: impact.py reads the same /proc and /sys files on
# both, and the device facts test above covers each kernel's sysfs.
def test_disabling_the_root_disk_driver(vm_6_12: VM) -> None:
    vm = vm_6_12
    root_disk = vm.run(ROOT_DISK_SYS, check=True).stdout.strip()  # .../virtio1/block/vda
    device = root_disk.rsplit("/block/", 1)[0]
    disk = root_disk.rsplit("/", 1)[-1]
    named = (f"{device} (virtio, virtio:d00000002v00001AF4): driven by virtio_blk; "
             f"holds the root filesystem (/), the boot disk ({disk})")
    # One play (a playbook run costs more than the module): refused, nothing written; then
    # warned in check mode and for real.
    try:
        res = vm.ansible_tasks([
            blacklist_task("refused", name=["virtio_blk"], mode="disable", on_impact="fail"),
            {"name": "after refusal", "ansible.builtin.stat": {"path": BLACKLIST_FILE}},
            blacklist_task("warned in check mode", check=True, name=["virtio_blk"], mode="disable"),
            blacklist_task("warned", name=["virtio_blk"], mode="disable"),
        ])
        written = vm.run(f"cat {BLACKLIST_FILE}", check=True).stdout
    finally:
        vm.run(f"rm -f {BLACKLIST_FILE}", check=True)
    refused = res.task("refused").result
    assert refused.get("failed") is True, refused
    assert refused["msg"].startswith(
        "Refusing to blacklist or disable modules that present devices need (on_impact=fail): " + named), refused
    assert res.task("after refusal")["stat"]["exists"] is False
    for name in ("warned in check mode", "warned"):
        warned = res.task(name).result
        assert warned.get("failed") is not True and warned["changed"] is True, warned
        assert [i["device"] for i in warned["impact"]] == [device]
        assert any(named in w for w in warned["warnings"]), warned
    # the warned run wrote the file; the driver stays bound until the next boot
    assert "install virtio_blk /bin/false" in written


def test_disabling_a_module_that_drives_nothing(vm_6_12: VM) -> None:
    vm = vm_6_12
    try:
        res = blacklist(vm, name=["dummy"], mode="disable", on_impact="fail")
        assert res.get("failed") is not True and res["changed"] is True, res
        assert res["impact"] == [] and not res.get("warnings"), res
    finally:
        vm.run(f"rm -f {BLACKLIST_FILE}", check=True)
