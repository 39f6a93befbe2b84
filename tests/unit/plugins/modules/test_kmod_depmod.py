# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_depmod's main() on scratch trees, next to kmod 30's depmod."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import atomic
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod import OUTPUT_FILES
from ansible_collections.kernel.kmod.plugins.modules import kmod_depmod

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../module_utils/_kmod"))
from depmod_trees import empty_tree, make_module, real_depmod, small_tree  # noqa: E402


@pytest.fixture
def depmod(run_module):
    """kmod_depmod's main() on a tree, its cache off unless asked; returns the result."""
    def run(tree, check=False, diff=True, **args):
        return run_module(kmod_depmod, check=check, diff=diff, **{
            "root": str(tree.root), "kernel_release": tree.release, "cache": False, **args})
    return run


def stamps(tree):
    """(content, mtime, inode) of every index file: an idempotent run keeps all three."""
    out = {}
    for name in OUTPUT_FILES:
        path = tree.moddir / name
        if path.exists():
            st = path.stat()
            out[name] = (path.read_bytes(), st.st_mtime_ns, st.st_ino)
    return out


def leftovers(tree):
    return [p.name for p in tree.moddir.iterdir() if p.name.startswith(".")]


@pytest.fixture
def tree(tmp_path):
    return small_tree(tmp_path / "root")


@pytest.fixture
def oracle(tmp_path):
    """The same tree, indexed by the real depmod."""
    t = small_tree(tmp_path / "oracle")
    assert real_depmod(t).returncode == 0
    return t


def same_as(tree, oracle):
    return {n: (tree.moddir / n).read_bytes() for n in OUTPUT_FILES} == {
        n: (oracle.moddir / n).read_bytes() for n in OUTPUT_FILES}


def test_check_apply_idempotent(depmod, tree, oracle):
    res = depmod(tree, check=True)
    assert res["changed"] and res["files_changed"] == list(OUTPUT_FILES)
    assert stamps(tree) == {} and not leftovers(tree)

    res = depmod(tree)
    assert res["changed"] and res["files_changed"] == list(OUTPUT_FILES)
    assert res["module_count"] == len((oracle.moddir / "modules.dep").read_text().splitlines())
    assert same_as(tree, oracle) and not leftovers(tree)
    before = stamps(tree)

    for check in (True, False):
        res = depmod(tree, check=check)
        assert not res["changed"] and res["files_changed"] == []
        assert stamps(tree) == before


def test_only_changed_files_are_rewritten_and_diff(depmod, tree, oracle):
    assert real_depmod(tree).returncode == 0
    (tree.moddir / "kernel/drivers/net/dummy.ko").unlink()
    (oracle.moddir / "kernel/drivers/net/dummy.ko").unlink()
    os.link(tree.moddir / "kernel/fs/fat/vfat.ko", tree.moddir / "kernel/fs/fat/vfat2.ko")
    os.link(oracle.moddir / "kernel/fs/fat/vfat.ko", oracle.moddir / "kernel/fs/fat/vfat2.ko")
    assert real_depmod(oracle).returncode == 0
    before = stamps(tree)
    res = depmod(tree)
    assert res["changed"] and same_as(tree, oracle)
    after = stamps(tree)
    assert set(res["files_changed"]) == {n for n in OUTPUT_FILES if before[n][0] != after[n][0]}
    untouched = set(OUTPUT_FILES) - set(res["files_changed"])
    assert "modules.builtin.bin" in untouched
    assert all(before[n] == after[n] for n in untouched)
    diff = res["diff"]
    assert "kernel/drivers/net/dummy.ko:\n" in diff["before"] and "alias rtnl-link-dummy dummy\n" in diff["before"]
    assert "dummy" not in diff["after"]
    assert "kernel/fs/fat/vfat2.ko: kernel/fs/fat/fat.ko\n" in diff["after"]
    assert "alias fs-vfat vfat2\n" in diff["after"]
    assert "snd" not in diff["before"] + diff["after"]  # unchanged modules are not shown


def test_failed_write_leaves_old_files_and_no_temp_files(depmod, tree, monkeypatch):
    """A write that fails half-way (rename of the 4th changed file): the files not yet
    replaced keep their old bytes, no temporary file is left, and the task fails cleanly.
    The next run completes the job."""
    assert real_depmod(tree).returncode == 0
    for name in OUTPUT_FILES:
        (tree.moddir / name).write_bytes(b"old " + name.encode())
    real_rename = os.rename
    calls = []

    def flaky_rename(src, dst):
        calls.append(dst)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", flaky_rename)
    res = depmod(tree)
    assert res["failed"] and "No space left on device" in res["msg"] and OUTPUT_FILES[3] in res["msg"]
    assert not leftovers(tree)
    for name in OUTPUT_FILES[3:]:
        assert (tree.moddir / name).read_bytes() == b"old " + name.encode()
    monkeypatch.setattr(atomic.os, "rename", real_rename)
    assert depmod(tree)["changed"]
    assert not depmod(tree)["changed"]


