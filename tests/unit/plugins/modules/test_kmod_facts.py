# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_facts as Ansible runs it, on real module trees with fake /proc and /sys beside them."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.facts import FactsGatherer, select_subsets
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.names import modname_from_path
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.modules import kmod_facts

MODPROBE_D = {
    "etc/modprobe.d/local.conf": "# local settings\nblacklist pcspkr\noptions dummy numdummies=2\n"
                                 "alias my-net dummy\ninstall floppy /bin/false\n",
    "usr/lib/modprobe.d/vendor.conf": "softdep ext4 pre: crc32c post: jbd2\nremove foo /bin/true\n",
    # Overridden by nothing, but shadowed by /etc of the same basename:
    "usr/lib/modprobe.d/local.conf": "blacklist never_read\n",
}
MODULES_LOAD = {
    "etc/modules-load.d/k8s.conf": "# for kubernetes\nbr_netfilter\n; also\noverlay\n",
    "usr/lib/modules-load.d/k8s.conf": "shadowed_by_etc\n",
    "usr/lib/modules-load.d/a-early.conf": "loop\n",
    "etc/modules": "# /etc/modules: kernel modules to load at boot time.\n\nlp\nparport_pc io=0x378\n",
}


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def fake_kernel(tree, count: int) -> list[str]:
    """Write /proc/modules and /sys/module for the first ``count`` modules.dep entries and
    their dependencies, in the kernel's formats; returns the loaded names."""
    deps: dict[str, list[str]] = {}
    for line in (tree.moddir / "modules.dep").read_text().splitlines():
        path, _sep, rest = line.partition(":")
        deps[modname_from_path(path)] = [modname_from_path(d) for d in rest.split()]
    loaded: list[str] = []
    for name in list(deps)[:count]:
        for mod in [*deps[name], name]:
            if mod not in loaded:
                loaded.append(mod)
    holders = {m: [h for h in loaded if m in deps[h]] for m in loaded}
    lines = []
    sysfs = tree.root / "sys/module"
    for i, mod in enumerate(reversed(loaded)):  # the kernel lists the newest module first
        users = holders[mod]
        size = 16384 + 4096 * i
        lines.append(f"{mod} {size} {len(users)} {''.join(u + ',' for u in users) or '-'} "
                     f"Live 0x0000000000000000\n")
        d = sysfs / mod
        (d / "holders").mkdir(parents=True)
        (d / "parameters").mkdir()
        (d / "initstate").write_text("live\n")
        (d / "refcnt").write_text(f"{len(users)}\n")
        (d / "coresize").write_text(f"{size - 4096}\n")
        (d / "taint").write_text("\n")
        for user in users:
            (d / "holders" / user).mkdir()
        (d / "parameters" / "debug").write_text("0\n")
    (tree.root / "proc").mkdir(exist_ok=True)
    (tree.root / "proc/modules").write_text("".join(lines))
    (sysfs / "8250/parameters").mkdir(parents=True)
    (sysfs / "8250/parameters/nr_uarts").write_text("4\n")
    (sysfs / "module/parameters").mkdir(parents=True)
    (sysfs / "module/parameters/sig_enforce").write_text("Y\n")
    (sysfs / "compression").write_text("xz\n")
    (tree.root / "proc/sys/kernel").mkdir(parents=True)
    (tree.root / "proc/sys/kernel/tainted").write_text("12288\n")
    (tree.root / "proc/cmdline").write_text("root=/dev/vda1 ro modules-load=vfio,vfio_pci\n")
    return loaded


@pytest.fixture
def run(run_module):
    def facts(root, release, check_mode: bool = False, **args):
        return run_module(kmod_facts, check=check_mode, diff=False, **{
            "root": str(root), "kernel_release": release, **args})
    return facts


@pytest.fixture
def host(scratch_kernel):
    """A 6.12 tree with ~150 loaded modules, configuration and boot lists around it."""
    tree = scratch_kernel("6.12")
    loaded = fake_kernel(tree, 140)
    write_files(tree.root, {**MODPROBE_D, **MODULES_LOAD})
    (tree.root / "etc/modules-load.d/modules.conf").symlink_to("../modules")
    return tree, loaded


def modinfo(tree, *args: str) -> str:
    return subprocess.run(["modinfo", "-b", str(tree.root), "-k", tree.release, *args],
                          capture_output=True, text=True, check=True).stdout


