# SPDX-License-Identifier: GPL-3.0-or-later
"""IndexReader/TextIndex against kmod: `modprobe -c` dumps, `modprobe -R` lookups, depmod's text files."""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import index as ix
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import IndexFormatError

import kmod_oracle

TEXT_FILES = ("modules.dep", "modules.alias", "modules.symbols", "modules.builtin",
              "modules.builtin.modinfo", "modules.softdep")


def concrete(pattern: str) -> str:
    """A string the fnmatch pattern matches: '*' -> '', '?' -> '0', '[..]' -> its first member."""
    pattern = re.sub(r"\[!?\^?(.)[^\]]*\]", r"\1", pattern)
    return pattern.replace("*", "").replace("?", "0")


def alias_sample(moddir, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = [ln.split()[1] for ln in (moddir / "modules.alias").read_text().splitlines()
             if ln.startswith("alias ")]
    picked = rng.sample(lines, n)
    # The alias families named explicitly, whatever the sample holds.
    for family in ("pci:v", "fs-", "net-pf-", "devname:", "char-major-", "usb:v", "acpi*:"):
        picked += [a for a in lines if a.startswith(family)][:3]
    return [concrete(a) for a in picked]


@pytest.mark.parametrize("data, what", [
    (b"\x00\x00\x00", "truncated"),
    (struct.pack(">III", 0xB007FA57, 0x00020001, 12), "magic"),
    (struct.pack(">III", 0xB007F457, 0x00030001, 12), "version"),
    (struct.pack(">III", 0xB007F457, 0x00020001, 0x80000040), "beyond end"),
    (struct.pack(">III", 0xB007F457, 0x00020001, 0x2000000C) + b"\x05\x01", "corrupt"),
])
def test_bad_index_names_file(tmp_path, data, what):
    path = tmp_path / "modules.alias.bin"
    path.write_bytes(data)
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + ".*" + what):
        ix.IndexReader.open(str(path)).search_wild("x")


def test_empty_index_finds_nothing(tmp_path):
    path = tmp_path / "modules.builtin.bin"
    path.write_bytes(b"")
    idx = ix.IndexReader.open(str(path))
    assert idx.search("x") is None and idx.search_wild("x") == [] and list(idx.dump()) == []


def test_indexes_of_a_tree_without_modules(tmp_path):
    # The real depmod writes bare 12-byte headers for a tree that holds no module.
    moddir = tmp_path / "lib/modules/9.9.9"
    moddir.mkdir(parents=True)
    subprocess.run(["depmod", "-b", str(tmp_path), "9.9.9"], check=True, capture_output=True)
    for name in ("modules.dep", "modules.alias", "modules.symbols"):
        assert (moddir / f"{name}.bin").stat().st_size == 12
        idx = ix.load_index(str(moddir), name)
        assert idx.search("dummy") is None and idx.search_wild("dummy") == [] and list(idx.dump()) == []


def test_missing_index_is_none(tmp_path):
    assert ix.load_index(str(tmp_path), "modules.alias") is None


def test_dump_equals_modprobe_c(kernel_tree):
    """`modprobe -c` dumps modules.alias.bin then modules.symbols.bin after its config."""
    dummy, [(rc, out, err)] = kmod_oracle.run_modprobe(kernel_tree.root, kernel_tree.release,
                                                       [["-c"]], [])
    assert rc == 0, err
    dumped = out.split("# End of configuration files. Dumping indexes now:\n\n", 1)[1]
    ours = [f"alias {k} {v}" for name in ("modules.alias", "modules.symbols")
            for k, v in ix.load_index(str(kernel_tree.moddir), name).dump()]
    assert dumped.splitlines() == ours


def test_dep_search_equals_depmod_text(kernel_tree):
    """modules.dep.bin holds exactly the modules.dep lines depmod wrote, keyed by modname."""
    idx = ix.load_index(str(kernel_tree.moddir), "modules.dep")
    lines = (kernel_tree.moddir / "modules.dep").read_text().splitlines()
    for line in lines:
        name = line.split(":")[0].rsplit("/", 1)[-1].split(".")[0].replace("-", "_")
        assert idx.search(name) == line
    assert idx.search("no_such_module") is None
    assert idx.search(lines[0].split(":")[0]) is None


