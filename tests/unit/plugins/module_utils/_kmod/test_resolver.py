# SPDX-License-Identifier: GPL-3.0-or-later
"""ModuleDB against the real modprobe (kmod 30): --show-depends, -R and -n -v, on both real
kernel trees for every module name and samples of every other kind of query, and on the
fixture modprobe.d trees that cover every directive."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config import ModprobeConfig
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import (
    InvalidNameError, ModuleLookupError)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.resolver import (
    ModuleDB, options_from_args)

import kmod_oracle
from test_config import CMDLINES, fixture_dirs
from test_index import alias_sample, concrete

# Queries aimed at the fixture configuration (see fixtures/modprobe.d/full), each with the
# option arguments given to modprobe after the name.
FIXTURE_QUERIES = [
    ["dummy"], ["dummy", "numdummies=3"], ["dummy", "a=b c", "d='e f'", "g"], ["my-net"], ["my_net", "x=1"],
    ["fs-vfat"], ["vfat"], ["wildcard-two"], ["wild-thing"], ["via-alias-opts"], ["grp-x"], ["grp_x"],
    ["missing-target"], ["fakemod"], ["fakemod", "o=1"], ["onlyremove"], ["fromlib"], ["bonding"],
    ["bonding", "mode=4"], ["nf_nat"], ["nf-nat"], ["xfs"], ["veth"], ["igb"], ["ext4"], ["loop"],
    ["e1000e"], ["snd-hda-intel"], ["snd_hda_codec_hdmi"], ["btrfs"], ["ipmi_msghandler"], ["cifs"],
    ["symbol:nf_nat_setup_info"], ["crypto-crc32c"], ["zswap"], ["no-such-module"], ["bad]alias"],
]


def make_db(tree, config_dirs: list[str], cmdline: str) -> ModuleDB:
    paths = KmodPaths(str(tree.root), tree.release)
    return ModuleDB(paths, ModprobeConfig.load(paths, cmdline=cmdline, config_paths=config_dirs))


def check_show_depends(tree, queries: list[list[str]], config_dirs: list[str] | None = None,
                       cmdline: str = "") -> int:
    """Our show_depends == modprobe --show-depends for each query; unknown names must fail
    on both sides. Returns how many queries resolved."""
    config_dirs = config_dirs or []
    seen, results = kmod_oracle.run_modprobe(tree.root, tree.release,
                                             [["--show-depends"] + q for q in queries],
                                             [Path(c) for c in config_dirs], cmdline)
    db = make_db(tree, config_dirs, seen)
    resolved = 0
    for q, (rc, out, err) in zip(queries, results):
        if rc != 0:
            assert "not found" in err, (q, err)
            with pytest.raises((ModuleLookupError, InvalidNameError)):
                db.show_depends(q[0], options_from_args(q[1:]))
            continue
        assert db.show_depends(q[0], options_from_args(q[1:])) == lines(out), q
        resolved += 1
    return resolved


def lines(out: str) -> list[str]:
    """Output lines; not str.splitlines(), which would also split at a config's '\r'."""
    return out.split("\n")[:-1]


def module_names(tree) -> list[str]:
    return [line.split(":", 1)[0].rsplit("/", 1)[-1].split(".")[0]
            for line in (tree.moddir / "modules.dep").read_text().splitlines()]


def test_every_module_name(kernel_tree):
    """Every module of the tree, by its file name (dashes kept) and its normalized name."""
    names = module_names(kernel_tree)
    queries = sorted({n.replace("-", "_") for n in names} | {n for n in names if "-" in n}
                     | {n.replace("_", "-") for n in names if "_" in n})
    assert check_show_depends(kernel_tree, [[q] for q in queries]) == len(queries)


def test_aliases_symbols_builtins(kernel_tree):
    rng = random.Random(11)
    builtin = [ln.rsplit("/", 1)[-1].split(".")[0]
               for ln in (kernel_tree.moddir / "modules.builtin").read_text().splitlines()]
    records = (kernel_tree.moddir / "modules.builtin.modinfo").read_bytes().decode().split("\0")
    builtin_aliases = [r.split("=", 1)[1] for r in records if ".alias=" in r]
    symbols = [ln.split()[1] for ln in (kernel_tree.moddir / "modules.symbols").read_text().splitlines()[1:]]
    queries = (alias_sample(kernel_tree.moddir, 300, seed=7) + builtin
               + [concrete(a) for a in builtin_aliases] + rng.sample(symbols, 100)
               + ["symbol:no_such_symbol", "no-such-module", "pci:v0000FFFFd0000FFFF", "bad]name"])
    assert check_show_depends(kernel_tree, [[q] for q in queries]) > 500


