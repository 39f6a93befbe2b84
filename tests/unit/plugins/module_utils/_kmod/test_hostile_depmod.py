# SPDX-License-Identifier: GPL-3.0-or-later
"""depmod, depmod.d and failed lookups against hostile trees: directories, symlink loops and
FIFOs where files belong, temporary files of killed runs, modules nobody indexed."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import time
import typing as t

import pytest
from depmod_trees import real_depmod, small_tree
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config import ModprobeConfig
from ansible_collections.kernel.kmod.plugins.module_utils._kmod import lock as lock_mod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod import OUTPUT_FILES, Depmod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod_files import publish
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod_plan import apply, plan_depmod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.lock import find_stale_temps, locked_dir, remove_stale_temps
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod_config import DepmodConfig
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KmodError, ModuleLookupError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.resolver import ModuleDB

NAMES = ("vfat", "dummy", "msdos")


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO opened for reading waits forever for a writer: fail instead of hanging."""
    def hung(signum, frame):
        raise AssertionError("hung (a FIFO was opened?)")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(600)  # generous: a busy CI machine is slow, a hang is forever
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def tree(tmp_path):
    return small_tree(tmp_path / "root", names=NAMES)


def make_hostile(path, kind: str) -> None:
    """Put something that is not a regular file at path."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "directory":
        path.mkdir()
        (path / "x").write_text("x")
    elif kind == "symlink loop":
        path.symlink_to(path.name)
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "symlink":
        target = path.parent / "elsewhere"
        target.write_bytes(b"not ours\n")
        path.symlink_to(target.name)
    else:
        raise ValueError(kind)


def depmod(tree, **kwargs) -> Depmod:
    kwargs.setdefault("config_paths", [])
    return Depmod(KmodPaths(str(tree.root), tree.release), **kwargs)


def plan(tree, cache_dir):
    """kmod_depmod's plan, with the cache in cache_dir."""
    return plan_depmod(KmodPaths(str(tree.root), tree.release), config_dirs=[], cache_dir=str(cache_dir))


def index_bytes(tree) -> dict:
    """Every modules.* regular file's bytes (no symlink followed)."""
    return {p.name: p.read_bytes() for p in tree.moddir.iterdir()
            if p.name.startswith("modules.") and stat.S_ISREG(os.lstat(p).st_mode)}


# -- inputs and outputs that are not regular files (item 7) ------------------------------

@pytest.mark.parametrize("kind", ["directory", "symlink loop", "FIFO"])
@pytest.mark.parametrize("name", ["modules.order", "modules.builtin", "modules.builtin.modinfo"])
def test_input_not_a_file_is_an_error_naming_it(tree, tmp_path, name, kind):
    apply(plan(tree, tmp_path / "cache"))
    make_hostile(tree.moddir / name, kind)
    before = index_bytes(tree)
    # the cached fast path (DepmodCache.up_to_date) checks the inputs too
    for step in (depmod(tree).build, lambda: plan(tree, tmp_path / "cache")):
        with pytest.raises(KmodError) as exc:
            step()
        assert str(tree.moddir / name) in exc.value.msg
    assert index_bytes(tree) == before


@pytest.mark.parametrize("kind", ["directory", "symlink loop", "FIFO", "symlink"])
@pytest.mark.parametrize("name", ["modules.dep", "modules.alias.bin", "modules.devname"])
def test_output_not_a_file_is_refused_before_anything_is_written(tree, tmp_path, name, kind):
    """kmod 30's depmod fails on a directory and renames over the rest; we name the file and
    write nothing: a FIFO must not be read (it blocks), a symlink not read through."""
    apply(plan(tree, tmp_path / "cache"))
    (tree.moddir / "modules.symbols").write_bytes(b"stale\n")  # something to rewrite
    make_hostile(tree.moddir / name, kind)
    before = index_bytes(tree)
    for step in (lambda: plan(tree, tmp_path / "cache"), depmod(tree).build,
                 lambda: publish(str(tree.moddir), {name: b"new\n"})):
        with pytest.raises(KmodError) as exc:
            step()
        assert str(tree.moddir / name) in exc.value.msg and kind.split()[-1] in exc.value.msg
    assert index_bytes(tree) == before and not find_stale_temps(str(tree.moddir))


@pytest.mark.parametrize("kind", ["directory", "symlink loop", "FIFO", "missing"])
@pytest.mark.parametrize("option", ["system_map", "symvers"])
def test_symbol_files_not_usable_name_the_option(tree, tmp_path, option, kind):
    path = tmp_path / "symbols"
    if kind != "missing":
        make_hostile(path, kind)
    with pytest.raises(KmodError) as exc:
        depmod(tree, check_unresolved=True, **{option: str(path)}).build()
    assert str(path) in exc.value.msg and option in exc.value.msg


def test_nul_byte_in_symbol_file_option(tree):
    with pytest.raises(KmodError, match="system_map"):
        depmod(tree, system_map=str(tree.root) + "/boot/System.map\0x").build()


