# SPDX-License-Identifier: GPL-3.0-or-later
"""Readers for depmod's indexes: the modules.*.bin Patricia tries (libkmod-index.c) and,
when a .bin file is missing, the text files it was built from, loaded into the same
trie shape so that both give identical answers in identical order."""

from __future__ import annotations

import mmap
import os
import struct
import typing as t

from .errors import IndexFormatError
from .names import alias_normalize, fnmatch, modname_from_path

INDEX_MAGIC = 0xB007F457
INDEX_VERSION_MAJOR = 2
_NODE_PREFIX = 0x80000000
_NODE_VALUES = 0x40000000
_NODE_CHILDS = 0x20000000
_NODE_MASK = 0x0FFFFFFF
_WILDCARDS = (ord("*"), ord("?"), ord("["))

_u32 = struct.Struct(">I")


class _Node(t.NamedTuple):
    prefix: bytes
    first: int
    last: int
    children: tuple[t.Any, ...]  # offset words (.bin) or _TextNode/None (text), first..last
    values: tuple[tuple[int, bytes], ...]  # (priority, value), ascending priority


def _add_value(out: list[tuple[int, bytes]], priority: int, value: bytes) -> None:
    """libkmod's add_value: insert before the first entry with priority >= new (LIFO ties)."""
    pos = 0
    while pos < len(out) and out[pos][0] < priority:
        pos += 1
    out.insert(pos, (priority, value))


class _Trie:
    """Search algorithms of libkmod-index.c over nodes supplied by a subclass."""

    name: str

    def _root(self) -> _Node | None:
        raise NotImplementedError

    def _child(self, node: _Node, ch: int) -> _Node | None:
        if node.first <= ch <= node.last:
            return self._resolve(node.children[ch - node.first])
        return None

    def _resolve(self, ref: t.Any) -> _Node | None:
        raise NotImplementedError

    def search(self, key: str) -> str | None:
        """Exact lookup: the first (lowest-priority) value stored under key."""
        k = _encode(key)
        node = self._root()
        i = 0
        while node is not None:
            plen = len(node.prefix)
            if k[i:i + plen] != node.prefix:
                return None
            i += plen
            if i == len(k):
                return _decode(node.values[0][1]) if node.values else None
            node = self._child(node, k[i])
            i += 1
        return None

    def search_wild(self, key: str) -> list[str]:
        """Every value whose stored fnmatch pattern matches key, in libkmod order."""
        return [_decode(item[1]) for item in self.search_wild_values(key)]

    def search_wild_values(self, key: str) -> list[tuple[int, bytes]]:
        k = _encode(key)
        out: list[tuple[int, bytes]] = []
        node = self._root()
        i = 0
        while node is not None:
            for j, ch in enumerate(node.prefix):
                if ch in _WILDCARDS:
                    self._wild_all(node, j, bytearray(), k[i + j:], out)
                    return out
                if i + j >= len(k) or ch != k[i + j]:
                    return out
            i += len(node.prefix)
            for wc in _WILDCARDS:
                child = self._child(node, wc)
                if child is not None:
                    self._wild_all(child, 0, bytearray((wc,)), k[i:], out)
            if i == len(k):
                for prio, value in node.values:
                    _add_value(out, prio, value)
                return out
            node = self._child(node, k[i])
            i += 1
        return out

    def _wild_all(self, node: _Node, j: int, buf: bytearray, subkey: bytes,
                  out: list[tuple[int, bytes]]) -> None:
        pushed = len(node.prefix) - j
        buf += node.prefix[j:]
        for ch in range(node.first, node.last + 1):
            child = self._resolve(node.children[ch - node.first])
            if child is not None:
                buf.append(ch)
                self._wild_all(child, 0, buf, subkey, out)
                del buf[-1]
        if node.values and fnmatch(_decode(bytes(buf)), _decode(subkey)):
            for prio, value in node.values:
                _add_value(out, prio, value)
        if pushed:
            del buf[-pushed:]

    def dump(self) -> t.Iterator[tuple[str, str]]:
        """(key, value) pairs depth-first in ascending byte order, as index_mm_dump."""
        root = self._root()
        if root is None:
            return
        stack: list[tuple[_Node, bytes]] = [(root, b"")]
        while stack:
            node, path = stack.pop()
            key = path + node.prefix
            for item in node.values:
                yield _decode(key), _decode(item[1])
            for ch in range(node.last, node.first - 1, -1):
                child = self._resolve(node.children[ch - node.first])
                if child is not None:
                    stack.append((child, key + bytes((ch,))))


