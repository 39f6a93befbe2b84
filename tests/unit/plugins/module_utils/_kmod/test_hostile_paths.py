# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile paths for the engine: symlinks out of root, loops, '..', FIFOs, NUL bytes.

The oracle for chroot-like resolution is the kernel itself: openat2(2) with
RESOLVE_IN_ROOT resolves a path exactly as a process chrooted at the directory would
(absolute symlinks from the root, '..' stuck at the root, ELOOP after 40 links).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import shutil
import signal
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import atomic
from ansible_collections.kernel.kmod.plugins.module_utils._kmod import paths as paths_mod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.blacklist import plan_blacklist
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config import ModprobeConfig
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import (
    KernelStateError, KmodError, ModuleFileError)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.facts import FactsGatherer
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.file import read_module_bytes
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.kstate import KernelState
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import (
    KmodPaths, NotRegularFileError, PathError, check_kernel_release, resolve_in)

RELEASE = "6.1.0-test"
CANARY = "alias canary_host_secret dummy\nblacklist canary_host_secret\n"


# --- the kernel as oracle ----------------------------------------------------------------

class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = 437  # the same number on every architecture (new syscall table)
_RESOLVE_IN_ROOT = 0x10


def kernel_resolve(root: str, path: str, follow: bool = True) -> str | int:
    """Where the kernel resolves path chrooted at root: the host path, or the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW), 0, _RESOLVE_IN_ROOT)
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = libc.syscall(_SYS_OPENAT2, dfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
        if fd < 0:
            return ctypes.get_errno()
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def _has_openat2() -> bool:
    if platform.system() != "Linux":
        return False
    return kernel_resolve("/", "/") == "/"


needs_openat2 = pytest.mark.skipif(not _has_openat2(), reason="openat2(RESOLVE_IN_ROOT) unavailable")


@pytest.fixture
def img(tmp_path):
    """(root, outside): an image root and a host directory next to it holding a canary."""
    root = tmp_path / "img"
    outside = tmp_path / "outside"
    for d in (root / "etc", root / "lib/modules" / RELEASE, outside / "modprobe.d", outside / "modules-load.d"):
        d.mkdir(parents=True)
    for name in ("canary.conf", "modprobe.d/evil.conf", "modules-load.d/evil.conf"):
        (outside / name).write_text(CANARY)
    return root, outside


def snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every entry below directory with its content (or link target)."""
    result: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(directory))
            if p.is_symlink():
                result[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                result[rel] = p.read_bytes()
            else:
                result[rel] = "dir"
    return result


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the run) if something blocks on a FIFO."""
    def alarm(_signum, _frame):
        raise TimeoutError("blocked")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# --- resolution ---------------------------------------------------------------------------

LINK_CASES = [
    # (link at, target, path to resolve)
    ("etc", "{outside}", "etc/modprobe.d"),
    ("etc", "../../../../../../..{outside}", "etc/modprobe.d"),
    ("etc/modprobe.d", "{outside}/modprobe.d", "etc/modprobe.d/evil.conf"),
    ("etc/modprobe.d", "../../outside/modprobe.d", "etc/modprobe.d/evil.conf"),
    ("etc/modprobe.d", "/etc/../../../outside/modprobe.d", "etc/modprobe.d/evil.conf"),
    ("etc/modules-load.d", "{outside}/modules-load.d", "etc/modules-load.d/evil.conf"),
    ("lib/modules", "{outside}", "lib/modules/" + RELEASE),
    ("lib/modules/" + RELEASE, "../../../../outside", "lib/modules/" + RELEASE + "/modules.dep"),
    ("etc/x.conf", "{outside}/canary.conf", "etc/x.conf"),
    ("etc/x.conf", "../../../outside/canary.conf", "etc/x.conf"),
    ("etc/loop", "loop", "etc/loop/x"),
    ("etc/a", "b", "etc/a"),
]


@needs_openat2
@pytest.mark.parametrize("follow", [True, False])
@pytest.mark.parametrize("at,target,path", LINK_CASES)
def test_resolution_matches_kernel_chroot(img, at, target, path, follow):
    root, outside = img
    link = root / at
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    link.symlink_to(target.format(outside=outside))
    (root / "etc/b").symlink_to("a")  # a -> b -> a for the last case
    expected = kernel_resolve(str(root), path, follow)
    if expected == errno.ELOOP:
        with pytest.raises(PathError, match="too many levels"):
            resolve_in(str(root), path, follow)
        return
    ours = resolve_in(str(root), path, follow)
    assert ours == str(root) or ours.startswith(str(root) + "/")
    if isinstance(expected, str):
        assert ours == expected
    else:  # the kernel says ENOENT: ours names a path inside root that does not exist
        assert expected == errno.ENOENT and not os.path.lexists(ours)


def test_kmod_paths_confine_every_directory(img):
    root, outside = img
    (root / "etc").rmdir()
    (root / "etc").symlink_to(outside)
    os.symlink(str(outside), root / "lib/modules" / RELEASE / "..x")  # noise
    (root / "run").symlink_to("../../..")
    (root / "proc").symlink_to(str(outside))
    (root / "boot").symlink_to("/../..")
    paths = KmodPaths(str(root), RELEASE)
    every = [paths.moddir, paths.module_index("modules.dep"), *paths.modprobe_dirs, *paths.depmod_dirs,
             *paths.modules_load_dirs, paths.proc("modules"), paths.sys("module"), paths.under("boot", "x"),
             paths.under("/etc/modprobe.d/x.conf"), paths.resolve("/etc/../../etc")]
    for p in every:
        assert p.startswith(str(root) + "/"), p
        assert not p.startswith(str(outside))


def test_symlink_loop_is_an_error(img):
    root, _outside = img
    (root / "etc/modprobe.d").symlink_to("modprobe.d")
    with pytest.raises(PathError, match="symbolic links"):
        KmodPaths(str(root), RELEASE).modprobe_dirs  # noqa: B018


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(links=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d/e", "a/f"]),
                                st.sampled_from(["/", "..", "../..", "/a", "a", "b/../c", "../../../outside",
                                                 "/d", "e", "./b", "/b/..", "{outside}", "d/e/../../a"])),
                      max_size=6),
       query=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "..", ".", "outside"]), max_size=6),
       follow=st.booleans())
@example(links=[("a", "/")], query=["a", "."], follow=False)  # "a/." follows a (found by this test)
def test_fuzz_symlink_farm_stays_in_root(tmp_path_factory, links, query, follow):
    base = tmp_path_factory.mktemp("farm")
    root, outside = base / "img", base / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    for at, target in links:
        link = root / at
        if os.path.lexists(link) or not link.parent.is_dir() or link.parent.is_symlink():
            continue
        link.symlink_to(target.format(outside=outside))
    path = "/".join(query)
    expected = kernel_resolve(str(root), path, follow) if _has_openat2() else None
    try:
        ours = resolve_in(str(root), path, follow)
    except PathError:
        # A loop for the kernel too, or a path the kernel does not find at all (ours
        # walks on past a missing component's '..', and may meet a loop there).
        assert expected in (None, errno.ELOOP, errno.ENOENT, errno.ENOTDIR)
        return
    assert ours == str(root) or ours.startswith(str(root) + "/")
    if isinstance(expected, str):
        assert ours == expected
    elif expected is not None:
        # ENOENT/ENOTDIR: a component is missing (or a file); ours is still inside root
        assert expected in (errno.ENOENT, errno.ENOTDIR)
    # Whatever exists along ours is no symlink (but a last one kept by follow=False)
    probe = str(root)
    comps = ours[len(str(root)):].split("/")[1:]
    for i, comp in enumerate(comps):
        probe = os.path.join(probe, comp)
        if not os.path.lexists(probe):
            break
        if i < len(comps) - 1 or follow:
            assert not os.path.islink(probe), probe


# --- reads and writes through a hostile image --------------------------------------------

def test_write_into_symlinked_modprobe_d_stays_in_root(img):
    root, outside = img
    (root / "etc/modprobe.d").symlink_to(f"{outside}/modprobe.d")
    before = snapshot(outside)
    paths = KmodPaths(str(root), RELEASE)
    target = paths.under("/etc/modprobe.d/new.conf", follow=False)
    assert atomic.write_if_changed(target, b"blacklist dummy\n")
    assert snapshot(outside) == before
    assert (root / str(outside).lstrip("/") / "modprobe.d/new.conf").read_bytes() == b"blacklist dummy\n"


def test_write_after_swap_to_symlink_never_leaves_root(img):
    """A path resolved before the image swaps a directory for a link out (TOCTOU)."""
    root, outside = img
    (root / "etc/modprobe.d").mkdir()
    paths = KmodPaths(str(root), RELEASE)
    target = paths.under("/etc/modprobe.d/new.conf", follow=False)
    (root / "etc/modprobe.d").rmdir()
    (root / "etc/modprobe.d").symlink_to(f"{outside}/modprobe.d")
    before = snapshot(outside)
    try:
        atomic.write_if_changed(target, b"blacklist dummy\n")
    except PathError:
        pass
    assert atomic.remove_if_exists(target) in (True, False)
    assert snapshot(outside) == before


def test_write_refuses_symlink_as_the_file(img):
    root, outside = img
    (root / "etc/modprobe.d").mkdir()
    (root / "etc/modprobe.d/x.conf").symlink_to(f"{outside}/canary.conf")
    paths = KmodPaths(str(root), RELEASE)
    target = paths.under("etc/modprobe.d/x.conf", follow=False)
    with pytest.raises(PathError, match="symbolic link"):
        atomic.write_if_changed(target, b"x\n")
    assert (outside / "canary.conf").read_text() == CANARY
    assert os.path.islink(target)


def test_file_symlink_reads_the_image_not_the_host(img):
    root, outside = img
    (root / "etc/modprobe.d").mkdir()
    (root / "etc/modprobe.d/x.conf").symlink_to(f"{outside}/canary.conf")
    (root / "etc/modprobe.d/y.conf").symlink_to("../../../outside/canary.conf")
    paths = KmodPaths(str(root), RELEASE)
    assert atomic.read_bytes(paths.under("etc/modprobe.d/x.conf", follow=False)) is None
    config = ModprobeConfig.load(paths, cmdline="")
    assert not config.blacklist and not config.aliases
    # The image's own file of that name is what a chroot reads.
    own = root / str(outside).lstrip("/") / "canary.conf"
    own.parent.mkdir(parents=True)
    own.write_text("blacklist image_own\n")
    assert [b.modname for b in ModprobeConfig.load(paths, cmdline="").blacklist] == ["image_own"]


def test_blacklist_plan_reads_nothing_outside(img):
    root, outside = img
    (root / "etc/modprobe.d").symlink_to(f"{outside}/modprobe.d")
    plan = plan_blacklist(KmodPaths(str(root), RELEASE), ["dummy"], "present", "blacklist",
                          "/etc/modprobe.d/evil.conf")
    assert plan.before is None and "canary" not in plan.after
    assert plan.path.startswith(str(root) + "/")


def test_facts_modules_load_read_inside_root(img):
    root, outside = img
    (root / "etc/modules-load.d").symlink_to(f"{outside}/modules-load.d")
    (root / "etc/modules").symlink_to(f"{outside}/canary.conf")
    (root / "run/modules-load.d").mkdir(parents=True)
    (root / "run/modules-load.d/z.conf").symlink_to("../../../../../outside/canary.conf")
    facts = FactsGatherer(KmodPaths(str(root), RELEASE)).modules_load()
    assert facts == []


def test_module_file_symlink_read_inside_root(img):
    root, outside = img
    ko = root / "lib/modules" / RELEASE / "evil.ko"
    ko.symlink_to(f"{outside}/canary.conf")
    paths = KmodPaths(str(root), RELEASE)
    with pytest.raises(ModuleFileError, match="No such file"):
        read_module_bytes(os.path.join(paths.moddir, "evil.ko"))


def test_dangling_modprobe_d_is_created_inside_root(img):
    root, outside = img
    (root / "etc/modprobe.d").symlink_to("/usr/lib/modprobe.d")
    paths = KmodPaths(str(root), RELEASE)
    assert atomic.write_if_changed(paths.under("etc/modprobe.d/a.conf", follow=False), b"blacklist a\n")
    assert (root / "usr/lib/modprobe.d/a.conf").read_bytes() == b"blacklist a\n"
    assert (root / "etc/modprobe.d").is_symlink()


def test_dangling_symlink_on_an_unconfined_path_is_followed(tmp_path):
    """Outside any root (the live system's behaviour): the link's target is created."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/modprobe.d").symlink_to(tmp_path / "elsewhere/modprobe.d")
    assert atomic.write_if_changed(str(tmp_path / "etc/modprobe.d/a.conf"), b"x\n")
    assert (tmp_path / "elsewhere/modprobe.d/a.conf").read_bytes() == b"x\n"


