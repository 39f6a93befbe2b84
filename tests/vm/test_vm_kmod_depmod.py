# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_depmod on the live system of real kernels in qemu, then kmod_load of the module it indexed."""

from __future__ import annotations

import pytest

from qemu import VM

pytestmark = pytest.mark.vm

TEXT_FILES = ("modules.dep", "modules.alias", "modules.softdep", "modules.symbols", "modules.devname")


def release(vm: VM) -> str:
    return vm.run("uname -r", check=True).stdout.strip()


def test_new_module_in_extra_is_indexed_then_loaded(vm_6_1: VM) -> None:
    # One kernel: a whole-tree depmod under TCG costs minutes, and the unit tests already
    # prove byte identity on both trees; this proves it on a live system.
    vm = vm_6_1
    rel = release(vm)
    moddir = f"/lib/modules/{rel}"
    src = vm.run("modinfo -n dummy", check=True).stdout.strip()
    name = src.rsplit("/", 1)[1]
    assert "dummy" not in vm.run("cat /proc/modules", check=True).stdout
    try:
        # The tree the guest's depmod indexed is left alone. This whole read (minutes under
        # TCG) also fills kmod_depmod's cache, so the runs below read only the moved module.
        res = vm.ansible_tasks([{"name": "pristine", "kernel.kmod.kmod_depmod": {}}])
        assert res.rc == 0, res
        assert res.task("pristine")["changed"] is False, res.task("pristine")["files_changed"]
        vm.run(f"mkdir -p {moddir}/extra && mv {src} {moddir}/extra/{name}", check=True)
        res = vm.ansible_tasks([
            {"name": "check", "kernel.kmod.kmod_depmod": {}, "check_mode": True, "diff": True},
            {"name": "depmod", "kernel.kmod.kmod_depmod": {}},
            {"name": "again", "kernel.kmod.kmod_depmod": {}},
            {"name": "load", "kernel.kmod.kmod_load": {"name": "dummy"}},
        ])
        assert res.rc == 0, res
        check = res.task("check")
        assert check["changed"] and "modules.dep" in check["files_changed"]
        assert f"extra/{name}:" in check["diff"]["after"]
        assert src[len(moddir) + 1:] + ":" in check["diff"]["before"]
        depmod = res.task("depmod")
        assert depmod["changed"] and depmod["files_changed"] == check["files_changed"]
        assert res.task("again")["changed"] is False
        assert res.task("load")["changed"] is True
        assert "dummy" in vm.run("cat /proc/modules", check=True).stdout
        # the guest's own kmod agrees with what was written
        assert vm.run("modprobe --show-depends dummy", check=True).stdout.startswith(f"insmod {moddir}/extra/{name} ")
        expected = vm.run(["depmod", "-n", rel], check=True).stdout
        ours = vm.run(f"cd {moddir} && cat {' '.join(TEXT_FILES)}", check=True).stdout
        assert ours == expected
    finally:
        vm.run("modprobe -r dummy")
        # rmdir: leave the guest as found (it fails harmlessly if extra/ holds other files)
        vm.run(f"mv {moddir}/extra/{name} {src}; rm -rf /var/cache/kernel-kmod; "
               f"{{ rmdir {moddir}/extra 2>/dev/null; depmod {rel}; }}", check=True)
