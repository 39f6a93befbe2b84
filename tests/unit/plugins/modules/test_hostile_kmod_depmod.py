# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_depmod's main() on hostile trees: every problem ends in a message naming the file or
the option (never a traceback, never a hang), and leftovers of killed runs are cleaned."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod import OUTPUT_FILES
from ansible_collections.kernel.kmod.plugins.modules import kmod_depmod

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils" / "_kmod"))
from depmod_trees import real_depmod, small_tree  # noqa: E402


@pytest.fixture(autouse=True)
def no_hang():
    def hung(signum, frame):
        raise AssertionError("hung (a FIFO was opened?)")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def tree(tmp_path):
    return small_tree(tmp_path / "root", names=("vfat", "dummy"))


@pytest.fixture
def depmod(run_module, tmp_path):
    def run(tree, check=False, **args):
        return run_module(kmod_depmod, check=check, **{
            "root": str(tree.root), "kernel_release": tree.release, "cache_dir": str(tmp_path / "cache"), **args})
    return run


@pytest.mark.parametrize("kind", ["directory", "loop", "fifo"])
def test_index_file_not_a_file(depmod, tree, kind):
    target = tree.moddir / "modules.dep"
    if kind == "directory":
        target.mkdir()
    elif kind == "loop":
        target.symlink_to("modules.dep")
    else:
        os.mkfifo(target)
    for check in (True, False):
        res = depmod(tree, check=check)
        assert res["failed"] and str(target) in res["msg"] and "not a regular file" in res["msg"]
    assert not any((tree.moddir / n).exists() for n in OUTPUT_FILES if n != "modules.dep")


@pytest.mark.parametrize("option", ["system_map", "symvers"])
def test_symbol_file_option_is_a_directory(depmod, tree, option):
    (tree.root / "boot").mkdir()
    res = depmod(tree, check_unresolved=True, **{option: "/boot"})
    assert res["failed"] and f"option {option}" in res["msg"] and str(tree.root / "boot") in res["msg"]


def test_fifo_in_depmod_d_is_skipped_with_a_warning(depmod, tree):
    conf = tree.root / "etc/depmod.d"
    conf.mkdir(parents=True)
    os.mkfifo(conf / "hostile.conf")
    res = depmod(tree)
    assert not res.get("failed") and res["changed"]
    assert "hostile.conf" in json.dumps(res["warnings"]) and "FIFO" in json.dumps(res["warnings"])
    (conf / "hostile.conf").unlink()  # kmod's depmod would wait on it forever
    ours = {n: (tree.moddir / n).read_bytes() for n in OUTPUT_FILES}
    assert real_depmod(tree).returncode == 0
    assert ours == {n: (tree.moddir / n).read_bytes() for n in OUTPUT_FILES}


def test_leftover_temporary_files_check_mode_then_removed(depmod, tree):
    assert not depmod(tree).get("failed")
    stale = tree.moddir / ".kmod-x1y2z3w4"
    stale.write_bytes(b"half an index")
    foreign = tree.moddir / ".kmod-notours"  # not the shape of our temporary files
    foreign.write_bytes(b"kept")
    res = depmod(tree, check=True)
    assert res["changed"] and res["files_changed"] == [] and stale.exists()
    assert "Would remove 1 temporary file" in json.dumps(res["warnings"])
    res = depmod(tree)  # the cache vouches for the indexes: the fast path cleans up too
    assert res["changed"] and res["files_changed"] == [] and not stale.exists() and foreign.exists()
    assert stale.name in json.dumps(res["warnings"])
    assert not depmod(tree)["changed"]