# --- item 7: clear errors, never a traceback or a hang ---------------------------------------

@pytest.mark.parametrize("release", ["../../../tmp/x", "6.1/../..", "..", ".", "6.1.0\0x", "6.1.0\nx",
                                     "6.1.0\x7f", "6.1.0-\udcff\ud800", "latest", ""])
def test_bad_kernel_release(release):
    with pytest.raises(PathError, match="kernel_release"):
        check_kernel_release(release)
    if release:
        with pytest.raises(PathError, match="kernel_release"):
            KmodPaths("/", release)


@pytest.mark.parametrize("release", ["6.1.0-56-amd64", "6.12.117+deb12-amd64", "5.10.0-rc1_x~y"])
def test_good_kernel_release(release):
    assert KmodPaths("/", release).kernel_release == release


@pytest.mark.parametrize("root", ["/tmp/a\0b", "/tmp/\ud800"])
def test_bad_root(root):
    with pytest.raises(PathError, match="root"):
        KmodPaths(root, RELEASE)


def test_missing_root_is_named(tmp_path):
    for root in (tmp_path / "nope", tmp_path / "file"):
        if root.name == "file":
            root.write_text("")
        with pytest.raises(PathError, match=f"root {root}"):
            KmodPaths.from_params({"root": str(root), "kernel_release": RELEASE})
    assert not (tmp_path / "nope").exists()