def test_module_directory_that_is_a_file(tmp_path):
    moddir = tmp_path / "lib/modules/6.1.0-1-amd64"
    moddir.parent.mkdir(parents=True)
    moddir.write_text("")
    with pytest.raises(KmodError, match="not a directory"):
        Depmod(KmodPaths(str(tmp_path), "6.1.0-1-amd64"), config_paths=[]).build()


@pytest.mark.parametrize("kind", ["FIFO", "directory", "symlink loop"])
def test_depmod_d_entries_that_are_not_files_are_skipped_with_a_warning(tree, kind):
    """A FIFO named *.conf in depmod.d makes kmod's depmod wait forever; we skip it, say so,
    and index exactly as kmod's depmod does without it."""
    conf_dir = tree.root / "etc/depmod.d"
    conf_dir.mkdir(parents=True)
    (conf_dir / "10-search.conf").write_text("search extra built-in\n")
    assert real_depmod(tree).returncode == 0
    expected = {n: (tree.moddir / n).read_bytes() for n in OUTPUT_FILES}
    make_hostile(conf_dir / "20-hostile.conf", kind)
    result = depmod(tree, config_paths=[str(conf_dir)]).build()
    assert result.files == expected
    if kind != "directory":  # directories are not configuration files at all, as in kmod
        assert any("20-hostile.conf" in w for w in result.warnings)
    cfg = DepmodConfig.load([str(conf_dir)], tree.release)
    assert cfg.searches == ["extra", "built-in"] and cfg.files == [str(conf_dir / "10-search.conf")]


# -- temporary files of killed runs (item 8) -----------------------------------------------

def test_only_our_stale_temporary_files_are_removed(tmp_path):
    d = tmp_path
    ours = [".kmod-abcd1234", ".kmod-a_b_c_9z"]
    for name in ours:
        (d / name).write_bytes(b"half")
    kept = {
        ".kmod-abc": "file", ".kmod-abcd12345": "file", ".kmodabcd1234": "file", "modules.dep.123.4.5": "file",
        ".kmod-linkto1234": "symlink", ".kmod-dirdir12": "directory", ".kmod-fifo5678": "FIFO",
        ".kmod-others12": "file of another user",
    }
    for name, kind in kept.items():
        if kind.startswith("file"):
            (d / name).write_bytes(b"x")
        else:
            make_hostile(d / name, kind)
    os.chown(d / ".kmod-others12", 4242, 4242)
    assert find_stale_temps(str(d)) == sorted(ours)
    warnings: list = []
    assert remove_stale_temps(str(d), True, warnings) == sorted(ours) and warnings == []
    assert not any((d / n).exists() for n in ours)
    assert all((d / n).exists() or (d / n).is_symlink() for n in kept)
    assert (d / "elsewhere").read_bytes() == b"not ours\n"  # a symlink's target is never touched


def test_without_the_lock_only_old_temporary_files_count(tmp_path):
    young, old = tmp_path / ".kmod-young123", tmp_path / ".kmod-old12345"
    young.write_bytes(b"")
    old.write_bytes(b"")
    past = time.time() - lock_mod.STALE_TEMP_AGE - 60
    os.utime(old, (past, past))
    assert find_stale_temps(str(tmp_path), locked=False) == [old.name]
    assert find_stale_temps(str(tmp_path), locked=True) == sorted([old.name, young.name])


def _hold_lock(directory: str, ready, release) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    release.wait(60)


def test_publishing_waits_for_the_lock_of_another_process(tree, monkeypatch):
    """While another process holds the directory's lock (it is writing there), nothing is
    written and its temporary file is not touched; the run fails naming the directory."""
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tree.moddir), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        busy = tree.moddir / ".kmod-inflight"
        busy.write_bytes(b"being written")
        monkeypatch.setattr(lock_mod, "LOCK_WAIT", 0.3)
        with pytest.raises(KmodError, match=f"lock on {tree.moddir}"):
            publish(str(tree.moddir), {"modules.dep": b"x\n"})
        assert busy.exists() and not (tree.moddir / "modules.dep").exists()
    finally:
        release.set()
        holder.join()
    with locked_dir(str(tree.moddir), wait=1) as locked:
        assert locked


def test_publish_removes_leftovers_and_writes(tree):
    stale = tree.moddir / ".kmod-q03syfzc"
    stale.write_bytes(b"half an index")
    result = publish(str(tree.moddir), {"modules.dep": b"a.ko:\n"})
    assert result.written == ["modules.dep"] and result.removed == [stale.name]
    assert not stale.exists() and (tree.moddir / "modules.dep").read_bytes() == b"a.ko:\n"
    assert publish(str(tree.moddir), {"modules.dep": b"a.ko:\n"}).written == []


# -- "it can't find the module I just copied" (item 8) -------------------------------------

