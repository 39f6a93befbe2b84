# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile inputs to kmod generation detection: the kmod_compat value, dpkg status files,
library file names and index headers under root. Detection must never fail on what it
finds under root (it only reads), and a bad kmod_compat is a KmodError naming the option."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import (
    NEWEST, OLDEST, KmodCompatError, detect_generation, index_is_preorder, parse_compat)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.one_of(st.text(max_size=60), st.integers(), st.floats(), st.booleans(), st.none(),
                 st.lists(st.integers(), max_size=3), st.binary(max_size=20)))
# found by CI: each astral character is 10 characters of repr, which made the message 262 long
@example("0" * 19 + "\x1f" * 7 + "\U0001342f" + "\U00018cd6" * 4 + "\U00018d09" * 2 + "\U0001eebc")
def test_parse_compat_is_a_version_or_a_clear_error(value):
    try:
        result = parse_compat(value)
    except KmodCompatError as exc:
        assert "kmod_compat" in exc.msg and len(exc.msg) < 200
        return
    assert result is None or OLDEST <= result <= NEWEST


@SETTINGS
@given(st.binary(max_size=64))
def test_index_layout_never_raises(data):
    assert index_is_preorder(data) in (True, False, None)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.binary(max_size=32))
def test_index_layout_of_any_header(root_word, tail):
    data = struct.pack(">III", 0xB007F457, 0x00020001, root_word) + tail
    expected = None if not tail else (root_word & 0x0FFFFFFF) == 12
    assert index_is_preorder(data) is expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.binary(max_size=400), version=st.text(max_size=30), libname=st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=30))  # type: ignore[arg-type]
def test_detection_survives_any_status_and_file_names(tmp_path_factory, status, version, libname):
    root = tmp_path_factory.mktemp("root")
    dpkg = root / "var/lib/dpkg"
    dpkg.mkdir(parents=True)
    (dpkg / "status").write_bytes(status + b"\n\nPackage: kmod\nStatus: install ok installed\nVersion: "
                                  + version.encode("utf-8", "surrogateescape") + b"\n")
    lib = root / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    try:
        (lib / libname).write_bytes(b"")
    except OSError:
        pass  # a name the file system refuses (too long, '.', '..')
    gen = detect_generation(KmodPaths(str(root), "6.12.0"))
    assert OLDEST <= gen.version <= NEWEST
    assert gen.source in ("dpkg", "libkmod", "index", "host", "default")


def test_unreadable_status_is_skipped(tmp_path: Path):
    """A status that is a directory (or unreadable) is no signal, not an error."""
    (tmp_path / "var/lib/dpkg/status").mkdir(parents=True)
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/libkmod.so.2.5.1").mkdir()  # even a directory named like the library
    gen = detect_generation(KmodPaths(str(tmp_path), "6.12.0"))
    assert (gen.version, gen.source) == (34, "libkmod")
