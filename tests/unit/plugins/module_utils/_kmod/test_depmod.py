# SPDX-License-Identifier: GPL-3.0-or-later
"""depmod.py against kmod 30's depmod, run side by side on the same trees."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import subprocess

import pytest
from depmod_trees import (  # on sys.path through this directory's conftest.py
    assert_same_as_depmod, compare, depmod_warnings, empty_tree, fake_kernel_symbols, make_module, ours,
    real_depmod, small_tree)

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod import OUTPUT_FILES, Depmod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import DependencyCycleError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths


@pytest.mark.parametrize("key", ["6.1", "6.12"])
def test_real_kernel_trees_byte_identical(scratch_kernel, key):
    """The whole Debian kernel: plain signed .ko (6.1) and .ko.xz (6.12)."""
    tree = scratch_kernel(key)
    result = compare(tree)
    assert len(result.modules) > 4000
    assert not result.warnings


@pytest.fixture
def tree(tmp_path):
    return small_tree(tmp_path / "root")


def test_small_tree(tree):
    result = compare(tree)
    assert {m.name for m in result.modules} >= {"snd_hda_intel", "vfat", "fat", "xfs"}


def duplicate(tree, rel, *dirs):
    """Copies of the module file at rel into other directories of the tree."""
    for d in dirs:
        target = tree.moddir / d / os.path.basename(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tree.moddir / rel, target)


VFAT = "kernel/fs/fat/vfat.ko"


def test_duplicates_default_search(tree):
    duplicate(tree, VFAT, "extra", "updates", "kernel/other", "updates/deeper")
    duplicate(tree, "kernel/drivers/net/dummy.ko", "extra", "kernel/zz")
    result = compare(tree)
    paths = {m.name: m.relpath for m in result.modules}
    assert paths["vfat"].startswith("updates/")


@pytest.mark.parametrize("conf", [
    "search extra built-in updates\n",
    "search updates extra\nsearch built-in\n",
    "search built-in\n",
    "override vfat * extra\n",
    "override vfat 6\\.1\\.0 kernel/other\noverride vfat * extra\n",
    "override vfat ^5\\.10 extra\n",
    "override vfat ( extra\n",
    "exclude updates extra\n",
    "search \\\n extra updates\n",
    "# comment\n\ninclude /etc/foo.conf\nmake_map_files\nfrobnicate all\noverride onlyone\n",
])
def test_depmod_d_directives(tree, conf):
    duplicate(tree, VFAT, "extra", "updates", "kernel/other")
    (tree.root / "etc/depmod.d").mkdir(parents=True)
    (tree.root / "etc/depmod.d/test.conf").write_text(conf)
    compare(tree)


@pytest.mark.parametrize("search", ["external built-in", "built-in external", "updates external built-in"])
def test_external_directories(tree, tmp_path, search):
    ext1, ext2 = tmp_path / "ext1", tmp_path / "ext2"
    for ext in (ext1, ext2):
        ext.mkdir()
        shutil.copy(tree.moddir / VFAT, ext / "vfat.ko")
    shutil.copy(tree.moddir / "kernel/drivers/net/dummy.ko", ext2 / "dummy-ext.ko")
    duplicate(tree, VFAT, "updates")
    (tree.root / "etc/depmod.d").mkdir(parents=True)
    (tree.root / "etc/depmod.d/ext.conf").write_text(
        f"search {search}\nexternal * {ext1}\nexternal 6\\.1 {ext2}\nexternal * {tmp_path}/missing\n")
    result = compare(tree)
    assert any(m.relpath is None for m in result.modules)


def test_config_files_merge_by_name(tree):
    """Same basename in two directories: the earlier directory wins; all names sorted."""
    etc, lib = tree.root / "etc/depmod.d", tree.root / "lib/depmod.d"
    etc.mkdir(parents=True)
    lib.mkdir(parents=True)
    duplicate(tree, VFAT, "extra", "updates")
    (etc / "b.conf").write_text("search extra built-in\n")
    (lib / "b.conf").write_text("search updates\n")
    (lib / "a.conf").write_text("override vfat * updates\n")
    (lib / "c.conf.disabled").write_text("override vfat * extra\n")
    (lib / ".hidden.conf").write_text("override vfat * extra\n")
    proc = subprocess.run(["depmod", "-b", str(tree.root), "-C", str(etc), "-C", str(lib), tree.release],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert_same_as_depmod(tree, ours(tree, config_paths=[str(etc), str(lib)]))


@pytest.mark.parametrize("order", [None, "", "truncated", "reversed", "duplicated"])
def test_modules_order_variants(tree, order):
    path = tree.moddir / "modules.order"
    lines = path.read_text().splitlines(keepends=True)
    if order is None:
        path.unlink()
    elif order == "truncated":
        path.write_text("".join(lines)[:-1])  # last line without '\n': depmod ignores the file
    elif order == "reversed":
        path.write_text("".join(reversed(lines)))
    elif order == "duplicated":
        path.write_text("".join(lines + lines[:40]))
    else:
        path.write_text(order)
    compare(tree)


def test_corrupt_modules_are_listed_like_depmod(tree):
    bad = tree.moddir / "kernel/bad"
    bad.mkdir()
    xz_data = lzma.compress((tree.moddir / VFAT).read_bytes())
    (bad / "zero.ko").write_bytes(b"")
    (bad / "tiny.ko").write_bytes(b"\x7fEL")
    (bad / "garbage.ko").write_bytes(os.urandom(4096))
    (bad / "text.ko").write_text("not a module\n" * 20)
    (bad / "trunc.ko.xz").write_bytes(xz_data[: len(xz_data) // 2])
    (bad / "badz.ko.zst").write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(200))
    (bad / "halfelf.ko").write_bytes((tree.moddir / VFAT).read_bytes()[:3000])
    result = compare(tree)
    for name in ("zero.ko", "tiny.ko", "garbage.ko", "text.ko", "trunc.ko.xz", "badz.ko.zst", "halfelf.ko"):
        assert any(str(bad / name) in w for w in result.warnings), name


def test_compressed_modules(tree):
    """zstd and xz modules (depmod 30 on Debian reads both) mixed with plain ones."""
    for i, ko in enumerate(sorted(tree.moddir.rglob("*.ko"))):
        tool = ("zstd", "xz", None)[i % 3]
        if tool:  # the real tools, as the kernel build would use them
            data = subprocess.run([tool, "-c", str(ko)], capture_output=True, check=True).stdout
            ko.with_name(ko.name + (".zst" if tool == "zstd" else ".xz")).write_bytes(data)
            ko.unlink()
    compare(tree)


def test_gzip_modules(tree, tmp_path):
    """Debian's depmod has no zlib support, so the oracle is the same tree with .ko.xz
    files in place of our .ko.gz ones: both suffixes have the same length, so every
    index must be identical once the suffix is swapped."""
    kos = sorted(tree.moddir.rglob("*.ko"))[::2]
    xz_tree = small_tree(tmp_path / "xz-root")
    for ko in kos:
        raw = ko.read_bytes()
        ko.with_name(ko.name + ".gz").write_bytes(gzip.compress(raw))
        ko.unlink()
        rel = ko.relative_to(tree.moddir)
        (xz_tree.moddir / rel).unlink()
        (xz_tree.moddir / rel).with_name(ko.name + ".xz").write_bytes(lzma.compress(raw))
    assert real_depmod(xz_tree).returncode == 0
    result = ours(tree)
    for name in OUTPUT_FILES:
        expected = (xz_tree.moddir / name).read_bytes()
        assert result.files[name].replace(b".ko.gz", b".ko.xz") == expected, name


def test_module_named_like_a_builtin_takes_builtin_modinfo(tree):
    """libkmod reads the modinfo of a module whose name modules.builtin.bin lists from
    modules.builtin.modinfo: depmod then takes that module's aliases from there."""
    assert real_depmod(tree).returncode == 0  # a modules.builtin.bin to consult
    builtin = next(line for line in (tree.moddir / "modules.builtin.modinfo").read_bytes().split(b"\0")
                   if b".alias=" in line).split(b".", 1)[0].decode()
    shutil.copy(tree.moddir / VFAT, tree.moddir / "kernel" / f"{builtin}.ko")
    compare(tree)


