# SPDX-License-Identifier: GPL-3.0-or-later
"""devices.scan_devices and impact on a sysfs copied from the 6.1 VM guest.

fixtures/sysfs-6.1.tar.xz holds what the scan reads of the guest's /sys and /proc
(tests/vm's Debian 12 guest booting 6.1.0-56-amd64), and expected-resolve-alias.txt
what the guest's own ``modprobe --resolve-alias MODALIAS`` (kmod 30) printed for
every device with a modalias: the oracle for the candidates.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from kmod_oracle import run_modprobe

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config import ModprobeConfig
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.devices import scan_devices
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.facts import FactsGatherer, select_subsets
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.impact import (
    assess, blacklist_impact, critical_paths, message)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.resolver import ModuleDB


def _unpack_guest() -> Path:
    """The fixture is a tarball: sysfs names hold ':' (which ansible-test and Windows refuse
    in file names) and symlink cycles (which a tree walk would follow for ever)."""
    where = tempfile.mkdtemp(prefix="kmod-sysfs-")
    atexit.register(shutil.rmtree, where, True)
    subprocess.run(["tar", "-xJf", str(Path(__file__).parent / "fixtures" / "sysfs-6.1.tar.xz"), "-C", where],
                   check=True)
    return Path(where) / "6.1"


GUEST = _unpack_guest()
SYS, PROC = str(GUEST / "sys"), str(GUEST / "proc")
ROOT_DISK = "/sys/devices/pci0000:00/0000:00:04.0/virtio1"
NIC = "/sys/devices/pci0000:00/0000:00:03.0/virtio0"


def guest_oracle() -> dict[str, tuple[str, list[str]]]:
    out = {}
    for line in (GUEST / "expected-resolve-alias.txt").read_text().splitlines():
        path, modalias, modules = line.split("\t")
        out[path] = (modalias, modules.split())
    return out


@pytest.fixture(scope="module")
def db_6_1(kernel_6_1) -> ModuleDB:
    return ModuleDB(KmodPaths(root=str(kernel_6_1.root), kernel_release=kernel_6_1.release), ModprobeConfig())


def test_candidates_equal_guest_modprobe(db_6_1: ModuleDB) -> None:
    warnings: list[str] = []
    devices = scan_devices(db_6_1, SYS, warnings)
    assert warnings == []
    oracle = guest_oracle()
    assert sorted(d.path for d in devices) == sorted(oracle)
    for dev in devices:
        assert (dev.modalias, dev.modules) == oracle[dev.path], dev.path


def test_drivers_follow_the_links(db_6_1: ModuleDB) -> None:
    devices = {d.path: d for d in scan_devices(db_6_1, SYS)}
    for path, dev in devices.items():
        link = GUEST / path.lstrip("/") / "driver"
        if not link.is_symlink():
            assert (dev.driver, dev.driver_module, dev.driver_builtin) == (None, None, None)
            continue
        assert dev.driver == os.path.basename(os.readlink(link))
        module = link / "module"
        if module.is_symlink():
            name = os.path.basename(os.readlink(module))
            assert dev.driver_module == name
            assert dev.driver_builtin is not (GUEST / "sys" / "module" / name / "initstate").exists()
        else:
            assert (dev.driver_module, dev.driver_builtin) == (None, True)
    # What the guest's initramfs loaded, and the i8042 controller built into Debian's kernel.
    assert (devices[ROOT_DISK].driver_module, devices[ROOT_DISK].bus) == ("virtio_blk", "virtio")
    assert devices["/sys/devices/platform/i8042"].driver_builtin is True
    # A class device that no bus lists, found in the /sys/devices walk.
    assert devices["/sys/devices/platform/i8042/serio0/input/input0"].bus == "input"


def test_another_kernels_tree_equals_its_modprobe(kernel_6_12) -> None:
    """root/kernel_release: which modules of 6.12 would drive the guest's devices (host kmod as oracle)."""
    db = ModuleDB(KmodPaths(root=str(kernel_6_12.root), kernel_release=kernel_6_12.release), ModprobeConfig())
    devices = scan_devices(db, SYS)
    _cmdline, results = run_modprobe(kernel_6_12.root, kernel_6_12.release,
                                     [["--resolve-alias", d.modalias] for d in devices], config=[])
    for dev, (_rc, stdout, _err) in zip(devices, results):
        assert dev.modules == stdout.split(), dev.path
    assert "virtio_blk" in {m for d in devices for m in d.modules}


