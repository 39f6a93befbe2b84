# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""What blacklisting or disabling modules would take from the devices present.

A device is affected when a module being blacklisted/disabled drives it now
(``driven``), when its bound driver needs that module and ``disable`` stops
dependency loads too (``dependency``), or when nothing drives it and the modules
listed are its only candidates (``only_candidate``: nothing would be autoloaded for it). The devices behind the root filesystem, the boot disk and the default
route's interface are found from /proc and /sys and always named.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing as t

from .devices import Device, scan_devices
from .names import modname_normalize
from .paths import KmodPaths
from .resolver import ModuleDB
from .sysfs import Tree

SLAVE_DEPTH = 8  # dm on md on partitions: a few levels; a loop of links stops here


@dataclasses.dataclass
class Impact:
    device: str  # sysfs path
    bus: str | None
    modalias: str
    driver: str | None
    module: str  # the module being blacklisted or disabled
    reason: str  # driven | dependency | only_candidate
    critical: list[str]  # e.g. "root filesystem (/)", "boot disk (vda)", "default route (eth0)"

    @property
    def blocking(self) -> bool:
        """Whether ``on_impact: fail`` refuses: a present device would lose its driver."""
        return self.reason != "only_candidate" or bool(self.critical)

    def as_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


def assess(devices: t.Sequence[Device], names: t.Iterable[str], mode: str,
           critical: t.Mapping[str, list[str]], db: ModuleDB | None = None) -> list[Impact]:
    """The impacts of blacklisting (``mode=blacklist``) or disabling ``names``.

    ``critical`` maps sysfs paths (of block devices, network interfaces) to what they
    hold (critical_paths); a device is critical for each such path at or below it.
    ``db`` gives the dependencies of bound drivers' modules, which ``disable`` stops.
    """
    targets = {modname_normalize(n) for n in names}
    impacts = []
    for dev in devices:
        labels = _labels(dev.path, critical)
        found = None
        module = dev.driver_module
        if module in targets and not dev.driver_builtin:
            found = (module, "driven")
        elif mode == "disable" and module is not None and not dev.driver_builtin and db is not None:
            needed = next((d for d in _deps(db, module) if d in targets), None)
            if needed is not None:
                found = (needed, "dependency")
        if found is None and dev.driver is None and dev.modules and set(dev.modules) <= targets:
            found = (dev.modules[0], "only_candidate")
        if found is not None:
            impacts.append(Impact(dev.path, dev.bus, dev.modalias, dev.driver, found[0], found[1], labels))
    return impacts


def _deps(db: ModuleDB, module: str) -> list[str]:
    found = db.lookup_exact(module)
    return found[0].deps if found else []


def _labels(path: str, critical: t.Mapping[str, list[str]]) -> list[str]:
    labels: list[str] = []
    for target, what in critical.items():
        if target == path or target.startswith(path + "/"):
            labels += [w for w in what if w not in labels]
    return labels


def message(impacts: t.Sequence[Impact], refused: bool) -> str:
    """One message naming every affected device, critical ones first."""
    ordered = sorted(impacts, key=lambda i: (not i.critical, i.reason != "driven", i.device))
    parts = []
    for imp in ordered:
        how = {"driven": f"driven by {imp.module}",
               "dependency": f"its driver {imp.driver} needs {imp.module}",
               "only_candidate": f"{imp.module} is the only module for it"}[imp.reason]
        text = f"{imp.device} ({imp.bus or 'no bus'}, {imp.modalias}): {how}"
        if imp.critical:
            text += "; holds the " + ", the ".join(imp.critical)
        parts.append(text)
    head = ("Refusing to blacklist or disable modules that present devices need (on_impact=fail)"
            if refused else "Blacklisting or disabling these modules affects present devices")
    return head + ": " + "; ".join(parts)