def test_corrupt_module_warns_and_is_listed(depmod, tree, oracle):
    for t in (tree, oracle):
        (t.moddir / "kernel/broken.ko.xz").write_bytes(b"\xfd7zXZ\x00" + b"\x01" * 50)
        (t.moddir / "kernel/empty.ko").write_bytes(b"")
    assert real_depmod(oracle).returncode == 0
    res = depmod(tree)
    assert not res.get("failed") and same_as(tree, oracle)
    warnings = json.dumps(res["warnings"])  # ansible-core 2.19 returns structured warnings
    assert "broken.ko.xz: corrupt xz data" in warnings and "empty.ko: file too short" in warnings


def test_cycle_fails_and_writes_nothing(depmod, tmp_path):
    tree = empty_tree(tmp_path / "root")
    make_module(tree.moddir / "extra/a.ko", exports=("sym_a",), needs=("sym_b",))
    make_module(tree.moddir / "extra/b.ko", exports=("sym_b",), needs=("sym_a",))
    res = depmod(tree)
    assert res["failed"] and "Cycle detected: " in res["msg"]
    assert sorted(res["cycle"]) == ["a", "b"]
    assert not list(tree.moddir.glob("modules.*"))


def test_check_unresolved(depmod, tmp_path):
    tree = empty_tree(tmp_path / "root")
    make_module(tree.moddir / "extra/needy.ko", needs=("kernel_fn", "lost_fn"), weak=("weak_fn",))
    make_module(tree.moddir / "extra/giver.ko", exports=("giver_fn",), needs=("kernel_fn",))
    (tree.root / "boot").mkdir()
    (tree.root / f"boot/System.map-{tree.release}").write_text("ffffffff81000000 R __ksymtab_kernel_fn\n")
    res = depmod(tree, check_unresolved=True)
    assert res["unresolved"] == [{"module": "needy", "path": str(tree.moddir / "extra/needy.ko"),
                                  "symbol": "lost_fn"}]
    res = depmod(tree, check_unresolved=True, system_map="/boot/nothing")
    assert res["failed"] and "/boot/nothing" in res["msg"]


def test_debian_placeholder_system_map_is_refused(depmod, tree, kernel_6_1):
    (tree.root / "boot").mkdir()
    placeholder = kernel_6_1.root / f"boot/System.map-{tree.release}"
    (tree.root / f"boot/System.map-{tree.release}").write_bytes(placeholder.read_bytes())
    res = depmod(tree, check_unresolved=True)
    assert res["failed"] and "lists no exported" in res["msg"]
    assert stamps(tree) == {}


def test_config_dirs_under_root(depmod, tree, oracle):
    for t in (tree, oracle):
        (t.moddir / "updates").mkdir()
        os.link(t.moddir / "kernel/fs/fat/vfat.ko", t.moddir / "updates/vfat.ko")
        (t.root / "srv/conf").mkdir(parents=True)
        (t.root / "srv/conf/a.conf").write_text("override vfat * kernel/fs/fat\n")
    proc = subprocess.run(["depmod", "-b", str(oracle.root), "-C", str(oracle.root / "srv/conf"), oracle.release],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    depmod(tree, config_dirs=["/srv/conf"])
    assert same_as(tree, oracle)
    assert b"kernel/fs/fat/vfat.ko" in (tree.moddir / "modules.dep").read_bytes()


@pytest.mark.parametrize("args, message", [
    ({"jobs": -1}, "jobs"),
    ({"kernel_release": "0.0.0-none"}, "does not exist"),
    ({"kernel_release": "6.1/../../etc"}, "not a kernel version"),
    ({"kernel_release": "latest"}, "not a kernel version"),
])
def test_bad_input(depmod, tree, args, message):
    res = depmod(tree, **args)
    assert res["failed"] and message in res["msg"]


def test_cache_warm_run(depmod, tree, tmp_path):
    res = depmod(tree, check=True, cache=True, cache_dir=str(tmp_path / "cache"))
    assert res["changed"] and not (tmp_path / "cache").exists()  # check mode writes no cache either
    res = depmod(tree, cache=True, cache_dir=str(tmp_path / "cache"))
    assert res["changed"] and len(list((tmp_path / "cache").iterdir())) == 1
    before = stamps(tree)
    for check in (True, False):
        res = depmod(tree, check=check, cache=True, cache_dir=str(tmp_path / "cache"))
        assert not res["changed"] and stamps(tree) == before
