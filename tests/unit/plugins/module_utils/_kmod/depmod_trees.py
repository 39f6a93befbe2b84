# SPDX-License-Identifier: GPL-3.0-or-later
"""Module trees for depmod tests, and the real depmod to compare against."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from kernels import KernelTree, pristine_root

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod import OUTPUT_FILES, Depmod, DepmodResult
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths

# A few modules of Debian's 6.1 kernel with some dependency depth (sound, fat, usb serial).
SMALL_SET = ("snd_hda_intel", "vfat", "msdos", "ftdi_sio", "dummy", "snd_usb_audio", "xfs")


def real_depmod(tree: KernelTree, *args: str) -> subprocess.CompletedProcess:
    """kmod's depmod on tree, with depmod.d taken from the tree (never this machine's /etc)."""
    return subprocess.run(["depmod", "-b", str(tree.root), "-C", str(tree.root / "etc/depmod.d"),
                           *args, tree.release], capture_output=True, text=True, check=False)


def ours(tree: KernelTree, **kwargs) -> DepmodResult:
    kwargs.setdefault("config_paths", [str(tree.root / "etc/depmod.d")])
    return Depmod(KmodPaths(str(tree.root), tree.release), **kwargs).build()


def assert_same_as_depmod(tree: KernelTree, result: DepmodResult) -> None:
    """Every file kmod 30 writes has exactly our bytes."""
    for name in OUTPUT_FILES:
        real = (tree.moddir / name).read_bytes()
        assert result.files[name] == real, f"{name} differs from depmod's"
    inputs = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
    written = {p.name for p in tree.moddir.glob("modules.*") if p.name not in inputs}
    assert written == set(OUTPUT_FILES)


def compare(tree: KernelTree, *depmod_args: str, **kwargs) -> DepmodResult:
    proc = real_depmod(tree, *depmod_args)
    assert proc.returncode == 0, proc.stderr
    result = ours(tree, **kwargs)
    assert_same_as_depmod(tree, result)
    return result


def small_tree(dest: Path, names: tuple[str, ...] = SMALL_SET, key: str = "6.1", copy: bool = False) -> KernelTree:
    """A copy (hard links unless copy) of some modules of a real tree with everything they
    depend on, plus its modules.order/builtin files; no indexes."""
    src = pristine_root(key)
    lines = {}
    for line in (src.moddir / "modules.dep").read_text().splitlines():
        path, _sep, deps = line.partition(":")
        lines[os.path.basename(path).split(".", 1)[0].replace("-", "_")] = [path, *deps.split()]
    wanted = set()
    for name in names:
        wanted.update(lines[name])
    tree = KernelTree(key, dest, src.release)
    for rel in sorted(wanted):
        target = tree.moddir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copy2 if copy else os.link)(src.moddir / rel, target)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copy(src.moddir / name, tree.moddir / name)
    return tree


def c_bytes(data: bytes) -> str:
    return "{" + ",".join(str(b) for b in data + b"\0") + "}"


def make_module(path: Path, exports: tuple[str, ...] = (), needs: tuple[str, ...] = (),
                weak: tuple[str, ...] = (), modinfo: tuple[str, ...] = (), extra: tuple[str, ...] = (),
                cflags: tuple[str, ...] = ()) -> Path:
    """A tiny relocatable ELF object shaped like a module (compiled by gcc with cflags): exports
    via __ksymtab_strings, undefined symbols by calls, .modinfo strings, extra lines of C."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build synthetic modules")
    src = [f"extern void {n}(void);" for n in needs]
    src += [f"extern void {n}(void) __attribute__((weak));" for n in weak]
    body = "".join(f"{n}();" for n in needs) + "".join(f"if ({n}) {n}();" for n in weak)
    src.append(f"void kmod_test_entry(void) {{ {body} }}")
    src += [f"void {n}(void) {{}}" for n in exports]
    if exports:
        src.append('static const char ks[] __attribute__((section("__ksymtab_strings"), used)) = '
                   + c_bytes("\0".join(exports).encode()) + ";")
    if modinfo:
        src.append('static const char mi[] __attribute__((section(".modinfo"), used)) = '
                   + c_bytes("\0".join(modinfo).encode()) + ";")
    path.parent.mkdir(parents=True, exist_ok=True)
    c_file = path.parent / (path.name + ".c")
    c_file.write_text("\n".join([*src, *extra]) + "\n")
    subprocess.run(["gcc", "-c", "-O0", "-fno-pic", "-fno-asynchronous-unwind-tables", *cflags, "-o", str(path),
                    str(c_file)], check=True)
    c_file.unlink()
    return path


def empty_tree(dest: Path, release: str = "6.1.0-test") -> KernelTree:
    tree = KernelTree("synthetic", dest, release)
    tree.moddir.mkdir(parents=True)
    return tree


def depmod_warnings(stderr: str, kind: str) -> set[tuple[str, str]]:
    """(path, symbol) pairs from depmod's 'needs unknown symbol' warnings."""
    return set(re.findall(rf"depmod: WARNING: (\S+) {kind} (\S+)", stderr))


def fake_kernel_symbols(tree: KernelTree, dest: Path, skip: tuple[str, ...] = (), crc: str | None = None) -> Path:
    """Debian ships only a placeholder System.map, so pretend the kernel exports every
    symbol that binutils' nm lists as undefined in the tree's modules (minus skip):
    a System.map, or with crc a Module.symvers giving every symbol that CRC."""
    names: set[str] = set()
    for ko in tree.moddir.rglob("*.ko"):
        out = subprocess.run(["nm", "-u", str(ko)], capture_output=True, text=True, check=True).stdout
        names.update(line.split()[-1] for line in out.splitlines() if line.strip())
    names -= set(skip)
    if crc is None:
        dest.write_text("".join(f"ffffffff81000000 R __ksymtab_{n}\n" for n in sorted(names)))
    else:
        dest.write_text("".join(f"{crc}\t{n}\tvmlinux\tEXPORT_SYMBOL\t\n" for n in sorted(names)))
    return dest
