# SPDX-License-Identifier: GPL-3.0-or-later
"""Module signatures compared with kmod's modinfo (built with libcrypto) on real and signed-here modules."""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
import typing as t
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.signature import (
    SIG_MAGIC,
    hex_string,
    read_signature,
)

SIG_KEYS = ("sig_id", "signer", "sig_key", "sig_hashalgo", "signature")
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def modinfo_sig(path: Path) -> dict[str, str]:
    """The signature fields kmod's modinfo prints for a module file ({} if none)."""
    out = {}
    for key in SIG_KEYS:
        res = subprocess.run(["modinfo", "-F", key, str(path)], capture_output=True, check=True)
        if res.stdout:
            out[key] = res.stdout.decode("utf-8", "surrogateescape").removesuffix("\n")
    return out


def ours(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    if path.suffix == ".xz":
        data = lzma.decompress(data)
    sig = read_signature(data)
    if sig is None:
        return {}
    return dict(zip(SIG_KEYS, (sig.id_type, sig.signer, hex_string(sig.key_id), sig.hash_algo,
                               hex_string(sig.signature))))


def unsigned_body(kernel_6_1) -> bytes:
    data = (kernel_6_1.moddir / "kernel/drivers/net/dummy.ko").read_bytes()
    assert data.endswith(SIG_MAGIC)
    sig_len = struct.unpack(">I", data[-len(SIG_MAGIC) - 4:-len(SIG_MAGIC)])[0]
    return data[:-(len(SIG_MAGIC) + 12 + sig_len)]


def trailer(blob: bytes, id_type: int = 2, hash_id: int = 0, signer: bytes = b"",
            key_id: bytes = b"", algo: int = 0) -> bytes:
    """What scripts/sign-file appends: [signer][key id][sig][struct module_signature][magic]."""
    return (signer + key_id + blob
            + struct.pack(">BBBBB3xI", algo, hash_id, id_type, len(signer), len(key_id), len(blob))
            + SIG_MAGIC)


def cms_sign(tmp: Path, body: bytes, subject: str, serial: str, *extra: str) -> bytes:
    key, cert, src = tmp / "key.pem", tmp / "cert.pem", tmp / "body"
    subprocess.run(["openssl", "req", "-new", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-subj", subject, "-set_serial", serial,
                    "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    src.write_bytes(body)
    res = subprocess.run(["openssl", "cms", "-sign", "-in", str(src), "-signer", str(cert),
                          "-inkey", str(key), "-binary", "-noattr", "-nocerts", "-nosmimecap",
                          "-outform", "DER", *extra], check=True, capture_output=True)
    return res.stdout


def test_real_modules_match_modinfo(kernel_6_1, kernel_6_12) -> None:
    for tree in (kernel_6_1, kernel_6_12):
        files = sorted(p for p in tree.moddir.rglob("*.ko*"))[::400]
        for path in files:
            expected = modinfo_sig(path)
            assert expected, f"{path} is expected to be signed"
            assert ours(path) == expected, path


# (subject, serial, extra openssl cms args): each a case where libcrypto's answer is not obvious.
CMS_CASES = {
    "cn_and_sha256": ("/O=Org/CN=Test signing key", "0x01020304", ()),
    "no_cn_takes_last_attribute": ("/O=Only Org/OU=Unit", "7", ()),
    "high_bit_serial": ("/CN=k", "0x80FF00112233445566778899AABBCCDDEEFF0011223344", ("-md", "sha512")),
    "zero_serial": ("/CN=zero", "0", ("-md", "sha1")),
    "negative_serial": ("/CN=neg", "-5", ("-md", "sha384")),
    "ber_indefinite_length": ("/CN=stream", "9", ("-stream",)),
    "subject_key_id_is_not_pkcs7": ("/CN=keyid", "3", ("-keyid",)),
}


@pytest.mark.parametrize("case", sorted(CMS_CASES))
def test_pkcs7_signed_here_matches_modinfo(kernel_6_1, tmp_path: Path, case: str) -> None:
    subject, serial, extra = CMS_CASES[case]
    body = unsigned_body(kernel_6_1)
    module = tmp_path / "dummy.ko"
    module.write_bytes(body + trailer(cms_sign(tmp_path, body, subject, serial, *extra)))
    expected = modinfo_sig(module)
    assert ours(module) == expected
    if case == "subject_key_id_is_not_pkcs7":
        assert expected == {}  # d2i_PKCS7 refuses a CMS subjectKeyIdentifier signer
    else:
        assert expected["sig_id"] == "PKCS#7"


TRAILER_CASES: dict[str, dict[str, t.Any]] = {
    "x509_raw": dict(blob=b"\x01" * 45, id_type=1, hash_id=4, signer=b"Raw signer", key_id=b"\xab\xcd"),
    "pgp_empty_key": dict(blob=b"sig", id_type=0, hash_id=8, signer=b"pgp"),
    "bad_algo": dict(blob=b"sig", id_type=1, algo=2),
    "bad_hash": dict(blob=b"sig", id_type=1, hash_id=9),
    "bad_id_type": dict(blob=b"sig", id_type=3),
    "empty_signature": dict(blob=b"", id_type=1),
    "garbage_pkcs7": dict(blob=b"\x30\x03\x02\x01", id_type=2),
}


@pytest.mark.parametrize("case", sorted(TRAILER_CASES))
def test_raw_trailers_match_modinfo(kernel_6_1, tmp_path: Path, case: str) -> None:
    module = tmp_path / "dummy.ko"
    module.write_bytes(unsigned_body(kernel_6_1) + trailer(**TRAILER_CASES[case]))
    assert ours(module) == modinfo_sig(module)


def test_lengths_beyond_the_file() -> None:
    # sig_len larger than what precedes the trailer: no signature, no exception.
    data = struct.pack(">BBBBB3xI", 0, 4, 2, 0, 0, 1000) + SIG_MAGIC
    assert read_signature(b"x" * 10 + data) is None
    assert read_signature(SIG_MAGIC) is None
    assert read_signature(b"") is None


@pytest.mark.parametrize("size, expected", [
    (0, ""),
    (1, "00"),
    (20, ":".join(["00"] * 20)),
    # As modinfo prints signatures: the colon stays at the end of the wrapped line.
    (21, ":".join(["00"] * 20) + ":\n\t\t00"),
])
def test_hex_string_wraps_every_20_bytes(size: int, expected: str) -> None:
    assert hex_string(bytes(size)) == expected
