# SPDX-License-Identifier: GPL-3.0-or-later
"""ModprobeConfig against `modprobe -c` on fixture modprobe.d trees and kernel command lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config import (
    ModprobeConfig, config_files, logical_lines)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import KmodGeneration
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import CONFIG_DIRS, KmodPaths

import kmod_oracle

FIXTURES = Path(__file__).parent / "fixtures" / "modprobe.d"
CMDLINES = [
    "",
    'BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet dummy.cmd=1 modprobe.blacklist=veth,bonding,,x-y '
    'igb.x="a b" "snd-hda-intel.y=c d" bad.p.q=1 foo. .p=1 my-mod.z "q.r" x="y.z" a.b=c=d',
    'loop.max_loop=4\tloop.max_part="1 2"\n',
    '"dummy.unterminated=1 2',
]


def fixture_dirs(case: str) -> list[str]:
    """The five modprobe.d directories of a fixture, in libkmod's order."""
    return [str(FIXTURES / case / d / "modprobe.d") for d in CONFIG_DIRS]


def render(config: ModprobeConfig) -> list[str]:
    """Our configuration printed the way `modprobe -c` prints its own (tools/modprobe.c)."""
    out = [f"blacklist {b.modname}" for b in config.blacklist]
    out += [f"install {c.modname} {c.command}" for c in config.install]
    out += [f"remove {c.modname} {c.command}" for c in config.remove]
    out += [f"alias {a.pattern} {a.modname}" for a in config.aliases]
    out += [f"options {o.modname} {o.options}" for o in config.options]
    out += ["softdep %s %s%s" % (s.modname, "pre: " + " ".join(s.pre) if s.pre else "",
                                 "post: " + " ".join(s.post) if s.post else "")
            for s in config.softdeps]
    return out


def oracle_config(tree, config: list[str], cmdline: str) -> tuple[str, list[str]]:
    seen, [(rc, out, err)] = kmod_oracle.run_modprobe(tree.root, tree.release, [["-c"]],
                                                      [Path(c) for c in config], cmdline)
    assert rc == 0, err
    return seen, out.split("\n\n# End of configuration files.", 1)[0].split("\n")


@pytest.mark.parametrize("cmdline", CMDLINES)
def test_fixture_config_equals_modprobe_c(kernel_6_1, cmdline):
    dirs = fixture_dirs("full")
    seen, expected = oracle_config(kernel_6_1, dirs, cmdline)
    ours = ModprobeConfig.load(KmodPaths(str(kernel_6_1.root), kernel_6_1.release), cmdline=seen,
                               config_paths=dirs)
    assert render(ours) == expected


def test_real_tree_softdeps_equal_modprobe_c(kernel_tree):
    """modules.softdep of a real tree (depmod's output) parses as kmod parses it."""
    seen, expected = oracle_config(kernel_tree, [], "")
    ours = ModprobeConfig.load(KmodPaths(str(kernel_tree.root), kernel_tree.release), cmdline=seen,
                               config_paths=[])
    assert render(ours) == expected


def test_odd_bytes_equal_modprobe_c(kernel_6_1, tmp_path):
    """CR line ends and backslash escapes (kept out of the committed fixtures: ansible-test
    sanity forbids CRLF files). A backslash at the very end of a file is left out: kmod 30
    stores the EOF marker there as a 0xFF byte, we drop it (see logical_lines)."""
    conf = tmp_path / "odd.conf"
    conf.write_bytes(b"options e1000e crlf=1\r\noptions e1000e\tx=\\y\r\nalias a\\-b e1000e\n"
                     b"options e1000e last=1")
    seen, expected = oracle_config(kernel_6_1, [str(conf)], "")
    ours = ModprobeConfig.load(KmodPaths(str(kernel_6_1.root), kernel_6_1.release), cmdline=seen,
                               config_paths=[str(conf)])
    assert render(ours) == expected


def test_texts_read_in_place_of_files_equal_modprobe_c(kernel_6_1, tmp_path):
    """texts stand in for files as if written: a replaced file, a new one, and one that an
    earlier directory's file of the same name hides. kmod reads the written copy."""
    texts = {"etc/modprobe.d/00-override.conf": "blacklist veth\n",
             "etc/modprobe.d/zz-new.conf": "options dummy numdummies=3\nalias my-new dummy\n",
             "lib/modprobe.d/00-override.conf": "blacklist hidden\n"}
    planned, written = tmp_path / "planned", tmp_path / "written"
    shutil.copytree(FIXTURES / "full", planned)
    shutil.copytree(FIXTURES / "full", written)
    for rel, text in texts.items():
        (written / rel).write_text(text)
    dirs = [str(written / d / "modprobe.d") for d in CONFIG_DIRS]
    seen, expected = oracle_config(kernel_6_1, dirs, "")
    ours = ModprobeConfig.load(KmodPaths(str(kernel_6_1.root), kernel_6_1.release), cmdline=seen,
                               config_paths=[str(planned / d / "modprobe.d") for d in CONFIG_DIRS],
                               texts={str(planned / rel): text for rel, text in texts.items()})
    assert render(ours) == expected and "blacklist veth" in expected
    assert [f.replace(str(planned), str(written)) for f in ours.files] == \
        config_files(KmodPaths(str(kernel_6_1.root), kernel_6_1.release), dirs)
    assert not (planned / "etc/modprobe.d/zz-new.conf").exists(), "nothing is written"