def test_builtin_search(kernel_tree):
    idx = ix.load_index(str(kernel_tree.moddir), "modules.builtin")
    names = [ln.rsplit("/", 1)[-1].split(".")[0].replace("-", "_")
             for ln in (kernel_tree.moddir / "modules.builtin").read_text().splitlines()]
    assert names and all(idx.search(n) == "" for n in names)
    assert idx.search("ext4") is None


def test_search_wild_equals_modprobe_resolve_alias(kernel_tree):
    """modprobe -R prints the modules.alias.bin matches in libkmod's order (no config)."""
    queries = alias_sample(kernel_tree.moddir, 150, seed=3)
    dummy, results = kmod_oracle.run_modprobe(kernel_tree.root, kernel_tree.release,
                                              [["-R", q] for q in queries], [])
    idx = ix.load_index(str(kernel_tree.moddir), "modules.alias")
    dep = ix.load_index(str(kernel_tree.moddir), "modules.dep")
    checked = 0
    for q, (rc, out, dummy) in zip(queries, results):
        if ":" not in q and dep.search(q.replace("-", "_")) is not None:
            continue  # a module name wins over aliases
        assert rc == 0, q
        assert idx.search_wild(ix.alias_normalize(q)) == out.split(), q
        checked += 1
    assert checked > 100


def test_symbols_wild_equals_modprobe_resolve_alias(kernel_tree):
    lines = (kernel_tree.moddir / "modules.symbols").read_text().splitlines()[1:]
    queries = [ln.split()[1] for ln in random.Random(5).sample(lines, 40)]
    dummy, results = kmod_oracle.run_modprobe(kernel_tree.root, kernel_tree.release,
                                              [["-R", q] for q in queries], [])
    idx = ix.load_index(str(kernel_tree.moddir), "modules.symbols")
    for q, (rc, out, dummy) in zip(queries, results):
        assert rc == 0 and idx.search_wild(q) == out.split(), q


def test_text_fallback_equals_bin(kernel_tree, tmp_path):
    """Without .bin files the text files give the same answers in the same order."""
    for name in TEXT_FILES:
        shutil.copy(kernel_tree.moddir / name, tmp_path / name)
    bins = {n: ix.load_index(str(kernel_tree.moddir), n) for n in ix.INDEX_NAMES}
    texts = {n: ix.load_index(str(tmp_path), n) for n in ix.INDEX_NAMES}
    assert all(isinstance(v, ix.TextIndex) for v in texts.values())
    for name in ix.INDEX_NAMES:
        assert list(texts[name].dump()) == list(bins[name].dump()), name
    for q in alias_sample(kernel_tree.moddir, 200, seed=9):
        q = ix.alias_normalize(q)
        assert texts["modules.alias"].search_wild_values(q) == bins["modules.alias"].search_wild_values(q)
    builtin_aliases = list(dict(bins["modules.builtin.alias"].dump()))
    for q in builtin_aliases:
        assert texts["modules.builtin.alias"].search_wild(q) == bins["modules.builtin.alias"].search_wild(q)
    for line in (kernel_tree.moddir / "modules.symbols").read_text().splitlines()[1:200]:
        q = line.split()[1]
        assert texts["modules.symbols"].search_wild_values(q) == bins["modules.symbols"].search_wild_values(q)


def test_wildcard_order_and_duplicates():
    """Ascending priority, LIFO among equal priorities, duplicates kept (libkmod add_value)."""
    idx = ix.TextIndex([("a*", "one", 5), ("a?", "two", 1), ("ab", "three", 5), ("a*", "one", 5),
                        ("[ab]b", "four", 5)], "t")
    # Discovery order: root's '[' subtree (four), then under 'a' its '*' (one, one) and
    # '?' (two) subtrees, then the exact node (three); equal priorities come out LIFO.
    assert idx.search_wild("ab") == ["two", "three", "one", "one", "four"]
    assert idx.search("ab") == "three"
    assert idx.search("a") is None
