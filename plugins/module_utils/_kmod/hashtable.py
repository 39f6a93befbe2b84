# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""libkmod's hash table iteration order (shared/hash.c), which decides depmod's output order.

depmod lists modules (512 buckets) and modules.symbols (2048 buckets) in the order
its hash tables iterate: bucket by bucket, and within a bucket by strcmp.
"""

from __future__ import annotations

import typing as t

_M = 0xFFFFFFFF


def superfast(key: bytes) -> int:
    """Paul Hsieh's SuperFastHash as libkmod implements it on x86-64.

    16-bit loads are little-endian and the 1-byte tail is a signed char.
    """
    n = len(key)
    h = n
    end = n & ~3
    for i in range(0, end, 4):
        h = (h + (key[i] | key[i + 1] << 8)) & _M
        tmp = (((key[i + 2] | key[i + 3] << 8) << 11) ^ h) & _M
        h = ((h << 16) ^ tmp) & _M
        h = (h + (h >> 11)) & _M
    rem = n & 3
    if rem == 3:
        h = (h + (key[end] | key[end + 1] << 8)) & _M
        h ^= (h << 16) & _M
        h ^= (key[end + 2] << 18) & _M
        h = (h + (h >> 11)) & _M
    elif rem == 2:
        h = (h + (key[end] | key[end + 1] << 8)) & _M
        h ^= (h << 11) & _M
        h = (h + (h >> 17)) & _M
    elif rem == 1:
        c = key[end]
        h = (h + (c - 256 if c > 127 else c)) & _M
        h ^= (h << 10) & _M
        h = (h + (h >> 1)) & _M
    h ^= (h << 3) & _M
    h = (h + (h >> 5)) & _M
    h ^= (h << 4) & _M
    h = (h + (h >> 17)) & _M
    h ^= (h << 25) & _M
    h = (h + (h >> 6)) & _M
    return h


def _buckets(size_hint: int) -> int:
    """hash_new's bucket count: size_hint rounded up to a power of two."""
    n = 1
    while n < size_hint:
        n <<= 1
    return n


def iteration_order(keys: t.Iterable[bytes], size_hint: int) -> list[bytes]:
    """The distinct keys in the order hash_iter_next visits them in hash_new(size_hint)."""
    mask = _buckets(size_hint) - 1
    return sorted(set(keys), key=lambda k: (superfast(k) & mask, k))