def test_sources_and_warnings(kernel_6_1):
    dirs = fixture_dirs("full")
    config = ModprobeConfig.load(KmodPaths(str(kernel_6_1.root), kernel_6_1.release), cmdline="",
                                 config_paths=dirs)
    etc = FIXTURES / "full" / "etc" / "modprobe.d"
    names = [Path(f).name for f in config.files]
    assert names == sorted(names)
    assert str(etc / "00-override.conf") in config.files  # earlier directory wins on same name
    assert not {"ignored.txt", "foo.conf.bak", ".hidden.conf", "x.conf"} & set(names)
    igb = next(o for o in config.options if o.modname == "igb")
    assert (igb.options, str(igb.source)) == ("    max_vfs=2", f"{etc / 'continuation.conf'}:1")
    cont = etc / "continuation.conf"
    assert [w.split(": ", 1)[0] for w in config.warnings if str(cont) in w] == [
        f"{cont}:4", f"{cont}:6", f"{cont}:7", f"{cont}:8"]
    assert any("subdir.conf" in w for w in config.warnings)
    assert any(f"{etc / 'alias.conf'}:7" in w for w in config.warnings)  # bad ']'


def test_weakdep_and_alias_files_follow_the_generation(kernel_6_1):
    """kmod 30 knows no weakdep (a bad line) and reads *.alias; kmod 34 the reverse."""
    dirs = fixture_dirs("full")
    paths = KmodPaths(str(kernel_6_1.root), kernel_6_1.release)
    weakdep_conf = f"{FIXTURES / 'full' / 'etc' / 'modprobe.d' / 'weakdep.conf'}:1"
    old = ModprobeConfig.load(paths, cmdline="", config_paths=dirs, generation=KmodGeneration(30))
    assert old.weakdep_for("dummy") is None
    assert any(w.startswith(weakdep_conf) and "'weakdep'" in w for w in old.warnings)
    assert "legacy.alias" in {Path(f).name for f in old.files}
    new = ModprobeConfig.load(paths, cmdline="", config_paths=dirs, generation=KmodGeneration(34))
    assert new.weakdep_for("dummy").deps == ("veth",)
    assert not any(w.startswith(weakdep_conf) for w in new.warnings)
    assert "legacy.alias" not in {Path(f).name for f in new.files}
    assert sorted(f for f in old.files if not f.endswith(".alias")) == sorted(
        f for f in new.files if not f.endswith("modules.weakdep"))


def test_cmdline_source_and_default(tmp_path, kernel_6_1):
    """cmdline=None reads proc/cmdline under root; its entries name that file."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cmdline").write_text("dummy.p=1 modprobe.blacklist=veth\n")
    config = ModprobeConfig.load(KmodPaths(str(tmp_path), kernel_6_1.release))
    assert [(o.modname, o.options, o.source.path) for o in config.options] == [
        ("dummy", "p=1", str(tmp_path / "proc" / "cmdline"))]
    assert config.is_blacklisted("veth")


def test_default_dirs_under_root(kernel_6_1, tmp_path):
    """Without config_paths the five directories under root are read, in libkmod order."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "full", root)
    paths = KmodPaths(str(root), kernel_6_1.release)
    default = config_files(paths)
    explicit = config_files(paths, [str(root / d / "modprobe.d") for d in CONFIG_DIRS])
    assert default == explicit and len(default) > 10


@pytest.mark.parametrize("text, lines", [
    ("a\\\nb\nc", [(1, "ab", "a\\\nb\n"), (3, "c", "c")]),
    ("x\\y\\\\z\n", [(1, "xy\\z", "x\\y\\\\z\n")]),
    ("\n\nq", [(1, "", "\n"), (2, "", "\n"), (3, "q", "q")]),
    ("end\\", [(1, "end", "end\\")]),
])
def test_logical_lines(text, lines):
    assert list(logical_lines(text)) == lines
