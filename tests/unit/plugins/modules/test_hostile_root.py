# SPDX-License-Identifier: GPL-3.0-or-later
"""Every module with a hostile ``root``: symlinks out of the image, loops, '..' chains,
links to host files; bad ``root``/``kernel_release``/``path`` values; FIFOs and
directories where files are expected.

Each case checks that nothing outside the root is written (the host directory next to
it is byte for byte the same, nothing created) and nothing there is read (its canary
never shows up in a result or diff), and that a failure is a message, not a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.modules import kmod_blacklist, kmod_depmod, kmod_facts, kmod_load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils" / "_kmod"))
from depmod_trees import small_tree  # noqa: E402
from fake_kernel import FakeKernel  # noqa: E402

SECRET = "canary_host_secret"
CANARY = f"alias {SECRET} dummy\nblacklist {SECRET}\noptions dummy {SECRET}=1\ninstall {SECRET} /bin/true\n"
CONF = "/etc/modprobe.d/kernel-kmod-blacklist.conf"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A tiny image (dummy.ko and the real depmod's indexes) to copy for each test."""
    tree = small_tree(tmp_path_factory.mktemp("tpl") / "img", ("dummy",))
    subprocess.run(["depmod", "-b", str(tree.root), "-C", "/dev/null", tree.release], check=True)
    (tree.root / "etc").mkdir()
    return tree


