# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_blacklist on scratch copies of real kernel trees, checked against kmod's modprobe."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import atomic
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config_edit import NEW_FILE_HEADER
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.lock import LOCK_NAME
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.resolver import ModuleDB
from ansible_collections.kernel.kmod.plugins.modules import kmod_blacklist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils" / "_kmod"))
from fake_kernel import FakeKernel  # noqa: E402

CONF = "etc/modprobe.d/kernel-kmod-blacklist.conf"


@pytest.fixture
def target(scratch_kernel, monkeypatch, run_module):
    """run(**args) runs main() as Ansible would on a scratch 6.1 tree with a fake kernel."""
    tree = scratch_kernel("6.1")
    (tree.root / "etc/modprobe.d").mkdir(parents=True)
    kernel = FakeKernel(tree.root, tree.release)
    monkeypatch.setattr(kmod_blacklist, "LinuxSyscalls", lambda: kernel)

    def run(**args):
        return run_module(kmod_blacklist, root=str(tree.root), kernel_release=tree.release, **args)

    run.tree, run.kernel, run.conf = tree, kernel, tree.root / CONF
    return run


def stamp(path: Path) -> tuple:
    """Checksum, mtime and inode: an idempotent run keeps all three."""
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_ino


def modprobe(tree, name: str) -> list[str]:
    """The real modprobe's --show-depends for name with the tree's own /etc/modprobe.d."""
    proc = subprocess.run(["modprobe", "-d", str(tree.root), "-S", tree.release,
                           "-C", str(tree.root / "etc/modprobe.d"), "--show-depends", name],
                          capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


def by_name(result) -> dict:
    return {m["name"]: m for m in result["modules"]}


def test_disable_check_apply_idempotent_remove(target):
    args = {"name": ["dummy", "snd-pcsp"], "mode": "disable"}
    res = target(check=True, **args)
    assert res["changed"] and not target.conf.exists()
    assert res["diff"][0]["before"] == "" and "install snd-pcsp /bin/false\n" in res["diff"][0]["after"]
    # Check mode predicts the effect without writing: blocked, while modprobe still loads.
    assert all(m["blocked"] and m["alias_blocked"] for m in res["modules"])
    assert modprobe(target.tree, "dummy")[0].startswith("insmod ")

    res = target(**args)
    assert res["changed"] and res["path"] == str(target.conf)
    assert target.conf.read_text() == res["diff"][0]["after"]
    db = ModuleDB(KmodPaths(str(target.tree.root), target.tree.release))
    for name in ("dummy", "snd-pcsp"):
        entry = by_name(res)[name]
        assert entry["blacklisted"] and entry["disabled"] and entry["blocked"] and entry["alias_blocked"]
        # modprobe inserts the dependencies (snd, soundcore) first, then the command fails.
        assert modprobe(target.tree, name)[-1] == "install /bin/false "
        assert db.show_depends(name) == modprobe(target.tree, name)
    assert modprobe(target.tree, "rtnl-link-dummy") == []
    before = stamp(target.conf)

    for check in (True, False):
        res = target(check=check, **args)
        assert not res["changed"] and res["diff"] == []
        assert stamp(target.conf) == before

    res = target(state="absent", name=["snd_pcsp"])
    assert res["changed"] and res["removed"] == ["snd_pcsp"]
    assert "pcsp" not in target.conf.read_text() and "install dummy /bin/false" in target.conf.read_text()
    entry = by_name(res)["snd_pcsp"]
    assert not (entry["blacklisted"] or entry["disabled"] or entry["blocked"] or entry["alias_blocked"])
    assert modprobe(target.tree, "snd_pcsp")[-1].startswith("insmod ")


def test_blacklist_stops_aliases_only_like_modprobe(target):
    res = target(name=["dummy"])
    entry = by_name(res)["dummy"]
    assert entry["blacklisted"] and not entry["disabled"]
    # modprobe: the alias yields nothing, the name itself still loads.
    assert modprobe(target.tree, "rtnl-link-dummy") == []
    assert modprobe(target.tree, "dummy")[0].startswith("insmod ")
    assert entry["alias_blocked"] and not entry["blocked"]
    # Switching modes in place.
    res = target(name=["dummy"], mode="disable")
    assert by_name(res)["dummy"]["blocked"] and modprobe(target.tree, "dummy") == ["install /bin/false "]
    res = target(name=["dummy"], mode="blacklist")
    assert target.conf.read_text() == NEW_FILE_HEADER + "blacklist dummy\n"
    assert not by_name(res)["dummy"]["blocked"]


def test_disable_beats_softdeps(target):
    """libkmod skips the install command of a module with softdeps (modules.softdep has
    libcrc32c pre: crc32c): the editor's 'softdep NAME pre:' line makes the disable work."""
    assert modprobe(target.tree, "libcrc32c")[-1].startswith("insmod ")
    res = target(name=["libcrc32c"], mode="disable")
    assert modprobe(target.tree, "libcrc32c") == ["install /bin/false "]
    assert by_name(res)["libcrc32c"]["blocked"]
    # A dependency pull fails too: nf_conntrack's probe list runs the install command.
    assert "install /bin/false " in modprobe(target.tree, "nf_conntrack")
    db = ModuleDB(KmodPaths(str(target.tree.root), target.tree.release))
    assert db.show_depends("nf_conntrack") == modprobe(target.tree, "nf_conntrack")


def test_disable_of_name_unknown_to_tree(target):
    res = target(name=["no_such_module"], mode="disable")
    assert modprobe(target.tree, "no_such_module") == ["install /bin/false "]
    assert by_name(res)["no_such_module"]["blocked"]


def test_shadowing_file_reported(target):
    """Entries in other files are reported, never changed; a file that sorts first and
    runs another install command leaves the module loadable, and the result says so."""
    other = target.tree.root / "etc/modprobe.d/a-local.conf"
    other.write_text("# theirs\nblacklist dummy\ninstall dumm* /bin/true\n")
    (target.tree.root / "usr/lib/modprobe.d").mkdir(parents=True)
    vendor = target.tree.root / "usr/lib/modprobe.d/vendor.conf"
    vendor.write_text("blacklist dummy\n")
    before = stamp(other), stamp(vendor)
    res = target(name=["dummy"], mode="disable")
    assert by_name(res)["dummy"]["elsewhere"] == [
        {"file": str(other), "line": 2, "directive": "blacklist dummy"},
        {"file": str(vendor), "line": 1, "directive": "blacklist dummy"},
        {"file": str(other), "line": 3, "directive": "install dumm* /bin/true"},
    ]
    assert (stamp(other), stamp(vendor)) == before
    # /bin/true also keeps it from loading; modprobe prints that command.
    assert modprobe(target.tree, "dummy") == ["install /bin/true "]
    assert by_name(res)["dummy"]["blocked"]


def test_kernel_cmdline_blacklist_reported(target):
    cmdline = target.tree.root / "proc/cmdline"
    cmdline.write_text("root=/dev/vda modprobe.blacklist=floppy,dummy quiet\n")
    res = target(name=["dummy"], check=True)
    assert by_name(res)["dummy"]["elsewhere"] == [
        {"file": str(cmdline), "line": 0, "directive": "blacklist dummy"}]


def test_file_shadowed_by_same_name_warns(target):
    (target.tree.root / "etc/modprobe.d/same.conf").write_text("# empty on purpose\n")
    (target.tree.root / "usr/lib/modprobe.d").mkdir(parents=True)
    res = target(name=["dummy"], mode="disable", path="/usr/lib/modprobe.d/same.conf")
    assert res["changed"] and "has no effect" in json.dumps(res["warnings"])
    assert not by_name(res)["dummy"]["blocked"]


def test_foreign_lines_kept_and_exclusive(target):
    conf = target.tree.root / "etc/modprobe.d/local.conf"
    text = "# local policy\nblacklist floppy\noptions dummy numdummies=2\ninstall pcspkr /bin/true\n"
    conf.write_text(text)
    res = target(name=["dummy"], path="/etc/modprobe.d/local.conf", exclusive=True)
    assert conf.read_text() == "# local policy\noptions dummy numdummies=2\nblacklist dummy\n"
    assert res["removed"] == ["floppy", "pcspkr"]
    assert res["diff"][0]["before"] == text


def test_empty_exclusive_list_clears_entries(target):
    target(name=["dummy", "floppy"])
    res = target(name=[], exclusive=True)
    assert res["changed"] and res["removed"] == ["dummy", "floppy"] and res["modules"] == []
    assert target.conf.read_text() == NEW_FILE_HEADER


def test_unload(target):
    target.kernel.load("dummy")
    res = target(check=True, name=["dummy", "floppy"], unload=True)
    assert res["changed"] and target.kernel.loaded() == ["dummy"] and not target.conf.exists()
    assert by_name(res)["dummy"]["unloaded"] == ["dummy"]
    res = target(name=["dummy", "floppy"], unload=True)
    assert res["changed"] and target.kernel.loaded() == [] and target.conf.exists()
    assert [m["unloaded"] for m in res["modules"]] == [["dummy"], []]
    assert not target(name=["dummy", "floppy"], unload=True)["changed"]


def test_unload_in_use_fails_before_touching(target):
    for line in modprobe(target.tree, "nf_nat"):
        target.kernel.load(os.path.basename(line.split()[1]).split(".")[0].replace("-", "_"))
    res = target(name=["nf_conntrack"], mode="disable", unload=True)
    assert res["failed"] and "nf_conntrack is in use" in res["msg"] and res["holders"] == ["nf_nat"]
    assert not target.conf.exists() and "nf_conntrack" in target.kernel.loaded()


@pytest.mark.parametrize("name", ["", "a b", "a\nb", "../dummy", "snd-*", "dumm?", "[d]ummy"])
def test_bad_name_fails_before_touching(target, name):
    target(name=["dummy"])
    before = stamp(target.conf)
    res = target(name=["floppy", name], mode="disable")
    assert res["failed"] and repr(name) in res["msg"] and "Traceback" not in res["msg"]
    assert stamp(target.conf) == before


@pytest.mark.parametrize("path", ["etc/modprobe.d/x.conf", "/etc/modprobe.d/x", "/etc/modprobe.d/.x.conf",
                                  "/etc/modprobe.d"])
def test_bad_path(target, path):
    res = target(name=["dummy"], path=path)
    assert res["failed"] and path.rstrip("/") in res["msg"]


def test_unreadable_path_and_dotdot(target):
    (target.tree.root / "etc/modprobe.d/file.conf").write_text("")
    res = target(name=["dummy"], path="/etc/modprobe.d/file.conf/x.conf")
    assert res["failed"] and "Cannot read" in res["msg"] and "file.conf/x.conf" in res["msg"]
    res = target(name=["dummy"], path="/../../etc/modprobe.d/up.conf")
    assert res["path"] == str(target.tree.root / "etc/modprobe.d/up.conf")


def test_exclusive_needs_present(target):
    res = target(name=["dummy"], state="absent", exclusive=True)
    assert res["failed"] and "exclusive" in res["msg"]


def test_failed_write_keeps_old_file(target, monkeypatch):
    target(name=["dummy"])
    old = target.conf.read_bytes()

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "rename", no_rename)
    res = target(name=["floppy"])
    assert res["failed"] and str(target.conf) in res["msg"] and "No space left" in res["msg"]
    assert target.conf.read_bytes() == old
    # no temp file left behind (the directory's lock file stays, on purpose)
    assert sorted(os.listdir(target.conf.parent)) == sorted([target.conf.name, LOCK_NAME])


def test_initramfs_stale(target):
    res = target(name=["dummy"])
    assert res["changed"] and not res["initramfs_stale"]
    (target.tree.root / "boot" / f"initrd.img-{target.tree.release}").write_bytes(b"x")
    res = target(name=["floppy"])
    assert res["changed"] and res["initramfs_stale"]
    res = target(name=["floppy"])
    assert not res["changed"] and not res["initramfs_stale"]


def test_non_utf8_bytes_survive(target):
    target.conf.write_bytes(b"# caf\xe9\nblacklist old\n")
    res = target(name=["dummy"])
    assert target.conf.read_bytes() == b"# caf\xe9\nblacklist old\nblacklist dummy\n"
    assert res["diff"][0]["after"].startswith("# caf\ufffd\n")


def test_no_diff_unless_asked(target):
    assert "diff" not in target(diff=False, name=["dummy"])
