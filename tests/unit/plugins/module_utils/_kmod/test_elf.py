# SPDX-License-Identifier: GPL-3.0-or-later
"""elf.py against kmod's modinfo/modprobe, binutils' nm and the real depmod's indexes."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.elf import parse_module
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import ElfFormatError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.file import read_module_bytes

# modinfo appends these after the .modinfo strings, and merges parm/parmtype.
NOT_IN_SECTION = {"filename", "parm", "parmtype", "sig_id", "signer", "sig_key", "sig_hashalgo", "signature"}


def sample(tree, count=25):
    mods = sorted(p for p in tree.moddir.rglob("*.ko*"))
    step = max(1, len(mods) // count)
    return mods[::step]


def symbol_owners(tree):
    owners = {}
    for line in (tree.moddir / "modules.symbols").read_text().splitlines()[1:]:
        sym, owner = line.split(" ")[1:]
        owners[sym[len("symbol:"):]] = owner
    return owners


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def parsed(request):
    from kernels import pristine_root
    tree = pristine_root(request.param)
    return tree, [(path, parse_module(read_module_bytes(str(path))[0], str(path))) for path in sample(tree)]


def test_modinfo_matches_kmod_modinfo(parsed):
    mods = parsed[1]
    for path, elf in mods:
        records = run("modinfo", "-0", str(path)).split("\0")
        expected = [tuple(r.split("=", 1)) if "=" in r else (r, "") for r in records if r]
        # filename: and parm: keep modinfo's "%-16s" layout even with -0
        expected = [kv for kv in expected if kv[0] not in NOT_IN_SECTION and not kv[0].startswith(("filename:", "parm:"))]
        assert [kv for kv in elf.modinfo if kv[0] not in ("parm", "parmtype")] == expected, path


def test_this_module_name_and_vermagic(parsed):
    tree, mods = parsed
    for path, elf in mods:
        assert elf.this_module_name == run("modinfo", "-F", "name", str(path)).strip(), path
        assert elf.vermagic.startswith(tree.release + " ")


def test_undefined_symbols_match_nm_and_modversions(parsed):
    mods = parsed[1]
    for path, elf in mods:
        plain = path
        if path.suffix == ".xz":  # nm cannot read compressed modules
            plain = path.with_name(path.stem)
            plain = plain if plain.exists() else None
        versions = [(line.split("\t")[1], int(line.split("\t")[0], 16))
                    for line in run("modprobe", "--dump-modversions", str(path)).splitlines()]
        assert elf.versions() == versions, path
        undefined = elf.undefined()
        crcs = dict(reversed(versions))
        for name, crc, _weak in undefined:
            assert crc == crcs.get(name, 0)
        if plain is not None:
            nm = [line.split() for line in run("nm", "-u", "-p", str(plain)).splitlines()]
            assert [(n, c == "w") for c, n in nm] == [(n, w) for n, _crc, w in undefined[:len(nm)]], path


def module_paths(tree):
    paths = {}
    for line in (tree.moddir / "modules.dep").read_text().splitlines():
        path = line.split(":", 1)[0]
        paths[path.rsplit("/", 1)[-1].split(".", 1)[0].replace("-", "_")] = tree.moddir / path
    return paths


def test_exports_match_depmod_and_consumer_crcs(parsed):
    """Each symbol the real depmod assigns to a module is among its exports, and the
    export CRCs equal the CRCs its users recorded in __versions."""
    tree, mods = parsed
    owners = symbol_owners(tree)
    paths = module_paths(tree)
    exports: dict[str, dict[str, int]] = {}
    checked = 0
    for path, elf in mods:
        for sym, crc in elf.versions():
            owner = owners.get(sym)
            if owner is None:
                continue  # exported by vmlinux
            if owner not in exports:
                exports[owner] = dict(parse_module(read_module_bytes(str(paths[owner]))[0]).exports())
                assert {s for s, o in owners.items() if o == owner} <= exports[owner].keys(), owner
            assert exports[owner][sym] == crc, (path, sym)
            checked += 1
    assert checked > 10


@pytest.mark.parametrize("data, message", [
    (b"", "not an ELF"),
    (b"garbage" * 10, "not an ELF"),
    (b"\x7fELF\x03\x01" + b"\0" * 100, "class"),
    (b"\x7fELF\x02\x01" + b"\0" * 20, "truncated"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 100, "section header size"),
])
def test_bad_elf(data, message):
    with pytest.raises(ElfFormatError, match=message) as info:
        parse_module(data, "/x/bad.ko")
    assert "/x/bad.ko" in info.value.msg


def test_truncated_module(kernel_6_1):
    path = next(kernel_6_1.moddir.glob("kernel/fs/fat/fat.ko"))
    data = path.read_bytes()
    with pytest.raises(ElfFormatError, match="too short"):
        parse_module(data[: len(data) // 2], str(path))
