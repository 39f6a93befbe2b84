# SPDX-License-Identifier: GPL-3.0-or-later
"""Kill kmod_depmod and kmod_blacklist while they write: every file they manage must hold
either its old or its new bytes, and the next run must clean up and converge.

Each module runs main() in a forked child. A Python audit hook (installed in the child
only) counts the child's mutating file operations (an open for writing, mkstemp, chmod,
rename, remove); the child SIGKILLs itself right before the Nth one, for every N a full
run has. Kills after random short delays add points in the middle of a write, where no
audit event fires.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
import types
import typing as t
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod import OUTPUT_FILES
from ansible_collections.kernel.kmod.plugins.modules import kmod_blacklist, kmod_depmod

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils" / "_kmod"))
from depmod_trees import real_depmod, small_tree  # noqa: E402

# What atomic.write_if_changed names its temporary files (tempfile.mkstemp prefix).
TEMP_PREFIX = ".kmod-"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _mutating(event: str, args: tuple) -> bool:
    if event == "open":
        mode, flags = args[1], args[2]
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        return bool(flags & _WRITE_FLAGS)
    return event in ("tempfile.mkstemp", "os.chmod", "os.rename", "os.remove", "os.truncate")


def _child(module: types.ModuleType, args: dict, kill_at: int | None, tally: int | None) -> t.NoReturn:
    """In the forked child: run main() with args; die by SIGKILL before mutating op kill_at
    (0-based); write one byte to fd tally for each mutating op."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    count = [0]

    def hook(event: str, hook_args: tuple) -> None:
        if not _mutating(event, hook_args):
            return
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        count[0] += 1
        if tally is not None:
            os.write(tally, b".")

    try:
        with patch_module_args({**args, "_ansible_check_mode": False, "_ansible_diff": False}):
            sys.addaudithook(hook)
            module.main()
    except BaseException:  # pylint: disable=broad-except
        pass
    os._exit(0)


def run_child(module: types.ModuleType, args: dict, kill_at: int | None = None,
              kill_after: float | None = None) -> tuple[int, int]:
    """(mutating ops seen, signal that ended the child or 0)."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        os.close(read_end)
        _child(module, args, kill_at, write_end)
    os.close(write_end)
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    seen = b""
    while True:
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        seen += chunk
    os.close(read_end)
    _pid, status = os.waitpid(pid, 0)
    return len(seen), (os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0)


def snapshot(directory: Path, names: t.Iterable[str]) -> dict[str, bytes | None]:
    return {n: (directory / n).read_bytes() if (directory / n).exists() else None for n in names}


def temps(*directories: Path) -> list[Path]:
    return [p for d in directories if d.is_dir() for p in d.iterdir() if p.name.startswith(TEMP_PREFIX)]


def restore(directory: Path, files: dict[str, bytes | None]) -> None:
    for name, data in files.items():
        path = directory / name
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(data)


# -- kmod_depmod ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def depmod_states(tmp_path_factory):
    """A small tree indexed by kmod's depmod (the old bytes), then changed: a module copied
    in, one removed. The new bytes are what kmod's depmod writes for the changed tree."""
    base = tmp_path_factory.mktemp("kill-depmod")
    old_tree = small_tree(base / "old", names=("vfat", "dummy", "msdos"), copy=True)
    assert real_depmod(old_tree).returncode == 0
    old = snapshot(old_tree.moddir, OUTPUT_FILES)

    def change(tree):
        dummy = next(tree.moddir.rglob("dummy.ko"))
        (tree.moddir / "extra").mkdir()
        shutil.copy(dummy, tree.moddir / "extra" / "e2edummy.ko")
        next(tree.moddir.rglob("msdos.ko")).unlink()

    new_tree = small_tree(base / "new", names=("vfat", "dummy", "msdos"), copy=True)
    change(new_tree)
    assert real_depmod(new_tree).returncode == 0
    new = snapshot(new_tree.moddir, OUTPUT_FILES)
    assert all(old[n] != new[n] for n in ("modules.dep", "modules.dep.bin", "modules.alias"))
    change(old_tree)  # the tree as the killed run sees it, with the old indexes
    return old_tree, old, new


@pytest.fixture
def depmod_case(depmod_states, tmp_path, run_module):
    tree, old, new = depmod_states
    cache_dir = tmp_path / "cache"
    args = {"root": str(tree.root), "kernel_release": tree.release, "jobs": 1,
            "cache_dir": str(cache_dir), "config_dirs": ["/etc/depmod.d"]}

    def reset():
        restore(tree.moddir, old)
        for path in temps(tree.moddir):
            path.unlink()
        shutil.rmtree(cache_dir, ignore_errors=True)

    def check_and_converge(where: str) -> None:
        """Every index is old or new; then one run converges, removing our leftovers."""
        for name, data in snapshot(tree.moddir, OUTPUT_FILES).items():
            assert data in (old[name], new[name]), f"{name} is neither old nor new after {where}"
        left = temps(tree.moddir)
        res = run_module(kmod_depmod, **args)
        assert not res.get("failed"), res
        assert snapshot(tree.moddir, OUTPUT_FILES) == new, f"no convergence after {where}"
        assert temps(tree.moddir, cache_dir) == [], f"temporary files stay after {where}"
        if left:
            warnings = json.dumps(res.get("warnings"))  # ansible-core 2.19: structured warnings
            assert res["changed"] and "temporary file" in warnings and left[0].name in warnings
        again = run_module(kmod_depmod, **args)
        assert not again["changed"] and snapshot(tree.moddir, OUTPUT_FILES) == new

    reset()
    return tree, args, reset, check_and_converge