@pytest.mark.parametrize("case", ["full", "interleaved"])
@pytest.mark.parametrize("cmdline", [CMDLINES[0], CMDLINES[1]])
def test_fixture_config(kernel_tree, case, cmdline):
    queries = FIXTURE_QUERIES + [[n] for n in random.Random(1).sample(module_names(kernel_tree), 150)]
    check_show_depends(kernel_tree, queries, fixture_dirs(case), cmdline)


def test_lookup_order_equals_modprobe_resolve_alias(kernel_6_12):
    """lookup() gives the modules modprobe -R prints, in the same order."""
    queries = [q[0] for q in FIXTURE_QUERIES] + alias_sample(kernel_6_12.moddir, 60, seed=2)
    dirs = fixture_dirs("full")
    seen, results = kmod_oracle.run_modprobe(kernel_6_12.root, kernel_6_12.release,
                                             [["-R", q] for q in queries], [Path(d) for d in dirs])
    db = make_db(kernel_6_12, dirs, seen)
    for q, (rc, out, dummy) in zip(queries, results):
        if rc:
            with pytest.raises((ModuleLookupError, InvalidNameError)):
                db.lookup(q)
        else:
            assert [m.name for m in db.lookup(q)] == out.split(), q


LIVE = ["nf_conntrack", "libcrc32c", "fat", "dummy", "tls", "crc32c_intel"]


@pytest.mark.skipif(not kmod_oracle.can_fake_kernel(), reason="needs root and unshare for a fake /sys/module")
def test_is_loaded_equals_modprobe_dry_run(kernel_6_1):
    """probe_steps with is_loaded == `modprobe -n -v` with these modules live in a fake
    /sys/module: loaded and builtin modules are skipped, a loaded target gives nothing."""
    dirs = fixture_dirs("full")
    queries = FIXTURE_QUERIES + [[n] for n in ("nf_nat", "libcrc32c", "zswap", "fat", "ext4", "xfs")]
    seen, results = kmod_oracle.run_modprobe(kernel_6_1.root, kernel_6_1.release,
                                             [["-n", "-v"] + q for q in queries], [Path(d) for d in dirs],
                                             "", live=LIVE)
    db = make_db(kernel_6_1, dirs, seen)
    for q, (rc, out, dummy) in zip(queries, results):
        if rc:
            continue
        steps = db.probe_steps(q[0], options_from_args(q[1:]), LIVE.__contains__)
        assert all(s.kind != "builtin" for s in steps)
        ours = [f"install {s.command} {s.options or ''}" if s.kind == "install"
                else f"insmod {s.path} {s.options or ''}" for s in steps if s.path or s.command]
        assert ours == [ln for ln in lines(out) if ln.startswith(("insmod ", "install "))], q


def test_probe_steps_fields(kernel_6_1):
    dirs = fixture_dirs("full")
    dummy, [(rc, out, err)] = kmod_oracle.run_modprobe(kernel_6_1.root, kernel_6_1.release,
                                                       [["--show-depends", "vfat"]], [Path(d) for d in dirs], "")
    assert rc == 0, err
    db = make_db(kernel_6_1, dirs, "")
    steps = db.probe_steps("vfat")
    assert [s.path for s in steps] == [ln.split()[1] for ln in lines(out)]
    # vfat and its modules.dep dependency are required; its softdeps (and theirs) are not.
    assert {s.module: s.required for s in steps} == {
        "fat": True, "vfat": True, "loop": False, "dummy": False, "veth": False}
    assert next(s.options for s in steps if s.module == "loop") == "max_loop=8 max_part=2 "
    [fake] = db.probe_steps("fakemod", "o=1")
    assert (fake.kind, fake.command, fake.options, fake.path) == ("install", "/bin/echo fake", "o=1", None)
    [missing] = db.probe_steps("missing-target")
    assert (missing.module, missing.kind, missing.path) == ("no_such_module", "insmod", None)
    assert db.show_depends("missing-target") == []


def test_lookup_fields(kernel_6_1):
    db = make_db(kernel_6_1, fixture_dirs("full"), "")
    [nat] = db.lookup("nf-nat")
    dep_line = (kernel_6_1.moddir / "modules.dep").read_text().split("kernel/net/netfilter/nf_nat.ko:", 1)[1]
    assert nat.deps == [p.rsplit("/", 1)[-1].split(".")[0] for p in dep_line.split("\n", 1)[0].split()]
    assert (nat.alias, nat.path) == (None, f"{kernel_6_1.moddir}/kernel/net/netfilter/nf_nat.ko")
    assert nat.install_command == "/sbin/modprobe --ignore-install nf_nat && echo hi"
    assert (nat.softdep_pre, nat.softdep_post) == (["veth", "igb"], ["bonding"])
    [dummy] = db.lookup("dummy")
    assert dummy.remove_command == "/bin/true"
    [zswap] = db.lookup("zswap")
    assert zswap.builtin and zswap.path is None
    assert [m.name for m in db.lookup_exact("fs-vfat")] == []
    assert [m.name for m in db.lookup_exact("nf-nat")] == ["nf_nat"]


