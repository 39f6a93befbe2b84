# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine on kmod 28's terms, against kmod 28's own depmod (Debian 11's, in a bullseye
chroot, tests/kmod28.py): byte for byte on bullseye's 5.10 tree and on small trees, next
to this machine's kmod 30 where the two differ (modules.builtin.alias.bin: kmod 28 writes
it only when there is no builtin module, see docs/kmod-generations.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config import ModprobeConfig
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod import Depmod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import ModuleLookupError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import KmodGeneration, detect_generation
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.resolver import ModuleDB

import kmod28
import kmod34
from depmod_trees import empty_tree, make_module, real_depmod
from kernels import KernelTree

KMOD28 = KmodGeneration(28)
KMOD30 = KmodGeneration(30)
INPUTS = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
ALIAS_BIN = "modules.builtin.alias.bin"

pytestmark = pytest.mark.skipif(kmod28.available() is not None, reason=str(kmod28.available()))


def paths_of(tree: KernelTree) -> KmodPaths:
    return KmodPaths(str(tree.root), tree.release)


def assert_depmod_identical(tree: KernelTree, generation: KmodGeneration | None) -> None:
    """Our build equals the files the real depmod left in tree, and names the same set."""
    result = Depmod(paths_of(tree), config_paths=[str(tree.root / "etc/depmod.d")],
                    generation=generation).build()
    written = {p.name for p in tree.moddir.glob("modules.*") if p.name not in INPUTS}
    assert set(result.files) == written
    for name, data in result.files.items():
        assert data == (tree.moddir / name).read_bytes(), f"{name} differs from depmod's"


def test_bullseye_tree_depmod_identical_and_detected():
    """All 10 files of kmod 28's depmod on Debian 11's own kernel; the tree alone tells
    kmod 28 (its 0-byte modules.builtin.alias.bin), so a distro-indexed tree is unchanged."""
    tree = kmod28.pristine_root()
    assert (tree.moddir / ALIAS_BIN).stat().st_size == 0
    assert (tree.moddir / "modules.builtin.modinfo").stat().st_size > 0
    gen = detect_generation(paths_of(tree))
    assert (gen.version, gen.source) == (28, "index")
    assert_depmod_identical(tree, None)


MODULES = {
    # name: (exports, needs, modinfo)
    "k28_core": (("k28_core_fn",), (), ("license=GPL", "alias=k28-core-alias", "softdep=pre: k28_extra")),
    "k28_phy": ((), ("k28_core_fn",), ("license=GPL", "alias=mdio:0000*", "alias=char-major-250-1",
                                       "alias=devname:k28phy")),
    "k28_extra": ((), (), ("license=GPL",)),
}
# k28_phy is listed twice (kmod 28 and 30 both sort it by its last line).
ORDER = "kernel/k28/k28_phy.ko\nkernel/k28/k28_core.ko\nkernel/k28/k28_extra.ko\nkernel/k28/k28_phy.ko\n"
BUILTIN_MODINFO = b"ext4.alias=fs-ext4\0ext4.license=GPL\0crc32c_generic.alias=crypto-crc32c\0" \
                  b"crc32c_generic.alias=crypto-crc32c-generic\0"


def small_tree(dest: Path, builtin: str) -> KernelTree:
    """builtin: "modules" (a modules.builtin.modinfo naming modules), "empty" (0 bytes) or
    "missing" (an old kernel's tree)."""
    tree = empty_tree(dest, "5.10.0-k28")
    for name, (exports, needs, info) in MODULES.items():
        make_module(tree.moddir / "kernel/k28" / f"{name}.ko", exports=exports, needs=needs, modinfo=info)
    (tree.moddir / "modules.order").write_text(ORDER)
    (tree.moddir / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n")
    if builtin != "missing":
        (tree.moddir / "modules.builtin.modinfo").write_bytes(BUILTIN_MODINFO if builtin == "modules" else b"")
    return tree


@pytest.mark.parametrize("builtin", ["modules", "empty", "missing"])
def test_small_tree_identical_to_kmod28_and_kmod30(tmp_path, builtin):
    t28 = small_tree(tmp_path / "k28", builtin)
    t30 = KernelTree(t28.key, tmp_path / "k30", t28.release)
    shutil.copytree(t28.root, t30.root)
    proc = kmod28.depmod(t28)
    assert proc.returncode == 0, proc.stderr
    proc = real_depmod(t30)
    assert proc.returncode == 0, proc.stderr
    # the oracles differ in modules.builtin.alias.bin only, and only with builtin modinfo
    # present (kmod 30 writes nothing without it, kmod 28 an empty index)
    for path in t28.moddir.glob("modules.*"):
        if path.name != ALIAS_BIN:
            assert path.read_bytes() == (t30.moddir / path.name).read_bytes(), path.name
    a28, a30 = (t28.moddir / ALIAS_BIN).read_bytes(), (t30.moddir / ALIAS_BIN).read_bytes()
    assert (a28 == b"") is (builtin == "modules")
    assert (a30 == b"") is (builtin == "missing")
    assert (a28 == a30) is (builtin == "empty")
    assert_depmod_identical(t28, KMOD28)
    assert_depmod_identical(t30, KMOD30)
    if builtin == "modules":  # the tree tells which depmod indexed it
        assert detect_generation(paths_of(t28)).version == 28
        assert detect_generation(paths_of(t30)).version == 30


def test_builtin_lookups_on_kmod28_indexes_equal_kmod28_modprobe(tmp_path):
    """With kmod 28's 0-byte modules.builtin.alias.bin, its modprobe finds builtin modules by
    name (modules.builtin.bin) but not by alias; the resolver answers the same."""
    tree = small_tree(tmp_path / "root", "modules")
    proc = kmod28.depmod(tree)
    assert proc.returncode == 0, proc.stderr
    paths = paths_of(tree)
    db = ModuleDB(paths, ModprobeConfig.load(paths, cmdline="", config_paths=[], generation=KMOD28))
    found = 0
    for name in ("ext4", "crc32c_generic", "fs-ext4", "crypto-crc32c", "k28-core-alias"):
        real = kmod34.run_in(kmod28.chroot_dir(), ["modprobe", "-d", "/tree", "-S", tree.release, "-C", "/dev/null",
                                                   "--show-depends", name], tree.root, text=True)
        if real.returncode != 0:
            assert "not found" in real.stderr, real.stderr
            with pytest.raises(ModuleLookupError):
                db.show_depends(name)
            continue
        expected = [line.replace("/tree/", f"{tree.root}/") for line in real.stdout.split("\n")[:-1]]
        assert db.show_depends(name) == expected, name
        found += 1
    assert found == 3  # the two builtin names and the loadable module's alias


def test_kmod28_is_what_the_chroot_runs():
    """The oracle is the release the tests are named after (and detection agrees)."""
    assert kmod28.version().startswith("kmod version 28")
    gen = detect_generation(KmodPaths(str(kmod28.chroot_dir()), "5.10.0"))
    assert (gen.version, gen.source) == (28, "dpkg")
