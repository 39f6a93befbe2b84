# SPDX-License-Identifier: GPL-3.0-or-later
"""KmodGeneration detection: each signal on its own, their precedence, and the index layout
on .bin files written by kmod 30's and kmod 34's real depmod."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KmodError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import (
    NEWEST, KmodCompatError, KmodGeneration, detect_generation, index_is_preorder, parse_compat)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod import generation as generation_mod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.index_writer import IndexBuilder
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths

RELEASE = "6.12.0-test"


def dpkg_status(root: Path, *stanzas: str) -> None:
    status = root / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text("\n".join(stanzas))


def stanza(package: str, version: str, state: str = "install ok installed") -> str:
    return f"Package: {package}\nStatus: {state}\nPriority: important\nVersion: {version}\nDescription: x\n"


def libkmod(root: Path, rel: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def index(root: Path, preorder: bool | None, weakdep: bool = False) -> None:
    moddir = root / "lib/modules" / RELEASE
    moddir.mkdir(parents=True, exist_ok=True)
    builder = IndexBuilder()
    if preorder is not None:
        builder.insert(b"dummy", b"kernel/drivers/net/dummy.ko:", 0)
        builder.insert(b"veth", b"kernel/drivers/net/veth.ko:", 1)
    (moddir / "modules.dep.bin").write_bytes(builder.to_bytes(bool(preorder)))
    if weakdep:
        (moddir / "modules.weakdep").write_text("# Weak dependencies extracted from modules themselves.\n")


@pytest.fixture
def no_host(monkeypatch):
    """Detection without this machine's kmod (the host fallback is tested on its own)."""
    real = generation_mod._from_dpkg

    def only_under_root(paths):
        return None if paths.root == "/" else real(paths)
    monkeypatch.setattr(generation_mod, "_from_dpkg", only_under_root)
    real_lib = generation_mod._from_libkmod
    monkeypatch.setattr(generation_mod, "_from_libkmod", lambda p: None if p.root == "/" else real_lib(p))


def detect(root: Path, compat=None) -> KmodGeneration:
    return detect_generation(KmodPaths(str(root), RELEASE), compat)


@pytest.mark.parametrize("version, expected", [
    ("34.2-2", 34), ("33-1", 33), ("30+20221128-1", 30), ("1:31-2ubuntu1", 31), ("28-1ubuntu4", 28), ("25-2", 28),
    ("40.1-1", 34)])
def test_dpkg_status(tmp_path, no_host, version, expected):
    dpkg_status(tmp_path, stanza("bash", "5.2-1"), stanza("kmod", version))
    gen = detect(tmp_path)
    assert (gen.version, gen.source) == (expected, "dpkg")
    assert "status" in gen.evidence


def test_dpkg_ignores_removed_packages_and_takes_libkmod2(tmp_path, no_host):
    dpkg_status(tmp_path, stanza("kmod", "34.2-2", "deinstall ok config-files"), stanza("libkmod2", "33-1"))
    assert detect(tmp_path).version == 33


@pytest.mark.parametrize("name, expected", [
    ("usr/lib/x86_64-linux-gnu/libkmod.so.2.4.0", 30), ("lib64/libkmod.so.2.3.7", 28),
    ("usr/lib/libkmod.so.2.5.1", 34), ("usr/lib64/libkmod.so.2.5.0", 33), ("lib/aarch64-linux-gnu/libkmod.so.2.4.2", 32),
    ("usr/lib/libkmod.so.2.6.0", 34)])
def test_libkmod_file_name(tmp_path, no_host, name, expected):
    libkmod(tmp_path, name)
    libkmod(tmp_path, "usr/lib/libkmod.so.2")  # the soname link tells nothing
    gen = detect(tmp_path)
    assert (gen.version, gen.source) == (expected, "libkmod")
    assert gen.evidence.endswith(name)