def test_loaded_modules(host, run) -> None:
    tree, loaded = host
    res = run(tree.root, tree.release)
    assert res["changed"] is False
    facts = res["ansible_facts"]["kmod"]
    assert facts["modules_supported"] is True
    assert len(loaded) >= 150 and set(facts["loaded"]) == set(loaded)
    proc = [line.split() for line in (tree.root / "proc/modules").read_text().splitlines()]
    assert list(facts["loaded"]) == [f[0] for f in proc]
    for fields in proc:
        entry = facts["loaded"][fields[0]]
        assert entry["refcount"] == int(fields[2])
        assert entry["holders"] == [h for h in fields[3].split(",") if h and h != "-"]
        assert entry["size"] == int(fields[1]) - 4096  # coresize wins, as in lsmod
        assert entry["state"] == "Live" and entry["initstate"] == "live"
        assert entry["parameters"] == {"debug": "0"} and entry["address"] is None
    # Files as modinfo finds them for the same names.
    names = list(facts["loaded"])[:40]
    expected = modinfo(tree, "-F", "filename", *names).splitlines()
    assert [facts["loaded"][n]["filename"] for n in names] == expected


def test_kernel_wide_values(host, run) -> None:
    tree = host[0]
    facts = run(tree.root, tree.release, gather_subset=["min"])["ansible_facts"]["kmod"]
    assert facts["gathered_subsets"] == []
    assert "loaded" not in facts and "config" not in facts
    assert facts["kernel_release"] == tree.release
    assert facts["sig_enforce"] is True and facts["compression"] == "xz"
    assert facts["taint"]["text"] == "OE" and [f["bit"] for f in facts["taint"]["flags"]] == [12, 13]


def test_builtin(host, run) -> None:
    tree = host[0]
    facts = run(tree.root, tree.release, gather_subset=["builtin"])["ansible_facts"]["kmod"]
    from_file = {modname_from_path(line) for line in (tree.moddir / "modules.builtin").read_text().split()}
    assert set(facts["builtin"]) == from_file | {"8250", "module"}
    assert facts["gathered_subsets"] == ["builtin"]


