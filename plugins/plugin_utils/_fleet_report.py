# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report (controller side): kmod_facts of many hosts -> one dict -> one HTML page.

Private to kernel.kmod: its API may change without notice. Pure functions on plain
data, so the filters stay thin and the figures are unit-testable. Everything coming
from hosts (module names, modalias, file names) is escaped in the HTML.
"""

from __future__ import annotations

import html
import os
import typing as t

DRIFT_SHARE = 0.5  # loaded on at most this share of the hosts (and not on all) = drift
DESIRED_KEYS = {  # role variable -> what it asks for
    "kmod_modules_present": "loaded",
    "kmod_modules_absent": "not loaded",
    "kmod_blacklist": "not loaded (blacklisted)",
    "kmod_disable": "not loaded (disabled)",
}


def _norm(name: str) -> str:
    return str(name).replace("-", "_")


def _noop_command(command: str) -> bool:
    words = str(command).split()
    return bool(words) and os.path.basename(words[0]) in ("true", "false")


def _blocked(config: t.Mapping[str, t.Any]) -> dict[str, dict[str, t.Any]]:
    """module -> {how, file, line}: disabled (install ... false/true) wins over blacklist."""
    out: dict[str, dict[str, t.Any]] = {}
    for entry in config.get("blacklist") or []:
        out.setdefault(_norm(entry["module"]), {"how": "blacklisted", "file": entry.get("file"),
                                                "line": entry.get("line")})
    for entry in config.get("install") or []:
        if _noop_command(entry.get("command", "")):
            out[_norm(entry["module"])] = {"how": "disabled", "file": entry.get("file"), "line": entry.get("line")}
    return out


def _names(items: t.Any) -> list[str]:
    """Role lists hold names or dicts with a name."""
    if not isinstance(items, (list, tuple)):
        return []
    return [_norm(i["name"] if isinstance(i, t.Mapping) else i) for i in items]


def _desired(hostvars: t.Mapping[str, t.Any]) -> dict[str, list[str]]:
    source = hostvars.get("kmod_report_desired") or hostvars
    return {key: _names(source.get(key)) for key in DESIRED_KEYS if source.get(key)}


def host_entry(name: str, hostvars: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    facts = (hostvars.get("ansible_facts") or {}).get("kmod")
    if not facts:
        return {"host": name, "facts": False, "kernel_release": None, "loaded": [], "loaded_blocked": [],
                "desired_unmet": [], "devices": [], "problems": 1}
    loaded = sorted(facts.get("loaded") or {})
    blocked = _blocked(facts.get("config") or {})
    loaded_blocked = [dict(module=m, **blocked[m]) for m in loaded if m in blocked]
    unmet = []
    loaded_set = set(loaded)
    # A builtin module is in the kernel (kmod_load reports it present) though not in /proc/modules.
    builtin = {_norm(m) for m in facts.get("builtin") or []}
    for key, names in _desired(hostvars).items():
        want_loaded = DESIRED_KEYS[key] == "loaded"
        for module in names:
            if (module in loaded_set or module in builtin) != want_loaded:
                unmet.append({"module": module, "wanted": DESIRED_KEYS[key], "variable": key,
                              "loaded": module in loaded_set, "builtin": module in builtin})
    devices = [{k: d.get(k) for k in ("path", "bus", "modalias", "driver", "driver_module", "driver_builtin",
                                      "modules")} for d in facts.get("devices") or []]
    return {"host": name, "facts": True, "kernel_release": facts.get("kernel_release"), "loaded": loaded,
            "loaded_blocked": loaded_blocked, "desired_unmet": unmet, "devices": devices,
            "problems": len(loaded_blocked) + len(unmet)}


def build_report(hostvars: t.Mapping[str, t.Any], hosts: t.Iterable[str],
                 drift_share: float = DRIFT_SHARE) -> dict[str, t.Any]:
    """The report of ``hosts`` from their hostvars (ansible_facts.kmod from kmod_facts with
    the loaded and config subsets, builtin and devices optional; the role's desired lists if set)."""
    entries = [host_entry(h, hostvars.get(h) or {}) for h in hosts]
    entries.sort(key=lambda e: (-e["problems"], e["host"]))
    with_facts = [e for e in entries if e["facts"]]
    counts: dict[str, list[str]] = {}
    for entry in with_facts:
        for module in entry["loaded"]:
            counts.setdefault(module, []).append(entry["host"])
    total = len(with_facts)
    drift = [{"module": m, "count": len(hs), "hosts": sorted(hs)} for m, hs in counts.items()
             if len(hs) < total and len(hs) <= drift_share * total]
    drift.sort(key=lambda d: (d["count"], d["module"]))
    matrix: dict[str, dict[str, str]] = {}
    for entry in with_facts:
        for item in entry["loaded_blocked"]:
            matrix.setdefault(item["module"], {})[entry["host"]] = item["how"]
    return {
        "summary": {
            "hosts": len(entries),
            "hosts_without_facts": [e["host"] for e in entries if not e["facts"]],
            "hosts_with_problems": sum(1 for e in entries if e["problems"]),
            "loaded_blocked": sum(len(e["loaded_blocked"]) for e in entries),
            "desired_unmet": sum(len(e["desired_unmet"]) for e in entries),
            "drift_modules": len(drift),
        },
        "hosts": entries,
        "loaded_blocked": dict(sorted(matrix.items(), key=lambda kv: (-len(kv[1]), kv[0]))),
        "drift": drift,
        "drift_share": drift_share,
    }


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left;vertical-align:top}
th{background:#eee}
.bad{background:#f8d0d0;color:#800}.ok{background:#d8f0d8;color:#050}.warn{background:#fff0c0}
.num{text-align:right}code{font-size:.9em}
details{margin:.3em 0}summary{cursor:pointer;font-weight:bold}
"""


def _e(value: t.Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(headers: t.Sequence[str], rows: t.Iterable[t.Sequence[tuple[str, str]]], css_id: str) -> str:
    """rows of (class, already escaped html) cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>" for c, v in row)
                   + "</tr>\n" for row in rows)
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n'


def render_html(report: t.Mapping[str, t.Any], title: str = "kernel.kmod fleet report") -> str:
    """One self-contained page (inline CSS, no scripts, no links out)."""
    s = report["summary"]
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body>\n<h1>{_e(title)}</h1>\n"]
    parts.append(_table(
        ["hosts", "with problems", "loaded although blacklisted/disabled", "desired state not met",
         "drift modules", "without facts"],
        [[("num", _e(s["hosts"])), ("num bad" if s["hosts_with_problems"] else "num ok", _e(s["hosts_with_problems"])),
          ("num bad" if s["loaded_blocked"] else "num ok", _e(s["loaded_blocked"])),
          ("num bad" if s["desired_unmet"] else "num ok", _e(s["desired_unmet"])),
          ("num warn" if s["drift_modules"] else "num ok", _e(s["drift_modules"])),
          ("bad" if s["hosts_without_facts"] else "ok", _e(", ".join(s["hosts_without_facts"]) or "none"))]],
        "summary"))
    hosts = report["hosts"]
    parts.append("<h2>Hosts, worst first</h2>\n")
    parts.append(_table(
        ["host", "kernel", "loaded", "loaded although blacklisted/disabled", "desired state not met", "devices"],
        [[("bad" if h["problems"] else "ok", _e(h["host"])), ("", _e(h["kernel_release"] or "no facts")),
          ("num", _e(len(h["loaded"]))),
          ("bad" if h["loaded_blocked"] else "", _e(", ".join(i["module"] for i in h["loaded_blocked"]))),
          ("bad" if h["desired_unmet"] else "",
           _e(", ".join(f"{u['module']} (wanted {u['wanted']})" for u in h["desired_unmet"]))),
          ("num", _e(len(h["devices"])))] for h in hosts],
        "hosts"))
    names = [h["host"] for h in hosts]
    parts.append("<h2>Modules loaded although blacklisted or disabled</h2>\n")
    if report["loaded_blocked"]:
        parts.append(_table(["module"] + names, [
            [("", f"<code>{_e(m)}</code>")] + [("bad", _e(by_host[n])) if n in by_host else ("ok", "") for n in names]
            for m, by_host in report["loaded_blocked"].items()], "loaded_blocked"))
    else:
        parts.append('<p class="ok">None.</p>\n')
    parts.append(f"<h2>Drift: modules loaded on only a few hosts (at most {_e(int(report['drift_share'] * 100))}%)</h2>\n")
    parts.append(_table(["module", "hosts", "loaded on"], [
        [("", f"<code>{_e(d['module'])}</code>"), ("num warn", _e(d["count"])), ("", _e(", ".join(d["hosts"])))]
        for d in report["drift"]], "drift") if report["drift"] else '<p class="ok">None.</p>\n')
    parts.append("<h2>Devices and their modules</h2>\n")
    for h in hosts:
        if not h["devices"]:
            continue
        parts.append(f"<details><summary>{_e(h['host'])} ({_e(len(h['devices']))} devices)</summary>\n")
        parts.append(_table(["device", "bus", "driver", "module", "candidate modules"], [
            [("", f"<code>{_e(d['path'])}</code>"), ("", _e(d["bus"])), ("", _e(d["driver"])),
             ("", _e(" ".join(filter(None, [d["driver_module"], "(builtin)" if d["driver_builtin"] else ""])))),
             ("warn" if d["modules"] and not d["driver"] else "", _e(" ".join(d["modules"])))]
            for d in h["devices"]], "devices-" + _e(h["host"])))
        parts.append("</details>\n")
    parts.append("</body></html>\n")
    return "".join(parts)
