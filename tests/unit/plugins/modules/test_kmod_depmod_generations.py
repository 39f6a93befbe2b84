# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_depmod's main() where kmod 30 and kmod 34 differ: a tree indexed by Debian 13's own
depmod (kmod 34) is left alone, and kmod_compat picks the generation to reproduce."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from ansible_collections.kernel.kmod.plugins.modules import kmod_depmod

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../module_utils/_kmod"))
import kmod34  # noqa: E402
from depmod_trees import real_depmod  # noqa: E402
from kernels import KernelTree  # noqa: E402
from test_kmod34 import weakdep_tree  # noqa: E402

pytestmark = pytest.mark.skipif(kmod34.available() is not None, reason=str(kmod34.available()))
INPUTS = ("modules.order", "modules.builtin", "modules.builtin.modinfo")


@pytest.fixture
def depmod(run_module):
    def run(tree, check=False, **args):
        return run_module(kmod_depmod, check=check, diff=False, **{
            "root": str(tree.root), "kernel_release": tree.release, "cache": False, **args})
    return run


def stamps(tree: KernelTree) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for path in tree.moddir.glob("modules.*"):
        if path.name not in INPUTS:
            st = path.stat()
            out[path.name] = (path.read_bytes(), st.st_mtime_ns, st.st_ino)
    return out


def test_tree_indexed_by_debian13_depmod_is_unchanged(depmod, tmp_path):
    """Debian 13's kernel, indexed by its kmod 34: nothing to do, nothing touched."""
    tree = kmod34.scratch_root(tmp_path / "root")
    before = stamps(tree)
    assert len(before) == 11
    res = depmod(tree)
    assert not res["changed"] and res["files_changed"] == [], res
    assert res["kmod_generation"]["version"] == 34 and res["kmod_generation"]["source"] == "index"
    assert stamps(tree) == before


@pytest.fixture
def oracles(tmp_path):
    """The weakdep tree indexed by kmod 34's depmod and (a copy) by kmod 30's."""
    t34 = weakdep_tree(tmp_path / "k34", builtin=True)
    t30 = KernelTree(t34.key, tmp_path / "k30", t34.release)
    shutil.copytree(t34.root, t30.root)
    assert kmod34.depmod(t34).returncode == 0
    assert real_depmod(t30).returncode == 0
    return t34, t30


def test_kmod_compat_picks_the_generation(depmod, oracles):
    t34, t30 = oracles
    res = depmod(t34, kmod_compat="34")
    assert not res["changed"] and res["kmod_generation"]["source"] == "option"
    # Asked for kmod 30 on kmod 34's output: exactly the files kmod 30's depmod writes
    # differently change (modules.weakdep is no kmod 30 file and stays).
    differ = sorted(n for n in stamps(t30) if (t30.moddir / n).read_bytes() != (t34.moddir / n).read_bytes())
    assert "modules.dep.bin" in differ
    res = depmod(t34, check=True, kmod_compat="30")
    assert res["changed"] and sorted(res["files_changed"]) == differ
    assert res["kmod_generation"] == {"version": 30, "source": "option", "evidence": "30"}
    res = depmod(t34, kmod_compat="30")
    for name in stamps(t30):
        assert (t34.moddir / name).read_bytes() == (t30.moddir / name).read_bytes(), name
    assert (t34.moddir / "modules.weakdep").exists()
    # and back: auto now sees a post-order index next to modules.weakdep (kmod 33's output)
    res = depmod(t34, check=True)
    assert res["kmod_generation"]["version"] == 33 and "modules.weakdep" not in res["files_changed"]


@pytest.mark.parametrize("value", ["35", "newest", "34; rm -rf /", ""])
def test_bad_kmod_compat_is_refused(depmod, oracles, value):
    t34 = oracles[0]
    before = stamps(t34)
    res = depmod(t34, kmod_compat=value)
    assert res["failed"] and "kmod_compat" in res["msg"]
    assert stamps(t34) == before