def test_empty_tree(tmp_path):
    tree = empty_tree(tmp_path / "root")
    result = compare(tree)
    assert result.modules == [] and result.files["modules.builtin.bin"] == b""


def test_synthetic_modinfo_devname_softdep_and_brackets(tmp_path):
    tree = empty_tree(tmp_path / "root")
    make_module(tree.moddir / "extra/dev-a.ko", modinfo=(
        "alias=devname:foo/bar", "alias=char-major-10-123", "softdep=pre: dev_b post: x",
        "alias=odd-name[-_]x", "alias=bad]bracket", "alias=unterminated[x"))
    make_module(tree.moddir / "extra/dev_b.ko",
                modinfo=("alias=block-major-8-*", "alias=devname:sdx", "alias=block-major-8-16", "softdep=post: dev_a"))
    make_module(tree.moddir / "extra/dev_c.ko", modinfo=("alias=devname:lonely",))
    compare(tree)


def test_dependency_order_and_weak_symbols(tmp_path):
    tree = empty_tree(tmp_path / "root")
    make_module(tree.moddir / "extra/top.ko", needs=("mid_fn", "base_fn"), weak=("leaf_fn",))
    make_module(tree.moddir / "extra/mid.ko", exports=("mid_fn",), needs=("base_fn",))
    make_module(tree.moddir / "extra/base.ko", exports=("base_fn", "dup_fn"))
    make_module(tree.moddir / "kernel/leaf.ko", exports=("leaf_fn", "dup_fn"))
    make_module(tree.moddir / "kernel/user.ko", needs=("dup_fn",))
    result = compare(tree)
    assert b"extra/top.ko: kernel/leaf.ko extra/mid.ko extra/base.ko\n" in result.files["modules.dep"]


