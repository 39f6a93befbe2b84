# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The devices present (sysfs), the driver bound to each and the modules that could drive it.

Like ``lspci -k`` for every bus: each device with a ``modalias`` under
``/sys/bus/*/devices/*`` (then ``/sys/devices`` for class devices, such as input,
that no bus lists), the driver bound now (``driver`` link), the module that driver
belongs to (``driver/module``; none for a builtin driver) and the modules whose
aliases match the modalias, which is exactly what ``modprobe --resolve-alias MODALIAS``
prints. sysfs is always the running kernel's; the alias side comes from the ModuleDB,
so another root or kernel release answers "which of my devices would it drive?".
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

from .errors import InvalidNameError
from .resolver import ModuleDB
from .sysfs import Tree

WALK_LIMIT = 200000  # directories below /sys/devices; a large server has tens of thousands


@dataclasses.dataclass
class Device:
    path: str  # as the system shows it: /sys/devices/...
    name: str
    bus: str | None  # the bus, or the class of a class device (its subsystem)
    modalias: str
    driver: str | None  # bound now
    driver_module: str | None  # the module of that driver (its driver/module link)
    driver_builtin: bool | None  # None when no driver is bound
    modules: list[str]  # modprobe --resolve-alias MODALIAS, in that order (repeats kept)

    def as_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


def scan_devices(db: ModuleDB, sysfs_root: str = "/sys", warnings: list[str] | None = None) -> list[Device]:
    """Every device with a modalias: bus view first (by bus, then name), then the rest of
    /sys/devices by path. Unreadable or escaping entries are skipped with a warning."""
    tree = Tree(sysfs_root, "/sys", warnings)
    resolved: dict[str, list[str]] = {}
    seen: set[str] = set()
    devices = []

    def add(real: str, bus: str | None) -> None:
        seen.add(real)
        modalias = tree.read(os.path.join(real, "modalias"))
        if not modalias:
            return
        if modalias not in resolved:
            resolved[modalias] = _resolve_alias(db, modalias, tree)
        driver, module, builtin = _driver(tree, real)
        devices.append(Device(tree.show(real), os.path.basename(real), bus, modalias,
                              driver, module, builtin, list(resolved[modalias])))

    for bus in tree.listdir(tree.path("bus")):
        base = tree.path("bus", bus, "devices")
        for name in tree.listdir(base):
            real = tree.link(os.path.join(base, name))
            if real is not None and real not in seen:
                add(real, bus)
    for dirpath, files in tree.walk(tree.path("devices"), WALK_LIMIT):
        if "modalias" in files and dirpath not in seen:
            subsystem = tree.link(os.path.join(dirpath, "subsystem"))
            add(dirpath, os.path.basename(subsystem) if subsystem else None)
    return devices


def _resolve_alias(db: ModuleDB, modalias: str, tree: Tree) -> list[str]:
    try:
        return db.resolve_alias(modalias)
    except InvalidNameError as exc:
        tree.warnings.append(f"modalias {modalias!r}: not resolved: {exc.msg}")
        return []


def _driver(tree: Tree, device: str) -> tuple[str | None, str | None, bool | None]:
    """(driver, its module, builtin?) of a device. A builtin driver has no ``module`` link,
    or one to a /sys/module entry without ``initstate`` (builtin code of a named module)."""
    driver = tree.link(os.path.join(device, "driver"))
    if driver is None:
        return None, None, None
    module = tree.link(os.path.join(driver, "module"))
    if module is None:
        return os.path.basename(driver), None, True
    return os.path.basename(driver), os.path.basename(module), not os.path.exists(os.path.join(module, "initstate"))
