# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules on a root whose module tree is only under usr/lib/modules, indexed by kmod 34's
depmod built for that directory (`depmod -m /usr/lib/modules`): found, reported as moddir,
and left alone."""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.kernel.kmod.plugins.modules import kmod_depmod, kmod_facts, kmod_load

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../module_utils/_kmod"))
import kmod34  # noqa: E402
from kernels import KernelTree  # noqa: E402
from test_kmod34 import weakdep_tree  # noqa: E402

pytestmark = pytest.mark.skipif(kmod34.available() is not None, reason=str(kmod34.available()))


@pytest.fixture
def usr_tree(tmp_path) -> KernelTree:
    tree = weakdep_tree(tmp_path / "root", builtin=True)
    (tree.root / "usr/lib").mkdir(parents=True)
    (tree.root / "lib/modules").rename(tree.root / "usr/lib/modules")
    (tree.root / "lib").rmdir()
    proc = kmod34.run(["depmod", "-b", "/tree", "-m", "/usr/lib/modules", tree.release], tree.root, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tree.root / "usr/lib/modules" / tree.release / "modules.weakdep").exists()
    return tree


def test_depmod_facts_load_report_usr_lib_modules(run_module, usr_tree):
    moddir = f"{usr_tree.root}/usr/lib/modules/{usr_tree.release}"
    common = {"root": str(usr_tree.root), "kernel_release": usr_tree.release}
    before = {p: os.stat(os.path.join(moddir, p)).st_mtime_ns for p in os.listdir(moddir)}
    result = run_module(kmod_depmod, diff=False, cache=False, **common)
    assert (result["changed"], result["moddir"]) == (False, moddir), result
    assert result["kmod_generation"]["version"] == 34
    assert {p: os.stat(os.path.join(moddir, p)).st_mtime_ns for p in os.listdir(moddir)} == before
    facts = run_module(kmod_facts, diff=False, gather_subset=["!all"], **common)
    assert facts["ansible_facts"]["kmod"]["moddir"] == moddir, facts
    load = run_module(kmod_load, check=True, name="wd_phy_a", **common)
    assert load["moddir"] == moddir, load
    assert f"insmod {moddir}/kernel/wd/wd_phy_a.ko " in load["modules"][0]["show_depends"]
