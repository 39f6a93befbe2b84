# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_load on real kernels in qemu: load with dependencies, idempotence, removal, errors."""

from __future__ import annotations

import pytest

from qemu import VM

pytestmark = pytest.mark.vm


def loaded(vm: VM) -> set[str]:
    return {line.split()[0] for line in vm.run("cat /proc/modules", check=True).stdout.splitlines()}


def show_depends(vm: VM, *args: str) -> list[str]:
    """The guest's own modprobe is the oracle."""
    return vm.run(["modprobe", "--show-depends", *args], check=True).stdout.splitlines()


def task(title: str, ignore_errors: bool = False, **args) -> dict:
    out = {"name": title, "kernel.kmod.kmod_load": args}
    if ignore_errors:
        out["ignore_errors"] = True
    return out


def test_load_rerun_in_use_remove_unknown(vm: VM) -> None:
    before = loaded(vm)
    expected = show_depends(vm, "nf_nat")
    chain = {line.split()[1].rsplit("/", 1)[1].split(".")[0].replace("-", "_") for line in expected}
    res = vm.ansible_tasks([
        task("load", name="nf_nat"),
        task("rerun", name="nf_nat"),
    ])
    assert res.rc == 0, res
    load = res.task("load")
    assert load["changed"] is True
    entry = load["modules"][0]
    assert entry["show_depends"] == expected
    assert entry["action"] == "loaded"
    assert set(entry["inserted"]) == chain - before
    assert chain <= loaded(vm)
    rerun = res.task("rerun")
    assert rerun["changed"] is False and rerun["modules"][0]["action"] == "already_loaded"

    res = vm.ansible_tasks([
        task("in use", ignore_errors=True, name="nf_conntrack", state="absent"),
        task("unknown", ignore_errors=True, name="nf_natt"),
    ])
    busy = res.task("in use")
    assert busy.get("failed") and "nf_conntrack is in use" in busy["msg"] and "nf_nat" in busy["msg"]
    assert chain <= loaded(vm), "a failed removal must remove nothing"
    unknown = res.task("unknown")
    assert unknown.get("failed") and "nf_natt" in unknown["msg"]
    assert "Traceback" not in unknown.get("module_stderr", "")

    res = vm.ansible_tasks([task("remove", name="nf_nat", state="absent"),
                            task("remove again", name="nf_nat", state="absent")])
    assert res.rc == 0, res
    removed = res.task("remove")["modules"][0]["removed"]
    after = loaded(vm)
    # modprobe -r leaves these behind; we remove the whole unused chain.
    assert {"nf_nat", "nf_conntrack", "nf_defrag_ipv4", "nf_defrag_ipv6", "libcrc32c"} <= set(removed)
    assert not {"nf_nat", "nf_conntrack", "nf_defrag_ipv4", "libcrc32c"} & after
    assert after <= before
    assert res.task("remove again")["changed"] is False


def test_params_reload_persistent(vm_6_12: VM) -> None:
    vm = vm_6_12
    res = vm.ansible_tasks([
        task("load", name="nbd", params={"nbds_max": 2}, persistent="present"),
        task("other params", name="nbd", params="nbds_max=3"),
        task("reload", name="nbd", params="nbds_max=3", reload=True, persistent="present"),
        task("reload again", name="nbd", params="nbds_max=3", reload=True, persistent="present"),
        task("hidden params", name="dummy", params="numdummies=2"),
        task("hidden params again", name="dummy", params="numdummies=3", reload=True),
    ])
    try:
        assert res.rc == 0, res
        assert res.task("load")["changed"] is True
        other = res.task("other params")
        assert other["changed"] is False
        assert other["modules"][0]["params_mismatch"] == {"nbds_max": {"requested": "3", "loaded": "2"}}
        assert res.task("reload")["changed"] is True
        assert res.task("reload again")["changed"] is False
        assert vm.run("cat /sys/module/nbd/parameters/nbds_max", check=True).stdout == "3\n"
        assert vm.run("cat /etc/modules-load.d/nbd.conf", check=True).stdout.splitlines()[-1] == "nbd"
        assert vm.run("cat /etc/modprobe.d/nbd.conf", check=True).stdout.splitlines()[-1] == \
            "options nbd nbds_max=3"
        assert show_depends(vm, "nbd")[0].endswith(" nbds_max=3 ")
        # dummy's numdummies has permission 0: not comparable, so no endless reloads.
        hidden = res.task("hidden params again")
        assert hidden["changed"] is False and hidden["modules"][0]["params_unverified"] == ["numdummies"]
    finally:
        res = vm.ansible_tasks([task("clean", name=["nbd", "dummy"], state="absent",
                                     persistent="absent")])
    assert res.rc == 0, res
    assert not {"nbd", "dummy"} & loaded(vm)
    assert vm.run("ls /etc/modules-load.d/nbd.conf /etc/modprobe.d/nbd.conf").returncode != 0
