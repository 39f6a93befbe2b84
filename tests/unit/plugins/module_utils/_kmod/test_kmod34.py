# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine on kmod 34's terms, against kmod 34's own tools (Debian 13's kmod 34.2 in a
trixie chroot, tests/kmod34.py): depmod byte for byte on trixie's 6.12 tree and on a small
tree with weakdep= modules, modprobe --show-depends / -c and modinfo on samples.

The same small tree is also indexed by this machine's kmod 30 depmod, so that what
differs between the generations is checked against both sides.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config import ModprobeConfig
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod import Depmod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import InvalidNameError, ModuleLookupError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import KmodGeneration, detect_generation
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.index_writer import IndexBuilder
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.modinfo import (
    ModinfoReader, format_modinfo, modinfo_from_file)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.names import alias_normalize, modname_from_path
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import CONFIG_DIRS, KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.resolver import ModuleDB, options_from_args

import kmod34
from depmod_trees import empty_tree, make_module, real_depmod
from kernels import KernelTree

KMOD34 = KmodGeneration(34)
KMOD30 = KmodGeneration(30)
INPUTS = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
FIXTURES = Path(__file__).parent / "fixtures" / "modprobe.d"

pytestmark = pytest.mark.skipif(kmod34.available() is not None, reason=str(kmod34.available()))


@pytest.fixture(scope="module")
def trixie() -> KernelTree:
    """trixie's 6.12 kernel, indexed by kmod 34's depmod (read-only!)."""
    return kmod34.pristine_root()


def paths_of(tree: KernelTree) -> KmodPaths:
    return KmodPaths(str(tree.root), tree.release)


def assert_depmod_identical(tree: KernelTree, generation: KmodGeneration | None) -> None:
    """Our build equals the files the real depmod left in tree, and names the same set."""
    result = Depmod(paths_of(tree), config_paths=[str(tree.root / "etc/depmod.d")],
                    generation=generation).build()
    written = {p.name for p in tree.moddir.glob("modules.*") if p.name not in INPUTS}
    assert set(result.files) == written
    for name, data in result.files.items():
        assert data == (tree.moddir / name).read_bytes(), f"{name} differs from depmod's"


# -- depmod ---------------------------------------------------------------------------------

def test_trixie_tree_depmod_identical_and_detected(trixie):
    """All 11 files of kmod 34's depmod on Debian 13's own kernel; the generation comes from
    the pre-order modules.dep.bin that depmod left (a distro-indexed tree is unchanged)."""
    gen = detect_generation(paths_of(trixie))
    assert (gen.version, gen.source) == (34, "index")
    assert (trixie.moddir / "modules.weakdep").exists()
    assert_depmod_identical(trixie, None)


WEAKDEP_MODULES = {
    # name: (exports, needs, modinfo)
    "wd_core": (("wd_core_fn",), (), ("license=GPL", "alias=wd-core-alias", "weakdep=wd_phy_a wd_phy_b",
                                      "weakdep=wd_extra", "softdep=pre: wd_extra")),
    "wd_phy_a": ((), ("wd_core_fn",), ("license=GPL", "alias=mdio:0000*", "weakdep=wd_phy_b")),
    "wd_phy_b": ((), ("wd_core_fn",), ("license=GPL", "alias=char-major-250-1", "alias=devname:wdphy")),
    "wd_extra": ((), (), ("license=GPL",)),
    "wd_unordered": ((), (), ("license=GPL", "weakdep=",)),
}
# wd_phy_b is listed twice: kmod 30 sorts by its last line, kmod 34 by its first.
WEAKDEP_ORDER = "kernel/wd/wd_phy_b.ko\nkernel/wd/wd_core.ko\nkernel/wd/wd_phy_a.ko\nkernel/wd/wd_phy_b.ko\n" \
                "kernel/wd/wd_extra.ko\n"


