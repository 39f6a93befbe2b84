# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Read a module file into ELF bytes, decompressing it in memory like libkmod-file.c."""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import subprocess
import threading
import typing as t
import zlib

from .atomic import read_file
from .errors import KmodError, ModuleFileError

try:
    import zstandard
except ImportError:  # the zstd command line tool is the fallback
    zstandard = None  # type: ignore[assignment]

# libkmod recognises compression by magic, never by file name.
_MAGICS = (
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("xz", b"\xfd7zXZ\x00"),
    ("gzip", b"\x1f\x8b"),
)
# libkmod refuses files shorter than its longest magic (-EINVAL).
_MIN_SIZE = max(len(magic) for _name, magic in _MAGICS)


def detect_compression(data: bytes) -> str | None:
    """'zstd', 'xz', 'gzip', or None for anything else (plain ELF or garbage)."""
    for name, magic in _MAGICS:
        if data.startswith(magic):
            return name
    return None


# The most a module may decompress to. Debian's biggest module (amdgpu) is 20 MB and modules
# built with debug info reach a few hundred; more is a decompression bomb, refused before it
# fills the memory (xz turns 1 MB of zeros into gigabytes).
MAX_MODULE_SIZE = 512 << 20
_XZ_MEMLIMIT = 256 << 20  # the decoder's own memory (its dictionary); modules use 1 MiB
_CHUNK = 1 << 20
_ZSTD_FEED = 1 << 10  # compressed bytes per step: a step yields at most ~32 MiB


def decompress(data: bytes, compression: str | None, path: str = "<memory>",
               limit: int | None = None) -> bytes:
    """The decompressed bytes; ModuleFileError naming path when they are corrupt or would
    exceed limit bytes (default MAX_MODULE_SIZE)."""
    limit = MAX_MODULE_SIZE if limit is None else limit
    try:
        if compression is None:
            return data
        if compression == "xz":
            return _xz_decompress(data, path, limit)
        if compression == "gzip":
            return _gzip_decompress(data, path, limit)
        if compression == "zstd":
            return _zstd_decompress(data, path, limit)
    except (lzma.LZMAError, zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise ModuleFileError(f"{path}: corrupt {compression} data: {exc}", path=path) from exc
    raise ModuleFileError(f"{path}: unknown compression {compression!r}", path=path)


def _too_big(path: str, compression: str, limit: int) -> ModuleFileError:
    return ModuleFileError(
        f"{path}: {compression} data decompresses to more than {limit} bytes: not a kernel module",
        path=path)


def _xz_decompress(data: bytes, path: str, limit: int) -> bytes:
    """lzma.decompress (concatenated streams, trailing garbage after one ignored), bounded."""
    out: list[bytes] = []
    total = 0
    while True:
        stream = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)
        try:
            chunk = stream.decompress(data, max_length=limit + 1 - total)
        except lzma.LZMAError:
            if out:
                break
            raise
        total += len(chunk)
        if total > limit:
            raise _too_big(path, "xz", limit)
        out.append(chunk)
        if not stream.eof:
            raise lzma.LZMAError("Compressed data ended before the end-of-stream marker was reached")
        data = stream.unused_data
        if not data:
            break
    return b"".join(out)


def _gzip_decompress(data: bytes, path: str, limit: int) -> bytes:
    out: list[bytes] = []
    total = 0
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                return b"".join(out)
            total += len(chunk)
            if total > limit:
                raise _too_big(path, "gzip", limit)
            out.append(chunk)


def _zstd_decompress(data: bytes, path: str, limit: int) -> bytes:
    if zstandard is not None:
        out: list[bytes] = []
        total = 0
        try:
            # Streaming: kernel modules are compressed without a content size in the frame
            # header, which one-shot decompress() refuses. Fed in small steps, to stop a bomb.
            stream = zstandard.ZstdDecompressor().decompressobj()
            for pos in range(0, len(data), _ZSTD_FEED):
                chunk = stream.decompress(data[pos:pos + _ZSTD_FEED])
                total += len(chunk)
                if total > limit:
                    raise _too_big(path, "zstd", limit)
                out.append(chunk)
                if stream.eof:
                    break
        except zstandard.ZstdError as exc:
            raise ModuleFileError(f"{path}: corrupt zstd data: {exc}", path=path) from exc
        if not stream.eof:
            raise ModuleFileError(f"{path}: corrupt zstd data: truncated frame", path=path)
        return b"".join(out)
    tool = shutil.which("zstd")
    if tool is None:
        raise ModuleFileError(
            f"{path}: zstd-compressed, but neither the zstandard Python package nor the zstd tool is installed",
            path=path)
    return _zstd_tool(tool, data, path, limit)


def _zstd_tool(tool: str, data: bytes, path: str, limit: int) -> bytes:
    """zstd -dc, reading at most limit + 1 bytes of its output."""
    # The engine has no AnsibleModule (so no run_command): a pipe to zstd, no shell, no user text.
    proc = subprocess.Popen([tool, "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # pylint: disable=ansible-bad-function
                            stderr=subprocess.PIPE)
    stdout, stderr = t.cast(t.IO[bytes], proc.stdout), t.cast(t.IO[bytes], proc.stderr)  # (both are pipes)
    feeder = threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True)
    feeder.start()
    out: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = stdout.read(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise _too_big(path, "zstd", limit)
            out.append(chunk)
        err = stderr.read()
    finally:
        if proc.poll() is None and total > limit:
            proc.kill()
        proc.wait()
        feeder.join()
        stdout.close()
        stderr.close()
    if proc.returncode != 0:
        raise ModuleFileError(f"{path}: corrupt zstd data: {err.decode(errors='replace').strip()}", path=path)
    return b"".join(out)


def _feed(pipe: t.IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
    except OSError:  # the reader stopped early (too much output) or the tool failed
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def read_module_bytes(path: str) -> tuple[bytes, str | None]:
    """(ELF bytes, compression) of a .ko/.ko.gz/.ko.xz/.ko.zst file.

    Raises ModuleFileError naming the file when it cannot be read, is shorter
    than libkmod accepts, or does not decompress.
    """
    try:
        data = read_file(path, MAX_MODULE_SIZE + 1)  # confined to root, regular files only
    except KmodError as exc:
        raise ModuleFileError(exc.msg, path=path) from exc
    if data is None:
        raise ModuleFileError(f"{path}: cannot read: No such file or directory", path=path)
    if len(data) > MAX_MODULE_SIZE:
        raise ModuleFileError(f"{path}: larger than {MAX_MODULE_SIZE >> 20} MiB: not a module", path=path)
    if len(data) < _MIN_SIZE:
        raise ModuleFileError(f"{path}: file too short ({len(data)} bytes) to be a module", path=path)
    compression = detect_compression(data)
    return decompress(data, compression, path), compression
