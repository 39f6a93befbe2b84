# SPDX-License-Identifier: GPL-3.0-or-later
"""All four modules say which kmod generation they followed, under one key (kmod_generation),
and agree on it. Expected versions come from the kmod that indexed the tree or is installed
in it (`kmod --version` of this machine's kmod 30 and of the trixie chroot's kmod 34)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.modules import kmod_blacklist, kmod_depmod, kmod_facts, kmod_load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils" / "_kmod"))
import kmod34  # noqa: E402
from fake_kernel import FakeKernel  # noqa: E402
from kernels import KernelTree, pristine_root  # noqa: E402

needs_kmod34 = pytest.mark.skipif(kmod34.available() is not None, reason=str(kmod34.available()))


def major(version_text: str) -> int:
    found = re.search(r"^kmod version (\d+)", version_text, re.M)
    assert found, version_text
    return int(found.group(1))


def small_tree(src: KernelTree, dest: Path, moddir: str = "lib/modules") -> KernelTree:
    """dummy alone out of a real tree, with the tree's order and builtin lists (a whole
    tree would make kmod_depmod read thousands of modules per run)."""
    old, new = src.root / moddir / src.release, dest / moddir / src.release
    (new / "kernel/drivers/net").mkdir(parents=True)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copyfile(old / name, new / name)
    for ko in (old / "kernel/drivers/net").glob("dummy.ko*"):
        shutil.copyfile(ko, new / "kernel/drivers/net" / ko.name)
    if moddir != "lib/modules":
        (dest / "lib").symlink_to("usr/lib")  # merged /usr, as kmod34.pristine_root has it
    return KernelTree(src.key, dest, src.release)


@pytest.fixture
def results(monkeypatch, run_module):
    """results(tree, **args) -> {module name: its kmod_generation}, each run in check mode."""

    def run(tree, **args):
        kernel = FakeKernel(tree.root, tree.release)
        monkeypatch.setattr(kmod_load, "LinuxSyscalls", lambda: kernel)
        monkeypatch.setattr(kmod_blacklist, "LinuxSyscalls", lambda: kernel)
        common = {"root": str(tree.root), "kernel_release": tree.release, **args}
        calls = {kmod_load: {"name": "dummy"}, kmod_blacklist: {"name": ["pcspkr"]},
                 kmod_facts: {"gather_subset": ["config"]}, kmod_depmod: {}}
        out = {}
        for module, own in calls.items():
            res = run_module(module, check=True, diff=False, **common, **own)
            assert not res.get("failed"), res
            out[module.__name__.rsplit(".", 1)[1]] = res["kmod_generation"]
        return out

    return run


def test_tree_indexed_by_this_machines_kmod(tmp_path, results):
    tree = small_tree(pristine_root("6.1"), tmp_path / "root")
    subprocess.run(["depmod", "-b", str(tree.root), tree.release], check=True)  # this machine's
    host = major(subprocess.run(["kmod", "--version"], capture_output=True, text=True, check=True).stdout)
    for name, gen in results(tree).items():
        assert (gen["version"], gen["source"]) == (host, "index"), name


@needs_kmod34
def test_debian13_root_by_its_dpkg_status_and_forced(tmp_path, results):
    tree = small_tree(kmod34.pristine_root(), tmp_path / "root", "usr/lib/modules")
    assert kmod34.depmod(tree).returncode == 0
    status = tree.root / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    shutil.copyfile(kmod34.chroot_dir() / "var/lib/dpkg/status", status)
    expected = major(kmod34.version())
    for name, gen in results(tree).items():
        assert (gen["version"], gen["source"]) == (expected, "dpkg"), name
        assert gen["evidence"].endswith(f"kmod {expected}"), name
    for name, gen in results(tree, kmod_compat="30").items():
        assert gen == {"version": 30, "source": "option", "evidence": "30"}, name
