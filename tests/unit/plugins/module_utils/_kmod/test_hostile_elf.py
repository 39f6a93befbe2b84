# SPDX-License-Identifier: GPL-3.0-or-later
"""Corrupt and hostile module files: every read ends, quickly and in bounded memory, with an
answer or our own error (ElfFormatError / ModuleFileError), never a library exception.

The corruptions are made on real signed Debian modules. A guard counts the bytes the ELF
reader searches and copies, so a regression into quadratic or runaway work fails the test
instead of stalling it.
"""

from __future__ import annotations

import gzip
import lzma
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import elf
from ansible_collections.kernel.kmod.plugins.module_utils._kmod import file as kfile
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import (
    ElfFormatError, KmodError, ModuleFileError)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.modinfo import modinfo_from_file
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.signature import SIG_MAGIC, read_signature

try:
    import zstandard
except ImportError:
    zstandard = None  # type: ignore[assignment]

MODULES = ("kernel/drivers/net/dummy.ko", "kernel/lib/crc-itu-t.ko")  # signed; the second exports


class Runaway(BaseException):
    """Raised by the guard; a BaseException so that no `except Exception` in the engine eats it."""


class CountingBytes(bytes):
    """Module bytes that count what the reader searches and copies out of them. The reader
    reads each structure once and each name once (distinct names overlap only as far as its
    own budget allows), so honest work stays within a small multiple of the size."""

    def __new__(cls, data):
        self = super().__new__(cls, data)
        self.work = 0
        self.limit = 40 * len(data) + (4 << 20)
        return self

    def _spend(self, amount):
        self.work += amount
        if self.work > self.limit:
            raise Runaway(f"{self.work} bytes searched or copied from a {len(self)}-byte module")

    def __getitem__(self, key):
        got = super().__getitem__(key)
        if isinstance(key, slice):
            self._spend(len(got) + 1)
        return got

    def find(self, sub, start=0, end=None):
        got = super().find(sub, start, end)
        stop = len(self) if end is None else min(end, len(self))
        self._spend((got if got >= 0 else stop) - min(start, stop) + 1)
        return got


def read_all(data, path="hostile.ko"):
    """Everything depmod and modinfo read from a module, or None after our own error."""
    try:
        m = elf.parse_module(CountingBytes(data), path)
        got = (m.modinfo, m.vermagic, m.this_module_name, m.sections, m.section(".modinfo"),
               m.section_bytes("__versions"), m.exports(), m.undefined(), m.versions())
    except ElfFormatError as e:
        assert path in str(e)
        got = None
    read_signature(data)
    return got


@pytest.fixture(scope="module")
def modules(kernel_6_1):
    return {name: (kernel_6_1.moddir / name).read_bytes() for name in MODULES}


@pytest.fixture(scope="module")
def dummy(modules):
    return modules[MODULES[0]]