def modprobe_config(tree) -> list[str]:
    """modprobe -c over the same modprobe.d files (kmod does not re-root them: pass them as -C)."""
    out = subprocess.run(["modprobe", "-c", "-C", str(tree.root / "etc/modprobe.d"), "-C",
                          str(tree.root / "usr/lib/modprobe.d/vendor.conf"), "-d", str(tree.root),
                          "-S", tree.release], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_config_view(host, run) -> None:
    tree = host[0]
    facts = run(tree.root, tree.release, gather_subset=["config"])["ansible_facts"]["kmod"]
    cfg = facts["config"]
    expected = modprobe_config(tree)
    assert [f"blacklist {b['module']}" for b in cfg["blacklist"]] == \
        [line for line in expected if line.startswith("blacklist ")]
    assert [f"alias {a['alias']} {a['module']}" for a in cfg["aliases"]] == \
        [line for line in expected if line.startswith("alias my")]
    assert {f"options {o['module']} {o['options']}" for o in cfg["options"]} <= set(expected)
    for entry in cfg["blacklist"] + cfg["options"] + cfg["install"] + cfg["remove"] + cfg["softdeps"]:
        if entry["line"]:  # each points at the line it came from
            line = Path(entry["file"]).read_text().splitlines()[entry["line"] - 1]
            assert entry["module"] in line.replace("-", "_")
    assert str(tree.root / "usr/lib/modprobe.d/local.conf") not in cfg["files"]
    assert cfg["softdeps"][-1]["pre"] == ["crc32c"] and cfg["install"][0]["command"] == "/bin/false"


def test_boot_modules(host, run) -> None:
    tree = host[0]
    facts = run(tree.root, tree.release, gather_subset=["boot"])["ansible_facts"]["kmod"]
    got = [(m["module"], Path(m["file"]).relative_to(tree.root).as_posix(), m["line"])
           for m in facts["modules_load"]]
    # systemd-modules-load order: kernel command line, then *.conf by basename (/etc shadows
    # /usr/lib); Debian's /etc/modules is read once, through its modules-load.d link.
    assert got == [
        ("vfio", "proc/cmdline", 0), ("vfio_pci", "proc/cmdline", 0),
        ("loop", "usr/lib/modules-load.d/a-early.conf", 1),
        ("br_netfilter", "etc/modules-load.d/k8s.conf", 2), ("overlay", "etc/modules-load.d/k8s.conf", 4),
        ("lp", "etc/modules-load.d/modules.conf", 3), ("parport_pc io=0x378", "etc/modules-load.d/modules.conf", 4),
    ]


def test_debian_modules_file_without_link(host, run) -> None:
    tree = host[0]
    (tree.root / "etc/modules-load.d/modules.conf").unlink()
    facts = run(tree.root, tree.release, gather_subset=["boot"])["ansible_facts"]["kmod"]
    debian = [m for m in facts["modules_load"] if m["file"].endswith("etc/modules")]
    assert [(m["module"], m["args"]) for m in debian] == [("lp", ""), ("parport_pc", "io=0x378")]


def test_modinfo_equals_modinfo_tool(host, run) -> None:
    tree = host[0]
    names = ["dummy", "crc32c", "ext4", "no_such_module"]
    res = run(tree.root, tree.release, check_mode=True, gather_subset=["!all", "modinfo"], modinfo=names)
    facts = res["ansible_facts"]["kmod"]
    assert set(facts) >= {"modinfo"} and "loaded" not in facts
    for name in names[:3]:
        assert facts["modinfo"][name]["text"] == modinfo(tree, name)
    assert facts["modinfo"]["dummy"]["license"] == modinfo(tree, "-F", "license", "dummy").strip()
    assert facts["modinfo"]["crc32c"]["others"], "crc32c resolves to several modules"
    assert facts["modinfo"]["no_such_module"] is None
    assert "no_such_module" in json.dumps(res["warnings"])


@pytest.mark.parametrize("subset", [["min"], ["!all"], ["loaded"], ["!modinfo"]])
def test_named_modules_are_gathered_whatever_the_subset(host, run, subset) -> None:
    """Naming modules in modinfo is asking for them: the subset does not hide them."""
    tree = host[0]
    facts = run(tree.root, tree.release, gather_subset=subset, modinfo=["dummy"])["ansible_facts"]["kmod"]
    assert facts["modinfo"]["dummy"]["text"] == modinfo(tree, "dummy")
    assert "modinfo" in facts["gathered_subsets"]
    assert "modinfo" not in run(tree.root, tree.release, gather_subset=subset)["ansible_facts"]["kmod"]


def test_bad_input_fails_clearly(host, run) -> None:
    tree = host[0]
    res = run(tree.root, tree.release, gather_subset=["loaded", "!bogus"])
    assert res["failed"] is True and "'!bogus'" in res["msg"]
    res = run(tree.root, tree.release, modinfo=["two words"])
    assert res["failed"] is True and "two words" in res["msg"]


def test_no_module_support(kernel_6_1, tmp_path: Path, run) -> None:
    # A root without /proc/modules: the module tree is still there, nothing fails.
    shutil.copytree(kernel_6_1.moddir, tmp_path / "lib/modules" / kernel_6_1.release,
                    ignore=shutil.ignore_patterns("kernel"))
    facts = run(tmp_path, kernel_6_1.release)["ansible_facts"]["kmod"]
    assert facts["modules_supported"] is False and facts["loaded"] == {}
    assert facts["taint"] is None and facts["sig_enforce"] is None
    assert "unix" in facts["builtin"]


def test_kernel_name_differs_from_file_name(kernel_6_1, tmp_path: Path, run) -> None:
    # Like dkms' nvidia-current.ko, which registers as nvidia: the file is dummy_current.ko.
    release = "9.9.9-test"
    moddir = tmp_path / "lib/modules" / release
    (moddir / "updates").mkdir(parents=True)
    shutil.copy(kernel_6_1.moddir / "kernel/drivers/net/dummy.ko", moddir / "updates/dummy_current.ko")
    subprocess.run(["depmod", "-b", str(tmp_path), release], check=True, capture_output=True)
    write_files(tmp_path, {"proc/modules": "dummy 16384 0 - Live 0xffffffffc0a00000\n"})
    facts = run(tmp_path, release, gather_subset=["loaded"])["ansible_facts"]["kmod"]
    entry = facts["loaded"]["dummy"]
    assert entry["filename"] == str(moddir / "updates/dummy_current.ko")
    assert entry["file_module"] == "dummy_current" and entry["address"] == "0xffffffffc0a00000"


def test_default_gathering_is_cheap(host) -> None:
    tree, loaded = host
    gatherer = FactsGatherer(KmodPaths(str(tree.root), tree.release))
    start = time.process_time()
    facts = gatherer.gather(select_subsets(["all"]))[0]
    took = time.process_time() - start
    assert len(facts["loaded"]) == len(loaded) >= 150
    assert took < 0.5, f"gathering took {took:.2f} s of CPU"