def modprobe_fails(tree, name: str) -> str:
    proc = subprocess.run(["modprobe", "-d", str(tree.root), "-S", tree.release, "-C", "/dev/null",
                           "--show-depends", name], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    return proc.stderr


def make_db(tree) -> ModuleDB:
    paths = KmodPaths(str(tree.root), tree.release)
    return ModuleDB(paths, ModprobeConfig.load(paths, cmdline="", config_paths=[]))


def test_copied_in_after_depmod_is_explained(tree):
    assert real_depmod(tree).returncode == 0
    copied = tree.moddir / "extra/e2e-dummy.ko"
    copied.parent.mkdir()
    shutil.copy(next(tree.moddir.rglob("dummy.ko")), copied)
    assert "not found" in modprobe_fails(tree, "e2e_dummy")  # kmod cannot find it either
    with pytest.raises(ModuleLookupError) as exc:
        make_db(tree).lookup("e2e_dummy")
    msg = exc.value.msg
    assert msg.startswith(f"Module e2e_dummy not found in directory {tree.moddir}")
    assert str(copied) in msg and "kmod_depmod" in msg and "not in modules.dep" in msg
    assert exc.value.details["unindexed"] == [str(copied)]
    # the hint is right: once indexed, kmod finds it
    assert real_depmod(tree).returncode == 0
    assert make_db(tree).lookup("e2e-dummy")[0].path == str(copied)


def test_a_name_that_is_nowhere_gets_no_such_hint(tree):
    assert real_depmod(tree).returncode == 0
    with pytest.raises(ModuleLookupError) as exc:
        make_db(tree).lookup("nosuchmodule")
    assert "kmod_depmod" not in exc.value.msg and "unindexed" not in exc.value.details
    with pytest.raises(ModuleLookupError) as exc:
        make_db(tree).lookup("pci:v00008086d*")  # an alias is no file name
    assert "kmod_depmod" not in exc.value.msg


def test_tree_never_indexed_is_explained(tree):
    modprobe_fails(tree, "vfat")
    with pytest.raises(ModuleLookupError) as exc:
        make_db(tree).lookup("vfat")
    assert "has no modules.dep" in exc.value.msg and "kmod_depmod" in exc.value.msg


@pytest.mark.parametrize("kind", ["symlink loop", "FIFO", "directory"])
@pytest.mark.parametrize("name", ["modules.dep.bin", "modules.dep", "modules.builtin.bin", "modules.alias.bin"])
def test_index_that_is_not_a_file_is_an_error_naming_it(tree, name, kind):
    assert real_depmod(tree).returncode == 0
    make_hostile(tree.moddir / name, kind)
    with pytest.raises(KmodError) as exc:
        db = make_db(tree)
        db.lookup("vfat")
        db.lookup("fs-msdos")
        db.lookup("nosuchmodule")
    assert str(tree.moddir / name) in exc.value.msg


def test_the_tree_is_only_searched_when_a_lookup_fails(tree, monkeypatch):
    assert real_depmod(tree).returncode == 0
    db = make_db(tree)
    walks = []
    real_walk = os.walk
    monkeypatch.setattr(os, "walk", lambda *a, **k: walks.append(a) or real_walk(*a, **k))
    for name in ("vfat", "fat", "fs-vfat", "msdos"):
        db.lookup(name)
    assert walks == []
    errors = []
    for name in ("nope1", "nope2"):
        with pytest.raises(ModuleLookupError) as info:
            db.lookup(name)
        errors.append(info.value)
    assert walks == []  # the hint is built only when its message is read
    assert all(name in str(exc) for name, exc in zip(("nope1", "nope2"), errors))
    assert len(walks) == 1  # once per ModuleDB


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet="abcxyz_-.:*?[]", min_size=1, max_size=12))
def test_lookup_failures_never_crash(name):
    """Whatever the name, a failed lookup ends in our own error, never a traceback."""
    db = _db_for_fuzz()
    try:
        db.lookup(name)
    except KmodError:
        pass


_FUZZ_DB: list[t.Any] = []


def _db_for_fuzz() -> ModuleDB:
    if not _FUZZ_DB:
        from kernels import pristine_root
        _FUZZ_DB.append(make_db(pristine_root("6.1")))
    return _FUZZ_DB[0]


def test_symlink_loops_in_the_tree_are_skipped_like_depmod(tree):
    extra = tree.moddir / "extra"
    extra.mkdir()
    (extra / "loop.ko").symlink_to("loop.ko")
    (extra / "a").symlink_to("b")
    (extra / "b").symlink_to("a")
    proc = real_depmod(tree)
    assert proc.returncode == 0 and "loop.ko" in proc.stderr
    result = depmod(tree).build()
    assert result.files == {n: (tree.moddir / n).read_bytes() for n in OUTPUT_FILES}
    assert any("loop.ko" in w and "symlink loop" in w for w in result.warnings)


def test_broken_text_index_beside_a_good_bin_is_ignored_like_libkmod(tree):
    assert real_depmod(tree).returncode == 0
    make_hostile(tree.moddir / "modules.dep", "symlink loop")
    make_hostile(tree.moddir / "modules.alias", "FIFO")
    db = make_db(tree)
    assert db.lookup("vfat")[0].path.endswith("vfat.ko") and db.lookup("fs-msdos")[0].name == "msdos"