def test_blocked(kernel_6_1):
    """Compared with what modprobe prints for the same configuration."""
    dirs = fixture_dirs("full")
    db = make_db(kernel_6_1, dirs, "")
    e1000e_alias = next(ln.split()[1] for ln in (kernel_6_1.moddir / "modules.alias").read_text().splitlines()
                        if ln.endswith(" e1000e"))
    queries = [concrete(e1000e_alias), "e1000e", "xfs", "vfat", "fs-vfat", "bonding"]
    dummy, results = kmod_oracle.run_modprobe(kernel_6_1.root, kernel_6_1.release,
                                              [["--show-depends", q] for q in queries], [Path(d) for d in dirs], "")
    shown = dict(zip(queries, (lines(result[1]) for result in results)))
    assert shown[concrete(e1000e_alias)] == [] and db.is_blocked(concrete(e1000e_alias))
    [block] = db.blocked_by(concrete(e1000e_alias))
    assert (block.reason, block.source.path.endswith("blacklist.conf"), block.source.line) == ("blacklist", True, 1)
    assert shown["e1000e"] and not db.is_blocked("e1000e")  # named directly: blacklist does not apply
    assert shown["xfs"][-1] == "install /bin/false " and db.is_blocked("xfs")  # deps still load
    assert db.blocked_by("xfs")[0].reason == "install"
    assert shown["vfat"][-1].startswith("insmod") and not db.is_blocked("vfat")  # softdeps disable install
    assert shown["fs-vfat"] == [] and db.is_blocked("fs-vfat")  # config alias to blacklisted loop
    assert shown["bonding"][-1] == "install /bin/true $CMDLINE_OPTS " and db.is_blocked("bonding")


def test_errors_name_the_input(kernel_6_1):
    db = make_db(kernel_6_1, [], "")
    with pytest.raises(ModuleLookupError, match="nf_natt.*nf_nat") as e:
        db.lookup("nf_natt")
    assert "nf_nat" in e.value.details["close_matches"]
    with pytest.raises(InvalidNameError, match="bad]name"):
        db.show_depends("bad]name")
    for bad in ("", "a b", "x\ny", "\x01"):
        with pytest.raises(InvalidNameError):
            db.lookup(bad)


def test_not_found_hint_only_when_shown(kernel_6_1, monkeypatch):
    """The "did you mean" hint dumps three indexes and runs difflib: a failed lookup that is
    caught and dropped (is_blocked, softdeps) must not build it; a shown one still has it."""
    db = make_db(kernel_6_1, [], "")
    built = []
    real = ModuleDB.not_found_message
    monkeypatch.setattr(ModuleDB, "not_found_message", lambda self, name: built.append(name) or real(self, name))
    assert not db.is_blocked("nf_natt") and built == []
    with pytest.raises(ModuleLookupError) as e:
        db.lookup("nf_natt")
    assert built == []
    assert "did you mean: nf_nat" in str(e.value) and e.value.msg == str(e.value)
    assert "nf_nat" in e.value.details["close_matches"] and built == ["nf_natt"]  # built once


def test_text_fallback_resolves_like_bin(kernel_6_1, tmp_path):
    """A tree with only the text indexes resolves like the real one (paths re-rooted)."""
    moddir = tmp_path / "lib" / "modules" / kernel_6_1.release
    moddir.mkdir(parents=True)
    for name in ("modules.dep", "modules.alias", "modules.symbols", "modules.builtin",
                 "modules.builtin.modinfo", "modules.softdep"):
        (moddir / name).write_bytes((kernel_6_1.moddir / name).read_bytes())
    real = make_db(kernel_6_1, [], "")
    paths = KmodPaths(str(tmp_path), kernel_6_1.release)
    text = ModuleDB(paths, ModprobeConfig.load(paths, cmdline="", config_paths=[]))
    queries = module_names(kernel_6_1)[::20] + alias_sample(kernel_6_1.moddir, 50, seed=4) + ["zswap"]
    for q in queries:
        expected = [ln.replace(str(kernel_6_1.moddir), str(moddir)) for ln in real.show_depends(q)]
        assert text.show_depends(q) == expected, q