def test_hostile_sysfs(tmp_path: Path, db_6_1: ModuleDB) -> None:
    """Links out of the tree, FIFOs, huge and unreadable attributes: skipped, warned, no traceback."""
    sysfs = tmp_path / "sys"
    shutil.copytree(SYS, sysfs, symlinks=True)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "modalias").write_text("pci:v0000DEADd0000BEEF\n")
    platform = sysfs / "devices" / "platform"
    # a bus entry and a driver link leading out of /sys
    os.symlink(str(secret), sysfs / "bus" / "platform" / "devices" / "evil")
    os.unlink(platform / "i8042" / "driver")
    os.symlink("../../../../secret", platform / "i8042" / "driver")
    # a FIFO as modalias (would block a plain read), a huge one, a looping link
    os.unlink(platform / "pcspkr" / "modalias")
    os.mkfifo(platform / "pcspkr" / "modalias")
    (platform / "serial8250" / "modalias").write_text("platform:" + "x" * 100000)
    os.symlink("loop", platform / "reg-dummy" / "loop")
    os.unlink(platform / "reg-dummy" / "driver")
    os.symlink("loop", platform / "reg-dummy" / "driver")
    warnings: list[str] = []
    devices = {d.path: d for d in scan_devices(db_6_1, str(sysfs), warnings)}
    assert not any("DEAD" in d.modalias for d in devices.values())
    assert devices["/sys/devices/platform/i8042"].driver is None
    assert "/sys/devices/platform/pcspkr" not in devices
    assert len(devices["/sys/devices/platform/serial8250"].modalias) <= 8192
    assert devices["/sys/devices/platform/reg-dummy"].driver is None
    text = "\n".join(warnings)
    assert "/sys/bus/platform/devices/evil: skipped: it leads out of /sys" in text
    assert "/sys/devices/platform/i8042/driver: skipped: it leads out of /sys" in text
    assert "/sys/devices/platform/pcspkr/modalias: skipped: not a regular file" in text
    assert "/sys/devices/platform/reg-dummy/driver: skipped: a symlink loop" in text


