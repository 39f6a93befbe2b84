# SPDX-License-Identifier: GPL-3.0-or-later
"""Module trees under usr/lib/modules only (merged-/usr images without the /lib link, sid's
packages, kmod built with --with-module-directory=/usr/lib/modules).

The root holds trixie's 6.12 kernel as its package unpacks (usr/lib/modules/RELEASE, no
lib at all). Oracles: kmod 34's depmod with -m /usr/lib/modules (what a kmod built for that
directory does), and kmod 34's modprobe/modinfo with Debian's default /lib/modules on the
merged-/usr copy of the same tree (lib -> usr/lib): the same output but for the directory.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config import ModprobeConfig
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod import Depmod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import KmodGeneration, detect_generation
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.modinfo import ModinfoReader, format_modinfo
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.names import modname_from_path
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.resolver import ModuleDB

import kmod34
from kernels import KernelTree

INPUTS = ("modules.order", "modules.builtin", "modules.builtin.modinfo")


# -- which directory (no oracle needed: plain directories) ----------------------------------

@pytest.mark.parametrize("present, expected", [
    (["lib/modules/6.1.0-r"], "lib/modules/6.1.0-r"),
    (["usr/lib/modules/6.1.0-r"], "usr/lib/modules/6.1.0-r"),
    (["lib/modules/6.1.0-r", "usr/lib/modules/6.1.0-r"], "lib/modules/6.1.0-r"),  # kmod's default first
    (["lib/modules/6.2.0-other", "usr/lib/modules/6.1.0-r"], "usr/lib/modules/6.1.0-r"),  # per release
    (["usr/lib/modules/6.2.0-other"], "lib/modules/6.1.0-r"),  # neither: the default, for messages
    ([], "lib/modules/6.1.0-r"),
])
def test_moddir_choice(tmp_path, present, expected):
    for d in present:
        (tmp_path / d).mkdir(parents=True)
    assert KmodPaths(str(tmp_path), "6.1.0-r").moddir == str(tmp_path / expected)
    assert KmodPaths(str(tmp_path), "6.1.0-r").moddir_shown == str(tmp_path / expected)
    assert KmodPaths(str(tmp_path), "6.1.0-r").module_index("modules.dep") == str(tmp_path / expected / "modules.dep")


def test_moddir_through_lib_link(tmp_path):
    """Merged /usr (lib -> usr/lib): shown as lib/modules, the path kmod's default build prints."""
    (tmp_path / "usr/lib/modules/6.1.0-r").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    paths = KmodPaths(str(tmp_path), "6.1.0-r")
    assert paths.moddir_shown == str(tmp_path / "lib/modules/6.1.0-r")
    assert os.path.samefile(paths.moddir, tmp_path / "usr/lib/modules/6.1.0-r")


def test_moddir_not_a_directory(tmp_path):
    """A file (or dangling link) named lib/modules/R is not a module tree."""
    (tmp_path / "lib/modules").mkdir(parents=True)
    (tmp_path / "lib/modules/6.1.0-r").write_text("")
    (tmp_path / "usr/lib/modules/6.1.0-r").mkdir(parents=True)
    assert KmodPaths(str(tmp_path), "6.1.0-r").moddir == str(tmp_path / "usr/lib/modules/6.1.0-r")


# -- against kmod 34 --------------------------------------------------------------------------

needs_kmod34 = pytest.mark.skipif(kmod34.available() is not None, reason=str(kmod34.available()))


@pytest.fixture(scope="module")
def trixie() -> KernelTree:
    """trixie's 6.12 tree with lib -> usr/lib, indexed by kmod 34's depmod (read-only!)."""
    return kmod34.pristine_root()


def usr_only(trixie: KernelTree, dest: Path) -> KernelTree:
    """A hard-linked copy of trixie's usr alone: the module tree is usr/lib/modules/RELEASE."""
    dest.mkdir()
    subprocess.run(["cp", "-al", str(trixie.root / "usr"), str(dest / "usr")], check=True)
    assert not (dest / "lib").exists()
    return KernelTree(trixie.key, dest, trixie.release)


@needs_kmod34
def test_depmod_equals_kmod34_built_for_usr_lib_modules(trixie, tmp_path):
    """Our depmod on usr/lib/modules = kmod 34's `depmod -m /usr/lib/modules` there, all 11
    files; Debian's build (default /lib/modules) does not find the tree at all."""
    tree = usr_only(trixie, tmp_path / "root")
    moddir = tree.root / "usr/lib/modules" / tree.release
    for f in moddir.glob("modules.*"):
        if f.name not in INPUTS:
            f.unlink()
    default = kmod34.depmod(tree)
    assert default.returncode != 0 and "/lib/modules" in default.stderr
    proc = kmod34.run(["depmod", "-b", "/tree", "-m", "/usr/lib/modules", "-C", "/tree/etc/depmod.d", tree.release],
                      tree.root, text=True)
    assert proc.returncode == 0, proc.stderr
    written = {p.name for p in moddir.glob("modules.*") if p.name not in INPUTS}
    assert len(written) == 11
    paths = KmodPaths(str(tree.root), tree.release)
    assert paths.moddir == str(moddir)
    gen = detect_generation(paths)
    assert (gen.version, gen.source) == (34, "index")  # from the index kmod 34 just wrote
    result = Depmod(paths, config_paths=[str(tree.root / "etc/depmod.d")], generation=gen).build()
    assert set(result.files) == written
    for name, data in result.files.items():
        assert data == (moddir / name).read_bytes(), f"{name} differs from kmod 34's"


@needs_kmod34
def test_show_depends_and_modinfo_equal_kmod34(trixie, tmp_path):
    """Resolution and modinfo on the usr-only root say usr/lib/modules where kmod 34 on the
    merged-/usr root says lib/modules; nothing else differs."""
    tree = usr_only(trixie, tmp_path / "root")
    paths = KmodPaths(str(tree.root), tree.release)
    ours_dir = f"{tree.root}/usr/lib/modules/"
    names = [modname_from_path(line.split(":", 1)[0])
             for line in (trixie.moddir / "modules.dep").read_text().splitlines()]
    sample = random.Random(11).sample(names, 40)
    db = ModuleDB(paths, ModprobeConfig.load(paths, cmdline="", config_paths=[], generation=KmodGeneration(34)))
    checked = 0
    for name in sample:
        proc = kmod34.modprobe(trixie, "--show-depends", name)
        assert proc.returncode == 0, proc.stderr
        expected = [line.replace("/tree/lib/modules/", ours_dir) for line in proc.stdout.split("\n")[:-1]]
        assert db.show_depends(name) == expected, name
        checked += any(ours_dir in line for line in expected)
    assert checked == len(sample)
    proc = kmod34.modinfo(trixie, "-m", *sample[:10])
    assert proc.returncode == 0, proc.stderr
    reader = ModinfoReader(paths)
    ours = "".join(format_modinfo(reader.by_name(n), reader.generation) for n in sample[:10])
    assert ours.count(ours_dir) == 10
    assert ours.replace(ours_dir, "/tree/lib/modules/") == proc.stdout
    assert os.path.isdir(paths.moddir)