def test_bad_path_option(img):
    root, _outside = img
    paths = KmodPaths(str(root), RELEASE)
    for path in ("/etc/modprobe.d/a\0.conf", "/etc/modprobe.d/\ud800.conf"):
        with pytest.raises(PathError, match="path"):
            plan_blacklist(paths, ["dummy"], "present", "blacklist", path)


@pytest.mark.parametrize("kind", ["dir", "loop", "fifo"])
def test_conf_file_that_is_not_a_file(img, kind, no_hang):
    root, _outside = img
    conf = root / "etc/modprobe.d/kmod.conf"
    conf.parent.mkdir()
    if kind == "dir":
        conf.mkdir()
    elif kind == "loop":
        conf.symlink_to("kmod.conf")
    else:
        os.mkfifo(conf)
    paths = KmodPaths(str(root), RELEASE)
    with pytest.raises(KmodError, match="kmod.conf"):
        plan_blacklist(paths, ["dummy"], "present", "blacklist", "/etc/modprobe.d/kmod.conf")
    if kind == "fifo":
        with pytest.raises(NotRegularFileError, match="FIFO"):
            atomic.read_bytes(str(conf))


def test_fifo_and_device_in_config_dirs_are_skipped(img, no_hang):
    root, _outside = img
    for d in ("etc/modprobe.d", "etc/modules-load.d"):
        (root / d).mkdir()
        os.mkfifo(root / d / "fifo.conf")
        (root / d / "ok.conf").write_text("blacklist fine\n" if "modprobe" in d else "fine\n")
        (root / d / "zero.conf").symlink_to("/dev/zero")  # /dev/zero inside the image: missing
    (root / "dev").mkdir()
    (root / "dev/zero").symlink_to("/proc/self/fd/0")  # and what it leads to is missing too
    paths = KmodPaths(str(root), RELEASE)
    config = ModprobeConfig.load(paths, cmdline="")
    assert [b.modname for b in config.blacklist] == ["fine"]
    assert any("fifo.conf" in w and "FIFO" in w for w in config.warnings)
    gatherer = FactsGatherer(paths)
    assert [e["module"] for e in gatherer.modules_load()] == ["fine"]
    assert any("fifo.conf" in w for w in gatherer.warnings)


