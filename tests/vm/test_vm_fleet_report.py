# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet report of both guests at once, from examples/fleet-report.yml and from the
role's kmod_report option; its HTML and JSON against their /proc/modules."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

import qemu
from qemu import VM

pytestmark = pytest.mark.vm

PLAYBOOK = Path(__file__).resolve().parents[2] / "examples" / "fleet-report.yml"
CONF = "/etc/modprobe.d/kmod-vm-report.conf"


class Tables(HTMLParser):
    """Every table by id: rows of (cell text, cell class); tags that would reach out."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.external: list[str] = []
        self.cell: list[str] | None = None
        self.cls = ""
        self.table = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "img", "iframe") or "href" in a or "src" in a:
            self.external.append(tag)
        if tag == "table":
            self.table = a["id"]
            self.tables[self.table] = []
        elif tag == "tr":
            self.tables[self.table].append([])
        elif tag in ("td", "th"):
            self.cell, self.cls = [], a.get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[self.table][-1].append(("".join(self.cell), self.cls))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def proc_modules(vm: VM) -> set[str]:
    return {line.split()[0] for line in vm.run("cat /proc/modules", check=True).stdout.splitlines()}


def test_fleet_report_of_two_guests(vm_6_1: VM, vm_6_12: VM, tmp_path: Path) -> None:
    vms = {vm.name: vm for vm in (vm_6_1, vm_6_12)}
    # One loaded module blacklisted on 6.1 only (a blacklist does not unload it).
    vm_6_1.put("blacklist virtio_net\n", CONF)
    try:
        res = qemu.ansible_playbook(list(vms.values()), PLAYBOOK, extra_vars={
            "kmod_report_dir": str(tmp_path), "kmod_modules_present": ["dummy", "ext4"]})
        loaded = {name: proc_modules(vm) for name, vm in vms.items()}
    finally:
        vm_6_1.run(f"rm -f {CONF}", check=True)
    assert res.rc == 0, res
    report = json.loads((tmp_path / "kmod-report.json").read_text())
    page = (tmp_path / "kmod-report.html").read_text()

    hosts = {h["host"]: h for h in report["hosts"]}
    assert sorted(hosts) == sorted(vms)
    for name in vms:
        assert set(hosts[name]["loaded"]) == loaded[name]
        # dummy is loaded nowhere; ext4 is loaded on both (from the initramfs)
        assert [u["module"] for u in hosts[name]["desired_unmet"]] == sorted(
            m for m in ("dummy", "ext4") if m not in loaded[name])
    blocked_61 = ["virtio_net"] if "virtio_net" in loaded[vm_6_1.name] else []
    assert [i["module"] for i in hosts[vm_6_1.name]["loaded_blocked"]] == blocked_61
    assert hosts[vm_6_12.name]["loaded_blocked"] == []
    assert report["loaded_blocked"] == {m: {vm_6_1.name: "blacklisted"} for m in blocked_61}
    # two hosts: drift = loaded on exactly one
    drift = loaded[vm_6_1.name] ^ loaded[vm_6_12.name]
    assert {d["module"]: d["hosts"] for d in report["drift"]} == {
        m: [n for n in sorted(vms) if m in loaded[n]] for m in drift}
    assert [h["host"] for h in report["hosts"]][0] == vm_6_1.name  # worst first: one more problem
    for name in vms:
        assert hosts[name]["devices"], name

    parsed = Tables()
    parsed.feed(page)
    assert parsed.external == []
    rows = {row[0][0]: row for row in parsed.tables["hosts"][1:]}
    for name in vms:
        assert int(rows[name][2][0]) == len(loaded[name])
        assert rows[name][0][1] == "bad"  # dummy is not loaded anywhere
    assert {row[0][0] for row in parsed.tables["drift"][1:]} == drift
    assert {row[0][0] for row in parsed.tables["loaded_blocked"][1:]} == set(blocked_61)
    for name in vms:
        assert len(parsed.tables["devices-" + name]) - 1 == len(hosts[name]["devices"])


ROLE_BLACKLIST = "/etc/modprobe.d/kmod-vm-role-report.conf"


def modalias_devices(vm: VM) -> set[str]:
    """Every device directory under /sys/devices with a modalias, as find sees it."""
    out = vm.run("find /sys/devices -name modalias -type f", check=True).stdout
    return {line.rsplit("/", 1)[0] for line in out.splitlines()}


def builtin_modules(vm: VM) -> set[str]:
    """The kernel's modules.builtin, as module names."""
    out = vm.run('cat "/lib/modules/$(uname -r)/modules.builtin"', check=True).stdout
    return {line.rsplit("/", 1)[-1].removesuffix(".ko").replace("-", "_") for line in out.split()}


