# SPDX-License-Identifier: GPL-3.0-or-later
"""The warm-run cache (depmod_cache.py) through kmod_depmod's plan and apply: a run the
cache vouches for changes nothing and reads no module; any change of an input or of an
index file on disk is seen, and the files written then are kmod's depmod's (the oracle
runs on the same tree after us, so that its bytes are compared with ours)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from depmod_trees import make_module, real_depmod, small_tree

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import depmod as depmod_mod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod_cache import default_cache_file
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod_plan import apply, plan_depmod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths

VFAT = "kernel/fs/fat/vfat.ko"
MSDOS = "kernel/fs/fat/msdos.ko"


@pytest.fixture
def tree(tmp_path):
    """Copies, not hard links: other tests touch the cached trees' inodes (and ctimes)."""
    return small_tree(tmp_path / "root", copy=True)


@pytest.fixture
def scanned(monkeypatch):
    """The module files read (jobs=1: in this process)."""
    calls: list[str] = []
    real = depmod_mod.scan_module
    monkeypatch.setattr(depmod_mod, "scan_module", lambda path: calls.append(path) or real(path))
    return calls


def run(tree, cache_dir, check=False, compat="auto", **kwargs):
    paths = KmodPaths(str(tree.root), tree.release, compat)
    plan = plan_depmod(paths, cache_dir=str(cache_dir), jobs=1, config_dirs=["/etc/depmod.d"], **kwargs)
    if not check:
        apply(plan)
    return plan


def ours_then_oracle(tree, *depmod_args):
    """Our files as written, then kmod's depmod on the same tree: both must agree."""
    names = [p.name for p in tree.moddir.glob("modules.*")
             if p.name not in ("modules.order", "modules.builtin", "modules.builtin.modinfo")]
    ours = {name: (tree.moddir / name).read_bytes() for name in names}
    proc = real_depmod(tree, *depmod_args)
    assert proc.returncode == 0, proc.stderr
    for name in names:
        assert ours[name] == (tree.moddir / name).read_bytes(), f"{name} differs from depmod's"


def assert_warm(tree, cache_dir, scanned):
    """Nothing to do, nothing read, in check mode and for real."""
    del scanned[:]
    for check in (True, False):
        plan = run(tree, cache_dir, check=check)
        assert plan.result is None and not plan.changed and plan.files_changed == []
    assert scanned == []


def test_warm_run_reads_no_module_and_changes_nothing(tree, tmp_path, scanned):
    cache = tmp_path / "cache"
    plan = run(tree, cache, check=True)
    assert plan.changed and not cache.exists()  # check mode writes no cache
    del scanned[:]
    plan = run(tree, cache)
    assert plan.changed and plan.files_changed and len(scanned) == plan.module_count
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)  # depmod's files (new inodes) have our bytes


@pytest.mark.parametrize("name, tamper", [
    ("modules.dep", "same size, mtime reset"), ("modules.alias.bin", "same size, mtime reset"),
    ("modules.symbols.bin", "same size, mtime reset"), ("modules.devname", "removed"),
    ("modules.builtin.bin", "truncated")])
