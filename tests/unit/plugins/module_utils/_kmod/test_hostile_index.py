# SPDX-License-Identifier: GPL-3.0-or-later
"""Corrupt and hostile indexes: every call ends, quickly, with an answer or IndexFormatError.

The corruptions are made on real depmod output (the 6.1 Debian tree) with a small parser
of the on-disk format written here, independent of the reader under test. A guard counts
the nodes the reader resolves, so a walk that loops fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import index as ix
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import IndexFormatError

PREFIX, VALUES, CHILDS, MASK = 0x80000000, 0x40000000, 0x20000000, 0x0FFFFFFF
HEADER = struct.pack(">II", 0xB007F457, 0x00020001)


class Runaway(BaseException):
    """Raised by the guard; a BaseException so that no `except Exception` in the engine eats it."""


class GuardedReader(ix.IndexReader):
    """Counts node resolutions per call. An honest walk enters each node once (a lookup at most
    a few times: once more per wildcard character in its key) and resolves at most its 128
    child slots, and every node it enters has been parsed, so the count stays below 4 * 130 *
    the nodes parsed so far. A walk that goes round in circles re-resolves parsed nodes without
    parsing new ones, crosses that line quickly and is stopped there instead of hanging."""

    resolved = 0

    def _resolve(self, ref):
        self.resolved += 1
        if self.resolved > 520 * (len(self._cache) + 2):
            raise Runaway(f"{self.resolved} node resolutions for {len(self._cache)} nodes parsed")
        return super()._resolve(ref)


def guarded(call, reader):
    """call(reader) with a fresh budget; the result, or None after an IndexFormatError."""
    reader.resolved = 0
    try:
        return call(reader)
    except IndexFormatError as e:
        assert reader.name in str(e)
        return None


def raw_node(data, word):
    """(prefix, [(position of child word, child char, child word)], position of value count) of a node."""
    off = word & MASK
    prefix = b""
    if word & PREFIX:
        end = data.index(b"\0", off)
        prefix, off = bytes(data[off:end]), end + 1
    kids = []
    if word & CHILDS:
        first, last = data[off], data[off + 1]
        for i in range(last - first + 1):
            pos = off + 2 + 4 * i
            child = struct.unpack_from(">I", data, pos)[0]
            if child:
                kids.append((pos, first + i, child))
        off += 2 + 4 * (last - first + 1)
    return prefix, kids, (off if word & VALUES else None)


def raw_walk(data):
    """(key, word, parent word, grandparent word) of every node, depth-first."""
    root = struct.unpack_from(">I", data, 8)[0]
    stack = [(b"", root, None, None)]
    while stack:
        path, word, parent, grand = stack.pop()
        prefix, kids, dummy = raw_node(data, word)
        key = path + prefix
        yield key, word, parent, grand
        for dummy, ch, child in kids:
            stack.append((key + bytes((ch,)), child, word, parent))


@pytest.fixture(scope="module")
def alias_bin(kernel_6_1):
    path = kernel_6_1.moddir / "modules.alias.bin"
    return str(path), path.read_bytes()


def wild_site(data):
    """A node inside a wildcard subtree that has children, and the search key that walks there."""
    for key, word, parent, grand in raw_walk(data):
        star = re.search(rb"[*?\[]", key)
        if star and raw_node(data, word)[1] and parent is not None and grand is not None:
            return key, word, parent, grand, key[:star.start()].decode()
    raise AssertionError("no wildcard alias with children in modules.alias.bin")


@pytest.mark.parametrize("target", ["self", "parent", "grandparent", "root"])
def test_loop_in_a_wildcard_subtree(alias_bin, target, tmp_path):
    """A child pointer patched back to an ancestor (the issue's one struct.pack_into)."""
    name, data = alias_bin
    data = bytearray(data)
    key, word, parent, grand, search_key = wild_site(data)
    pos = raw_node(data, word)[1][0][0]
    to = {"self": word, "parent": parent, "grandparent": grand,
          "root": struct.unpack_from(">I", data, 8)[0]}[target]
    struct.pack_into(">I", data, pos, to)
    path = tmp_path / "modules.alias.bin"
    path.write_bytes(bytes(data))
    reader = GuardedReader(bytes(data), str(path))
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + ".*reached twice"):
        list(reader.dump())
    reader.resolved = 0
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + ".*reached twice"):
        reader.search_wild(search_key)
    # the same through the loader
    with pytest.raises(IndexFormatError, match="reached twice"):
        list(ix.load_index(str(tmp_path), "modules.alias").dump())


