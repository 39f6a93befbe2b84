# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_blacklist on scratch copies of real kernel trees, checked against kmod's modprobe."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import atomic
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config_edit import NEW_FILE_HEADER
from ansible_collections.kernel.kmod.plugins.modules import kmod_blacklist

CONF = "/etc/modprobe.d/kernel-kmod-blacklist.conf"


def run_module(capsys, tree, check=False, diff=True, **args):
    """main() as Ansible runs it; returns (failed, result)."""
    args = {"root": str(tree.root), "kernel_release": tree.release, **args,
            "_ansible_check_mode": check, "_ansible_diff": diff}
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        kmod_blacklist.main()
    result = json.loads(capsys.readouterr().out)
    assert bool(exc.value.code) == bool(result.get("failed"))
    return result


def stamp(path):
    """Content checksum and mtime: idempotent runs must keep both."""
    st = os.stat(path)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), st.st_mtime_ns, st.st_ino


def show_depends(tree, name):
    """What the real modprobe would do for name with the tree's own modprobe.d."""
    proc = subprocess.run(["modprobe", "-d", str(tree.root), "-S", tree.release,
                           "-C", str(tree.root / "etc/modprobe.d"), "--show-depends", name],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout.splitlines()


@pytest.fixture
def tree(scratch_kernel):
    t = scratch_kernel("6.1")
    (t.root / "etc/modprobe.d").mkdir(parents=True)
    return t


def test_check_apply_idempotent_remove(capsys, tree):
    conf = tree.root / CONF.lstrip("/")
    args = {"name": ["dummy", "snd-pcsp"], "mode": "disable"}

    res = run_module(capsys, tree, check=True, **args)
    assert res["changed"] and not conf.exists()
    assert res["diff"]["before"] == ""
    assert "install snd-pcsp /bin/false\n" in res["diff"]["after"]

    res = run_module(capsys, tree, **args)
    assert res["changed"] and res["path"] == str(conf)
    assert conf.read_text() == res["diff"]["after"]
    assert [m["disabled"] and m["blacklisted"] for m in res["modules"]] == [True, True]
    before = stamp(conf)

    for check in (True, False):
        res = run_module(capsys, tree, check=check, **args)
        assert not res["changed"]
        assert stamp(conf) == before

    res = run_module(capsys, tree, state="absent", name=["snd_pcsp"])
    assert res["changed"]
    assert "pcsp" not in conf.read_text() and "install dummy /bin/false" in conf.read_text()
    assert res["removed"] == ["snd_pcsp"]
    assert res["modules"] == [{"name": "snd_pcsp", "blacklisted": False, "disabled": False}]


def test_foreign_lines_kept_and_exclusive(capsys, tree):
    conf = tree.root / "etc/modprobe.d/local.conf"
    text = "# local policy\nblacklist floppy\noptions dummy numdummies=2\ninstall pcspkr /bin/true\n"
    conf.write_text(text)
    res = run_module(capsys, tree, name=["dummy"], path="/etc/modprobe.d/local.conf", exclusive=True)
    assert conf.read_text() == "# local policy\noptions dummy numdummies=2\nblacklist dummy\n"
    assert res["removed"] == ["floppy", "pcspkr"]
    assert res["diff"]["before"] == text


def test_empty_exclusive_list_clears_entries(capsys, tree):
    conf = tree.root / CONF.lstrip("/")
    run_module(capsys, tree, name=["dummy", "floppy"])
    res = run_module(capsys, tree, name=[], exclusive=True)
    assert res["changed"] and res["removed"] == ["dummy", "floppy"]
    assert conf.read_text() == NEW_FILE_HEADER


@pytest.mark.parametrize("name", ["", "a b", "a\nb", "../dummy", "snd-*", "dumm?", "[d]ummy"])
def test_bad_name_fails_before_touching(capsys, tree, name):
    conf = tree.root / CONF.lstrip("/")
    run_module(capsys, tree, name=["dummy"])
    before = stamp(conf)
    res = run_module(capsys, tree, name=["floppy", name], mode="disable")
    assert res["failed"] and repr(name) in res["msg"] and "Traceback" not in res["msg"]
    assert stamp(conf) == before


@pytest.mark.parametrize("path", ["etc/modprobe.d/x.conf", "/etc/modprobe.d/x", "/etc/modprobe.d/.x.conf",
                                  "/etc/modprobe.d"])
def test_bad_path(capsys, tree, path):
    res = run_module(capsys, tree, name=["dummy"], path=path)
    assert res["failed"] and path.rstrip("/") in res["msg"]


def test_exclusive_needs_present(capsys, tree):
    res = run_module(capsys, tree, name=["dummy"], state="absent", exclusive=True)
    assert res["failed"] and "exclusive" in res["msg"]


def test_failed_write_keeps_old_file(capsys, tree, monkeypatch):
    conf = tree.root / CONF.lstrip("/")
    run_module(capsys, tree, name=["dummy"])
    old = conf.read_bytes()

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "rename", no_rename)
    res = run_module(capsys, tree, name=["floppy"])
    assert res["failed"] and str(conf) in res["msg"] and "No space left" in res["msg"]
    assert conf.read_bytes() == old
    assert os.listdir(conf.parent) == [conf.name]  # no temp file left behind


def test_initramfs_stale(capsys, tree):
    res = run_module(capsys, tree, name=["dummy"])
    assert res["changed"] and not res["initramfs_stale"]
    (tree.root / "boot" / f"initrd.img-{tree.release}").write_bytes(b"x")
    res = run_module(capsys, tree, name=["floppy"])
    assert res["changed"] and res["initramfs_stale"]
    res = run_module(capsys, tree, name=["floppy"])
    assert not res["changed"] and not res["initramfs_stale"]


def test_non_utf8_bytes_survive(capsys, tree):
    conf = tree.root / CONF.lstrip("/")
    conf.write_bytes(b"# caf\xe9\nblacklist old\n")
    res = run_module(capsys, tree, name=["dummy"])
    assert conf.read_bytes() == b"# caf\xe9\nblacklist old\nblacklist dummy\n"
    assert res["diff"]["after"].startswith("# caf\ufffd\n")


def test_no_diff_unless_asked(capsys, tree):
    assert "diff" not in run_module(capsys, tree, diff=False, name=["dummy"])