def test_tampered_index_file_is_rewritten(tree, tmp_path, scanned, name, tamper):
    cache = tmp_path / "cache"
    run(tree, cache)
    path = tree.moddir / name
    before = path.read_bytes()
    if tamper == "removed":
        path.unlink()
    elif tamper == "truncated":
        path.write_bytes(before[:len(before) // 2])
    else:  # one byte flipped in place, size and mtime as they were
        st = path.stat()
        with open(path, "r+b") as f:
            f.seek(len(before) // 2)
            f.write(bytes([before[len(before) // 2] ^ 0x20]))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    del scanned[:]
    plan = run(tree, cache, check=True)
    assert plan.changed and plan.files_changed == [name]
    plan = run(tree, cache)
    assert plan.files_changed == [name] and scanned == []  # rebuilt from the parsed modules
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)


def test_module_replaced_with_same_size_and_mtime(tree, tmp_path, scanned):
    """A different file (new inode) with the old size and mtime: read again, output changes."""
    cache = tmp_path / "cache"
    run(tree, cache)
    vfat = tree.moddir / VFAT
    st = vfat.stat()
    data = make_module(tmp_path / "other.ko", exports=("other_fn",)).read_bytes()
    new = vfat.with_name("vfat.new")  # made while the old file exists: another inode for sure
    new.write_bytes(data.ljust(st.st_size, b"\0")[:st.st_size])
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(new, vfat)
    assert vfat.stat().st_ino != st.st_ino and vfat.stat().st_size == st.st_size
    del scanned[:]
    plan = run(tree, cache)
    assert scanned == [str(vfat)] and "modules.symbols" in plan.files_changed
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)


def test_module_rewritten_in_place_with_mtime_reset(tree, tmp_path, scanned):
    """Same inode, size and mtime, other bytes: the ctime tells."""
    cache = tmp_path / "cache"
    run(tree, cache)
    msdos = tree.moddir / MSDOS
    st = msdos.stat()
    data = make_module(tmp_path / "other.ko", exports=("msdos_other",)).read_bytes()
    with open(msdos, "r+b") as f:
        f.write(data.ljust(st.st_size, b"\0")[:st.st_size])
    os.utime(msdos, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert msdos.stat().st_ino == st.st_ino
    del scanned[:]
    plan = run(tree, cache)
    assert scanned == [str(msdos)] and plan.changed
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)


def test_modules_added_and_removed(tree, tmp_path, scanned):
    cache = tmp_path / "cache"
    run(tree, cache)
    extra = tree.moddir / "extra"
    extra.mkdir()
    make_module(extra / "newmod.ko", needs=("fat_get_dotdot_entry",), modinfo=("alias=newmod-alias",))
    del scanned[:]
    plan = run(tree, cache)
    assert scanned == [str(extra / "newmod.ko")] and plan.module_count == len(plan.result.modules)
    assert {"modules.dep", "modules.alias"} <= set(plan.files_changed)
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)
    # removed, deep in a directory (its parent's mtime does not change, its own does)
    (extra / "newmod.ko").unlink()
    plan = run(tree, cache)
    assert plan.changed and scanned == []
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)
    # a module renamed within its directory
    os.rename(tree.moddir / VFAT, tree.moddir / "kernel/fs/fat/vfat2.ko")
    plan = run(tree, cache)
    assert plan.changed
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)


@pytest.mark.parametrize("name", ["modules.order", "modules.builtin", "modules.builtin.modinfo"])
def test_input_files(tree, tmp_path, scanned, name):
    """Touched only: rebuilt (from the parsed modules) and nothing changes; changed: written."""
    cache = tmp_path / "cache"
    run(tree, cache)
    path = tree.moddir / name
    os.utime(path)
    plan = run(tree, cache)
    assert plan.result is not None and not plan.changed and scanned[-1:] != []
    del scanned[:]
    assert_warm(tree, cache, scanned)
    if name == "modules.order":
        path.write_text("".join(reversed(path.read_text().splitlines(keepends=True))))
    elif name == "modules.builtin":
        path.write_text(path.read_text() + "kernel/fs/newfs/newfs.ko\n")
    else:
        path.write_bytes(path.read_bytes() + b"newfs.alias=fs-newfs\0")
    plan = run(tree, cache)
    assert plan.changed and scanned == []
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)


def test_depmod_d_changes(tree, tmp_path, scanned):
    cache = tmp_path / "cache"
    conf = tree.root / "etc/depmod.d"
    conf.mkdir(parents=True)
    updates = tree.moddir / "updates/fs"
    updates.mkdir(parents=True)
    shutil.copy(tree.moddir / VFAT, updates / "vfat.ko")
    run(tree, cache)
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)
    (conf / "10-order.conf").write_text("search built-in updates\n")  # the other vfat wins now
    plan = run(tree, cache)
    assert "modules.dep" in plan.files_changed
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)
    (conf / "10-order.conf").write_text("search updates built-in\n")  # same size, other content
    plan = run(tree, cache)
    assert "modules.dep" in plan.files_changed
    ours_then_oracle(tree)
    (conf / "20-exclude.conf").write_text("exclude updates\n")
    plan = run(tree, cache)
    assert "modules.dep" in plan.files_changed
    ours_then_oracle(tree)
    assert_warm(tree, cache, scanned)


def test_kernel_symbols_option_and_file(tree, tmp_path, scanned):
    cache = tmp_path / "cache"
    symvers = tree.root / "boot/symvers"
    symvers.parent.mkdir()
    symvers.write_text("0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\n")
    run(tree, cache)
    plan = run(tree, cache, symvers="/boot/symvers", check_unresolved=True)  # an option: not vouched
    assert plan.result is not None and plan.unresolved
    warm = run(tree, cache, symvers="/boot/symvers", check_unresolved=True)
    assert warm.result is None and warm.unresolved == plan.unresolved and warm.warnings == plan.warnings
    symvers.write_text("0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\n0x1\tfat_attach\tvmlinux\tEXPORT_SYMBOL\n")
    plan = run(tree, cache, symvers="/boot/symvers", check_unresolved=True)
    assert plan.result is not None


def test_generation_switch(tree, tmp_path, scanned):
    """kmod_compat 30 -> 34 -> 30: the .bin layout changes each time (kmod 34's oracle in
    test_kmod34.py proves the pre-order bytes; here: written, and not vouched for)."""
    cache = tmp_path / "cache"
    run(tree, cache, compat="30")
    del scanned[:]
    plan = run(tree, cache, compat="34")
    assert plan.result is not None and "modules.dep.bin" in plan.files_changed and scanned == []
    assert run(tree, cache, compat="34").result is None
    plan = run(tree, cache, compat="30")
    assert "modules.dep.bin" in plan.files_changed
    ours_then_oracle(tree)


def test_untrusted_cache_is_not_used(tree, tmp_path, scanned):
    cache = tmp_path / "cache"
    run(tree, cache)
    path = default_cache_file(KmodPaths(str(tree.root), tree.release), str(cache))
    os.chmod(path, 0o666)  # others could have written it
    del scanned[:]
    plan = run(tree, cache)
    assert plan.result is not None and len(scanned) == plan.module_count
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert_warm(tree, cache, scanned)


def test_cache_directory_keeps_the_latest_trees(tree, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    for i in range(12):
        old = cache_dir / f"depmod-old{i:02}.marshal"
        old.write_bytes(b"x")
        os.utime(old, ns=(i * 10**9, i * 10**9))
    (cache_dir / "unrelated").write_text("kept")
    run(tree, cache_dir)
    names = sorted(p.name for p in cache_dir.iterdir())
    paths = KmodPaths(str(tree.root), tree.release)
    assert names == sorted([os.path.basename(default_cache_file(paths)), "unrelated"]
                           + [f"depmod-old{i:02}.marshal" for i in range(5, 12)])


def test_oracle_tree_is_a_copy(tree):
    """The tree's files have their own inodes: the cached kernel tree is not touched."""
    out = subprocess.run(["stat", "-c", "%h", str(tree.moddir / VFAT)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
