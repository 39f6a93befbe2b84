# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_load as Ansible runs it: arguments, check/diff mode, results, failures, on a fake kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
