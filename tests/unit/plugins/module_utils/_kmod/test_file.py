# SPDX-License-Identifier: GPL-3.0-or-later
"""file.py against the compression tools themselves (xz, zstd, gzip) on real modules."""

from __future__ import annotations

import gzip
import subprocess

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import file as kfile
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import ModuleFileError


@pytest.fixture(scope="module")
def xz_module(kernel_6_12):
    return next(kernel_6_12.moddir.glob("kernel/fs/fat/fat.ko.xz"))


@pytest.fixture(scope="module")
def raw_elf(xz_module):
    return subprocess.run(["xz", "-dc", str(xz_module)], capture_output=True, check=True).stdout


@pytest.fixture
def variants(tmp_path, xz_module, raw_elf):
    """The same module plain, xz (as shipped), zstd and gzip (made by the real tools)."""
    plain = tmp_path / "fat.ko"
    plain.write_bytes(raw_elf)
    zst = tmp_path / "fat.ko.zst"
    subprocess.run(["zstd", "-q", "-o", str(zst), str(plain)], check=True)
    gz = tmp_path / "fat.ko.gz"
    gz.write_bytes(gzip.compress(raw_elf))
    return {None: plain, "xz": xz_module, "zstd": zst, "gzip": gz}


@pytest.mark.parametrize("compression", [None, "xz", "zstd", "gzip"])
def test_read_module_bytes(variants, raw_elf, compression):
    data, found = kfile.read_module_bytes(str(variants[compression]))
    assert found == compression
    assert data == raw_elf


def test_zstd_without_python_package_uses_the_tool(variants, raw_elf, monkeypatch):
    monkeypatch.setattr(kfile, "zstandard", None)
    assert kfile.read_module_bytes(str(variants["zstd"])) == (raw_elf, "zstd")


@pytest.mark.parametrize("data, expected", [
    (b"\x7fELF\x02\x01\x01", None),
    (b"\x28\xb5\x2f\xfd\x00\x00", "zstd"),
    (b"\xfd7zXZ\x00\x00", "xz"),
    (b"\x1f\x8b\x08\x00\x00\x00", "gzip"),
    (b"", None),
])
def test_detect_compression(data, expected):
    assert kfile.detect_compression(data) == expected


@pytest.mark.parametrize("compression", ["xz", "zstd", "gzip"])
def test_truncated_compressed_module(tmp_path, variants, compression):
    bad = tmp_path / f"bad.{compression}"
    data = variants[compression].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModuleFileError, match=str(bad)):
        kfile.read_module_bytes(str(bad))


@pytest.mark.parametrize("content", [b"", b"\x7fELF", b"\xfd7zXZ\x00garbage-not-xz"])
def test_short_or_corrupt_file(tmp_path, content):
    bad = tmp_path / "bad.ko"
    bad.write_bytes(content)
    with pytest.raises(ModuleFileError, match="bad.ko"):
        kfile.read_module_bytes(str(bad))


def test_missing_file(tmp_path):
    with pytest.raises(ModuleFileError, match="missing.ko"):
        kfile.read_module_bytes(str(tmp_path / "missing.ko"))
