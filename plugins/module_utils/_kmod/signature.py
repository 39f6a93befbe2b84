# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Appended module signatures, read the way libkmod-signature.c reads them.

A signed module ends with ``[signer][key id][signature][struct module_signature][magic]``.
Kernels sign with PKCS#7 (signer and key id lengths 0, everything inside the DER blob);
the blob is parsed here with a small DER/BER reader instead of OpenSSL.
"""

from __future__ import annotations

import dataclasses
import struct

SIG_MAGIC = b"~Module signature appended~\n"
_MODSIG = struct.Struct(">BBBBB3xI")  # algo, hash, id_type, signer_len, key_id_len, sig_len

PKEY_ALGO = ("DSA", "RSA")
PKEY_HASH_ALGO = ("md4", "md5", "sha1", "rmd160", "sha256", "sha384", "sha512", "sha224", "sm3")
PKEY_ID_TYPE = ("PGP", "X509", "PKCS#7")
PKEY_ID_PKCS7 = 2

# Digest algorithm OIDs libkmod maps to the names above (obj_to_hash_algo).
_HASH_OIDS = {
    "1.2.840.113549.2.4": "md4",
    "1.2.840.113549.2.5": "md5",
    "1.3.14.3.2.26": "sha1",
    "1.3.36.3.2.1": "rmd160",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "1.2.156.10197.1.401": "sm3",
}
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_COMMON_NAME = "2.5.4.3"

# DER tags used below.
_INTEGER, _OCTET_STRING, _OID, _SEQUENCE, _SET = 0x02, 0x04, 0x06, 0x30, 0x31
_CONTEXT_0_CONSTRUCTED = 0xA0
# PKCS#7 nests a handful of levels and its OIDs take a dozen bytes; more is a crafted blob
# (deep indefinite-length nesting would recurse without end, a long OID make a huge integer).
_MAX_NESTING = 32
_MAX_OID = 64


@dataclasses.dataclass(frozen=True)
class ModuleSignature:
    """What modinfo reports as sig_id, signer, sig_key, sig_hashalgo and signature."""

    id_type: str
    signer: str
    key_id: bytes
    hash_algo: str
    signature: bytes


class _DerError(ValueError):
    pass


def read_signature(data: bytes) -> ModuleSignature | None:
    """The signature appended to (decompressed) module bytes, None if there is none.

    Like libkmod, a trailer that does not add up, or a PKCS#7 blob that does not parse,
    counts as "no signature" rather than an error.
    """
    size = len(data) - len(SIG_MAGIC)
    if size < 0 or data[size:] != SIG_MAGIC:
        return None
    size -= _MODSIG.size
    if size < 0:
        return None
    algo, hash_id, id_type, signer_len, key_id_len, sig_len = _MODSIG.unpack_from(data, size)
    if algo >= len(PKEY_ALGO) or hash_id >= len(PKEY_HASH_ALGO) or id_type >= len(PKEY_ID_TYPE):
        return None
    if sig_len == 0 or size < signer_len + key_id_len + sig_len:
        return None
    sig_start = size - sig_len
    if id_type == PKEY_ID_PKCS7:
        try:
            return _parse_pkcs7(data[sig_start:size])
        except _DerError:
            return None
    key_start = sig_start - key_id_len
    signer_start = key_start - signer_len
    return ModuleSignature(
        id_type=PKEY_ID_TYPE[id_type],
        signer=_text(data[signer_start:key_start]),
        key_id=data[key_start:sig_start],
        hash_algo=PKEY_HASH_ALGO[hash_id],
        signature=data[sig_start:size],
    )


def _parse_pkcs7(blob: bytes) -> ModuleSignature:
    """Signer (issuer CN), key id (serial), digest and encrypted digest of SignerInfo #1."""
    content_info = _Der(blob).enter(_SEQUENCE)
    if _decode_oid(content_info.expect(_OID)) != _OID_SIGNED_DATA:
        raise _DerError("not PKCS#7 signedData")
    signed_data = content_info.enter(_CONTEXT_0_CONSTRUCTED).enter(_SEQUENCE)
    signed_data.expect(_INTEGER)  # version
    signed_data.expect(_SET)  # digestAlgorithms
    signed_data.expect(_SEQUENCE)  # contentInfo (detached: no content)
    tag, value = signed_data.next()
    while tag in (0xA0, 0xA1):  # [0] certificates, [1] crls
        tag, value = signed_data.next()
    if tag != _SET:
        raise _DerError("signerInfos missing")
    signer_info = _Der(value).enter(_SEQUENCE)
    signer_info.expect(_INTEGER)  # version
    issuer_and_serial = signer_info.enter(_SEQUENCE)
    issuer = issuer_and_serial.enter(_SEQUENCE)
    serial = issuer_and_serial.expect(_INTEGER)
    digest_algorithm = signer_info.enter(_SEQUENCE)
    tag, value = signer_info.next()
    if tag == 0xA0:  # [0] authenticatedAttributes
        tag, value = signer_info.next()
    if tag != _SEQUENCE:  # digestEncryptionAlgorithm
        raise _DerError("digestEncryptionAlgorithm missing")
    encrypted_digest = signer_info.expect(_OCTET_STRING)
    digest_oid = _decode_oid(digest_algorithm.expect(_OID))
    return ModuleSignature(
        id_type=PKEY_ID_TYPE[PKEY_ID_PKCS7],
        signer=_signer_name(issuer),
        key_id=_integer_magnitude(serial),
        hash_algo=_HASH_OIDS.get(digest_oid, "unknown"),
        signature=encrypted_digest,
    )