def test_shared_child_is_refused(alias_bin):
    """Two pointers to one subtree: no loop, but a walk could double (or, chained, explode)."""
    name, data = alias_bin
    data = bytearray(data)
    for dummy, word, dummy2, dummy3 in raw_walk(data):
        kids = raw_node(data, word)[1]
        if len(kids) >= 2:
            struct.pack_into(">I", data, kids[1][0], kids[0][2])
            break
    reader = GuardedReader(bytes(data), name)
    with pytest.raises(IndexFormatError, match="reached twice"):
        list(reader.dump())


def chain(depth, ch=b"a"):
    """An index whose only key is ch * depth, one node per byte (each node one child ch)."""
    out = bytearray(HEADER + b"\0\0\0\0")  # the root word is filled in last
    out += struct.pack(">II", 1, 0) + b"v\0"  # the leaf at offset 12: one value "v", priority 0
    word = 12 | VALUES
    for dummy in range(depth):
        off = len(out)
        out += ch + ch + struct.pack(">I", word)
        word = off | CHILDS
    struct.pack_into(">I", out, 8, word)
    return bytes(out)


def test_deep_chain_within_bound_is_read():
    data = chain(ix.MAX_KEY)
    reader = GuardedReader(data, "deep.bin")
    assert list(reader.dump()) == [("a" * ix.MAX_KEY, "v")]
    assert reader.search("a" * ix.MAX_KEY) == "v"


def test_deep_chain_beyond_bound_is_refused():
    reader = GuardedReader(chain(ix.MAX_KEY + 50), "deep.bin")
    with pytest.raises(IndexFormatError, match="deep.bin.*(longer|deeper) than"):
        list(reader.dump())
    reader.resolved = 0
    # an exact lookup follows one path, as long as the key it is given
    assert reader.search("a" * (ix.MAX_KEY + 50)) == "v"
    # a chain of '*' is walked whole by any wildcard lookup
    reader = GuardedReader(chain(ix.MAX_KEY + 50, b"*"), "deep.bin")
    with pytest.raises(IndexFormatError, match="deep.bin.*(longer|deeper) than"):
        reader.search_wild("anything")


@pytest.mark.parametrize("where", ["beyond", "far beyond", "header", "odd flags"])
def test_child_offset_out_of_range(alias_bin, where):
    name, data = alias_bin
    data = bytearray(data)
    dummy, word, dummy2, dummy3, search_key = wild_site(data)
    pos = raw_node(data, word)[1][0][0]
    new = {"beyond": len(data) | CHILDS, "far beyond": MASK | PREFIX, "header": 4 | VALUES,
           "odd flags": 0x10000000 | (len(data) + 7)}[where]
    struct.pack_into(">I", data, pos, new)
    reader = GuardedReader(bytes(data), name)
    with pytest.raises(IndexFormatError, match=re.escape(name)):
        list(reader.dump())


def test_absurd_value_count(alias_bin):
    name, data = alias_bin
    data = bytearray(data)
    for dummy, word, dummy2, dummy3 in raw_walk(data):
        count_pos = raw_node(data, word)[2]
        if count_pos is not None:
            struct.pack_into(">I", data, count_pos, 0xFFFFFFFF)
            break
    reader = GuardedReader(bytes(data), name)
    with pytest.raises(IndexFormatError, match=re.escape(name) + ".*corrupt index node"):
        list(reader.dump())


def test_overlapping_nodes(alias_bin):
    """A child pointer into the middle of a node's bytes: parsed, but the parsed bytes no
    longer fit in the file once the walk goes on."""
    name, data = alias_bin
    data = bytearray(data)
    root = struct.unpack_from(">I", data, 8)[0]
    prefix, kids, dummy = raw_node(data, root)
    # every child of the root points at the root's own children table
    table = (root & MASK) + len(prefix)
    for pos, dummy2, dummy3 in kids:
        struct.pack_into(">I", data, pos, table | CHILDS)
    reader = GuardedReader(bytes(data), name)
    with pytest.raises(IndexFormatError, match=re.escape(name)):
        list(reader.dump())


@pytest.mark.parametrize("cut", [12, 13, 100, 0.5, -1, -7])
def test_truncated(alias_bin, cut):
    """depmod writes the root last, so any truncation loses it."""
    name, data = alias_bin
    end = int(len(data) * cut) if isinstance(cut, float) else cut if cut > 0 else len(data) + cut
    reader = GuardedReader(data[:end], name)
    with pytest.raises(IndexFormatError, match=re.escape(name)):
        list(reader.dump())


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink loop", "dev null"])
def test_non_regular_index_files(tmp_path, kind):
    """Neither blocks (a FIFO without writer) nor reads forever: a message naming the file."""
    for base in ("modules.alias.bin", "modules.dep"):
        moddir = tmp_path / kind.replace(" ", "_") / base
        moddir.mkdir(parents=True)
        path = moddir / base
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "directory":
            path.mkdir()
        elif kind == "symlink loop":
            path.symlink_to(base)
        else:
            path.symlink_to("/dev/null")
        name = base.replace(".bin", "")
        if kind == "symlink loop":
            # exists() is false for a loop: the source is missing, as for libkmod
            assert ix.load_index(str(moddir), name) is None
            continue
        with pytest.raises(IndexFormatError, match=re.escape(str(path)) + ": cannot read index"):
            ix.load_index(str(moddir), name)


