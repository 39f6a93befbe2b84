# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Writer of depmod's modules.*.bin Patricia tries, byte-identical to kmod's depmod.

kmod builds the trie by insertion (tools/depmod.c index_insert). The result is the
canonical radix tree of the key set, so it is built here directly from the sorted
keys. The root never has a prefix. Two layouts, same nodes (docs/kmod-generations.md):
kmod <= 33 writes post-order (children first, ascending character, then the node; the
header's root word points at the end); kmod >= 34 writes pre-order (the node, then its
children's subtrees in ascending character; the root follows the 12-byte header).
Every libkmod reads both.
"""

from __future__ import annotations

import bisect
import struct
import sys

from .errors import IndexFormatError

INDEX_MAGIC = 0xB007F457
INDEX_VERSION = 0x00020001
NODE_PREFIX = 0x80000000
NODE_VALUES = 0x40000000
NODE_CHILDS = 0x20000000
_u32 = struct.Struct(">I")


def _common_prefix_len(a: bytes, b: bytes) -> int:
    """Length of the common prefix, by comparing the strings as big integers (C speed)."""
    n = min(len(a), len(b))
    diff = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - (diff.bit_length() + 7) // 8


class IndexBuilder:
    """Collects (key, value, priority) like depmod's index_insert, then serialises."""

    def __init__(self) -> None:
        # key -> (priorities, values), both ascending by priority
        self._entries: dict[bytes, tuple[list[int], list[bytes]]] = {}

    def insert(self, key: bytes, value: bytes, priority: int) -> bool:
        """Add a value under key; True if the key already held that exact value.

        Values sort by ascending priority; a new value goes before existing values of
        equal priority (index_add_value). Duplicates are kept, as depmod keeps them.
        """
        if not (key.isascii() and value.isascii()):
            raise IndexFormatError(
                f"index key {key!r} or value {value!r}: only 7-bit ASCII is supported")
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = ([priority], [value])
            return False
        prios, values = entry
        duplicate = value in values
        pos = bisect.bisect_left(prios, priority)
        prios.insert(pos, priority)
        values.insert(pos, value)
        return duplicate

    def __len__(self) -> int:
        return len(self._entries)

    def to_bytes(self, preorder: bool = False) -> bytes:
        """The .bin file: kmod 34's pre-order layout if preorder, else kmod 30's."""
        keys = sorted(self._entries)
        if not keys:  # just the header; the root word points at an empty node at its end
            return struct.pack(">III", INDEX_MAGIC, INDEX_VERSION, 12)
        depth = max(map(len, keys), default=0) + 50
        if depth > sys.getrecursionlimit():  # one frame per trie level at most
            sys.setrecursionlimit(depth)
        out = bytearray(12)
        write = self._write_preorder if preorder else self._write
        root = write(out, keys, 0, len(keys), 0, True)
        out[0:12] = struct.pack(">III", INDEX_MAGIC, INDEX_VERSION, root)
        return bytes(out)

    def _write(self, out: bytearray, keys: list[bytes], lo: int, hi: int, depth: int, is_root: bool) -> int:
        """Write the node holding keys[lo:hi] (all equal up to depth); return its offset word."""
        first_key = keys[lo]
        if is_root:
            end = depth
        else:
            # the node's prefix: what all its keys share (sorted, so first and last suffice)
            end = depth + _common_prefix_len(first_key[depth:], keys[hi - 1][depth:])
        prefix = first_key[depth:end]
        values = None
        if lo < hi and len(first_key) == end:  # a key ending here sorts first
            values = self._entries[first_key]
            lo += 1
        children: dict[int, int] = {}
        stem = first_key[:end]
        while lo < hi:
            ch = keys[lo][end]
            nxt = bisect.bisect_left(keys, stem + bytes((ch + 1,)), lo, hi)
            children[ch] = self._write(out, keys, lo, nxt, end + 1, False)
            lo = nxt
        word = len(out)
        if prefix:
            out += prefix + b"\0"
            word |= NODE_PREFIX
        if children:
            first, last = min(children), max(children)
            out += bytes((first, last))
            if len(children) == last - first + 1:
                out += struct.pack(f">{len(children)}I", *children.values())  # filled in ascending order
            else:
                out += struct.pack(f">{last - first + 1}I", *(children.get(c, 0) for c in range(first, last + 1)))
            word |= NODE_CHILDS
        if values is not None:
            _write_values(out, values)
            word |= NODE_VALUES
        return word

    def _write_preorder(self, out: bytearray, keys: list[bytes], lo: int, hi: int, depth: int,
                        is_root: bool) -> int:
        """Like _write, but the node goes first with zero child offsets that are patched
        once each child's subtree is written (depmod.c index_write__node, kmod 34)."""
        first_key = keys[lo]
        end = depth if is_root else depth + _common_prefix_len(first_key[depth:], keys[hi - 1][depth:])
        prefix = first_key[depth:end]
        values = None
        if lo < hi and len(first_key) == end:
            values = self._entries[first_key]
            lo += 1
        ranges: list[tuple[int, int, int]] = []  # (character, lo, hi) of each child
        stem = first_key[:end]
        while lo < hi:
            ch = keys[lo][end]
            nxt = bisect.bisect_left(keys, stem + bytes((ch + 1,)), lo, hi)
            ranges.append((ch, lo, nxt))
            lo = nxt
        word = len(out)
        if prefix:
            out += prefix + b"\0"
            word |= NODE_PREFIX
        table = 0
        if ranges:
            first, last = ranges[0][0], ranges[-1][0]
            out += bytes((first, last))
            table = len(out)
            out += bytes(4 * (last - first + 1))
            word |= NODE_CHILDS
        if values is not None:
            _write_values(out, values)
            word |= NODE_VALUES
        for ch, child_lo, child_hi in ranges:
            child = self._write_preorder(out, keys, child_lo, child_hi, end + 1, False)
            _u32.pack_into(out, table + 4 * (ch - ranges[0][0]), child)
        return word


def _write_values(out: bytearray, values: tuple[list[int], list[bytes]]) -> None:
    """A node's value list: count, then (priority, NUL-terminated value) pairs."""
    prios, vals = values
    out += _u32.pack(len(vals))
    for prio, val in zip(prios, vals):
        out += _u32.pack(prio) + val + b"\0"