def test_role_kmod_report_on_two_guests(vm_6_1: VM, vm_6_12: VM, tmp_path: Path) -> None:
    """The role's own report option, after a real run whose desired state leaves the guests
    as they are: ext4 and virtio_pci present (loaded from the initramfs; virtio_pci is
    builtin on 6.12), dummy absent (loaded nowhere), jbd2 blacklisted without unloading
    (ext4 holds it), in a test-only file removed after. kmod_report_devices is true on 6.1
    and false on 6.12 (set per host)."""
    vms = {vm.name: vm for vm in (vm_6_1, vm_6_12)}
    before = {name: proc_modules(vm) for name, vm in vms.items()}
    builtin = {name: builtin_modules(vm) for name, vm in vms.items()}
    for name in vms:  # the premises of "harmless"
        assert {"ext4", "jbd2"} <= before[name] and "dummy" not in before[name], (name, before[name])
        assert "virtio_pci" in before[name] | builtin[name], name
    play = {
        "name": "role with the fleet report", "hosts": "all", "gather_facts": False,
        "pre_tasks": [{"ansible.builtin.set_fact": {
            "kmod_report_devices": "{{ inventory_hostname == '" + vm_6_1.name + "' }}"}}],
        "roles": [{"role": "kernel.kmod.kmod", "vars": {
            "kmod_modules_present": ["ext4", "virtio_pci"], "kmod_modules_absent": ["dummy"],
            "kmod_blacklist": ["jbd2"], "kmod_blacklist_path": ROLE_BLACKLIST,
            "kmod_blacklist_unload": False, "kmod_rebuild_initramfs": False,
            "kmod_report": True, "kmod_report_dir": str(tmp_path)}}],
    }
    try:
        res = qemu.ansible_playbook(list(vms.values()), [play])
        loaded = {name: proc_modules(vm) for name, vm in vms.items()}
        # what modprobe itself reads from the file the role wrote
        config = {name: vm.run("modprobe -c", check=True).stdout.splitlines() for name, vm in vms.items()}
        devices = {vm_6_1.name: modalias_devices(vm_6_1)}
    finally:
        for vm in vms.values():
            vm.run(f"rm -f {ROLE_BLACKLIST}", check=True)
    assert res.rc == 0, res
    assert loaded == before, res  # the play loaded and unloaded nothing
    report = json.loads((tmp_path / "kmod-report.json").read_text())
    page = (tmp_path / "kmod-report.html").read_text()

    hosts = {h["host"]: h for h in report["hosts"]}
    assert sorted(hosts) == sorted(vms)
    for name in vms:
        entry = hosts[name]
        assert entry["facts"] is True
        assert set(entry["loaded"]) == loaded[name]
        blacklisted = {line.split()[1] for line in config[name] if line.startswith("blacklist ")}
        assert "jbd2" in blacklisted, config[name]
        assert {i["module"]: i["how"] for i in entry["loaded_blocked"]} == {
            m: "blacklisted" for m in sorted(loaded[name] & blacklisted)}
        wanted = {("ext4", "kmod_modules_present", True), ("virtio_pci", "kmod_modules_present", True),
                  ("dummy", "kmod_modules_absent", False), ("jbd2", "kmod_blacklist", False)}
        in_kernel = loaded[name] | builtin[name]
        assert {(u["module"], u["variable"]) for u in entry["desired_unmet"]} == {
            (m, var) for m, var, want in wanted if (m in in_kernel) != want}
    assert sorted(d["path"] for d in hosts[vm_6_1.name]["devices"]) == sorted(devices[vm_6_1.name])
    assert hosts[vm_6_12.name]["devices"] == []
    assert report["summary"]["desired_unmet"] == sum(len(h["desired_unmet"]) for h in hosts.values())

    parsed = Tables()
    parsed.feed(page)
    assert parsed.external == []
    rows = {row[0][0]: row for row in parsed.tables["hosts"][1:]}
    assert sorted(rows) == sorted(vms)
    for name in vms:
        assert int(rows[name][2][0]) == len(loaded[name])
        assert rows[name][4][1] == ("bad" if hosts[name]["desired_unmet"] else "")
        assert ("jbd2" in rows[name][4][0]) == ("jbd2" in loaded[name])
    assert len(parsed.tables["devices-" + vm_6_1.name]) - 1 == len(devices[vm_6_1.name])
    assert "devices-" + vm_6_12.name not in parsed.tables