def weakdep_tree(dest: Path, builtin: bool) -> KernelTree:
    tree = empty_tree(dest, "6.12.0-wd")
    for name, (exports, needs, info) in WEAKDEP_MODULES.items():
        make_module(tree.moddir / "kernel/wd" / f"{name}.ko", exports=exports, needs=needs, modinfo=info)
    (tree.moddir / "modules.order").write_text(WEAKDEP_ORDER)
    if builtin:
        (tree.moddir / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n")
        (tree.moddir / "modules.builtin.modinfo").write_bytes(
            b"ext4.alias=fs-ext4\0ext4.license=GPL\0crc32c_generic.alias=crypto-crc32c\0")
    return tree


@pytest.mark.parametrize("builtin", [True, False])
def test_weakdep_tree_identical_to_kmod34_and_kmod30(tmp_path, builtin):
    t34 = weakdep_tree(tmp_path / "k34", builtin)
    t30 = KernelTree(t34.key, tmp_path / "k30", t34.release)
    shutil.copytree(t34.root, t30.root)
    proc = kmod34.depmod(t34)
    assert proc.returncode == 0, proc.stderr
    proc = real_depmod(t30)
    assert proc.returncode == 0, proc.stderr
    # the oracles really differ where the generations do
    weakdeps = sum(i.startswith("weakdep=") for _e, _n, info in WEAKDEP_MODULES.values() for i in info)
    assert len((t34.moddir / "modules.weakdep").read_text().splitlines()) == 1 + weakdeps
    assert not (t30.moddir / "modules.weakdep").exists()
    dep34 = (t34.moddir / "modules.dep").read_text().splitlines()
    dep30 = (t30.moddir / "modules.dep").read_text().splitlines()
    assert dep34 != dep30 and sorted(dep34) == sorted(dep30)
    assert (t34.moddir / "modules.dep.bin").read_bytes() != (t30.moddir / "modules.dep.bin").read_bytes()
    assert_depmod_identical(t34, KMOD34)
    assert_depmod_identical(t30, KMOD30)
    # without an explicit generation, each tree's own index layout decides
    assert detect_generation(paths_of(t34)).version == 34
    assert detect_generation(paths_of(t30)).version == 30


def test_empty_tree_identical_to_kmod34(tmp_path):
    tree = empty_tree(tmp_path / "root", "6.12.0-empty")
    proc = kmod34.depmod(tree)
    assert proc.returncode == 0, proc.stderr
    assert_depmod_identical(tree, KMOD34)


# -- index writer --------------------------------------------------------------------------

def test_preorder_tries_from_kmod34_text_files(trixie):
    """The text indexes fed back in array order give kmod 34's .bin files byte for byte; the
    post-order layout of the same builder differs (the generations' layouts are distinct)."""
    lines = (trixie.moddir / "modules.dep").read_bytes().splitlines()
    idx = {modname_from_path(line.split(b":")[0].decode()): i for i, line in enumerate(lines)}
    dep, alias, symbols = IndexBuilder(), IndexBuilder(), IndexBuilder()
    for line in lines:
        dep.insert(modname_from_path(line.split(b":")[0].decode()).encode(), line, idx[
            modname_from_path(line.split(b":")[0].decode())])
    for line in (trixie.moddir / "modules.alias").read_bytes().splitlines()[1:]:
        value, mod = line.split(b" ")[1:]
        alias.insert(alias_normalize(value.decode()).encode(), mod, idx[mod.decode()])
    for line in (trixie.moddir / "modules.symbols").read_bytes().splitlines()[1:]:
        key, mod = line.split(b" ")[1:]
        symbols.insert(key, mod, idx[mod.decode()])
    for builder, name in ((dep, "modules.dep.bin"), (alias, "modules.alias.bin"), (symbols, "modules.symbols.bin")):
        real = (trixie.moddir / name).read_bytes()
        assert builder.to_bytes(preorder=True) == real, name
        post = builder.to_bytes()
        assert post != real and len(post) == len(real)


# -- modprobe --------------------------------------------------------------------------------

def show_depends_34(tree: KernelTree, queries: list[list[str]], config: list[str], binds: dict[str, Path]
                    ) -> list[tuple[int, str]]:
    """kmod 34's modprobe --show-depends for each query: (rc, stdout)."""
    results = []
    for q in queries:
        proc = kmod34.modprobe(tree, "--show-depends", *q, config=config, binds=binds)
        results.append((proc.returncode, proc.stdout))
    return results


def check_show_depends(tree: KernelTree, queries: list[list[str]], config_case: str | None = None) -> int:
    binds, config, dirs = {}, ["/dev/null"], []
    if config_case is not None:
        binds = {"/cfg": FIXTURES / config_case}
        config = [f"/cfg/{d}/modprobe.d" for d in CONFIG_DIRS]
        dirs = [str(FIXTURES / config_case / d / "modprobe.d") for d in CONFIG_DIRS]
    results = show_depends_34(tree, queries, config, binds)
    assert len(results) == len(queries)
    paths = paths_of(tree)
    db = ModuleDB(paths, ModprobeConfig.load(paths, cmdline="", config_paths=dirs, generation=KMOD34))
    resolved = 0
    for q, (rc, out) in zip(queries, results):
        if rc != 0:
            with pytest.raises((ModuleLookupError, InvalidNameError)):
                db.show_depends(q[0], options_from_args(q[1:]))
            continue
        expected = [line.replace("/tree/", f"{tree.root}/") for line in out.split("\n")[:-1]]
        assert db.show_depends(q[0], options_from_args(q[1:])) == expected, q
        resolved += 1
    return resolved


def test_show_depends_sample_equals_kmod34(trixie):
    rng = random.Random(34)
    names = [modname_from_path(line.split(":", 1)[0]) for line in (trixie.moddir / "modules.dep").read_text().splitlines()]
    aliases = [line.split()[1] for line in (trixie.moddir / "modules.alias").read_text().splitlines()[1:]]
    concrete = [a for a in aliases if not any(c in a for c in "*?[")]
    builtin = [modname_from_path(line) for line in (trixie.moddir / "modules.builtin").read_text().split()]
    queries = [[q] for q in rng.sample(names, 150) + rng.sample(concrete, 60) + rng.sample(builtin, 20)
               + ["symbol:nf_nat_setup_info", "no-such-module", "bad]name"]]
    assert check_show_depends(trixie, queries) >= 220


@pytest.mark.parametrize("case", ["full", "interleaved"])
def test_fixture_config_show_depends_equals_kmod34(trixie, case):
    """The modprobe.d fixtures (with a legacy .alias file kmod 34 no longer reads)."""
    from test_resolver import FIXTURE_QUERIES
    assert check_show_depends(trixie, FIXTURE_QUERIES, case) > 20


def render_34(config: ModprobeConfig) -> list[str]:
    """Our configuration as kmod 34's `modprobe -c` prints it (tools/modprobe.c show_config)."""
    out = [f"blacklist {b.modname}" for b in config.blacklist]
    out += [f"install {c.modname} {c.command}" for c in config.install]
    out += [f"remove {c.modname} {c.command}" for c in config.remove]
    out += [f"alias {a.pattern} {a.modname}" for a in config.aliases]
    out += [f"options {o.modname} {o.options}" for o in config.options]
    out += ["softdep %s %s%s" % (s.modname, "pre: " + " ".join(s.pre) if s.pre else "",
                                 "post: " + " ".join(s.post) if s.post else "")
            for s in config.softdeps]
    out += [f"weakdep {w.modname} {' '.join(w.deps)}" for w in config.weakdeps]
    return out


# Only "full": both kmod 30 and 34 print an interleaved softdep (pre:, post:, pre:) with the
# post names inside the pre list (softdep_to_char assumes contiguous strings); what they load
# is right, and the show-depends test above checks that.
@pytest.mark.parametrize("case", ["full"])
def test_fixture_config_equals_kmod34_modprobe_c(trixie, case):
    config = [f"/cfg/{d}/modprobe.d" for d in CONFIG_DIRS]
    proc = kmod34.modprobe(trixie, "-c", config=config, binds={"/cfg": FIXTURES / case})
    assert proc.returncode == 0, proc.stderr
    expected = proc.stdout.split("\n\n# End of configuration files.", 1)[0].split("\n")
    paths = paths_of(trixie)
    dirs = [str(FIXTURES / case / d / "modprobe.d") for d in CONFIG_DIRS]
    ours = ModprobeConfig.load(paths, cmdline="", config_paths=dirs, generation=KMOD34)
    assert render_34(ours) == expected
    if case == "full":
        assert "weakdep dummy veth" in expected
        legacy = (FIXTURES / case / "lib" / "modprobe.d" / "legacy.alias").read_text()
        assert not any(line in expected for line in legacy.splitlines() if line.startswith("alias "))


# -- modinfo -------------------------------------------------------------------------------

def test_modinfo_sample_equals_kmod34(trixie):
    names = [modname_from_path(line.split(":", 1)[0]) for line in (trixie.moddir / "modules.dep").read_text().splitlines()]
    builtin = [modname_from_path(line) for line in (trixie.moddir / "modules.builtin").read_text().split()]
    sample = names[::25] + builtin[::10]
    proc = kmod34.modinfo(trixie, "-m", *sample)
    assert proc.returncode == 0, proc.stderr
    reader = ModinfoReader(paths_of(trixie))
    assert reader.generation.version == 34
    ours = "".join(format_modinfo(reader.by_name(n), reader.generation) for n in sample)
    assert ours.replace(f"{trixie.root}/", "/tree/") == proc.stdout


def test_long_modinfo_keys_padded_as_each_generation(kernel_6_1, tmp_path):
    """Keys of 16+ characters: kmod 30 pads by |15 - len|, kmod 34 not at all."""
    from test_modinfo import doctored_module, run_modinfo

    path = doctored_module(kernel_6_1, tmp_path, None)
    proc = kmod34.run(["modinfo", f"/tree/{path.name}"], tmp_path, text=True, errors="surrogateescape")
    assert "a_very_long_key_of_30_chars_xx:w\n" in proc.stdout
    info = modinfo_from_file(str(path))
    assert format_modinfo(info, KMOD34).replace(str(tmp_path), "/tree") == proc.stdout
    old = run_modinfo(str(path)).decode("utf-8", "surrogateescape")
    assert "a_very_long_key_of_30_chars_xx:" + " " * 15 + "w\n" in old
    assert format_modinfo(info, KMOD30) == old


def test_kmod34_is_what_the_chroot_runs():
    """The oracle is the release the tests are named after (and detection agrees)."""
    assert kmod34.version().startswith("kmod version 34")
    gen = detect_generation(KmodPaths(str(kmod34.chroot_dir()), "6.12.0"))
    assert (gen.version, gen.source) == (34, "dpkg")
    assert os.path.exists(gen.evidence.split(":", 1)[0])
