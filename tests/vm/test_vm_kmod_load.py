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


def warnings_about(result, word: str) -> list[str]:
    msgs = [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings") or []]
    return [m for m in msgs if word in m]


def test_module_file_under_another_name(vm: VM) -> None:
    """A copy extra/e2edummy.ko of dummy.ko registers as dummy: loading it twice loads once,
    absent removes dummy (a dkms nvidia-current.ko loading as nvidia is the same case)."""
    moddir = "/lib/modules/" + vm.run("uname -r", check=True).stdout.strip()
    src = vm.run("modinfo -n dummy", check=True).stdout.strip()
    copy = f"{moddir}/extra/e2edummy.{src.rsplit('/', 1)[1].split('.', 1)[1]}"
    # extra/ may be left (empty) by another test on the shared guest: remove it only if ours.
    ours = vm.run(f"test -e {moddir}/extra").returncode != 0
    assert vm.run(f"test -e {copy}").returncode != 0, f"{copy} exists already"
    assert "dummy" not in loaded(vm)
    # The guest's depmod indexes the copy; its indexes are put back afterwards.
    vm.run(f"mkdir -p /tmp/kname-idx {moddir}/extra && cp -p {moddir}/modules.* /tmp/kname-idx/ "
           f"&& cp {src} {copy} && depmod", check=True)
    try:
        assert vm.run(["modinfo", "-F", "name", copy], check=True).stdout.strip() == "dummy"
        assert show_depends(vm, "e2edummy") == [f"insmod {copy} "]
        res = vm.ansible_tasks([
            task("load", name="e2edummy"),
            {"name": "after load", "command": "cat /proc/modules"},
            task("again", name="e2edummy"),
            task("by kernel name", name="dummy"),
            {"name": "insmod again", "command": f"insmod {copy}", "ignore_errors": True},
            task("remove", name="e2edummy", state="absent"),
            {"name": "after remove", "command": "cat /proc/modules"},
            task("remove again", name="e2edummy", state="absent"),
        ])
        assert res.rc == 0, res
        load = res.task("load")
        assert load["changed"] is True, res
        entry = load["modules"][0]
        assert (entry["action"], entry["module"], entry["kernel_name"]) == ("loaded", "e2edummy", "dummy")
        names = [line.split()[0] for line in res.task("after load")["stdout"].splitlines()]
        assert "dummy" in names and "e2edummy" not in names
        for title in ("again", "by kernel name"):
            again = res.task(title)
            assert again["changed"] is False, (title, again)
            assert again["modules"][0]["action"] == "already_loaded" and again["modules"][0]["kernel_name"] == "dummy"
        # The kernel itself refuses a second module named dummy (EEXIST).
        assert res.task("insmod again")["rc"] != 0 and "exists" in res.task("insmod again")["stderr"]
        remove = res.task("remove")
        assert remove["changed"] is True and remove["modules"][0]["removed"] == ["dummy"], remove
        assert "dummy" not in [line.split()[0] for line in res.task("after remove")["stdout"].splitlines()]
        assert res.task("remove again")["changed"] is False
    finally:
        rmdir = f"rmdir {moddir}/extra; " if ours else ""
        vm.run(f"rmmod dummy; rm -f {copy}; {rmdir}cp -p /tmp/kname-idx/modules.* {moddir}/ "
               f"&& rm -r /tmp/kname-idx", check=True)
    assert "dummy" not in loaded(vm)
    assert vm.run("modprobe --show-depends e2edummy").returncode != 0


def test_normalized_param_warns_and_converges(vm_6_1: VM) -> None:
    """loop rounds max_part up to 2^n - 1: 4 shows 7. Say so, and do not reload every run."""
    vm = vm_6_1
    assert "loop" not in loaded(vm)
    try:
        res = vm.ansible_tasks([
            task("load", name="loop", params={"max_part": 4}, reload=True),
            {"name": "shown", "command": "cat /sys/module/loop/parameters/max_part", "register": "shown"},
            task("again", name="loop", params={"max_part": 4}, reload=True),
            task("fixed", name="loop", params="max_part={{ shown.stdout }}", reload=True),
        ])
        assert res.rc == 0, res
        shown = res.task("shown")["stdout"].strip()
        assert shown != "4"
        normalized = {"max_part": {"requested": "4", "loaded": shown}}
        load, again, fixed = res.task("load"), res.task("again"), res.task("fixed")
        assert load["changed"] is True and load["modules"][0]["params_normalized"] == normalized
        warned = warnings_about(load, "max_part")
        assert len(warned) == 1 and f"max_part={shown} (requested 4)" in warned[0], load
        assert again["changed"] is False, again
        assert again["modules"][0]["params_normalized"] == normalized
        assert again["modules"][0]["params_mismatch"] == {}
        assert len(warnings_about(again, "max_part")) == 1
        assert fixed["changed"] is False and fixed["modules"][0]["params_normalized"] == {}
        assert not warnings_about(fixed, "max_part")
    finally:
        vm.run("rmmod loop; rm -rf /run/kernel.kmod")
    assert "loop" not in loaded(vm)
