# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_load and kmod_blacklist as Ansible runs them, with hostile params and names:
a clear message naming the option, nothing loaded, nothing written.

(A lone surrogate cannot reach a module through Ansible: AnsibleModule itself fails to
log such an argument; the engine's own refusal of surrogates is tested in
test_hostile_config.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.lock import LOCK_NAME
from ansible_collections.kernel.kmod.plugins.modules import kmod_blacklist, kmod_load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils" / "_kmod"))
from fake_kernel import FakeKernel  # noqa: E402

INJECTION = "2\ninstall dummy touch /tmp/kmod-injected #"


@pytest.fixture
def target(scratch_kernel, monkeypatch, run_module):
    tree = scratch_kernel("6.1")
    kernel = FakeKernel(tree.root, tree.release)
    monkeypatch.setattr(kmod_load, "LinuxSyscalls", lambda: kernel)
    monkeypatch.setattr(kmod_blacklist, "LinuxSyscalls", lambda: kernel)

    def run(module, **args):
        return run_module(module, root=str(tree.root), kernel_release=tree.release, **args)

    run.tree, run.kernel = tree, kernel
    return run


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under root/etc but the (empty, hidden) lock files of edited directories."""
    etc = root / "etc"
    return {str(p): p.read_bytes() for p in sorted(etc.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME} if etc.exists() else {}


@pytest.mark.parametrize("params", [
    {"numdummies": INJECTION},  # the example
    {"numdummies\ninstall dummy touch /tmp/x #": 2},
    {"numdummies": [1, INJECTION]},
    f"numdummies={INJECTION}",
    "numdummies=2\rinstall dummy touch /tmp/x",
    "numdummies=2\u2028install dummy touch /tmp/x",
    {"numdummies": "2\u0085x"},
    {"numdummies": '2" install=1'},
    'numdummies="2',
    {"numdummies": {"a": 1}},
])
@pytest.mark.parametrize("check_mode", [False, True])
def test_kmod_load_refuses_hostile_params(target, params, check_mode):
    before = files_under(target.tree.root)
    res = target(kmod_load, name="dummy", params=params, persistent="present", _ansible_check_mode=check_mode)
    assert res["failed"] is True and "params" in res["msg"]
    assert "Traceback" not in json.dumps(res)
    assert target.kernel.calls == [] and files_under(target.tree.root) == before


@pytest.mark.parametrize("name", ["dummy\ninstall dummy touch /tmp/x", "dummy\u2028x", "dummy\x85", "dummy\r",
                                  "dummy\x00"])
def test_kmod_load_refuses_hostile_names(target, name):
    res = target(kmod_load, name=name, persistent="present")
    assert res["failed"] is True and "name" in res["msg"]
    assert target.kernel.calls == [] and files_under(target.tree.root) == {}


@pytest.mark.parametrize("name", ["dummy\ninstall dummy touch /tmp/x", "dummy\u2028x", "dummy\x85", "dummy\r",
                                  "dum my", "dummy#x", "dummy\\", "snd-*", "../x", "\u00e9", "\udc80x"])
def test_kmod_blacklist_refuses_hostile_names(target, name):
    conf = target.tree.root / "etc/modprobe.d/kernel-kmod-blacklist.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("blacklist old\n")
    res = target(kmod_blacklist, name=["floppy", name])
    assert res["failed"] is True and "name" in res["msg"] and "Traceback" not in json.dumps(res)
    assert conf.read_text() == "blacklist old\n"


def test_kmod_load_params_round_trip_through_modprobe(target):
    """What can be expressed is written so that kmod's modprobe passes the kernel the same
    string as our own load did; a rerun changes nothing; absent takes it back out."""
    params = {"numdummies": 2, "note": "a b\\c", "list": ["x", 1], "flag": True}
    res = target(kmod_load, name="dummy", params=params, persistent="present")
    assert res["changed"] is True and not res.get("failed")
    runtime = target.kernel.calls[-1][2]
    assert runtime == 'numdummies=2 note="a b\\c" list=x,1 flag=1'
    out = subprocess.run(["modprobe", "-d", str(target.tree.root), "-S", target.tree.release,
                          "-C", str(target.tree.root / "etc/modprobe.d"), "--show-depends", "dummy"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-1].split(" ", 2)[2] == runtime + " "
    written = files_under(target.tree.root)
    again = target(kmod_load, name="dummy", params=params, persistent="present")
    assert again["changed"] is False and files_under(target.tree.root) == written
    gone = target(kmod_load, name="dummy", state="absent", persistent="absent")
    assert gone["changed"] is True and files_under(target.tree.root) == {}
