# SPDX-License-Identifier: GPL-3.0-or-later
"""depmod.d reading details (the directives' effects are compared with depmod in test_depmod.py)."""

from __future__ import annotations

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod_config import (
    BUILTIN, EXTERNAL, DepmodConfig, config_files, kernel_matches, read_wrapped_lines)


def test_wrapped_lines():
    data = b"search a \\\n b\nx\\y\\\\z\n\nlast\\"
    assert read_wrapped_lines(data) == [(1, b"search a  b"), (3, b"xy\\z"), (4, b""), (5, b"last\xff")]


def test_config_files_sorted_by_basename_earlier_dir_wins(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for d, names in ((a, ["z.conf", "m.conf", ".h.conf", "x.cfg", ".conf"]), (b, ["m.conf", "b.conf"])):
        for n in names:
            (d / n).write_text("")
    (b / "dir.conf").mkdir()
    single = tmp_path / "single.conf"
    single.write_text("")
    assert config_files([str(a), str(b), str(single), str(tmp_path / "missing")]) == [
        str(b / "b.conf"), str(a / "m.conf"), str(single), str(a / "z.conf")]


def test_directives(tmp_path):
    (tmp_path / "x.conf").write_text(
        "search updates built-in\nsearch external extra\noverride m1 * sub\noverride m2 ^9 sub\n"
        "external 6\\.1 /opt/ext\nexternal ^5 /opt/no\nexclude a b\ninclude foo\nbogus\n#c\n")
    cfg = DepmodConfig.load([str(tmp_path)], "6.1.0-56-amd64")
    assert cfg.searches == ["updates", BUILTIN, EXTERNAL, "extra"]
    assert cfg.overrides == ["sub/m1"]
    assert cfg.externals == ["/opt/ext"]
    assert cfg.excludes == ["a", "b"]
    assert len(cfg.warnings) == 2 and "bogus" in cfg.warnings[1]


def test_default_search_is_updates(tmp_path):
    assert DepmodConfig.load([str(tmp_path)], "6.1").searches == ["updates"]


def test_kernel_matches():
    assert kernel_matches("*", "x")
    assert kernel_matches("1\\.2", "6.1.2-x")
    assert not kernel_matches("^1\\.2", "6.1.2-x")
    assert not kernel_matches("(", "6.1")
