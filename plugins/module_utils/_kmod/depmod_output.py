# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The bytes of each index file from the linked modules: depmod_output's callbacks of
tools/depmod.c (kmod 30), as pure functions of what depmod.py computed.

Each builder returns the text file and, where kmod writes one, its ``.bin`` trie
(``preorder``: kmod 34's layout, see index_writer.py).
"""

from __future__ import annotations

import os
import re
import typing as t

from .hashtable import iteration_order
from .index_writer import IndexBuilder
from .names import alias_normalize

if t.TYPE_CHECKING:
    from .depmod import Module


def enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # os.fsencode, minus its overhead


def _closure(mod: Module, memo: dict[int, frozenset[Module]]) -> frozenset[Module]:
    found = memo.get(mod.idx)
    if found is None:
        acc: set[Module] = set()
        for dep in mod.deps:
            acc.add(dep)
            acc |= _closure(dep, memo)
        found = memo[mod.idx] = frozenset(acc)
    return found


def deps(mods: list[Module], preorder: bool) -> tuple[bytes, bytes]:
    text = []
    index = IndexBuilder()
    memo: dict[int, frozenset[Module]] = {}
    for mod in mods:
        deps = sorted(_closure(mod, memo), key=lambda d: d.dep_sort_idx)
        line = mod.shown_path + b":" + b"".join(b" " + d.shown_path for d in deps)
        text.append(line + b"\n")
        index.insert(mod.name_bytes, line, mod.idx)
    return b"".join(text), index.to_bytes(preorder)


def aliases(mods: list[Module], warnings: list[str], preorder: bool) -> tuple[bytes, bytes]:
    text = [b"# Aliases extracted from modules themselves.\n"]
    index = IndexBuilder()
    for mod in mods:
        name = mod.name_bytes
        for key, value in mod.info:
            if key != "alias":
                continue
            text.append(b"alias " + enc(value) + b" " + name + b"\n")
            try:
                normalized = alias_normalize(value) if "[" in value or "]" in value else value.replace("-", "_")
            except ValueError:
                warnings.append(f"Unmatched bracket in {value}")
                continue
            index.insert(enc(normalized), name, mod.idx)
    return b"".join(text), index.to_bytes(preorder)


def softdeps(mods: list[Module]) -> bytes:
    text = [b"# Soft dependencies extracted from modules themselves.\n"]
    for mod in mods:
        text.extend(b"softdep " + mod.name_bytes + b" " + enc(v) + b"\n" for k, v in mod.info if k == "softdep")
    return b"".join(text)


def weakdeps(mods: list[Module]) -> bytes:
    """modules.weakdep (kmod >= 33, depmod.c output_weakdeps): one line per weakdep= string."""
    text = [b"# Weak dependencies extracted from modules themselves.\n"]
    for mod in mods:
        text.extend(b"weakdep " + mod.name_bytes + b" " + enc(v) + b"\n" for k, v in mod.info if k == "weakdep")
    return b"".join(text)


def symbols(table: dict[bytes, tuple[Module | None, int]], preorder: bool) -> tuple[bytes, bytes]:
    text = [b"# Aliases for symbols, used by symbol_request().\n"]
    index = IndexBuilder()
    for key in iteration_order(table, 2048):
        owner = table[key][0]
        if owner is None:
            continue
        text.append(b"alias symbol:" + key + b" " + owner.name_bytes + b"\n")
        index.insert(b"symbol:" + key, owner.name_bytes, owner.idx)
    return b"".join(text), index.to_bytes(preorder)


def fgets_lines(data: bytes) -> list[bytes]:
    """Lines as fgets returns them: split after each newline, which they keep."""
    lines = data.split(b"\n")
    last = lines.pop()
    return [line + b"\n" for line in lines] + ([last] if last else [])


def builtin_index(data: bytes | None, warnings: list[str], preorder: bool) -> bytes:
    """modules.builtin.bin from modules.builtin's bytes; 0 bytes when modules.builtin is
    missing (data None), as depmod publishes it."""
    if data is None:
        return b""
    index = IndexBuilder()
    for line in fgets_lines(data):
        if not line[:1].isalpha():
            warnings.append(f"Invalid modules.builtin line: {line.decode(errors='replace')}")
            continue
        # path_to_modname: basename, cut at the first '.', '-' -> '_' (a newline
        # survives when the line has no '.', as in kmod)
        base = line.rsplit(b"/", 1)[-1]
        index.insert(base.split(b".", 1)[0].replace(b"-", b"_"), b"", 0)
    return index.to_bytes(preorder)


def builtin_alias_index(data: bytes | None, warnings: list[str], preorder: bool, inverted: bool = False) -> bytes:
    """modules.builtin.alias.bin from modules.builtin.modinfo's bytes (None: missing), with
    the stream parser's quirks.

    inverted: kmod 28's output_builtin_alias_bin, which writes its index only when
    kmod_module_get_info's last count is 0, i.e. when there is no builtin module (missing
    or empty modules.builtin.modinfo: an empty index), and else leaves the file empty."""
    if data is None:
        return IndexBuilder().to_bytes(preorder) if inverted else b""
    index = IndexBuilder()
    pos, end = 0, len(data)

    def read_to(stop: int) -> tuple[bytes, bool]:
        # flush_stream_to: read until stop, NUL or EOF; True if it ended at stop
        nonlocal pos
        start = pos
        while pos < end and data[pos] != stop and data[pos] != 0:
            pos += 1
        chunk, ok = data[start:pos], pos < end and data[pos] == stop
        pos += 1 if pos < end else 0
        return chunk, ok

    while pos < end:
        modname, ok = read_to(0x2E)  # '.'
        if not ok or not modname:
            continue
        key, ok = read_to(0x3D)  # '='
        if not ok or key != b"alias":
            read_to(0)
            continue
        value, ok = read_to(0)
        if not ok or not value:
            continue
        try:
            alias = alias_normalize(os.fsdecode(value))
        except ValueError:
            warnings.append(f"Unmatched bracket in {os.fsdecode(value)}")
            continue
        index.insert(enc(alias), modname, 0)
    if inverted:  # the aliases were read (and warned about) all the same
        return b"" if data else IndexBuilder().to_bytes(preorder)
    return index.to_bytes(preorder)


_MAJOR_MINOR = {
    b"c": re.compile(rb"char-major-\s*([+-]?\d+)-\s*([+-]?\d+)"),
    b"b": re.compile(rb"block-major-\s*([+-]?\d+)-\s*([+-]?\d+)"),
}


def devnames(mods: list[Module], warnings: list[str]) -> bytes:
    text: list[bytes] = []
    for mod in mods:
        devname = None
        node = None
        for key, value in mod.info:
            if key != "alias":
                continue
            raw = enc(value)
            if raw.startswith(b"devname:"):
                devname = raw[len(b"devname:"):]
            else:
                for kind, pattern in _MAJOR_MINOR.items():
                    m = pattern.match(raw)
                    if m:  # sscanf("%u") wraps negative numbers
                        node = kind + b"%d:%d" % (int(m[1]) % 2**32, int(m[2]) % 2**32)
                        break
            if node is not None and devname is not None:
                break
        if devname is None:
            continue
        if node is None:
            warnings.append(f"Module '{mod.name}' has devname ({os.fsdecode(devname)}) "
                            "but lacks major and minor information. Ignoring.")
            continue
        if not text:
            text.append(b"# Device nodes to trigger on-demand module loading.\n")
        text.append(mod.name_bytes + b" " + devname + b" " + node + b"\n")
    return b"".join(text)