def layout(data):
    """(e_shoff, e_shnum, e_shstrndx, {section name: header offset}) of a 64-bit LE module."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    names_off, = struct.unpack_from("<Q", data, shoff + 64 * shstrndx + 24)
    heads = {}
    for i in range(shnum):
        head = shoff + 64 * i
        name_off, = struct.unpack_from("<I", data, head)
        end = data.index(b"\0", names_off + name_off)
        heads[data[names_off + name_off:end].decode()] = head
    return shoff, shnum, shstrndx, heads


def patched(data, *edits):
    data = bytearray(data)
    for fmt, offset, value in edits:
        struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def test_untouched_modules_read(modules):
    for name, data in modules.items():
        assert read_all(data) is not None, name


@pytest.mark.parametrize("what, edit, message", [
    ("absurd section count", lambda d, lay: [("<H", 0x3C, 0xFFFF)], "too short to hold its section headers"),
    ("section headers past the end", lambda d, lay: [("<Q", 0x28, len(d) - 100)], "too short"),
    ("section headers at 2**63", lambda d, lay: [("<Q", 0x28, 1 << 63)], "too short"),
    ("name table index out of range", lambda d, lay: [("<H", 0x3E, lay[1] + 5)], "no section name table"),
    ("huge name table", lambda d, lay: [("<Q", lay[0] + 64 * lay[2] + 32, 1 << 40)], "name table"),
    ("name table at 2**64-1", lambda d, lay: [("<Q", lay[0] + 64 * lay[2] + 24, (1 << 64) - 1)], "name table"),
    ("odd section header size", lambda d, lay: [("<H", 0x3A, 1)], "section header size"),
])
def test_bad_headers_are_elf_errors(dummy, what, edit, message):
    data = patched(dummy, *edit(dummy, layout(dummy)))
    with pytest.raises(ElfFormatError, match=re.escape("hostile.ko") + ".*" + message):
        elf.parse_module(CountingBytes(data), "hostile.ko")


@pytest.mark.parametrize("section", [".strtab", ".symtab", ".modinfo", "__versions", ".gnu.linkonce.this_module"])
@pytest.mark.parametrize("how", ["huge size", "offset past end", "overlaps the headers", "zero size"])
def test_bad_sections_give_answers_not_crashes(modules, section, how):
    """libkmod skips sections that do not fit in the file; overlapping ones are read as they are."""
    for data in modules.values():
        lay = layout(data)
        head = lay[3][section]
        edits = {"huge size": [("<Q", head + 32, 1 << 62)],
                 "offset past end": [("<Q", head + 24, len(data) + 10)],
                 "overlaps the headers": [("<Q", head + 24, 0), ("<Q", head + 32, len(data))],
                 "zero size": [("<Q", head + 32, 0)]}[how]
        read_all(patched(data, *edits))


def test_every_name_points_into_one_long_run(modules):
    """All section and symbol names start inside one unterminated run: each is read at most
    MAX_NAME bytes far, once."""
    data = bytearray(modules[MODULES[1]])
    shoff, shnum, shstrndx, heads = layout(data)
    strtab_off, strtab_size = struct.unpack_from("<QQ", data, heads[".strtab"] + 24)
    data[strtab_off:strtab_off + strtab_size] = b"A" * strtab_size
    symtab_off, symtab_size = struct.unpack_from("<QQ", data, heads[".symtab"] + 24)
    for i, pos in enumerate(range(symtab_off, symtab_off + symtab_size, 24)):
        struct.pack_into("<I", data, pos, i % 7)
    assert read_all(bytes(data)) is not None


def test_long_unterminated_strtab_is_refused(modules):
    """A .strtab without NUL, longer than any name: ElfFormatError instead of endless scans."""
    data = bytearray(modules[MODULES[1]])
    lay = layout(data)
    strtab_off, strtab_size = struct.unpack_from("<QQ", data, lay[3][".strtab"] + 24)
    # move .strtab to the end and make it a MAX_NAME + 1000 byte run without NUL
    struct.pack_into("<QQ", data, lay[3][".strtab"] + 24, len(data), elf.MAX_NAME + 1000)
    data += b"B" * (elf.MAX_NAME + 1000)
    module = elf.parse_module(CountingBytes(data), "hostile.ko")
    with pytest.raises(ElfFormatError, match="hostile.ko.*longer than"):
        module.undefined()


def test_names_overlapping_beyond_budget():
    """Many symbols naming overlapping long strings: refused once the copies pass the budget."""
    # A synthetic ELF64: null section, .shstrtab, .symtab (20000 entries), .strtab (one
    # 4000-byte run ended by NUL); every symbol names a different offset inside the run.
    names = b"\0.shstrtab\0.symtab\0.strtab\0"
    run = b"C" * 4000 + b"\0"
    nsyms = 20000
    symtab = b"".join(struct.pack("<IBBHQQ", i % 3900, 0, 0, 0, 0, 0) for i in range(nsyms))
    body = bytearray(64)
    names_off = len(body)
    body += names
    symtab_off = len(body)
    body += symtab
    strtab_off = len(body)
    body += run
    shoff = len(body)
    sections = [(0, 0, 0, 0), (1, 3, names_off, len(names)), (11, 2, symtab_off, len(symtab)),
                (19, 3, strtab_off, len(run))]
    for name, stype, off, size in sections:
        body += struct.pack("<IIQQQQIIQQ", name, stype, 0, 0, off, size, 0, 0, 0, 24 if stype == 2 else 0)
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack(
        "<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(sections), 1)
    body[:64] = header
    module = elf.parse_module(CountingBytes(body), "hostile.ko")
    with pytest.raises(ElfFormatError, match="hostile.ko.*overlap"):
        module.undefined()


@pytest.mark.parametrize("cut", [17, 63, 64, 1000, 0.5, -1, -700])
def test_truncated_modules(dummy, cut):
    end = int(len(dummy) * cut) if isinstance(cut, float) else cut if cut > 0 else len(dummy) + cut
    read_all(dummy[:end])


def test_modinfo_without_nul_terminators(dummy, tmp_path):
    data = bytearray(dummy)
    lay = layout(data)
    off, size = struct.unpack_from("<QQ", data, lay[3][".modinfo"] + 24)
    data[off:off + size] = data[off:off + size].replace(b"\0", b"x")
    path = tmp_path / "dummy.ko"
    path.write_bytes(bytes(data))
    fields = dict(modinfo_from_file(str(path)).fields)
    assert fields["signer"]  # the signature trailer is still read


@pytest.mark.parametrize("trailer", [
    lambda sig: sig[:-len(SIG_MAGIC) - 12] + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 0xFFFFFFFF) + SIG_MAGIC,
    lambda sig: sig[:-len(SIG_MAGIC) - 12] + struct.pack(">BBBBB3xI", 9, 9, 9, 0, 0, 10) + SIG_MAGIC,
    lambda sig: b"\x30\x80" * 2000 + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 4000) + SIG_MAGIC,
    lambda sig: b"\x30\x0a\x06\x08" + b"\x81" * 8 + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 12) + SIG_MAGIC,
    lambda sig: (b"\x30\x82\x10\x05\x06\x82\x10\x01" + b"\x81" * 0x1000 + b"\x01"
                 + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 0x1009) + SIG_MAGIC),
    lambda sig: sig[:-1],
])
def test_bad_signature_trailers(dummy, trailer, tmp_path):
    """A trailer that does not add up is "no signature", as for libkmod; never an exception."""
    data = dummy[:-2000] + trailer(dummy[-2000:])
    assert read_signature(data) is None
    path = tmp_path / "dummy.ko"
    path.write_bytes(data)
    try:
        modinfo_from_file(str(path))
    except KmodError as e:
        assert str(path) in str(e)


COMPRESSORS = {
    "gzip": lambda b: gzip.compress(b, 1),
    "xz": lambda b: lzma.compress(b, preset=0),
}
if zstandard is not None:
    COMPRESSORS["zstd"] = lambda b: zstandard.ZstdCompressor(write_content_size=False).compress(b)


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_decompression_bomb(tmp_path, monkeypatch, kind):
    """A module that decompresses past MAX_MODULE_SIZE (8 MiB here) is refused mid-way."""
    monkeypatch.setattr(kfile, "MAX_MODULE_SIZE", 8 << 20)
    path = tmp_path / f"bomb.ko.{kind}"
    path.write_bytes(COMPRESSORS[kind](b"\0" * (9 << 20)))
    with pytest.raises(ModuleFileError, match=re.escape(str(path)) + ".*decompresses to more than 8388608 bytes"):
        kfile.read_module_bytes(str(path))
    # just under the limit is fine
    path.write_bytes(COMPRESSORS[kind](b"\0" * (8 << 20)))
    assert len(kfile.read_module_bytes(str(path))[0]) == 8 << 20


@pytest.mark.skipif(zstandard is None, reason="needs the zstandard package to build the data")
def test_zstd_tool_bomb():
    import shutil
    tool = shutil.which("zstd")
    if tool is None:
        pytest.skip("no zstd tool")
    blob = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (9 << 20))
    with pytest.raises(ModuleFileError, match="bomb.ko.zst.*more than"):
        kfile._zstd_tool(tool, blob, "bomb.ko.zst", 8 << 20)
    assert len(kfile._zstd_tool(tool, blob, "bomb.ko.zst", 9 << 20)) == 9 << 20


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
@pytest.mark.parametrize("cut", [0.3, -1, -5])
def test_truncated_compressed(dummy, kind, cut):
    blob = COMPRESSORS[kind](dummy)
    end = int(len(blob) * cut) if isinstance(cut, float) else len(blob) + cut
    with pytest.raises(ModuleFileError, match="hostile.ko.*corrupt"):
        kfile.decompress(blob[:end], kind, "hostile.ko")


def mutate(data, ops, hot):
    data = bytearray(data)
    for op, pos, arg in ops:
        pos = hot[pos % len(hot)] if arg & 1 else pos % (len(data) + 1)
        if op == "flip":
            if pos < len(data):
                data[pos] ^= 1 << (arg % 8)
        elif op == "insert":
            data[pos:pos] = bytes((arg % 256,)) * (1 + arg % 5)
        elif op == "delete":
            del data[pos:pos + 1 + arg % 9]
        elif pos + 8 <= len(data):  # a field: zero, all ones, the size, a small number
            struct.pack_into("<Q", data, pos, (0, (1 << 64) - 1, len(data), arg % 64, 1 << 31)[arg % 5])
    return bytes(data)


OPS = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "field", "field"]),
                         st.integers(0, 1 << 20), st.integers(0, 1 << 16)), min_size=1, max_size=5)


def hot_spots(data):
    """The ELF header and every field of every section header: where structure lives."""
    shoff, shnum, dummy1, dummy2 = layout(data)
    return list(range(0, 64, 2)) + [shoff + 64 * i + f for i in range(shnum) for f in (0, 4, 8, 24, 32, 40, 56)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(MODULES), ops=OPS)
def test_fuzz_elf(modules, which, ops):
    data = modules[which]
    read_all(mutate(data, ops, hot_spots(data)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_fuzz_signature_trailer(dummy, ops):
    """Mutations in the last kilobytes: the PKCS#7 blob and the trailer around it."""
    tail = len(dummy) - 1500
    bad = mutate(dummy, ops, list(range(tail, len(dummy))))
    sig = read_signature(bad)
    assert sig is None or sig.id_type in ("PGP", "X509", "PKCS#7")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(COMPRESSORS)), ops=OPS)
def test_fuzz_compressed(dummy, kind, ops):
    blob = COMPRESSORS[kind](dummy)
    bad = mutate(blob, ops, list(range(min(len(blob), 64))))
    try:
        out = kfile.decompress(bad, kfile.detect_compression(bad), "fuzz.ko", limit=1 << 20)
    except ModuleFileError as e:
        assert "fuzz.ko" in str(e)
        return
    assert len(out) <= 1 << 20
    read_all(out)
