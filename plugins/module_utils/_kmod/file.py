# SPDX-License-Identifier: GPL-3.0-or-later
"""Read a module file into ELF bytes, decompressing it in memory like libkmod-file.c."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
import zlib

from .errors import ModuleFileError

try:
    import zstandard
except ImportError:  # the zstd command line tool is the fallback
    zstandard = None

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


def decompress(data: bytes, compression: str | None, path: str = "<memory>") -> bytes:
    """The decompressed bytes; ModuleFileError naming path when they are corrupt."""
    try:
        if compression is None:
            return data
        if compression == "xz":
            return lzma.decompress(data, format=lzma.FORMAT_XZ)
        if compression == "gzip":
            return gzip.decompress(data)
        if compression == "zstd":
            return _zstd_decompress(data, path)
    except (lzma.LZMAError, zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise ModuleFileError(f"{path}: corrupt {compression} data: {exc}", path=path) from exc
    raise ModuleFileError(f"{path}: unknown compression {compression!r}", path=path)


def _zstd_decompress(data: bytes, path: str) -> bytes:
    if zstandard is not None:
        try:
            # Streaming reader: kernel modules are compressed without a content size
            # in the frame header, which one-shot decompress() refuses.
            stream = zstandard.ZstdDecompressor().decompressobj()
            out = stream.decompress(data)
        except zstandard.ZstdError as exc:
            raise ModuleFileError(f"{path}: corrupt zstd data: {exc}", path=path) from exc
        if not stream.eof:
            raise ModuleFileError(f"{path}: corrupt zstd data: truncated frame", path=path)
        return out
    tool = shutil.which("zstd")
    if tool is None:
        raise ModuleFileError(
            f"{path}: zstd-compressed, but neither the zstandard Python package nor the zstd tool is installed",
            path=path)
    # The engine has no AnsibleModule (so no run_command): a pipe to zstd, no shell, no user text.
    proc = subprocess.run([tool, "-dc"], input=data, capture_output=True, check=False)  # pylint: disable=ansible-bad-function
    if proc.returncode != 0:
        raise ModuleFileError(
            f"{path}: corrupt zstd data: {proc.stderr.decode(errors='replace').strip()}", path=path)
    return proc.stdout


def read_module_bytes(path: str) -> tuple[bytes, str | None]:
    """(ELF bytes, compression) of a .ko/.ko.gz/.ko.xz/.ko.zst file.

    Raises ModuleFileError naming the file when it cannot be read, is shorter
    than libkmod accepts, or does not decompress.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ModuleFileError(f"{path}: cannot read: {exc.strerror}", path=path) from exc
    if len(data) < _MIN_SIZE:
        raise ModuleFileError(f"{path}: file too short ({len(data)} bytes) to be a module", path=path)
    compression = detect_compression(data)
    return decompress(data, compression, path), compression
