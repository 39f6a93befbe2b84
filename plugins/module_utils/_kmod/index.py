# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Readers for depmod's indexes: the modules.*.bin Patricia tries (libkmod-index.c) and,
when a .bin file is missing, the text files it was built from, loaded into the same
trie shape so that both give identical answers in identical order."""

from __future__ import annotations

import mmap
import os
import stat
import struct
import typing as t

from .errors import IndexFormatError
from .names import alias_normalize, fnmatch, modname_from_path
from .paths import open_file

INDEX_MAGIC = 0xB007F457
INDEX_VERSION_MAJOR = 2
_NODE_PREFIX = 0x80000000
_NODE_VALUES = 0x40000000
_NODE_CHILDS = 0x20000000
_NODE_MASK = 0x0FFFFFFF
_WILDCARDS = (ord("*"), ord("?"), ord("["))
_HEADER_SIZE = 12
# depmod never writes a key of PATH_MAX bytes or more (its alias_normalize and libkmod's
# lookups use PATH_MAX buffers): a longer key, or a deeper path (each level adds a byte),
# is corruption. Real indexes stay below 100 bytes and 25 levels.
MAX_KEY = 4096
MAX_DEPTH = MAX_KEY + 1  # the root, then a node per byte at most

_u32 = struct.Struct(">I")


class _Node(t.NamedTuple):
    ident: t.Any  # what makes the node itself (file offset / object id): a walk meets it once
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
        # In a tree the wildcard subtrees hung off the path of key are disjoint, so one
        # walk meets each node once, until the path itself enters a wildcard child.
        seen: set[t.Any] = set()
        i = 0
        while node is not None:
            for j, ch in enumerate(node.prefix):
                if ch in _WILDCARDS:
                    self._wild_all(node, j, bytearray(), k[i + j:], out, seen)
                    return out
                if i + j >= len(k) or ch != k[i + j]:
                    return out
            i += len(node.prefix)
            for wc in _WILDCARDS:
                child = self._child(node, wc)
                if child is not None:
                    self._wild_all(child, 0, bytearray((wc,)), k[i:], out, seen)
            if i == len(k):
                for prio, value in node.values:
                    _add_value(out, prio, value)
                return out
            if k[i] in _WILDCARDS:
                seen = set()
            node = self._child(node, k[i])
            i += 1
        return out

    def _wild_all(self, top: _Node, j: int, buf: bytearray, subkey: bytes,
                  out: list[tuple[int, bytes]], seen: set[t.Any]) -> None:
        """index_mm_searchwild_all: every value below top whose key matches subkey (post-order)."""
        string = _decode(subkey)
        for node, entering in self._walk(top, j, buf, seen, True):
            if not entering and node.values and fnmatch(_decode(bytes(buf)), string):
                for prio, value in node.values:
                    _add_value(out, prio, value)

    def _walk(self, top: _Node, j: int, buf: bytearray, seen: set[t.Any],
              post: bool = False) -> t.Iterator[tuple[_Node, bool]]:
        """Depth-first walk of top's subtree, children in ascending byte order.

        Yields (node, True) on entering a node and, if post, (node, False) after its
        children; buf holds the node's key (from top's prefix[j:] on) at both. Iterative, and
        each node is met once: a node reached twice (a cycle or a shared child), a key
        longer than MAX_KEY or a path deeper than MAX_DEPTH is an IndexFormatError.
        """
        self._visit(top, seen, len(buf) + len(top.prefix) - j)
        base = len(buf)
        buf += top.prefix[j:]
        # frames: [node, next child byte, length of buf before the node's own bytes]
        stack: list[list[t.Any]] = [[top, top.first, base]]
        yield top, True
        while stack:
            frame = stack[-1]
            node, ch = frame[0], frame[1]
            child = None
            while ch <= node.last and child is None:
                child = self._resolve(node.children[ch - node.first])
                ch += 1
            frame[1] = ch
            if child is not None:
                if len(stack) >= MAX_DEPTH:
                    raise self._corrupt(f"index deeper than {MAX_DEPTH} levels")
                self._visit(child, seen, len(buf) + 1 + len(child.prefix))
                stack.append([child, child.first, len(buf)])
                buf.append(ch - 1)
                buf += child.prefix
                yield child, True
                continue
            if post:
                yield node, False
            del buf[frame[2]:]
            stack.pop()

    def _visit(self, node: _Node, seen: set[t.Any], keylen: int) -> None:
        if node.ident in seen:
            raise self._corrupt(f"the node at offset {node.ident} is reached twice (a loop)")
        if keylen > MAX_KEY:
            raise self._corrupt(f"index key longer than {MAX_KEY} bytes")
        seen.add(node.ident)

    def _corrupt(self, what: str) -> IndexFormatError:
        return IndexFormatError(f"{self.name}: corrupt index: {what}", path=self.name)

    def dump(self) -> t.Iterator[tuple[str, str]]:
        """(key, value) pairs depth-first in ascending byte order, as index_mm_dump."""
        root = self._root()
        if root is None:
            return
        buf = bytearray()
        for node, entering in self._walk(root, 0, buf, set()):
            if entering and node.values:
                key = _decode(bytes(buf))
                for item in node.values:
                    yield key, _decode(item[1])


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
        # Bytes taken by the nodes parsed so far. depmod writes every node once, side by
        # side, so they never add up to more than the file: more means nodes overlap, and
        # stopping there keeps the parsing work linear in the file's size.
        self._parsed = 0
        if len(data) == 0:
            # depmod publishes 0-byte builtin indexes when their source is missing;
            # libkmod then finds nothing in them.
            self._root_word = 0
            return
        if len(data) < _HEADER_SIZE:
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
            fd = _open_regular(path)
            try:
                size = os.fstat(fd).st_size
                data: bytes | mmap.mmap = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else b""
            finally:
                os.close(fd)
        except (OSError, ValueError) as e:
            raise IndexFormatError(f"{path}: cannot read index: {_why(e)}", path=path) from e
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
        off = start = word & _NODE_MASK
        if off == 0:
            return None
        data = self._data
        size = len(data)
        if off >= size:
            if word == off:
                # An empty index (depmod on a tree without modules) is a bare header
                # whose root word points just past it: nothing to find, as in libkmod.
                return None
            raise IndexFormatError(f"{self.name}: node offset {off} beyond end of file", path=self.name)
        if off < _HEADER_SIZE:
            raise self._corrupt(f"node offset {off} inside the header")
        try:
            prefix = b""
            if word & _NODE_PREFIX:
                end = data.find(b"\0", off, off + MAX_KEY + 1)
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
                if count > (size - off) // 5:  # each value takes 4 + at least 1 bytes
                    raise IndexError(off)
                for dummy in range(count):
                    (prio,) = _u32.unpack_from(data, off)
                    end = data.find(b"\0", off + 4)
                    if end < 0:
                        raise IndexError(off)
                    values.append((prio, bytes(data[off + 4:end])))
                    off = end + 1
        except (IndexError, struct.error) as e:
            raise IndexFormatError(f"{self.name}: corrupt index node at offset {start}",
                                   path=self.name) from e
        self._parsed += off - start
        if self._parsed > size - _HEADER_SIZE:
            raise self._corrupt(f"nodes overlap (node at offset {start})")
        return _Node(start, prefix, first, last, children, tuple(values))


def _why(e: Exception) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def _open_regular(path: str) -> int:
    """An fd of path, refusing what is not a regular file: opening a FIFO blocks until a
    writer comes, reading a device may never end."""
    fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK)  # confined to root, like every read
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_regular(path: str) -> bytes:
    fd = _open_regular(path)
    with open(fd, "rb") as f:
        return f.read()


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
            node = self._nodes[id(ref)] = _Node(id(ref), ref.prefix, first, last, children, tuple(ref.values))
        return node


Index = t.Union[IndexReader, TextIndex]

# The indexes libkmod uses, by the name of their .bin file without the extension.
INDEX_NAMES = ("modules.dep", "modules.alias", "modules.symbols", "modules.builtin.alias",
               "modules.builtin")


def _text_lines(path: str) -> list[str]:
    return _decode(_read_regular(path)).split("\n")


def _dep_entries(moddir: str) -> list[tuple[str, str, int]]:
    entries: list[tuple[str, str, int]] = []
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
    records = _decode(_read_regular(os.path.join(moddir, "modules.builtin.modinfo"))).split("\0")
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
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{text_path}: cannot read index: {_why(e)}", path=text_path) from e
    return TextIndex(entries, text_path)