def mutate(data, ops, words):
    data = bytearray(data)
    for op, pos, arg in ops:
        pos %= len(data) + 1
        if op == "flip":
            if pos < len(data):
                data[pos] ^= 1 << (arg % 8)
        elif op == "set":
            if pos < len(data):
                data[pos] = arg % 256
        elif op == "insert":
            data[pos:pos] = bytes((arg % 256,)) * (1 + arg % 7)
        elif op == "delete":
            del data[pos:pos + 1 + arg % 9]
        elif op == "word" and pos + 4 <= len(data):
            # a node word of the file: loops, shared children, overlapping nodes
            struct.pack_into(">I", data, pos, words[arg % len(words)])
    return bytes(data)


OPS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "word"]),
                         st.integers(0, 1 << 24), st.integers(0, 1 << 16)), min_size=1, max_size=6)


def node_words(data):
    return [word for dummy, word, dummy2, dummy3 in raw_walk(data)]


@pytest.fixture(scope="module")
def small_bins(kernel_6_1):
    out = {}
    for name in ("modules.builtin.alias.bin", "modules.builtin.bin"):
        data = (kernel_6_1.moddir / name).read_bytes()
        out[name] = (data, node_words(data), [k.decode() for k, dummy, dummy2, dummy3 in raw_walk(data)][:40])
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["modules.builtin.alias.bin", "modules.builtin.bin"]), ops=OPS,
       key=st.integers(0, 1000))
def test_fuzz_small_real_indexes(small_bins, which, ops, key):
    """Mutated real depmod output: dump, exact and wildcard lookups end with an answer or
    IndexFormatError, within the guard's budget."""
    data, words, keys = small_bins[which]
    bad = mutate(data, ops, words)
    try:
        reader = GuardedReader(bad, which)
    except IndexFormatError as e:
        assert which in str(e)
        return
    k = keys[key % len(keys)]
    guarded(lambda r: list(r.dump()), reader)
    guarded(lambda r: r.search(k), reader)
    guarded(lambda r: r.search_wild(k), reader)
    guarded(lambda r: r.search_wild(k[:3] + "*"), reader)


@pytest.fixture(scope="module")
def alias_words(alias_bin):
    return node_words(alias_bin[1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, key=st.sampled_from(["pci:v00008086d00001234sv00001028sd00000001bc02sc00i00",
                                     "acpi*:PNP0C09:*", "usb:v046Dp0001d0100dc00dsc00dp00ic03isc01ip02in00",
                                     "fs-ext4", "platform:serial8250"]))
def test_fuzz_alias_bin_lookups(alias_bin, alias_words, ops, key):
    """Lookups read nodes on demand, so a mutation anywhere in the big index is cheap to try."""
    name, data = alias_bin
    bad = mutate(data, ops, alias_words)
    try:
        reader = GuardedReader(bad, name)
    except IndexFormatError:
        return
    guarded(lambda r: r.search_wild(key), reader)
    guarded(lambda r: r.search(key), reader)


TEXT_NAMES = ("modules.dep", "modules.alias", "modules.symbols", "modules.builtin", "modules.builtin.modinfo")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.fixed_dictionaries({n: st.binary(max_size=400) | st.text(
    alphabet=st.sampled_from(list("ab*?[]-_:. \t\n\0=/\\") + ["\udcff", "é"]), max_size=400)
    for n in TEXT_NAMES}),
    long_key=st.integers(0, 2))
def test_fuzz_text_fallback(tmp_path_factory, texts, long_key):
    """Garbage modules.dep, modules.alias, ... without .bin files: answers or IndexFormatError."""
    moddir = tmp_path_factory.mktemp("text")
    for name, body in texts.items():
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogateescape")
        if name == "modules.alias" and long_key:
            body += b"\nalias " + b"x" * (ix.MAX_KEY + long_key) + b" longmod\n"
        (moddir / name).write_bytes(body)
    for name in ix.INDEX_NAMES:
        try:
            idx = ix.load_index(str(moddir), name)
            pairs = list(idx.dump())
            for key, dummy in pairs[:5]:
                idx.search(key)
                idx.search_wild(key)
            idx.search_wild("x*")
        except IndexFormatError as e:
            assert str(moddir) in str(e)
            assert long_key and name == "modules.alias", e