@pytest.mark.parametrize("kind", ["dir", "loop", "fifo"])
def test_proc_and_sys_files_that_are_not_files(img, kind, no_hang):
    root, _outside = img
    for rel in ("proc/modules", "proc/sys/kernel/tainted", "sys/module/dummy/refcnt"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            p.mkdir()
        elif kind == "loop":
            p.symlink_to(p.name)
        else:
            os.mkfifo(p)
    (root / "sys/module/dummy/parameters").mkdir()
    os.mkfifo(root / "sys/module/dummy/parameters/fifo")
    (root / "sys/module/dummy/parameters/ok").write_text("1\n")
    kstate = KernelState(KmodPaths(str(root), RELEASE))
    calls = ((kstate.loaded, "modules"), (kstate.tainted, "tainted"), (lambda: kstate.refcnt("dummy"), "refcnt"))
    for call, name in calls:
        # KernelStateError (or, for a loop met while resolving, PathError) naming the file
        with pytest.raises((KernelStateError, PathError), match=name):
            call()
    assert kstate.parameters("dummy") == {"ok": "1"}


def test_unreadable_conf_file(img, monkeypatch):
    root, _outside = img
    conf = root / "etc/modprobe.d/kmod.conf"
    conf.parent.mkdir()
    conf.write_text("blacklist x\n")
    real_open = os.open

    def eacces(path, flags, *args, **kwargs):
        if str(path).endswith("kmod.conf"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", eacces)
    with pytest.raises(PathError, match="Cannot read .*kmod.conf: Permission denied"):
        plan_blacklist(KmodPaths(str(root), RELEASE), ["dummy"], "present", "blacklist",
                       "/etc/modprobe.d/kmod.conf")


def test_regular_file_check_uses_fstat(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert atomic.read_file(str(p), limit=2) == b"ab"
    assert stat.S_ISREG(os.stat(p).st_mode)


# --- depmod's resolution cache (paths.resolution_cache) ------------------------------------

def read_as_the_kernel(root: str, path: str) -> bytes | None:
    """What a process chrooted at root reads at path (openat2 RESOLVE_IN_ROOT), None if nothing."""
    host = kernel_resolve(root, path)
    if isinstance(host, int) or not os.path.isfile(host):
        return None
    return Path(host).read_bytes()


def test_resolution_cache_reads_what_the_kernel_reads(img):
    root, outside = img
    moddir = root / "lib/modules" / RELEASE
    (moddir / "kernel/net").mkdir(parents=True)
    (moddir / "kernel/net/a.ko").write_bytes(b"image a")
    (moddir / "updates").symlink_to(f"/lib/modules/{RELEASE}/kernel")  # absolute: inside the image
    (moddir / "extra").symlink_to("../../../../../outside")  # climbs: clamped at root
    (moddir / "escape").symlink_to(str(outside))  # a host path: ROOT/host path in a chroot
    (moddir / "kernel/net/link.ko").symlink_to(f"/lib/modules/{RELEASE}/kernel/net/a.ko")
    (moddir / "kernel/net/out.ko").symlink_to(f"{outside}/canary.conf")
    KmodPaths(str(root), RELEASE)
    rels = ["kernel/net/a.ko", "updates/net/a.ko", "updates/net/link.ko", "kernel/net/link.ko",
            "kernel/net/out.ko", "extra/canary.conf", "escape/canary.conf", "updates/../kernel/net/a.ko",
            "kernel/net/missing.ko", "updates/net/out.ko"]
    with paths_mod.resolution_cache():
        for _round in range(2):  # the second round from the cache
            for rel in rels:
                expected = read_as_the_kernel(str(root), f"/lib/modules/{RELEASE}/{rel}")
                assert atomic.read_file(str(moddir / rel)) == expected, rel
    assert read_as_the_kernel(str(root), f"/lib/modules/{RELEASE}/updates/net/link.ko") == b"image a"


def test_resolution_cache_directory_swapped_after_caching(img):
    """A directory resolved into the cache, then swapped for a link out of the image."""
    root, outside = img
    moddir = root / "lib/modules" / RELEASE
    (moddir / "kernel").mkdir()
    (moddir / "kernel/canary.conf").write_text("image\n")
    KmodPaths(str(root), RELEASE)
    with paths_mod.resolution_cache():
        assert atomic.read_file(str(moddir / "kernel/canary.conf")) == b"image\n"
        shutil.rmtree(moddir / "kernel")
        (moddir / "kernel").symlink_to(str(outside))
        assert atomic.read_file(str(moddir / "kernel/canary.conf")) is None  # ROOT/outside has none
        assert read_as_the_kernel(str(root), f"/lib/modules/{RELEASE}/kernel/canary.conf") is None