def test_cycle_fails_and_real_depmod_agrees(tmp_path):
    tree = empty_tree(tmp_path / "root")
    make_module(tree.moddir / "extra/a.ko", exports=("sym_a",), needs=("sym_b",))
    make_module(tree.moddir / "extra/b.ko", exports=("sym_b",), needs=("sym_c",))
    make_module(tree.moddir / "extra/c.ko", exports=("sym_c",), needs=("sym_a",))
    make_module(tree.moddir / "extra/d.ko", needs=("sym_a",))
    proc = real_depmod(tree)
    assert proc.returncode != 0 and "Cycle detected" in proc.stderr
    assert not list(tree.moddir.glob("modules.*"))
    with pytest.raises(DependencyCycleError) as info:
        ours(tree)
    assert "Cycle detected: " in info.value.msg
    assert sorted(info.value.details["cycle"]) == ["a", "b", "c"]


def test_unresolved_symbols_like_depmod_e(tree, tmp_path):
    make_module(tree.moddir / "extra/needy.ko", needs=("_printk", "no_such_symbol_xyz", "snd_pcm_new"),
                weak=("weak_missing_sym",))
    system_map = fake_kernel_symbols(tree, tmp_path / "System.map", skip=("no_such_symbol_xyz", "kmalloc_trace"))
    (tmp_path / "System.map").write_text((tmp_path / "System.map").read_text() + "bad-line\n")
    proc = real_depmod(tree, "-e", "-F", str(system_map))
    assert proc.returncode == 0
    result = ours(tree, system_map=str(system_map), check_unresolved=True)
    assert_same_as_depmod(tree, result)
    expected = depmod_warnings(proc.stderr, "needs unknown symbol")
    assert {(u["path"], u["symbol"]) for u in result.unresolved} == expected
    assert (str(tree.moddir / "extra/needy.ko"), "no_such_symbol_xyz") in expected
    assert any(sym == "kmalloc_trace" for _path, sym in expected)


def test_symvers_and_crc_mismatch(tree, tmp_path):
    """A Module.symvers whose CRCs are all wrong: depmod -e -E warns about each versioned
    symbol the modules use, and about the symbols it lacks."""
    symvers = fake_kernel_symbols(tree, tmp_path / "Module.symvers", skip=("kmalloc_trace",), crc="0x00000001")
    with open(symvers, "a") as f:
        f.write("garbage line\n0xZZ\tbad\tvmlinux\tEXPORT_SYMBOL\n0x2\told_format\tvmlinux\n")
    proc = real_depmod(tree, "-e", "-E", str(symvers))
    assert proc.returncode == 0
    result = ours(tree, symvers=str(symvers), check_unresolved=True)
    assert_same_as_depmod(tree, result)
    assert {(u["path"], u["symbol"]) for u in result.unresolved} == depmod_warnings(
        proc.stderr, "needs unknown symbol")
    mismatches = depmod_warnings(proc.stderr, "disagrees about version of symbol")
    assert mismatches
    assert {tuple(w.rsplit(" disagrees about version of symbol ", 1)) for w in result.warnings
            if "disagrees" in w} == mismatches


def test_missing_module_directory(tmp_path):
    from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KmodError
    with pytest.raises(KmodError, match="does not exist"):
        Depmod(KmodPaths(str(tmp_path), "9.9.9"), config_paths=[]).build()


