# SPDX-License-Identifier: GPL-3.0-or-later
"""The VM fixtures work: a real kernel with module support, reachable by ssh and Ansible."""

from __future__ import annotations

import pytest

from qemu import VM

pytestmark = pytest.mark.vm


def test_kernel_and_modules(vm: VM) -> None:
    assert vm.run("uname -r", check=True).stdout.strip() == vm.image.release
    assert vm.run("test -r /proc/modules").returncode == 0
    # The initramfs loaded the disk driver: the guest sees real loaded modules.
    assert "virtio_blk" in vm.run("cat /proc/modules", check=True).stdout


def test_modprobe_dummy(vm: VM) -> None:
    vm.run("modprobe dummy", check=True)
    try:
        assert vm.run("grep -q '^dummy ' /proc/modules").returncode == 0
    finally:
        vm.run("modprobe -r dummy", check=True)
    assert vm.run("grep -q '^dummy ' /proc/modules").returncode == 1


def test_ansible_task(vm: VM) -> None:
    result = vm.ansible_tasks([{"name": "lsmod", "ansible.builtin.command": "lsmod"}])
    assert result.rc == 0, result
    lsmod = result.task("lsmod")
    assert lsmod["rc"] == 0
    # Same view as the guest's own lsmod run over plain ssh.
    assert lsmod["stdout_lines"][0].split() == ["Module", "Size", "Used", "by"]
    assert {line.split()[0] for line in lsmod["stdout_lines"][1:]} == \
        {line.split()[0] for line in vm.run("cat /proc/modules", check=True).stdout.splitlines()}


def test_reboot_keeps_files_and_runs_modules_load(vm_6_12: VM) -> None:
    """What issue 6 relies on: after reboot() the modules-load.d entries are loaded again."""
    vm = vm_6_12
    vm.put("dummy\n", "/etc/modules-load.d/kmod-vm-smoke.conf")
    try:
        vm.reboot()
        assert vm.run("grep -q '^dummy ' /proc/modules").returncode == 0, vm.console()[-2000:]
    finally:
        vm.run("rm -f /etc/modules-load.d/kmod-vm-smoke.conf; modprobe -r dummy", check=True)
