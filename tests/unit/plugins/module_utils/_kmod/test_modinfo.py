# SPDX-License-Identifier: GPL-3.0-or-later
"""modinfo.py against kmod's modinfo: whole real trees, doctored .modinfo sections, builtin trees."""

from __future__ import annotations

import difflib
import lzma
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.elf import parse_module
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KmodError, ModuleLookupError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import detect_generation
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.modinfo import (
    ModinfoReader,
    format_modinfo,
    modinfo_from_file,
)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.names import modname_from_path
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths

E1000E = "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko"
# The oracle is this machine's modinfo: print as its kmod does (test_kmod34.py covers kmod 34).
HOST = detect_generation(KmodPaths("/"))


def run_modinfo(*args: str) -> bytes:
    return subprocess.run(["modinfo", *args], capture_output=True, check=False).stdout


def tree_args(tree) -> list[str]:
    return ["-b", str(tree.root), "-k", tree.release]


def as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def assert_same(expected: bytes, got: bytes) -> None:
    if expected != got:
        diff = difflib.unified_diff(expected.decode(errors="replace").splitlines(),
                                    got.decode(errors="replace").splitlines(), "modinfo", "ours",
                                    lineterm="", n=1)
        pytest.fail("\n".join(list(diff)[:60]))


def tree_names(tree) -> tuple[list[str], list[str]]:
    """(modules in modules.dep, builtin modules) of a real tree, in file order."""
    modules = [modname_from_path(line.split(":", 1)[0])
               for line in (tree.moddir / "modules.dep").read_text().splitlines()]
    builtin = [modname_from_path(line) for line in (tree.moddir / "modules.builtin").read_text().split()]
    return modules, builtin


# 6.1 completely (~4000 signed .ko); every 3rd .ko.xz of 6.12 keeps decompression time sane.
@pytest.mark.parametrize("key, step", [("6.1", 1), ("6.12", 3)])
def test_real_tree_matches_modinfo(key: str, step: int) -> None:
    import kernels

    tree = kernels.pristine_root(key)
    modules, builtin = tree_names(tree)
    names = modules[::step] + builtin[::step]
    expected = run_modinfo(*tree_args(tree), "-m", *names)
    reader = ModinfoReader(KmodPaths(str(tree.root), tree.release))
    assert_same(expected, as_bytes("".join(format_modinfo(reader.by_name(n), HOST) for n in names)))


# Names, aliases (several matches print several modules), symbols, builtins, device modaliases.
@pytest.mark.parametrize("name", [
    "e1000e", "snd-hda-intel", "dummy", "ext4", "crc32c_generic", "crc32c", "stdrng", "ghash",
    "rtnl-link-dummy", "fs-ext3", "symbol:nf_nat_setup_info",
    "pci:v00008086d00001502sv00008086sd00001234bc02sc00i00",
])
def test_lookup_matches_modinfo(kernel_tree, name: str) -> None:
    reader = ModinfoReader(KmodPaths(str(kernel_tree.root), kernel_tree.release))
    expected = run_modinfo(*tree_args(kernel_tree), name)
    assert expected, f"modinfo knows {name}"
    assert_same(expected, as_bytes("".join(format_modinfo(i, HOST) for i in reader.lookup(name))))


def test_lookup_by_path(kernel_6_12) -> None:
    path = str(kernel_6_12.moddir / "kernel/drivers/net/dummy.ko.xz")
    [info] = ModinfoReader(KmodPaths(str(kernel_6_12.root), kernel_6_12.release)).lookup(path)
    assert info.filename == path
    assert_same(run_modinfo(path), as_bytes(format_modinfo(info, HOST)))


@pytest.mark.parametrize("name", ["no_such_module", "dummy.ko", "pci:v00008086d*"])
def test_unknown_names_fail_like_modinfo(kernel_6_1, name: str) -> None:
    # "dummy.ko" is no file here, and modinfo does not strip the extension for lookups.
    assert run_modinfo(*tree_args(kernel_6_1), name) == b""
    reader = ModinfoReader(KmodPaths(str(kernel_6_1.root), kernel_6_1.release))
    with pytest.raises(ModuleLookupError, match=f"{re.escape(name)}.* not found"):
        reader.lookup(name)


def test_structured_form_agrees_with_modinfo_fields(kernel_6_1) -> None:
    reader = ModinfoReader(KmodPaths(str(kernel_6_1.root), kernel_6_1.release))
    facts = reader.by_name("e1000e").as_dict()

    def field(name: str) -> list[str]:
        out = run_modinfo(*tree_args(kernel_6_1), "-F", name, "e1000e").decode()
        return out.splitlines()

    assert facts["alias"] == field("alias")
    assert [facts["license"]] == field("license")
    assert [facts["filename"]] == field("filename")
    assert facts["builtin"] is False
    parm_lines = field("parm")
    assert [f"{n}:{p['description']} ({p['type']})" for n, p in facts["parm"].items()] == parm_lines
    assert "signature" in facts and "sig_key" in facts


