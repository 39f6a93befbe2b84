# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet report's figures and HTML, from hand-made kmod_facts of three hosts.

The VM test (tests/vm/test_vm_fleet_report.py) checks the same against real guests'
/proc/modules; here the corner cases: names with '-', install commands, hosts without
facts, the role's desired lists, and hostile strings in the HTML.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

from ansible_collections.kernel.kmod.plugins.filter.fleet_report import FilterModule as ReportFilters
from ansible_collections.kernel.kmod.plugins.filter.fleet_report_html import FilterModule as HtmlFilters


def facts(loaded, blacklist=(), install=(), devices=()):
    return {"ansible_facts": {"kmod": {
        "kernel_release": "6.1.0-56-amd64", "loaded": {m: {"name": m} for m in loaded},
        "config": {"blacklist": [{"module": m, "file": "/etc/modprobe.d/b.conf", "line": i}
                                 for i, m in enumerate(blacklist, 1)],
                   "install": [{"module": m, "command": c, "file": "/etc/modprobe.d/d.conf", "line": i}
                               for i, (m, c) in enumerate(install, 1)]},
        "devices": list(devices)}}}


HOSTVARS = {
    "web1": facts(["ext4", "dummy", "usb_storage", "pcspkr"], blacklist=["pcspkr", "floppy"],
                  install=[("usb-storage", "/bin/false"), ("dummy", "/sbin/modprobe --ignore-install dummy")]),
    "web2": dict(facts(["ext4", "virtio_blk"], install=[("usb_storage", "/bin/true")]),
                 kmod_modules_present=[{"name": "br-netfilter"}, "ext4"], kmod_blacklist=["virtio_blk"]),
    "db1": dict(facts(["ext4", "virtio_blk"], devices=[{
        "path": "/sys/devices/<b>x</b>", "bus": "pci", "modalias": "pci:v&1", "driver": None,
        "driver_module": None, "driver_builtin": None, "modules": ["e1000e"]}]),
        kmod_report_desired={"kmod_modules_present": ["ext4"]}, kmod_blacklist=["ext4"]),
    "down": {},
}
HOSTS = ["web1", "web2", "db1", "down"]


def report(**kw):
    return ReportFilters().filters()["fleet_report"](HOSTVARS, HOSTS, **kw)


def test_figures() -> None:
    r = report()
    json.dumps(r)  # JSON-ready as it is
    # web1: usb_storage disabled (install /bin/false) and pcspkr blacklisted, both loaded;
    # dummy's install command loads it, so it is not disabled.
    # web2: br_netfilter not loaded, virtio_blk loaded although the role blacklists it.
    # down: no facts. db1: kmod_report_desired wins over the plain variables; ext4 is loaded.
    assert [h["host"] for h in r["hosts"]] == ["web1", "web2", "down", "db1"]
    web1, web2, down, db1 = r["hosts"]
    assert [(i["module"], i["how"]) for i in web1["loaded_blocked"]] == [("pcspkr", "blacklisted"),
                                                                         ("usb_storage", "disabled")]
    assert web1["loaded_blocked"][1]["file"] == "/etc/modprobe.d/d.conf"
    assert [(u["module"], u["wanted"]) for u in web2["desired_unmet"]] == [
        ("br_netfilter", "loaded"), ("virtio_blk", "not loaded (blacklisted)")]
    assert (down["facts"], down["problems"]) == (False, 1)
    assert (db1["problems"], db1["desired_unmet"]) == (0, [])
    assert r["loaded_blocked"] == {"pcspkr": {"web1": "blacklisted"}, "usb_storage": {"web1": "disabled"}}
    # 3 hosts with facts: drift = loaded on at most 1.5 of them
    assert r["drift"] == [{"module": "dummy", "count": 1, "hosts": ["web1"]},
                          {"module": "pcspkr", "count": 1, "hosts": ["web1"]},
                          {"module": "usb_storage", "count": 1, "hosts": ["web1"]}]
    assert [d["module"] for d in report(drift_share=0.7)["drift"]] == ["dummy", "pcspkr", "usb_storage", "virtio_blk"]
    assert r["summary"] == {"hosts": 4, "hosts_without_facts": ["down"], "hosts_with_problems": 3,
                            "loaded_blocked": 2, "desired_unmet": 2, "drift_modules": 3}


def test_builtin_modules_are_in_the_kernel() -> None:
    # kmod_load reports a builtin module present; /proc/modules does not list it.
    host = facts(["ext4"])
    host["ansible_facts"]["kmod"]["builtin"] = ["virtio_pci", "unix"]
    host["kmod_report_desired"] = {"kmod_modules_present": ["virtio-pci", "ext4", "dummy"],
                                   "kmod_modules_absent": ["unix"]}
    (entry,) = ReportFilters().filters()["fleet_report"]({"h": host}, ["h"])["hosts"]
    assert [(u["module"], u["wanted"], u["loaded"], u["builtin"]) for u in entry["desired_unmet"]] == [
        ("dummy", "loaded", False, False), ("unix", "not loaded", False, True)]


class Tables(HTMLParser):
    """Every table by id: rows of (cell text, cell class); and whether anything reaches out."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.external: list[str] = []
        self.cell: list[str] | None = None
        self.current: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "img", "iframe") or "href" in a or "src" in a:
            self.external.append(tag)
        if tag == "table":
            self.current = a["id"]
            self.tables[self.current] = []
        elif tag == "tr":
            self.tables[self.current].append([])
        elif tag in ("td", "th"):
            self.cell = []
            self.cls = a.get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[self.current][-1].append(("".join(self.cell), self.cls))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def test_html() -> None:
    page = HtmlFilters().filters()["fleet_report_html"](report(), title="Fleet <x>")
    parsed = Tables()
    parsed.feed(page)
    assert parsed.external == []
    assert "<title>Fleet &lt;x&gt;</title>" in page and "<b>x</b>" not in page
    hosts = parsed.tables["hosts"]
    assert [row[0] for row in hosts[1:]] == [("web1", "bad"), ("web2", "bad"), ("down", "bad"), ("db1", "ok")]
    assert parsed.tables["loaded_blocked"][0] == [("module", ""), ("web1", ""), ("web2", ""), ("down", ""), ("db1", "")]
    assert parsed.tables["loaded_blocked"][2] == [("usb_storage", ""), ("disabled", "bad"), ("", "ok"), ("", "ok"),
                                                  ("", "ok")]
    assert [row[0][0] for row in parsed.tables["drift"][1:]] == ["dummy", "pcspkr", "usb_storage"]
    assert parsed.tables["devices-db1"][1] == [("/sys/devices/<b>x</b>", ""), ("pci", ""), ("", ""), ("", ""),
                                               ("e1000e", "warn")]