@pytest.mark.parametrize("preorder, weakdep, expected", [(True, False, 34), (False, False, 30), (False, True, 33)])
def test_index_layout(tmp_path, no_host, preorder, weakdep, expected):
    index(tmp_path, preorder, weakdep)
    gen = detect(tmp_path)
    assert (gen.version, gen.source) == (expected, "index")


def test_nothing_installed_is_the_newest(tmp_path, no_host):
    index(tmp_path, None)  # an empty index (12 bytes) says nothing either
    gen = detect(tmp_path)
    assert (gen.version, gen.source) == (NEWEST, "default")


def test_precedence(tmp_path, no_host):
    """option > dpkg > libkmod > index: the installed kmod decides over an index an older
    depmod left (the next distro depmod run rewrites it)."""
    index(tmp_path, False)
    assert detect(tmp_path).source == "index"
    libkmod(tmp_path, "usr/lib/libkmod.so.2.5.1")
    assert (detect(tmp_path).version, detect(tmp_path).source) == (34, "libkmod")
    dpkg_status(tmp_path, stanza("kmod", "33-1"))
    assert (detect(tmp_path).version, detect(tmp_path).source) == (33, "dpkg")
    gen = detect(tmp_path, "30")
    assert (gen.version, gen.source) == (30, "option")


def test_bare_tree_takes_the_host_kmod(tmp_path):
    """A root with nothing in it is indexed by the host's depmod: follow this machine."""
    host = detect_generation(KmodPaths("/", RELEASE))
    gen = detect(tmp_path)
    if host.source == "default":
        assert gen.source == "default"
    else:
        assert (gen.version, gen.source) == (host.version, "host")


def test_real_indexes_layout(kernel_6_1, tmp_path):
    """kmod 30's depmod (this machine) writes post-order; an empty index is undecided."""
    assert index_is_preorder((kernel_6_1.moddir / "modules.dep.bin").read_bytes()) is False
    assert index_is_preorder((kernel_6_1.moddir / "modules.alias.bin").read_bytes()) is False
    moddir = tmp_path / "lib/modules/1.2.3"
    moddir.mkdir(parents=True)
    subprocess.run(["depmod", "-b", str(tmp_path), "-C", str(tmp_path / "none"), "1.2.3"], check=True)
    assert index_is_preorder((moddir / "modules.dep.bin").read_bytes()) is None


@pytest.mark.parametrize("data", [b"", b"\xb0\x07\xf4\x57", b"not an index at all", b"\0" * 64])
def test_index_layout_of_junk_is_undecided(data):
    assert index_is_preorder(data) is None


@pytest.mark.parametrize("value, expected", [
    (None, None), ("auto", None), ("", None), ("30", 30), ("34", 34), (34, 34), ("34.2", 34), ("28", 28),
    ("25", 28), ("29", 29), ("99", 34), (" 33 ", 33)])
def test_parse_compat(value, expected):
    assert parse_compat(value) == expected


@pytest.mark.parametrize("value", [
    "newest", "34; rm -rf /", "3 4", "-1", "34.", "1e3", "٣٤", "34\n35", "x" * 10000, True, 3.4, [34], {"a": 1}])
def test_parse_compat_refuses_clearly(value):
    with pytest.raises(KmodCompatError, match="kmod_compat") as err:
        parse_compat(value)
    assert isinstance(err.value, KmodError)
    assert len(err.value.msg) < 200  # the message quotes a bounded piece of the input


def test_features_by_version():
    assert KmodGeneration(30).depmod_files == (
        "modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep",
        "modules.symbols", "modules.symbols.bin", "modules.builtin.bin", "modules.builtin.alias.bin", "modules.devname")
    assert KmodGeneration(33).depmod_files[5] == "modules.weakdep"
    assert len(KmodGeneration(34).depmod_files) == 11
    assert [KmodGeneration(v).preorder_index for v in (30, 33, 34)] == [False, False, True]
    assert [KmodGeneration(v).conf_suffixes for v in (30, 32, 33)] == [(".conf", ".alias")] * 2 + [(".conf",)]
    assert KmodGeneration(34).as_result() == {"version": 34, "source": "default", "evidence": ""}