# .modinfo contents modinfo must cope with: duplicate and out-of-order parm/parmtype,
# a parm without ':' (skipped with a warning), keys without '=', long keys (printf's
# negative width), non-UTF-8 bytes, runs of NULs, and a last string without terminator.
DOCTORED = (
    b"\0\0license=GPL\0\0\0parmtype=late:int\0parm=late:declared after its type\0"
    b"parm=both:first text\0parmtype=both:uint\0parm=both:second text\0"
    b"parm=notype:no type given\0parmtype=onlytype:charp\0parm=nocolon\0"
    b"flag\0sixteen_chars_ky=v\0a_very_long_key_of_30_chars_xx=w\0exactly_15_chars=x\0"
    b"description=caf\xe9 \xff\xfe\0alias=pci:v*\0alias=pci:v*\0depends=\0name=e1000e\0"
    b"vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0last=unterminated"
)


def doctored_module(kernel_6_1, tmp_path: Path, compress: str | None) -> Path:
    data = bytearray((kernel_6_1.moddir / E1000E).read_bytes())
    sec = parse_module(bytes(data)).section(".modinfo")
    assert sec is not None and len(DOCTORED) <= sec.size
    data[sec.offset:sec.offset + sec.size] = DOCTORED.ljust(sec.size, b"\0")
    if compress:  # the unterminated last string must stay unterminated at the section end
        data[sec.offset:sec.offset + sec.size] = DOCTORED.rjust(sec.size, b"\0")
    path = tmp_path / "e1000e.ko"
    path.write_bytes(bytes(data))
    if compress == "xz":
        subprocess.run(["xz", "--check=crc32", str(path)], check=True)
        return tmp_path / "e1000e.ko.xz"
    if compress == "zstd":
        subprocess.run(["zstd", "-q", "--rm", str(path)], check=True)
        return tmp_path / "e1000e.ko.zst"
    return path


@pytest.mark.parametrize("compress", [None, "xz", "zstd"])
def test_doctored_modinfo_section(kernel_6_1, tmp_path: Path, compress: str | None) -> None:
    if compress and shutil.which(compress) is None:
        pytest.skip(f"needs {compress}")
    path = doctored_module(kernel_6_1, tmp_path, compress)
    expected = run_modinfo(str(path))
    assert b"parm:           both:second text (uint)" in expected
    assert_same(expected, as_bytes(format_modinfo(modinfo_from_file(str(path)), HOST)))


def test_unreadable_module_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ko.xz"
    bad.write_bytes(lzma.compress(b"not an elf file at all"))
    with pytest.raises(KmodError, match="bad.ko.xz"):
        modinfo_from_file(str(bad))


# modules.builtin.modinfo as the kernel's build writes it, with libkmod's reading quirks:
# only the first contiguous run of a module counts, and a record without '.' ends the file
# (delta is never reached). kmod 30 prints garbage for the module just before such a record
# (its reader overruns the string array), so omega is left out of the comparison.
BUILTIN_MODINFO = (
    b"alpha.license=GPL\0alpha.parm=debug:Debug level\0alpha.parmtype=debug:int\0alpha.flag\0"
    b"beta.description=second\0alpha.author=late run, ignored\0"
    b"gamma.alias=gamma-alias\0gamma.version=1.0\0"
    b"omega.license=GPL\0broken record\0delta.license=GPL\0"
)
BUILTIN_LIST = "".join(f"kernel/x/{m}.ko\n" for m in ("alpha", "beta", "gamma", "omega", "delta", "epsilon"))


@pytest.fixture
def builtin_root(kernel_6_1, tmp_path: Path) -> KmodPaths:
    moddir = tmp_path / "lib/modules/9.9.9-test"
    (moddir / "kernel").mkdir(parents=True)
    shutil.copy(kernel_6_1.moddir / "kernel/drivers/net/dummy.ko", moddir / "kernel")
    (moddir / "modules.builtin").write_text(BUILTIN_LIST)
    (moddir / "modules.builtin.modinfo").write_bytes(BUILTIN_MODINFO)
    (moddir / "modules.order").write_text("")
    subprocess.run(["depmod", "-b", str(tmp_path), "9.9.9-test"], check=True, capture_output=True)
    return KmodPaths(str(tmp_path), "9.9.9-test")


@pytest.mark.parametrize("name", ["alpha", "beta", "gamma", "delta", "epsilon"])
def test_builtin_modules_match_modinfo(builtin_root: KmodPaths, name: str) -> None:
    expected = run_modinfo("-b", builtin_root.root, "-k", builtin_root.kernel_release, "-m", name)
    assert expected.startswith(f"name:           {name}\nfilename:       (builtin)\n".encode())
    info = ModinfoReader(builtin_root).by_name(name)
    assert info.builtin
    assert_same(expected, as_bytes(format_modinfo(info, HOST)))
