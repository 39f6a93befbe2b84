# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""What kmod reads from a module's ELF image (libkmod-elf.c), with kmod's exact rules.

The ELF header, section headers and symbol tables are read with ``struct`` (pyelftools
names the machine): depmod touches every symbol of thousands of modules, and
pyelftools' per-record parsing is two orders of magnitude too slow for that (even its
header parse was a tenth of a cold depmod run).
Each structure has exactly one parser here.
"""

from __future__ import annotations

import array
import functools
import itertools
import operator
import re
import struct
import sys
import typing as t

from .errors import ElfFormatError
from .file import read_module_bytes

try:
    from elftools.elf.enums import ENUM_E_MACHINE
    HAS_PYELFTOOLS = True
except ImportError:  # reported by the modules through missing_required_lib
    HAS_PYELFTOOLS = False

SHN_UNDEF = 0
SHN_ABS = 0xFFF1
STB_WEAK = 2
STT_REGISTER = 13  # SPARC only: "undefined" global register symbols are not dependencies
_WEAK = tuple(info >> 4 == STB_WEAK for info in range(256))  # st_info -> weak binding
_CRC_PREFIX = b"__crc_"
_CRC_RE = re.compile(re.escape(_CRC_PREFIX))
_EI_NIDENT = 16
# Longest section or symbol name read: the kernel's own names stay below KSYM_NAME_LEN (512).
# Without a bound, many symbols pointing into one long unterminated run would cost
# (symbols x run length) to read; a longer name is a corrupt module.
MAX_NAME = 4096
# ELFCLASS32 / ELFCLASS64 -> (Ehdr struct, Shdr struct, Sym struct, pointer size). The Ehdr
# structs skip e_ident and unpack as (e_machine, e_shoff, e_shentsize, e_shnum, e_shstrndx);
# the Sym structs keep only (st_name, st_info, st_shndx, st_value), in that order.
_LAYOUT = {
    1: ("16xxxHxxxxxxxxxxxxIxxxxxxxxxxHHH", "IIIIIIIIII", "IIxxxxBxH", 4),  # Sym: (name, value, info, shndx)
    2: ("16xxxHxxxxxxxxxxxxxxxxxxxxQxxxxxxxxxxHHH", "IIQQQQIIQQ", "IBxHQxxxxxxxx", 8),
}
# ELF class (32/64) -> byte offset of the Sym fields read as columns (Elf32_Sym: name, value,
# size, info, other, shndx; Elf64_Sym: name, info, other, shndx, value, size).
_SYM_FIELD_OFFSETS = {
    32: {"st_name": 0, "st_info": 12, "st_shndx": 14},
    64: {"st_name": 0, "st_info": 4, "st_shndx": 6},
}
# e_machine -> pyelftools' name (as its header parser gave it); unknown values stay numbers
_MACHINES = {} if not HAS_PYELFTOOLS else {v: k for k, v in ENUM_E_MACHINE.items() if isinstance(v, int)}


class Section(t.NamedTuple):
    index: int  # type: ignore[assignment]  # (shadows tuple.index, as the field name we want)
    name: str
    type: int
    flags: int
    offset: int
    size: int
    header_offset: int  # where this section's header starts in the file (for in-place patching)


def _cstr(data: bytes, offset: int) -> bytes:
    end = data.find(b"\0", offset)
    return data[offset:] if end < 0 else data[offset:end]


def _text(raw: bytes) -> str:
    # Lossless: non-UTF-8 bytes survive a round trip through encode(..., "surrogateescape").
    return raw.decode("utf-8", "surrogateescape")


class ModuleElf:
    """One module image. Build it with parse_module()."""

    def __init__(self, data: bytes, path: str | None = None) -> None:
        self.data = data
        self.path = path or "<memory>"
        if len(data) <= _EI_NIDENT or not data.startswith(b"\x7fELF"):
            raise self._error("not an ELF file")
        self.elfclass = {1: 32, 2: 64}.get(data[4], 0)
        if not self.elfclass or data[5] not in (1, 2):
            raise self._error(f"unsupported ELF class {data[4]} or byte order {data[5]}")
        ehdr_fmt, shdr_fmt, sym_fmt, self.pointer_size = _LAYOUT[data[4]]
        self.little_endian = data[5] == 1
        order = "<" if self.little_endian else ">"
        ehdr = struct.Struct(order + ehdr_fmt)
        if len(data) <= ehdr.size:
            raise self._error("truncated ELF header")
        self._sym = struct.Struct(order + sym_fmt)
        self._shdr = struct.Struct(order + shdr_fmt)
        machine, self._shoff, shentsize, shnum, shstrndx = ehdr.unpack_from(data)
        self.machine: str | int = _MACHINES.get(machine, machine)
        self._cstrs: dict[int, bytes] = {}
        # Distinct names may overlap (the linker shares suffixes), but never by more than a
        # small multiple of the file: past that the tables are crafted to make us copy.
        self._cstr_budget = 4 * len(data) + (1 << 20)
        self._read_sections(shnum, shentsize, shstrndx)
        self.modinfo = self._strings(".modinfo")

    def _error(self, what: str) -> ElfFormatError:
        return ElfFormatError(f"{self.path}: {what}", path=self.path)

    def _read_sections(self, shnum: int, shentsize: int, shstrndx: int) -> None:
        data, shoff = self.data, self._shoff
        if shentsize != self._shdr.size:
            raise self._error(f"unexpected section header size {shentsize}")
        if shoff + shnum * shentsize > len(data):
            raise self._error("file too short to hold its section headers")
        raw = list(self._shdr.iter_unpack(data[shoff:shoff + shnum * shentsize]))
        if not 0 < shstrndx < shnum:
            raise self._error("no section name table")
        names_off, names_size = raw[shstrndx][4:6]
        if names_off + names_size > len(data) or names_size == 0 or data[names_off + names_size - 1] != 0:
            raise self._error("section name table is not NUL-terminated")
        size = len(data)
        # libkmod ignores sections that do not fit in the file or whose name is out of range
        usable = [i for i in range(1, shnum) if raw[i][4] + raw[i][5] <= size and raw[i][0] < names_size]
        names = self._cstr_list([names_off + raw[i][0] for i in usable])
        by_name = dict(zip(reversed(names), reversed(usable)))  # the first match wins
        self._raw_sections = raw
        self._names_off = names_off
        self._names_size = names_size
        self._by_name = by_name

    def _cstr(self, offset: int) -> bytes:
        """The NUL-terminated string at a file offset (to the end of the file without a NUL),
        at most MAX_NAME bytes; each distinct offset is read once."""
        got = self._cstrs.get(offset)
        if got is None:
            data = self.data
            end = data.find(b"\0", offset, offset + MAX_NAME + 1)
            if end < 0:
                if offset + MAX_NAME < len(data):
                    raise self._error(f"name at offset {offset} is longer than {MAX_NAME} bytes")
                end = len(data)
            got = self._cstrs[offset] = data[offset:end]
            self._cstr_budget -= len(got) + 1
            if self._cstr_budget < 0:
                raise self._error("its string tables overlap far beyond what a linker writes")
        return got

    def _cstr_list(self, offsets: list[int]) -> list[bytes]:
        """_cstr of each offset, by C-level maps when even MAX_NAME-long names would fit
        the budget (as for any real module); else name by name, as _cstr bounds them."""
        data = self.data
        if len(offsets) * (MAX_NAME + 1) > self._cstr_budget:
            return list(map(self._cstr, offsets))
        ends = list(map(data.find, itertools.repeat(b"\0"), offsets, [o + MAX_NAME + 1 for o in offsets]))
        if -1 in ends:  # too long, or running to the end of the file: _cstr tells which
            return list(map(self._cstr, offsets))
        self._cstr_budget -= sum(ends) - sum(offsets) + len(offsets)
        return list(map(data.__getitem__, map(slice, offsets, ends)))

    def _section_at(self, index: int) -> Section:
        name_off, stype, flags, _addr, offset, size = self._raw_sections[index][:6]
        return Section(index, _text(self._cstr(self._names_off + name_off)), stype, flags, offset, size,
                       self._shoff + index * self._shdr.size)

    @property
    def sections(self) -> list[Section]:
        """The sections libkmod can use (inside the file, with a valid name), in table order."""
        size = len(self.data)
        return [self._section_at(i) for i in range(1, len(self._raw_sections))
                if self._raw_sections[i][4] + self._raw_sections[i][5] <= size
                and self._raw_sections[i][0] < self._names_size]

    def section(self, name: str) -> Section | None:
        """The first section with that name (libkmod's rule), or None."""
        index = self._by_name.get(name.encode("utf-8", "surrogateescape"))
        return None if index is None else self._section_at(index)

    def _span(self, name: bytes) -> tuple[int, int] | None:
        index = self._by_name.get(name)
        return None if index is None else self._raw_sections[index][4:6]

    def section_bytes(self, name: str) -> bytes | None:
        span = self._span(name.encode("utf-8", "surrogateescape"))
        return None if span is None else self.data[span[0]:span[0] + span[1]]

    def _strings(self, name: str) -> list[tuple[str, str]]:
        """kmod_elf_get_strings split at the first '=' (kmod_module_get_info)."""
        raw = self.section_bytes(name)
        if not raw:
            return []
        raw = raw.lstrip(b"\0")
        if len(raw) <= 1:  # libkmod's size check quirk: a lone byte yields nothing
            return []
        out = []
        for item in raw.split(b"\0"):
            if item:
                key, _sep, value = item.partition(b"=")
                out.append((_text(key), _text(value)))
        return out

    def get(self, key: str) -> str | None:
        """The first modinfo value for key."""
        for k, v in self.modinfo:
            if k == key:
                return v
        return None

    @property
    def vermagic(self) -> str | None:
        return self.get("vermagic")

    @property
    def this_module_name(self) -> str | None:
        """The name field of struct module in .gnu.linkonce.this_module: what the kernel registers.

        struct module starts with an enum (padded to pointer alignment) and a
        list_head (two pointers), then char name[64 - sizeof(long)].
        """
        raw = self.section_bytes(".gnu.linkonce.this_module")
        start = 3 * self.pointer_size
        if raw is None or len(raw) < start + 1:
            return None
        name = _cstr(raw[start:start + 64 - self.pointer_size], 0)
        return _text(name) if name else None

    @functools.cached_property
    def _symtab(self) -> tuple[int, int] | None:
        """(file offset of symbol 1, number of symbols from 1), or None if .symtab/.strtab
        are unusable or hold no symbol but the null one."""
        symtab = self._span(b".symtab")
        size = self._sym.size
        if symtab is None or b".strtab" not in self._by_name or symtab[1] % size or symtab[1] <= size:
            return None
        return symtab[0] + size, symtab[1] // size - 1

    def _column(self, code: str, field: str) -> array.array[int]:
        """One field of every symbol from 1 (``code``: its array type), in host byte order:
        each scan over it runs at C speed instead of unpacking every row in Python (depmod
        reads every symbol of thousands of modules)."""
        start, count = t.cast("tuple[int, int]", self._symtab)
        column = array.array(code, self.data[start:start + count * self._sym.size])
        offset = _SYM_FIELD_OFFSETS[self.elfclass][field]
        column = column[offset // column.itemsize::self._sym.size // column.itemsize]
        if self.little_endian != (sys.byteorder == "little"):
            column.byteswap()
        return column

    @functools.cached_property
    def _names(self) -> array.array[int]:
        """st_name of every symbol from 1."""
        return self._column("I", "st_name")

    def _row(self, index: int) -> tuple[int, int, int, int]:
        """(st_name, st_info, st_shndx, st_value) of symbol index + 1."""
        start = t.cast("tuple[int, int]", self._symtab)[0]
        row = self._sym.unpack_from(self.data, start + index * self._sym.size)
        return (row[0], row[2], row[3], row[1]) if self.elfclass == 32 else row

    def exports(self) -> list[tuple[str, int]]:
        """(symbol, crc) the module exports, by depmod's rules (kmod_elf_get_symbols)."""
        return [(_text(name), crc) for name, crc in self.exports_raw()]

    def exports_raw(self) -> list[tuple[bytes, int]]:
        """exports() with undecoded names, for bulk consumers (depmod)."""
        strtab = self._span(b".strtab")
        if self._symtab is not None and strtab is not None:  # (_symtab checked that .strtab exists)
            base, size = strtab
            names = self._names
            if max(names) < size:
                # offsets in .strtab where a name starting with __crc_ can begin
                crc_names = {m.start() - base for m in _CRC_RE.finditer(self.data, base, base + size)}
                rows = itertools.compress(itertools.count(), map(crc_names.__contains__, names))
                out = [(self._cstr(base + name_off + len(_CRC_PREFIX)), self._resolve_crc(value, shndx))
                       for name_off, _info, shndx, value in map(self._row, rows)] if crc_names else []
                if out:
                    return out
        # No __crc_ symbols (kernel without MODVERSIONS): the exported names list.
        raw = self.section_bytes("__ksymtab_strings")
        if not raw:
            return []
        raw = raw.lstrip(b"\0")
        if len(raw) <= 1:
            return []
        return [(s, 0) for s in raw.split(b"\0") if s]

    def _resolve_crc(self, value: int, shndx: int) -> int:
        if shndx in (SHN_UNDEF, SHN_ABS):
            return value
        if shndx >= len(self._raw_sections):
            return 0xFFFFFFFFFFFFFFFF
        offset, size = self._raw_sections[shndx][4:6]
        # unsigned arithmetic as in kmod_elf_resolve_crc
        if offset + size > len(self.data) or value > (size - 4) % (1 << 64):
            return 0xFFFFFFFFFFFFFFFF
        return int.from_bytes(self.data[offset + value:offset + value + 4],
                              "little" if self.little_endian else "big")

    def versions(self) -> list[tuple[str, int]]:
        """__versions records (name, crc) in section order; empty if the section is malformed."""
        return [(_text(name), crc) for name, crc in self._versions_raw()]

    def _versions_raw(self) -> list[tuple[bytes, int]]:
        span = self._span(b"__versions")
        if span is None or span[1] % 64:
            return []
        offset, size = span
        # a record is the CRC (unsigned long) then a NUL-padded name filling 64 bytes
        fmt = ("<" if self.little_endian else ">") + ("Q56s" if self.pointer_size == 8 else "I60s")
        return [(name.split(b"\0", 1)[0], crc)
                for crc, name in struct.iter_unpack(fmt, self.data[offset:offset + size])]

    def undefined(self) -> list[tuple[str, int, bool]]:
        """(symbol, crc, weak) the module needs, in kmod_elf_get_dependency_symbols order.

        Undefined .symtab entries in table order, CRCs from __versions, then the
        __versions entries no symbol matched (module_layout and the like).
        """
        return [(_text(name), crc, weak) for name, crc, weak in self.undefined_raw()]

    def undefined_raw(self) -> list[tuple[bytes, int, bool]]:
        """undefined() with undecoded names, for bulk consumers (depmod)."""
        strtab = self._span(b".strtab")
        if self._symtab is None or strtab is None:  # (_symtab checked that .strtab exists)
            return []
        base, size = strtab
        # Every step maps C functions over whole columns: depmod reads ~200 symbols of each
        # of thousands of modules, and a Python loop per symbol was most of its time.
        # st_shndx == SHN_UNDEF (zero in either byte order) picks the rows.
        shndx = self._column("H", "st_shndx")
        rows = list(itertools.compress(itertools.count(), map(operator.not_, shndx)))
        offsets = list(map(self._names.__getitem__, rows))
        infos = list(map(self._column("B", "st_info").__getitem__, rows))
        if self.machine in ("EM_SPARC", "EM_SPARCV9"):
            kept = [i & 0xF != STT_REGISTER for i in infos]
            offsets, infos = list(itertools.compress(offsets, kept)), list(itertools.compress(infos, kept))
        if offsets and max(offsets) >= size:
            return []  # libkmod gives up on the whole list (-EINVAL)
        names = self._cstr_list(list(map(base.__add__, offsets)))
        named = list(map(bool, names))  # libkmod skips empty names
        names, infos = list(itertools.compress(names, named)), list(itertools.compress(infos, named))
        versions = self._versions_raw()
        # each name takes the CRC of its first __versions entry; index len(versions) is "none"
        first = dict(zip(reversed([name for name, _crc in versions]), range(len(versions) - 1, -1, -1)))
        crcs = [crc for _name, crc in versions] + [0]
        matched = list(map(first.get, names, itertools.repeat(len(versions))))
        out = list(zip(names, map(crcs.__getitem__, matched), map(_WEAK.__getitem__, infos)))
        # then the __versions entries no symbol matched (module_layout and the like)
        matched_set = set(matched)
        out.extend((name, crc, False) for i, (name, crc) in enumerate(versions) if i not in matched_set)
        return out


def parse_module(data: bytes, path: str | None = None) -> ModuleElf:
    """Parse decompressed module bytes; ElfFormatError (naming path) if libkmod would reject them."""
    if not HAS_PYELFTOOLS:
        raise ElfFormatError("The pyelftools Python library is required to read kernel modules")
    return ModuleElf(data, path)


def read_module(path: str) -> ModuleElf:
    """Read a module file (decompressing .ko.gz/.xz/.zst) and parse it: what libkmod's
    kmod_module_get_info / kmod_elf_new do with a path."""
    data, _compression = read_module_bytes(path)
    return parse_module(data, path)