def critical_paths(sysfs_root: str = "/sys", proc_root: str = "/proc",
                   warnings: list[str] | None = None) -> dict[str, list[str]]:
    """sysfs paths (as /sys/...) of what the system cannot lose -> what each holds."""
    sysfs = Tree(sysfs_root, "/sys", warnings)
    proc = Tree(proc_root, "/proc", sysfs.warnings)
    found: dict[str, list[str]] = {}

    def add(path: str | None, label: str) -> None:
        if path is not None:
            found.setdefault(sysfs.show(path), []).append(label)

    mounts = _mounts(proc)
    for mountpoint, label in (("/", "root filesystem (/)"), ("/boot", "/boot filesystem")):
        if mountpoint in mounts:
            for block in _block_devices(sysfs, mounts[mountpoint]):
                add(block, label)
    boot = mounts.get("/boot", mounts.get("/"))
    if boot is not None:
        for block in _block_devices(sysfs, boot):
            disk = os.path.dirname(block) if os.path.exists(os.path.join(block, "partition")) else block
            add(disk, f"boot disk ({os.path.basename(disk)})")
    for iface in _default_route_interfaces(proc):
        for device in _net_devices(sysfs, iface, SLAVE_DEPTH):
            add(device, f"default route interface ({iface})")
    return found


def _mounts(proc: Tree) -> dict[str, str]:
    """mount point -> MAJ:MIN from /proc/self/mountinfo (the last mount on a point wins)."""
    text = proc.read(proc.path("self", "mountinfo"), limit=1 << 22) or ""
    mounts = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            # mountinfo escapes space, tab, newline and backslash as octal
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            mounts[point] = fields[2]
    return mounts


def _block_devices(sysfs: Tree, majmin: str) -> list[str]:
    """The block device of MAJ:MIN and, for dm/md, the devices below it."""
    if majmin.startswith("0:"):
        return []  # no block device (tmpfs, overlay, nfs)
    out: list[str] = []
    pending = [(sysfs.link(sysfs.path("dev", "block", majmin)), 0)]
    while pending:
        path, depth = pending.pop()
        if path is None or path in out or depth > SLAVE_DEPTH:
            continue
        out.append(path)
        slaves = os.path.join(path, "slaves")
        pending += [(sysfs.link(os.path.join(slaves, s)), depth + 1) for s in sysfs.listdir(slaves)]
    return out


def _default_route_interfaces(proc: Tree) -> list[str]:
    found = []
    for line in (proc.read(proc.path("net", "route"), limit=1 << 22) or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            found.append(fields[0])
    for line in (proc.read(proc.path("net", "ipv6_route"), limit=1 << 22) or "").splitlines():
        fields = line.split()
        if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
            found.append(fields[9])
    return list(dict.fromkeys(found))


def _net_devices(sysfs: Tree, iface: str, depth: int) -> list[str]:
    """The device of a network interface; for a bond, bridge or VLAN those of its lower ones."""
    if "/" in iface or iface in (".", "..") or depth < 0:
        return []
    base = sysfs.path("class", "net", iface)
    device = sysfs.link(os.path.join(base, "device"))
    if device is not None:
        return [device]
    out = []
    for entry in sysfs.listdir(base):
        if entry.startswith("lower_"):
            out += _net_devices(sysfs, entry[len("lower_"):], depth - 1)
    return out


def blacklist_impact(paths: KmodPaths, names: t.Sequence[str], mode: str, sysfs_root: str = "/sys",
                     proc_root: str = "/proc") -> tuple[list[Impact], list[str]]:
    """(impacts, warnings) of blacklisting/disabling ``names`` on the running system.

    Only a configuration for this system (root '/') affects its devices; for another
    root there is nothing to tell. Candidates resolve with the configuration as it is.
    """
    warnings: list[str] = []
    if paths.confined or not names:
        return [], warnings
    db = ModuleDB(paths)
    devices = scan_devices(db, sysfs_root, warnings)
    return assess(devices, names, mode, critical_paths(sysfs_root, proc_root, warnings), db), warnings