def test_depmod_killed_before_each_write(depmod_case):
    tree, args, reset, check_and_converge = depmod_case
    total, sig = run_child(kmod_depmod, args)
    assert sig == 0 and total >= 2 * len(OUTPUT_FILES)  # every index changes: temp + rename each
    left_behind = 0
    for kill_at in range(total):
        reset()
        seen, sig = run_child(kmod_depmod, args, kill_at=kill_at)
        assert (seen, sig) == (kill_at, signal.SIGKILL), "the child was not killed where planned"
        left_behind += bool(temps(tree.moddir))
        check_and_converge(f"a kill before write operation {kill_at} of {total}")
    assert left_behind, "no kill point left a temporary file: the cleanup was never exercised"


def test_depmod_killed_after_random_delays(depmod_case):
    tree, args, reset, check_and_converge = depmod_case
    rnd = random.Random(1234)
    start = time.monotonic()
    run_child(kmod_depmod, args)
    full = time.monotonic() - start
    reset()
    for _attempt in range(8):
        run_child(kmod_depmod, args, kill_after=rnd.uniform(0, full))
        check_and_converge("a kill after a random delay")
        reset()


def test_depmod_leftover_cache_temp_is_removed(depmod_case, run_module):
    """A run killed while saving its cache leaves a temporary file in the cache directory;
    the next run that saves the cache removes it."""
    tree, args, reset, _check = depmod_case
    cache_dir = Path(args["cache_dir"])
    cache_dir.mkdir(mode=0o700)
    stale = cache_dir / (TEMP_PREFIX + "abcd1234")
    stale.write_bytes(b"half a cache")
    res = run_module(kmod_depmod, **args)
    assert res["changed"] and not stale.exists()
    assert [p.name for p in cache_dir.iterdir() if p.name.startswith("depmod-")]


# -- kmod_blacklist ---------------------------------------------------------------------

CONF = "etc/modprobe.d/kernel-kmod-blacklist.conf"


@pytest.fixture(scope="module")
def blacklist_tree(tmp_path_factory):
    tree = small_tree(tmp_path_factory.mktemp("kill-blacklist") / "root", names=("vfat", "dummy", "msdos"))
    assert real_depmod(tree).returncode == 0
    (tree.root / "etc/modprobe.d").mkdir(parents=True)
    return tree


def test_blacklist_killed_before_each_write(blacklist_tree, run_module):
    tree = blacklist_tree
    conf = tree.root / CONF
    old = b"# kept\nblacklist msdos\noptions dummy numdummies=2\n"
    args = {"root": str(tree.root), "kernel_release": tree.release, "name": ["dummy", "vfat"], "mode": "disable"}

    conf.write_bytes(old)
    res = run_module(kmod_blacklist, **args)
    assert res["changed"], res
    new = conf.read_bytes()
    assert new != old and b"blacklist msdos" in new

    conf.write_bytes(old)
    total, sig = run_child(kmod_blacklist, args)
    assert sig == 0 and conf.read_bytes() == new and total >= 2
    rnd = random.Random(4321)
    for kill_at in list(range(total)) + [None] * 6:
        conf.write_bytes(old)
        for path in temps(conf.parent):
            path.unlink()
        if kill_at is None:  # a random point, possibly in the middle of a write
            run_child(kmod_blacklist, args, kill_after=rnd.uniform(0, 0.05))
        else:
            assert run_child(kmod_blacklist, args, kill_at=kill_at) == (kill_at, signal.SIGKILL)
        assert conf.read_bytes() in (old, new), f"{CONF} is neither old nor new after kill {kill_at}"
        res = run_module(kmod_blacklist, **args)
        assert not res.get("failed"), res
        assert conf.read_bytes() == new
        assert not run_module(kmod_blacklist, **args)["changed"]


def test_blacklist_next_run_removes_temporary_files_of_killed_runs(blacklist_tree, run_module):
    tree = blacklist_tree
    conf = tree.root / CONF
    conf.write_bytes(b"blacklist msdos\n")
    args = {"root": str(tree.root), "kernel_release": tree.release, "name": ["dummy"]}
    for path in temps(conf.parent):
        path.unlink()
    total, _sig = run_child(kmod_blacklist, args)
    conf.write_bytes(b"blacklist msdos\n")
    kill_at = total - 1  # right before the rename: the complete temporary file stays
    assert run_child(kmod_blacklist, args, kill_at=kill_at) == (kill_at, signal.SIGKILL)
    assert temps(conf.parent)
    assert not run_module(kmod_blacklist, **args).get("failed")
    assert temps(conf.parent) == []
