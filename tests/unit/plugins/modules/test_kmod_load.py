# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_load as Ansible runs it: arguments, check/diff mode, results, failures, on a fake kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.module_utils.common import warnings as ansible_warnings

from ansible_collections.kernel.kmod.plugins.modules import kmod_load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils" / "_kmod"))
from fake_kernel import FakeKernel  # noqa: E402


@pytest.fixture
def target(scratch_kernel, monkeypatch, run_module):
    tree = scratch_kernel("6.1")
    kernel = FakeKernel(tree.root, tree.release)
    monkeypatch.setattr(kmod_load, "LinuxSyscalls", lambda: kernel)

    def run(check_mode: bool = False, diff: bool = False, **args):
        return run_module(kmod_load, check=check_mode, diff=diff, root=str(tree.root),
                          kernel_release=tree.release, **args)

    run.tree, run.kernel = tree, kernel
    return run


def modprobe(tree, *args: str) -> list[str]:
    return subprocess.run(["modprobe", "-d", str(tree.root), "-S", tree.release, "-C", "/dev/null",
                           "--show-depends", *args], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_check_mode_loads_nothing(target):
    res = target(name="nf_nat", check_mode=True, diff=True)
    assert res["changed"] is True and target.kernel.calls == []
    entry = res["modules"][0]
    assert entry["name"] == "nf_nat" and entry["action"] == "loaded"
    assert entry["show_depends"] == modprobe(target.tree, "nf_nat")
    assert "nf_nat" in res["diff"][0]["after"]


def test_load_then_idempotent(target):
    res = target(name=["dummy", "nf-nat"])
    assert res["changed"] is True
    assert [m["name"] for m in res["modules"]] == ["dummy", "nf-nat"]
    assert [m["action"] for m in res["modules"]] == ["loaded", "loaded"]
    assert "nf_nat" in target.kernel.loaded()
    again = target(name=["dummy", "nf-nat"])
    assert again["changed"] is False
    assert [m["action"] for m in again["modules"]] == ["already_loaded", "already_loaded"]


def test_params_dict_and_mismatch_warning(target):
    target(name="dummy", params={"numdummies": 2})
    assert target.kernel.calls[-1][2] == "numdummies=2"
    res = target(name="dummy", params={"numdummies": 3})
    assert res["changed"] is False
    assert res["modules"][0]["params_mismatch"] == {"numdummies": {"requested": "3", "loaded": "2"}}
    assert "reload=true" in json.dumps(res["warnings"])


def fresh_run(target, **args) -> dict:
    """target(**args) with Ansible's process-wide warning list emptied first (it dedups
    and keeps warnings across main() calls in one process)."""
    ansible_warnings._global_warnings.clear()  # pylint: disable=protected-access
    return target(**args)


def warnings(res: dict, word: str) -> list[str]:
    """The warnings naming word (ansible-core 2.19 returns each as a WarningSummary dict)."""
    msgs = [w["event"]["msg"] if isinstance(w, dict) else w for w in res.get("warnings", [])]
    return [m for m in msgs if word in m]


def test_normalized_params_warn_once_and_converge(target):
    # drivers/block/loop.c rounds max_part up to 2^n - 1
    target.kernel.normalize[("loop", "max_part")] = lambda v: str((1 << int(v).bit_length()) - 1)
    res = fresh_run(target, name="loop", params={"max_part": 4}, reload=True)
    got = (target.tree.root / "sys/module/loop/parameters/max_part").read_text().strip()
    assert res["changed"] is True and got != "4"
    assert res["modules"][0]["params_normalized"] == {"max_part": {"requested": "4", "loaded": got}}
    warned = warnings(res, "max_part")
    assert len(warned) == 1 and f"max_part={got} (requested 4)" in warned[0]
    again = fresh_run(target, name="loop", params={"max_part": 4}, reload=True)
    assert again["changed"] is False and again["modules"][0]["params_mismatch"] == {}
    assert len(warnings(again, "max_part")) == 1
    quiet = fresh_run(target, name="loop", params={"max_part": int(got)}, reload=True)
    assert quiet["changed"] is False and not quiet.get("warnings")


def test_unreadable_params_warn_only_when_set_now(target):
    # drivers/net/dummy.c: module_param(numdummies, int, 0), so sysfs never shows it
    target.kernel.hidden_params.add("numdummies")
    first = fresh_run(target, name="dummy", params={"numdummies": 2})
    assert first["changed"] is True and len(warnings(first, "not readable")) == 1
    rerun = fresh_run(target, name="dummy", params={"numdummies": 2})
    assert rerun["changed"] is False and rerun["modules"][0]["params_unverified"] == ["numdummies"]
    assert warnings(rerun, "not readable") == [], "a rerun that changes nothing says nothing new"
    check = fresh_run(target, name="dummy", params={"numdummies": 2}, check_mode=True)
    assert check["changed"] is False and warnings(check, "not readable") == []


def test_module_copied_under_another_name(target):
    moddir = target.tree.moddir
    (moddir / "extra").mkdir()
    (moddir / "extra/e2edummy.ko").write_bytes((moddir / "kernel/drivers/net/dummy.ko").read_bytes())
    subprocess.run(["depmod", "-b", str(target.tree.root), target.tree.release], check=True)
    target.kernel.__init__(target.tree.root, target.tree.release)  # re-read modules.dep
    kname = subprocess.run(["modinfo", "-F", "name", str(moddir / "extra/e2edummy.ko")],
                           capture_output=True, text=True, check=True).stdout.strip()
    first = target(name="e2edummy")
    assert first["changed"] is True and first["modules"][0]["kernel_name"] == kname
    assert target.kernel.loaded() == [kname]
    again = target(name="e2edummy", diff=True)
    assert again["changed"] is False and again["modules"][0]["action"] == "already_loaded"
    assert again["diff"] == []
    gone = target(name="e2edummy", state="absent")
    assert gone["changed"] is True and gone["modules"][0]["removed"] == [kname]
    assert target.kernel.loaded() == []


def test_absent_and_in_use(target):
    target(name="nf_nat")
    busy = target(name="nf_conntrack", state="absent")
    assert busy["failed"] is True and busy["holders"] == ["nf_nat"]
    assert "nf_conntrack is in use" in busy["msg"]
    res = target(name="nf_nat", state="absent")
    assert res["changed"] is True and target.kernel.loaded() == []


@pytest.mark.parametrize("args, words", [
    ({"name": "nf nat"}, "whitespace"),
    ({"name": []}, "at least one"),
    ({"name": "no_such_module_xyz"}, "no_such_module_xyz"),
    ({"name": "dummy", "params": 3}, "string or a dict"),
    ({"name": "zswap", "state": "absent"}, "builtin"),
])
def test_failures_are_messages(target, args, words):
    res = target(**args)
    assert res["failed"] is True and words in res["msg"]
    assert "Traceback" not in json.dumps(res) and target.kernel.calls == []