def _signer_name(name: _Der) -> str:
    """libkmod's x509_name_to_str: the first commonName, else the last attribute's value.

    The value's raw string bytes are used up to the first NUL, as strlen() would.
    """
    found = None
    while name.remaining:
        rdn = name.enter(_SET)
        while rdn.remaining:
            attribute = rdn.enter(_SEQUENCE)
            oid = _decode_oid(attribute.expect(_OID))
            found = attribute.next()[1]
            if oid == _OID_COMMON_NAME:
                return _c_string(found)
    return "" if found is None else _c_string(found)


def _c_string(raw: bytes) -> str:
    return _text(raw.split(b"\0", 1)[0])


def _text(raw: bytes) -> str:
    # Lossless like elf.py's modinfo strings: bytes that are not UTF-8 survive re-encoding.
    return raw.decode("utf-8", "surrogateescape")


def _integer_magnitude(raw: bytes) -> bytes:
    """BN_bn2bin(ASN1_INTEGER_to_BN(x)): big-endian |x| without leading zero bytes."""
    value = abs(int.from_bytes(raw, "big", signed=True))
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _decode_oid(raw: bytes) -> str:
    if not raw or len(raw) > _MAX_OID or raw[-1] & 0x80:
        raise _DerError("empty, overlong or unterminated OID")
    arcs: list[int] = []
    value = 0
    for byte in raw:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


class _Der:
    """Sequential reader of BER/DER TLVs (single-byte tags; indefinite lengths allowed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> bool:
        return self.pos < len(self.data)

    def next(self) -> tuple[int, bytes]:
        tag, start, end, after = self._header(self.pos)
        self.pos = after
        return tag, self.data[start:end]

    def expect(self, tag: int) -> bytes:
        got, value = self.next()
        if got != tag:
            raise _DerError(f"expected tag {tag:#x}, found {got:#x}")
        return value

    def enter(self, tag: int) -> _Der:
        """The contents of the next element, which must be constructed with this tag."""
        return _Der(self.expect(tag))

    def _header(self, pos: int, depth: int = 0) -> tuple[int, int, int, int]:
        """(tag, content start, content end, position after the element)."""
        if depth > _MAX_NESTING:
            raise _DerError("nested too deeply")
        data = self.data
        if pos + 2 > len(data):
            raise _DerError("truncated")
        tag, length = data[pos], data[pos + 1]
        if tag & 0x1F == 0x1F:
            raise _DerError("multi-byte tags are not used by PKCS#7")
        pos += 2
        if length == 0x80:
            if not tag & 0x20:
                raise _DerError("indefinite length on a primitive")
            end = pos
            while data[end:end + 2] != b"\0\0":
                end = self._header(end, depth + 1)[3]
            return tag, pos, end, end + 2
        if length & 0x80:
            count = length & 0x7F
            if pos + count > len(data):
                raise _DerError("truncated length")
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise _DerError("element runs past its container")
        return tag, pos, pos + length, pos + length


def hex_string(data: bytes) -> str:
    """kmod_module_hex_to_str: 'AA:BB:…', a newline and two tabs after every 20th colon."""
    return ":\n\t\t".join(data[i:i + 20].hex(":").upper() for i in range(0, len(data), 20))