@pytest.fixture
def host(template, tmp_path, monkeypatch, run_module):
    """host.root (the image), host.outside (a host directory full of canaries), host.run."""
    root, outside = tmp_path / "img", tmp_path / "outside"
    subprocess.run(["cp", "-al", str(template.root), str(root)], check=True)
    for rel in ("canary.conf", "modprobe.d/evil.conf", "modprobe.d/kernel-kmod-blacklist.conf",
                "modprobe.d/dummy.conf", "modules-load.d/dummy.conf", "modules-load.d/evil.conf",
                "depmod.d/evil.conf", "proc/cmdline"):
        (outside / rel).parent.mkdir(parents=True, exist_ok=True)
        (outside / rel).write_text(CANARY if "cmdline" not in rel else f"modules-load={SECRET} {SECRET}.x=1\n")
    (outside / "proc/modules").write_text(f"{SECRET} 16384 0 - Live 0x0000000000000000\n")
    (outside / "sys/module" / SECRET / "parameters").mkdir(parents=True)
    (outside / "sys/module" / SECRET / "parameters/p").write_text(SECRET + "\n")
    moddir = outside / "lib/modules" / template.release
    shutil.copytree(template.moddir, moddir)
    (moddir / "modules.dep").write_text(f"kernel/{SECRET}.ko:\n")

    kernel = None

    def run(module, check=False, **args):
        nonlocal kernel
        if module in (kmod_load, kmod_blacklist):
            kernel = kernel or FakeKernel(root, template.release)
            monkeypatch.setattr(module, "LinuxSyscalls", lambda: kernel)
        args.setdefault("root", str(root))
        args.setdefault("kernel_release", template.release)
        if module is kmod_depmod:
            args.setdefault("cache", False)
        return run_module(module, check=check, diff=True, **args)

    return types.SimpleNamespace(root=root, outside=outside, run=run, release=template.release)


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail the test, instead of hanging the run, if something blocks (on a FIFO)."""
    def alarm(_signum, _frame):
        raise TimeoutError("blocked reading a FIFO")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def snapshot(directory: Path) -> dict[str, object]:
    result: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(directory))
            st = p.lstat()
            result[rel] = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
            result[rel + "@mtime"] = st.st_mtime_ns
    return result


def link(host, at: str, target: str) -> None:
    path = host.root / at
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    path.symlink_to(target.format(outside=host.outside))


def assert_confined(host, result, before) -> None:
    assert SECRET not in json.dumps(result), "a host file was read"
    assert snapshot(host.outside) == before, "something outside root changed"
    assert not (host.root.parent / "etc").exists() and not (host.root.parent / "lib").exists()


# Links that lead out of the image, as the issue lists them; "{outside}" is the host dir.
ESCAPES = {
    "etc-abs": [("etc", "{outside}")],
    "etc-rel": [("etc", "../outside")],
    "etc-dotdot": [("etc", "../../../../../../../../../..{outside}")],
    "modprobe.d-abs": [("etc/modprobe.d", "{outside}/modprobe.d")],
    "modprobe.d-rel": [("etc/modprobe.d", "../../outside/modprobe.d")],
    "modprobe.d-dotdot": [("etc/modprobe.d", "/etc/../../../../outside/modprobe.d")],
    "modules-load.d-abs": [("etc/modules-load.d", "{outside}/modules-load.d")],
    "modules-load.d-rel": [("etc/modules-load.d", "../../outside/modules-load.d")],
    "files-abs": [("etc/modprobe.d/evil.conf", "{outside}/canary.conf"),
                  ("etc/modules-load.d/evil.conf", "{outside}/canary.conf")],
    "files-rel": [("etc/modprobe.d/evil.conf", "../../../outside/canary.conf"),
                  ("etc/modules-load.d/evil.conf", "../../../../../../outside/canary.conf")],
    "lib-modules-abs": [("lib/modules", "{outside}/lib/modules")],
    "release-rel": [("lib/modules/{release}", "../../../outside/lib/modules/{release}")],
}
LOOPS = {
    "self-loop": [("etc/modprobe.d", "modprobe.d")],
    "pair-loop": [("etc/modprobe.d", "/etc/x"), ("etc/x", "../etc/modprobe.d")],
    "etc-loop": [("etc", "/etc")],
}


def apply_links(host, links) -> None:
    (host.root / "etc/modprobe.d").mkdir(parents=True, exist_ok=True)
    (host.root / "etc/modules-load.d").mkdir(parents=True, exist_ok=True)
    for at, target in links:
        link(host, at.format(release=host.release), target.replace("{release}", host.release))


@pytest.mark.parametrize("check", [True, False])
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_blacklist_escapes(host, case, check):
    apply_links(host, ESCAPES[case])
    before = snapshot(host.outside)
    res = host.run(kmod_blacklist, check=check, name=["dummy"])
    assert_confined(host, res, before)
    if case.startswith("lib") or case.startswith("release"):
        return  # no module tree inside the image: a clean failure or an unverified result
    assert not res.get("failed"), res.get("msg")
    assert res["path"].startswith(str(host.root) + "/")
    if not check:
        assert "blacklist dummy" in Path(res["path"]).read_text()


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_blacklist_loops(host, case):
    apply_links(host, LOOPS[case])
    before = snapshot(host.outside)
    res = host.run(kmod_blacklist, name=["dummy"])
    assert res["failed"] and "symbolic links" in res["msg"]
    assert_confined(host, res, before)


@pytest.mark.parametrize("check", [True, False])
@pytest.mark.parametrize("target", ["{outside}/canary.conf", "../../../outside/canary.conf", "/etc/shadow"])
def test_blacklist_file_is_a_symlink(host, target, check):
    apply_links(host, [(CONF.lstrip("/"), target)])
    before = snapshot(host.outside)
    res = host.run(kmod_blacklist, check=check, name=["dummy"])
    assert res["failed"] and "symbolic link" in res["msg"] and "kernel-kmod-blacklist.conf" in res["msg"]
    assert_confined(host, res, before)
    assert (host.root / CONF.lstrip("/")).is_symlink()


@pytest.mark.parametrize("check", [True, False])
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_load_persistent_escapes(host, case, check):
    apply_links(host, ESCAPES[case])
    before = snapshot(host.outside)
    res = host.run(kmod_load, check=check, name="dummy", params="numdummies=2", persistent="present")
    assert_confined(host, res, before)
    if case.startswith("lib") or case.startswith("release"):
        assert res["failed"] and "not found" in res["msg"].lower()
        return
    assert not res.get("failed"), res.get("msg")
    for diff in res["diff"]:
        for key in ("before_header", "after_header"):
            if diff.get(key, "").startswith("/"):
                assert diff[key].startswith(str(host.root) + "/")


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_load_persistent_loops(host, case):
    apply_links(host, LOOPS[case])
    before = snapshot(host.outside)
    res = host.run(kmod_load, name="dummy", persistent="present")
    assert res["failed"] and "symbolic links" in res["msg"]
    assert_confined(host, res, before)


def test_load_persistent_file_symlinks(host):
    apply_links(host, [("etc/modprobe.d/dummy.conf", "{outside}/modprobe.d/dummy.conf"),
                       ("etc/modules-load.d/dummy.conf", "../../../outside/modules-load.d/dummy.conf")])
    before = snapshot(host.outside)
    res = host.run(kmod_load, name="dummy", params="numdummies=2", persistent="present")
    assert res["failed"] and "symbolic link" in res["msg"]
    assert_confined(host, res, before)


@pytest.mark.parametrize("case", ["lib-modules-abs", "release-rel", "etc-abs", "etc-rel"])
def test_depmod_escapes(host, case):
    apply_links(host, ESCAPES[case])
    link(host, "etc/depmod.d", "{outside}/depmod.d")
    before = snapshot(host.outside)
    res = host.run(kmod_depmod)
    assert_confined(host, res, before)
    if case.startswith("etc"):
        assert not res.get("failed"), res.get("msg")


def test_depmod_module_file_symlink_to_host(host):
    moddir = host.root / "lib/modules" / host.release
    (moddir / "kernel/evil.ko").symlink_to(f"{host.outside}/lib/modules/{host.release}/kernel/drivers/net/dummy.ko")
    before = snapshot(host.outside)
    res = host.run(kmod_depmod)
    assert_confined(host, res, before)
    # Read inside the image, the link leads nowhere: evil.ko gets none of dummy.ko's
    # aliases (depmod's directory walk may still list the name itself).
    assert "evil" not in (moddir / "modules.alias").read_text()
    assert "rtnl-link-dummy" in (moddir / "modules.alias").read_text()


@pytest.mark.parametrize("case", sorted(ESCAPES) + ["proc-sys"])
def test_facts_escapes(host, case):
    links = [("proc", "{outside}/proc"), ("sys", "../../../../outside/sys")] if case == "proc-sys" \
        else ESCAPES[case]
    apply_links(host, links)
    (host.root / "etc/modules").symlink_to(f"{host.outside}/canary.conf")
    before = snapshot(host.outside)
    res = host.run(kmod_facts)
    assert_confined(host, res, before)
    assert not res.get("failed"), res.get("msg")
    assert res["ansible_facts"]["kmod"]["moddir"].startswith(str(host.root) + "/")


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_facts_loops(host, case):
    apply_links(host, LOOPS[case])
    res = host.run(kmod_facts)
    assert res["failed"] and "symbolic links" in res["msg"]


# --- bad option values (item 2 and 7) ------------------------------------------------------

MODULE_ARGS = {
    kmod_blacklist: {"name": ["dummy"]},
    kmod_load: {"name": "dummy", "persistent": "present"},
    kmod_facts: {},
    kmod_depmod: {},
}


@pytest.mark.parametrize("module", list(MODULE_ARGS), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("release", ["../../../tmp/x", "6.1/../../etc", "6.1.0\0", "6.1.0\n", "..", "6.1.0\x1b[2J"])
def test_bad_kernel_release(host, module, release):
    before = snapshot(host.outside)
    res = host.run(module, kernel_release=release, **MODULE_ARGS[module])
    assert res["failed"] and "kernel_release" in res["msg"]
    assert_confined(host, res, before)
    assert not (host.root.parent / "tmp").exists()


@pytest.mark.parametrize("module", list(MODULE_ARGS), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("suffix", ["\0x", "/a\0"])
def test_bad_root_value(host, module, suffix):
    res = host.run(module, root=str(host.root) + suffix, **MODULE_ARGS[module])
    assert res["failed"] and "root" in res["msg"]


@pytest.mark.parametrize("module", list(MODULE_ARGS), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_missing_root_is_not_created(host, module):
    missing = host.root.parent / "no-such-root"
    res = host.run(module, root=str(missing), **MODULE_ARGS[module])
    assert res["failed"] and f"root {missing}" in res["msg"]
    assert not missing.exists()


# (Lone surrogates never reach a module: AnsibleModule itself fails on them while logging
# its arguments; the engine's checks for them are tested in test_hostile_paths.py.)
@pytest.mark.parametrize("path", ["/etc/modprobe.d/a\0.conf", "/etc/modprobe.d/\0"])
def test_blacklist_bad_path(host, path):
    res = host.run(kmod_blacklist, name=["dummy"], path=path)
    assert res["failed"] and "path" in res["msg"]


@pytest.mark.parametrize("option", ["system_map", "symvers", "cache_dir"])
def test_depmod_bad_path_options(host, option):
    res = host.run(kmod_depmod, **{option: "/boot/x\0y"})
    assert res["failed"] and option in res["msg"]


def test_blacklist_dangling_modprobe_d_created_inside_root(host):
    link(host, "etc/modprobe.d", "/usr/lib/modprobe.d")
    res = host.run(kmod_blacklist, name=["dummy"])
    assert not res.get("failed"), res.get("msg")
    assert res["path"] == str(host.root / "usr/lib/modprobe.d/kernel-kmod-blacklist.conf")
    assert "blacklist dummy" in Path(res["path"]).read_text()
    assert (host.root / "etc/modprobe.d").is_symlink()


@pytest.mark.parametrize("kind", ["dir", "fifo", "loop"])
def test_load_persistent_conf_not_a_file(host, kind):
    conf = host.root / "etc/modprobe.d/dummy.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    {"dir": conf.mkdir, "fifo": lambda: os.mkfifo(conf), "loop": lambda: conf.symlink_to("dummy.conf")}[kind]()
    with no_hang():  # a FIFO must never block
        res = host.run(kmod_load, name="dummy", params="numdummies=2", persistent="present")
    assert res["failed"] and "dummy.conf" in res["msg"]


def test_blacklist_fifo_in_modprobe_d_is_skipped(host):
    (host.root / "etc/modprobe.d").mkdir(parents=True, exist_ok=True)
    os.mkfifo(host.root / "etc/modprobe.d/fifo.conf")
    with no_hang():
        res = host.run(kmod_blacklist, name=["dummy"])
    assert not res.get("failed"), res.get("msg")
    assert "blacklist dummy" in (host.root / CONF.lstrip("/")).read_text()


def test_facts_fifo_in_modules_load_d_warns(host):
    (host.root / "etc/modules-load.d").mkdir(parents=True, exist_ok=True)
    os.mkfifo(host.root / "etc/modules-load.d/fifo.conf")
    (host.root / "etc/modules-load.d/ok.conf").write_text("dummy\n")
    with no_hang():
        res = host.run(kmod_facts, gather_subset=["boot"])
    assert not res.get("failed"), res.get("msg")
    assert [e["module"] for e in res["ansible_facts"]["kmod"]["modules_load"]] == ["dummy"]
    assert "fifo.conf" in json.dumps(res.get("warnings")), res


def test_load_module_file_symlink_to_host(host):
    """dummy.ko in the image links to a host file: the kernel never gets the host's bytes."""
    ko = host.root / "lib/modules" / host.release / "kernel/drivers/net/dummy.ko"
    ko.unlink()
    ko.symlink_to(f"{host.outside}/lib/modules/{host.release}/kernel/drivers/net/dummy.ko")
    before = snapshot(host.outside)
    res = host.run(kmod_load, name="dummy")
    assert res["failed"] and "dummy.ko" in res["msg"] and "No such file" in res["msg"]
    assert_confined(host, res, before)