def test_symlinks_and_deep_directories(tree):
    """depmod follows symlinks (to files and directories) and searches deep trees."""
    deep = tree.moddir / "extra" / "/".join(["d"] * 300)
    deep.mkdir(parents=True)
    shutil.copy(tree.moddir / "kernel/drivers/net/dummy.ko", deep / "deepmod.ko")
    # Relative links: the same files for depmod -b and for our chroot-like reading of root
    # (an absolute link inside root points into the image).
    (tree.moddir / "extra/linked.ko").symlink_to(os.path.join("..", VFAT))
    (tree.moddir / "extra/linkdir").symlink_to("../kernel/fs/fat")
    (tree.moddir / "extra/dangling.ko").symlink_to("../nowhere.ko")
    compare(tree)


def test_single_process_when_no_pool(tree, monkeypatch):
    """Where multiprocessing cannot work (no /dev/shm), modules are read in one process."""
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise OSError(38, "Function not implemented")

    from ansible_collections.kernel.kmod.plugins.module_utils._kmod import depmod as depmod_mod
    monkeypatch.setattr(depmod_mod, "_PARALLEL_MIN", 1)
    monkeypatch.setattr(multiprocessing.get_context("fork"), "Pool", no_pool)
    result = compare(tree, jobs=2)
    assert any("one process" in w for w in result.warnings)


def _patch_symbol(path, name, st_name=None, bind=None):
    """Rewrite one .symtab row of an ELF file in place: its name offset, or its binding."""
    from elftools.elf.elffile import ELFFile
    with open(path, "r+b") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        index = next(i for i, sym in enumerate(symtab.iter_symbols()) if sym.name == name)
        row = symtab["sh_offset"] + index * symtab["sh_entsize"]
        order = "little" if elf.little_endian else "big"
        info_at = row + (4 if elf.elfclass == 64 else 12)
        if st_name is not None:
            f.seek(row)
            f.write(st_name.to_bytes(4, order))
        if bind is not None:
            f.seek(info_at)
            info = f.read(1)[0]
            f.seek(info_at)
            f.write(bytes(((bind << 4) | (info & 0xF),)))


@pytest.mark.parametrize("cflags", [(), ("-m32",)], ids=["elf64", "elf32"])
def test_symbol_tables_like_depmod(tmp_path, cflags):
    """Exports by __crc_ symbols and by __ksymtab_strings, weak and undefined LOCAL symbols,
    __versions records and a name out of .strtab (libkmod drops the module's whole list)
    in both ELF classes, against kmod's depmod and modprobe --dump-modversions."""
    tree = empty_tree(tmp_path / "root")
    versions = ('struct { unsigned long crc; char name[64 - sizeof(unsigned long)]; } '
                'vers[] __attribute__((section("__versions"), used)) = '
                '{{0x11, "base_fn"}, {0x22, "module_layout"}, {0x33, "leaf_fn"}, {0x44, "base_fn"}};')
    make_module(tree.moddir / "extra/top.ko", needs=("mid_fn", "base_fn"), weak=("leaf_fn",),
                extra=(versions,), cflags=cflags)
    make_module(tree.moddir / "extra/mid.ko", needs=("base_fn", "local_fn"), cflags=cflags,
                extra=("void mid_fn(void) {}", "const unsigned int __crc_mid_fn = 0x1234abcd;"))
    make_module(tree.moddir / "extra/base.ko", exports=("base_fn",), cflags=cflags)
    make_module(tree.moddir / "kernel/leaf.ko", exports=("leaf_fn", "local_fn"), cflags=cflags)
    make_module(tree.moddir / "kernel/lost.ko", needs=("base_fn", "leaf_fn"), cflags=cflags)
    _patch_symbol(tree.moddir / "extra/mid.ko", "local_fn", bind=0)  # STB_LOCAL, still SHN_UNDEF
    _patch_symbol(tree.moddir / "kernel/lost.ko", "leaf_fn", st_name=1 << 30)
    result = compare(tree)
    dep = result.files["modules.dep"]
    # (what depmod wrote, compared above: the cases are there, not lost)
    assert b"extra/top.ko: extra/mid.ko kernel/leaf.ko extra/base.ko\n" in dep
    assert b"extra/mid.ko: kernel/leaf.ko extra/base.ko\n" in dep
    assert b"kernel/lost.ko:\n" in dep
    assert b"alias symbol:mid_fn mid\n" in result.files["modules.symbols"]
    from ansible_collections.kernel.kmod.plugins.module_utils._kmod.elf import read_module
    top = str(tree.moddir / "extra/top.ko")
    dumped = subprocess.run(["modprobe", "--dump-modversions", top], capture_output=True, text=True,
                            check=True).stdout.split("\n")
    assert [f"{crc:#010x}\t{name}" for name, crc in read_module(top).versions()] == dumped[:-1]