def _encode(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class IndexReader(_Trie):
    """A modules.*.bin file held in memory (or mmapped): header check, lazy node parsing."""

    def __init__(self, data: bytes | mmap.mmap, name: str = "<index>") -> None:
        self.name = name
        self._data = data
        self._cache: dict[int, _Node | None] = {}
        if len(data) == 0:
            # depmod publishes 0-byte builtin indexes when their source is missing;
            # libkmod then finds nothing in them.
            self._root_word = 0
            return
        if len(data) < 12:
            raise IndexFormatError(f"{name}: truncated index header ({len(data)} bytes)", path=name)
        magic, version, root = struct.unpack_from(">III", data, 0)
        if magic != INDEX_MAGIC:
            raise IndexFormatError(
                f"{name}: not a kmod index (magic 0x{magic:08X}, expected 0x{INDEX_MAGIC:08X})",
                path=name)
        if version >> 16 != INDEX_VERSION_MAJOR:
            raise IndexFormatError(
                f"{name}: unsupported index version {version >> 16} (expected {INDEX_VERSION_MAJOR})",
                path=name)
        self._root_word = root

    @classmethod
    def open(cls, path: str) -> "IndexReader":
        """mmap path; IndexFormatError (naming the file) if it is unreadable or malformed."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                data: bytes | mmap.mmap = (
                    mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b"")
        except OSError as e:
            raise IndexFormatError(f"{path}: cannot read index: {e.strerror}", path=path) from e
        return cls(data, path)

    def _root(self) -> _Node | None:
        return self._resolve(self._root_word)

    def _resolve(self, ref: int) -> _Node | None:
        try:
            return self._cache[ref]
        except KeyError:
            pass
        node = self._read_node(ref)
        self._cache[ref] = node
        return node

    def _read_node(self, word: int) -> _Node | None:
        off = word & _NODE_MASK
        if off == 0:
            return None
        data = self._data
        if off >= len(data):
            if word == off:
                # An empty index (depmod on a tree without modules) is a bare header
                # whose root word points just past it: nothing to find, as in libkmod.
                return None
            raise IndexFormatError(f"{self.name}: node offset {off} beyond end of file", path=self.name)
        try:
            prefix = b""
            if word & _NODE_PREFIX:
                end = data.find(b"\0", off)
                if end < 0:
                    raise IndexError(off)
                prefix = bytes(data[off:end])
                off = end + 1
            first, last, children = 128, 0, ()
            if word & _NODE_CHILDS:
                first, last = data[off], data[off + 1]
                if first > last or last >= 128:
                    raise IndexError(off)
                n = last - first + 1
                children = struct.unpack_from(f">{n}I", data, off + 2)
                off += 2 + 4 * n
            values: list[tuple[int, bytes]] = []
            if word & _NODE_VALUES:
                (count,) = _u32.unpack_from(data, off)
                off += 4
                for dummy in range(count):
                    (prio,) = _u32.unpack_from(data, off)
                    end = data.find(b"\0", off + 4)
                    if end < 0:
                        raise IndexError(off)
                    values.append((prio, bytes(data[off + 4:end])))
                    off = end + 1
        except (IndexError, struct.error) as e:
            raise IndexFormatError(f"{self.name}: corrupt index node at offset {word & _NODE_MASK}",
                                   path=self.name) from e
        return _Node(prefix, first, last, children, tuple(values))


class _TextNode:
    __slots__ = ("prefix", "children", "values")

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.children: dict[int, _TextNode] = {}
        self.values: list[tuple[int, bytes]] = []


class TextIndex(_Trie):
    """The trie depmod would have written, built in memory from (key, value, priority)
    entries in depmod's insertion order (tools/depmod.c index_insert)."""

    def __init__(self, entries: t.Iterable[tuple[str, str, int]], name: str) -> None:
        self.name = name
        self._top = _TextNode(b"")
        self._nodes: dict[int, _Node] = {}
        for key, value, prio in entries:
            self._insert(_encode(key), _encode(value), prio)

    def _insert(self, key: bytes, value: bytes, prio: int) -> None:
        node = self._top
        i = 0
        while True:
            prefix = node.prefix
            j = 0
            while j < len(prefix) and i + j < len(key) and prefix[j] == key[i + j]:
                j += 1
            if j < len(prefix):
                # split: the tail of the prefix moves into a new child
                tail = _TextNode(prefix[j + 1:])
                tail.children, tail.values = node.children, node.values
                node.prefix, node.children, node.values = prefix[:j], {prefix[j]: tail}, []
            i += j
            if i == len(key):
                _add_value(node.values, prio, value)
                return
            child = node.children.get(key[i])
            if child is None:
                child = node.children[key[i]] = _TextNode(key[i + 1:])
                _add_value(child.values, prio, value)
                return
            node = child
            i += 1

    def _root(self) -> _Node | None:
        return self._resolve(self._top)

    def _resolve(self, ref: _TextNode | None) -> _Node | None:
        if ref is None:
            return None
        node = self._nodes.get(id(ref))
        if node is None:
            kids = ref.children
            first, last = (min(kids), max(kids)) if kids else (128, 0)
            children = tuple(kids.get(c) for c in range(first, last + 1))
            node = self._nodes[id(ref)] = _Node(ref.prefix, first, last, children, tuple(ref.values))
        return node


Index = t.Union[IndexReader, TextIndex]

# The indexes libkmod uses, by the name of their .bin file without the extension.
INDEX_NAMES = ("modules.dep", "modules.alias", "modules.symbols", "modules.builtin.alias",
               "modules.builtin")


def _text_lines(path: str) -> list[str]:
    with open(path, "rb") as f:
        return _decode(f.read()).split("\n")


def _dep_entries(moddir: str) -> list[tuple[str, str, int]]:
    entries = []
    for line in _text_lines(os.path.join(moddir, "modules.dep")):
        path, sep = line.partition(":")[:2]
        if sep:
            entries.append((modname_from_path(path), line, len(entries)))
    return entries


def _alias_entries(path: str, keyword: str, module_idx: dict[str, int],
                   normalize: bool) -> list[tuple[str, str, int]]:
    entries = []
    for line in _text_lines(path):
        fields = line.split()
        if len(fields) < 3 or fields[0] != keyword:
            continue
        key, modname = fields[1], fields[2]
        if normalize:
            try:
                key = alias_normalize(key)
            except ValueError:
                continue  # depmod leaves such aliases out of the .bin as well
        prio = module_idx.setdefault(modname, len(module_idx))
        entries.append((key, modname, prio))
    return entries


def _builtin_entries(moddir: str) -> list[tuple[str, str, int]]:
    return [(modname_from_path(line), "", 0)
            for line in _text_lines(os.path.join(moddir, "modules.builtin"))
            if line[:1].isalpha()]


def _builtin_alias_entries(moddir: str) -> list[tuple[str, str, int]]:
    with open(os.path.join(moddir, "modules.builtin.modinfo"), "rb") as f:
        records = _decode(f.read()).split("\0")
    entries = []
    for rec in records:
        head, sep, value = rec.partition("=")
        modname, dot, field = head.partition(".")
        if sep and dot and field == "alias":
            try:
                entries.append((alias_normalize(value), modname, 0))
            except ValueError:
                continue
    return entries


def load_index(moddir: str, name: str) -> Index | None:
    """Open moddir/NAME.bin like libkmod; without it, build the same trie from the text file.

    name is one of INDEX_NAMES. Returns None when neither file exists (libkmod's
    -ENOSYS: the lookup source is skipped).
    """
    bin_path = os.path.join(moddir, name + ".bin")
    if os.path.exists(bin_path):
        return IndexReader.open(bin_path)
    text_name = "modules.builtin.modinfo" if name == "modules.builtin.alias" else name
    text_path = os.path.join(moddir, text_name)
    if not os.path.exists(text_path):
        return None
    try:
        if name == "modules.dep":
            entries = _dep_entries(moddir)
        elif name == "modules.builtin":
            entries = _builtin_entries(moddir)
        elif name == "modules.builtin.alias":
            entries = _builtin_alias_entries(moddir)
        else:
            # Priority is the owner's position in modules.dep (depmod's mod->idx).
            order: dict[str, int] = {}
            if os.path.exists(os.path.join(moddir, "modules.dep")):
                order = {entry[0]: entry[2] for entry in _dep_entries(moddir)}
            entries = _alias_entries(text_path, "alias", order, name == "modules.alias")
    except OSError as e:
        raise IndexFormatError(f"{text_path}: cannot read index: {e.strerror}", path=text_path) from e
    return TextIndex(entries, text_path)