def test_critical_devices_of_the_guest() -> None:
    assert critical_paths(SYS, PROC) == {
        ROOT_DISK + "/block/vda": ["root filesystem (/)", "boot disk (vda)"],
        NIC: ["default route interface (eth0)"],
    }


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def test_critical_partition_dm_boot_and_bond(tmp_path: Path) -> None:
    """/ on LVM over a partition of sda, /boot on sdb1, default route over bond0 (eth1)."""
    sysfs, proc = tmp_path / "sys", tmp_path / "proc"
    sda = sysfs / "devices/pci0000:00/0000:00:10.0/host0/target0:0:0/0:0:0:0/block/sda"
    sdb = sysfs / "devices/pci0000:00/0000:00:11.0/host1/target1:0:0/1:0:0:0/block/sdb"
    for part in (sda / "sda2", sdb / "sdb1"):
        part.mkdir(parents=True)
        (part / "partition").write_text("1\n")
    dm = sysfs / "devices/virtual/block/dm-0"
    _link(dm / "slaves" / "sda2", str(sda / "sda2"))
    _link(sysfs / "dev/block/253:0", str(dm))
    _link(sysfs / "dev/block/8:17", str(sdb / "sdb1"))
    nic = sysfs / "devices/pci0000:00/0000:00:12.0"
    _link(sysfs / "class/net/eth1/device", str(nic))
    _link(sysfs / "class/net/bond0/lower_eth1", str(sysfs / "class/net/eth1"))
    (proc / "self").mkdir(parents=True)
    (proc / "self/mountinfo").write_text(
        "25 1 253:0 / / rw - ext4 /dev/mapper/vg-root rw\n"
        "30 25 8:17 / /boot rw - ext4 /dev/sdb1 rw\n"
        "31 25 0:40 / /media/my\\040disk rw - tmpfs tmpfs rw\n")
    (proc / "net").mkdir()
    (proc / "net/route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "bond0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    found = critical_paths(str(sysfs), str(proc))
    rel = {k.replace("/sys/devices/pci0000:00/", ""): v for k, v in found.items()}
    assert rel == {
        "/sys/devices/virtual/block/dm-0": ["root filesystem (/)"],
        "0000:00:10.0/host0/target0:0:0/0:0:0:0/block/sda/sda2": ["root filesystem (/)"],
        "0000:00:11.0/host1/target1:0:0/1:0:0:0/block/sdb/sdb1": ["/boot filesystem"],
        "0000:00:11.0/host1/target1:0:0/1:0:0:0/block/sdb": ["boot disk (sdb)"],
        "0000:00:12.0": ["default route interface (bond0)"],
    }


@pytest.mark.parametrize("names, mode, expected", [
    (["virtio_blk"], "blacklist", [(ROOT_DISK, "virtio_blk", "driven", True)]),
    (["virtio-blk", "dummy"], "disable", [(ROOT_DISK, "virtio_blk", "driven", True)]),
    # disable stops dependency loads too: every virtio driver needs virtio_ring
    (["virtio_ring"], "disable", [
        ("/sys/devices/pci0000:00/0000:00:03.0", "virtio_ring", "dependency", True),
        ("/sys/devices/pci0000:00/0000:00:04.0", "virtio_ring", "dependency", True),
        (NIC, "virtio_ring", "dependency", True),
        (ROOT_DISK, "virtio_ring", "dependency", True)]),
    (["virtio_ring"], "blacklist", []),
    (["dummy"], "disable", []),
    # nothing drives the PC speaker; pcspkr is its only module: reported, not refused
    (["pcspkr"], "blacklist", [("/sys/devices/platform/pcspkr", "pcspkr", "only_candidate", False)]),
    # serio1 has two candidates, one of them stays; serio0 has a builtin driver (atkbd)
    (["psmouse"], "disable", []),
    (["psmouse", "serio_raw"], "disable", [
        ("/sys/devices/platform/i8042/serio1", "serio_raw", "only_candidate", False)]),
])
def test_assess(db_6_1: ModuleDB, names, mode, expected) -> None:
    devices = scan_devices(db_6_1, SYS)
    impacts = assess(devices, names, mode, critical_paths(SYS, PROC), db_6_1)
    got = sorted((i.device, i.module, i.reason, i.blocking) for i in impacts)
    assert got == sorted(expected)


def test_message_names_the_root_disk(db_6_1: ModuleDB) -> None:
    impacts = assess(scan_devices(db_6_1, SYS), ["virtio_blk", "pcspkr"], "blacklist",
                     critical_paths(SYS, PROC), db_6_1)
    text = message(impacts, refused=True)
    assert text.startswith("Refusing to blacklist or disable modules that present devices need (on_impact=fail): "
                           f"{ROOT_DISK} (virtio, virtio:d00000002v00001AF4): driven by virtio_blk; "
                           "holds the root filesystem (/), the boot disk (vda); ")
    assert "/sys/devices/platform/pcspkr (platform, platform:pcspkr): pcspkr is the only module for it" in text


def test_no_impact_for_another_root(tmp_path: Path) -> None:
    assert blacklist_impact(KmodPaths(root=str(tmp_path), kernel_release="6.1.0-56-amd64"),
                            ["virtio_blk"], "disable", SYS, PROC) == ([], [])


def test_facts_devices_subset_is_opt_in(kernel_6_1) -> None:
    assert "devices" not in select_subsets(["all"])
    assert select_subsets(["!all", "devices"]) == {"devices"}
    paths = KmodPaths(root=str(kernel_6_1.root), kernel_release=kernel_6_1.release)
    facts, warnings = FactsGatherer(paths).gather({"devices"}, sysfs_root=SYS)
    assert warnings == []
    oracle = guest_oracle()
    assert {d["path"]: (d["modalias"], d["modules"]) for d in facts["devices"]} == oracle
