# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""What kmod reads from a module's ELF image (libkmod-elf.c), with kmod's exact rules.

pyelftools parses the ELF header. Section headers and symbol tables are read with
``struct`` over the same bytes: depmod touches every symbol of thousands of modules
and pyelftools' per-record parsing is two orders of magnitude too slow for that.
Each structure has exactly one parser here.
"""

from __future__ import annotations

import functools
import operator
import re
import struct
import typing as t

from .errors import ElfFormatError
from .file import read_module_bytes

try:
    from elftools.common.exceptions import ELFError
    from elftools.construct import ConstructError
    from elftools.elf.structs import ELFStructs
    HAS_PYELFTOOLS = True
except ImportError:  # reported by the modules through missing_required_lib
    HAS_PYELFTOOLS = False

SHN_UNDEF = 0
SHN_ABS = 0xFFF1
STB_WEAK = 2
STT_REGISTER = 13  # SPARC only: "undefined" global register symbols are not dependencies
_CRC_PREFIX = b"__crc_"
_CRC_RE = re.compile(re.escape(_CRC_PREFIX))
_EI_NIDENT = 16
# Longest section or symbol name read: the kernel's own names stay below KSYM_NAME_LEN (512).
# Without a bound, many symbols pointing into one long unterminated run would cost
# (symbols x run length) to read; a longer name is a corrupt module.
MAX_NAME = 4096
# ELFCLASS32 / ELFCLASS64 -> (Ehdr size, Shdr struct, Sym struct, pointer size). The Sym
# structs keep only (st_name, st_info, st_shndx, st_value), in that order.
_LAYOUT = {
    1: (52, "IIIIIIIIII", "IIxxxxBxH", 4),  # unpacks as (name, value, info, shndx): reordered
    2: (64, "IIQQQQIIQQ", "IBxHQxxxxxxxx", 8),
}


class Section(t.NamedTuple):
    index: int  # type: ignore[assignment]  # (shadows tuple.index, as the field name we want)
    name: str
    type: int
    flags: int
    offset: int
    size: int
    header_offset: int  # where this section's header starts in the file (for in-place patching)


@functools.lru_cache(maxsize=None)
def _header_struct(little_endian: bool, elfclass: int) -> t.Any:
    structs = ELFStructs(little_endian=little_endian, elfclass=elfclass)
    structs.create_basic_structs()
    return structs.Elf_Ehdr


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
        ehdr_size, shdr_fmt, sym_fmt, self.pointer_size = _LAYOUT[data[4]]
        self.little_endian = data[5] == 1
        if len(data) <= ehdr_size:
            raise self._error("truncated ELF header")
        order = "<" if self.little_endian else ">"
        self._sym = struct.Struct(order + sym_fmt)
        self._shdr = struct.Struct(order + shdr_fmt)
        try:
            # only the header's bytes: construct would copy all it is given into a stream
            header = _header_struct(self.little_endian, self.elfclass).parse(data[:ehdr_size])
        except (ELFError, ConstructError) as exc:
            raise self._error(f"bad ELF header: {exc}") from exc
        self.machine: str = header["e_machine"]
        self._shoff = header["e_shoff"]
        self._cstrs: dict[int, bytes] = {}
        # Distinct names may overlap (the linker shares suffixes), but never by more than a
        # small multiple of the file: past that the tables are crafted to make us copy.
        self._cstr_budget = 4 * len(data) + (1 << 20)
        self._read_sections(header["e_shnum"], header["e_shentsize"], header["e_shstrndx"])
        self.modinfo = self._strings(".modinfo")
        self._symcache: list[tuple[int, int, int, int]] | bool | None = None

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
        by_name: dict[bytes, int] = {}
        for i in range(1, shnum):
            name_off, offset, sec_size = raw[i][0], raw[i][4], raw[i][5]
            # libkmod ignores sections that do not fit in the file or whose name is out of range
            if offset + sec_size > size or name_off >= names_size:
                continue
            by_name.setdefault(self._cstr(names_off + name_off), i)  # first match wins
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

    def _symbols(self) -> list[tuple[int, int, int, int]] | None:
        """(st_name, st_info, st_shndx, st_value) from index 1, or None if .symtab/.strtab are unusable."""
        if self._symcache is None:
            symtab = self._span(b".symtab")
            if symtab is None or b".strtab" not in self._by_name or symtab[1] % self._sym.size:
                self._symcache = False
            else:
                offset, size = symtab
                rows = self._sym.iter_unpack(self.data[offset + self._sym.size:offset + size])
                if self.elfclass == 32:
                    self._symcache = [(n, i, x, v) for n, v, i, x in rows]
                else:
                    self._symcache = list(rows)
        return self._symcache if isinstance(self._symcache, list) and self._symcache else None

    def exports(self) -> list[tuple[str, int]]:
        """(symbol, crc) the module exports, by depmod's rules (kmod_elf_get_symbols)."""
        return [(_text(name), crc) for name, crc in self.exports_raw()]

    def exports_raw(self) -> list[tuple[bytes, int]]:
        """exports() with undecoded names, for bulk consumers (depmod)."""
        syms = self._symbols()
        strtab = self._span(b".strtab")
        if syms is not None and strtab is not None:  # (_symbols() checked that .strtab exists)
            base, size = strtab
            data = self.data
            if max(map(operator.itemgetter(0), syms)) < size:
                # offsets in .strtab where a name starting with __crc_ can begin
                crc_names = {m.start() for m in _CRC_RE.finditer(data, base, base + size)}
                out = [(self._cstr(name_off + len(_CRC_PREFIX)), self._resolve_crc(value, shndx))
                       for name_off, value, shndx in ((base + n, v, x) for n, _info, x, v in syms)
                       if name_off in crc_names] if crc_names else []
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
        crclen = self.pointer_size
        fmt = ("<" if self.little_endian else ">") + ("Q" if crclen == 8 else "I")
        data = self.data
        return [(_cstr(data[off + crclen:off + 64], 0), struct.unpack_from(fmt, data, off)[0])
                for off in range(offset, offset + size, 64)]

    def undefined(self) -> list[tuple[str, int, bool]]:
        """(symbol, crc, weak) the module needs, in kmod_elf_get_dependency_symbols order.

        Undefined .symtab entries in table order, CRCs from __versions, then the
        __versions entries no symbol matched (module_layout and the like).
        """
        return [(_text(name), crc, weak) for name, crc, weak in self.undefined_raw()]

    def undefined_raw(self) -> list[tuple[bytes, int, bool]]:
        """undefined() with undecoded names, for bulk consumers (depmod)."""
        syms = self._symbols()
        strtab = self._span(b".strtab")
        if syms is None or strtab is None:  # (_symbols() checked that .strtab exists)
            return []
        base, size = strtab
        undef = [(n, i) for n, i, x, _value in syms if x == SHN_UNDEF]
        if self.machine in ("EM_SPARC", "EM_SPARCV9"):
            undef = [(n, i) for n, i in undef if i & 0xF != STT_REGISTER]
        if undef and max(undef)[0] >= size:
            return []  # libkmod gives up on the whole list (-EINVAL)
        cstr = self._cstr
        names = [cstr(base + n) for n, _info in undef]
        versions = self._versions_raw()
        first_index: dict[bytes, int] = {}
        for i, (name, _crc) in enumerate(versions):
            first_index.setdefault(name, i)
        get = first_index.get
        matched = set()
        out = []
        for name, (_n, info) in zip(names, undef):
            if not name:
                continue
            idx = get(name)
            if idx is None:
                out.append((name, 0, info >> 4 == STB_WEAK))
            else:
                matched.add(idx)
                out.append((name, versions[idx][1], info >> 4 == STB_WEAK))
        # then the __versions entries no symbol matched (module_layout and the like)
        out.extend((name, crc, False) for i, (name, crc) in enumerate(versions) if i not in matched)
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
