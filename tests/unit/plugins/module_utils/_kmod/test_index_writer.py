# SPDX-License-Identifier: GPL-3.0-or-later
"""IndexBuilder against the .bin files the real depmod wrote for real kernels."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import IndexFormatError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.hashtable import iteration_order
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.index_writer import IndexBuilder
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.names import alias_normalize, modname_from_path


def text_lines(tree, name):
    return (tree.moddir / name).read_bytes().splitlines()


def module_order(tree):
    return {modname_from_path(line.split(b":")[0].decode()): i for i, line in enumerate(text_lines(tree, "modules.dep"))}


def test_dep_alias_symbols_bin_from_depmods_text_files(kernel_tree):
    """Feeding the text indexes back in array order (priority = line of modules.dep) gives
    depmod's tries, including its ordering of values under one key."""
    idx = module_order(kernel_tree)
    dep, alias, symbols = IndexBuilder(), IndexBuilder(), IndexBuilder()
    for line in text_lines(kernel_tree, "modules.dep"):
        name = modname_from_path(line.split(b":")[0].decode())
        dep.insert(name.encode(), line, idx[name])
    for line in text_lines(kernel_tree, "modules.alias")[1:]:
        value, mod = line.split(b" ")[1:]
        alias.insert(alias_normalize(value.decode()).encode(), mod, idx[mod.decode()])
    for line in text_lines(kernel_tree, "modules.symbols")[1:]:
        key, mod = line.split(b" ")[1:]
        symbols.insert(key, mod, idx[mod.decode()])
    assert dep.to_bytes() == (kernel_tree.moddir / "modules.dep.bin").read_bytes()
    assert alias.to_bytes() == (kernel_tree.moddir / "modules.alias.bin").read_bytes()
    assert symbols.to_bytes() == (kernel_tree.moddir / "modules.symbols.bin").read_bytes()


def test_symbols_file_is_in_hash_iteration_order(kernel_tree):
    keys = [line.split(b" ")[1][len(b"symbol:"):] for line in text_lines(kernel_tree, "modules.symbols")[1:]]
    assert iteration_order(keys, 2048) == keys


def test_empty_index_matches_depmod(tmp_path):
    """An empty tree: depmod's modules.dep.bin is a bare header."""
    moddir = tmp_path / "lib/modules/1.2.3"
    moddir.mkdir(parents=True)
    subprocess.run(["depmod", "-b", str(tmp_path), "-C", str(tmp_path / "none"), "1.2.3"], check=True)
    assert IndexBuilder().to_bytes() == (moddir / "modules.dep.bin").read_bytes()


def test_values_priority_and_duplicates():
    index = IndexBuilder()
    assert not index.insert(b"k", b"b", 5)
    assert not index.insert(b"k", b"a", 1)
    assert not index.insert(b"k", b"c", 5)
    assert index.insert(b"k", b"a", 9)
    assert len(index) == 1
    # ascending priority, the later of equal priorities first, duplicates kept (index_add_value)
    values = b"\x00\x00\x00\x04" + b"\x00\x00\x00\x01a\x00" + b"\x00\x00\x00\x05c\x00"
    values += b"\x00\x00\x00\x05b\x00" + b"\x00\x00\x00\x09a\x00"
    assert values in index.to_bytes()


def test_non_ascii_key_is_refused():
    with pytest.raises(IndexFormatError, match="7-bit"):
        IndexBuilder().insert("caf\u00e9".encode(), b"x", 0)
