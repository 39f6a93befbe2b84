# SPDX-License-Identifier: GPL-3.0-or-later
"""One realistic host state converged by the role kernel.kmod.kmod and, side by side, the way
users write it today with community.general and ansible.builtin, in a qemu VM with a real
Debian kernel (tests/vm/qemu.py).

The desired state: five modules loaded now and at boot (three with parameters), the CIS
list of twelve modules disabled (``install NAME /bin/false``) and unloaded, one module
removed, and the loaded modules gathered. The guest starts with some of the CIS modules and
the module to remove loaded. Each side starts from a freshly booted guest, converges once
and then reruns (nothing to change). Printed per side and run: wall time, tasks and module
runs (loop items count one each), the controller's CPU seconds (ansible-playbook and its
ssh children), then the ratios, a 1,000-host estimate, the peak RSS of each module process
in the guest (an extra, untimed rerun through an interpreter wrapper) and the load average.

Run from the repository: python3 benchmarks/bench_fleet.py [--kernel 6.12]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import typing as t
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "vm"))
sys.path.insert(0, str(REPO / "benchmarks"))
import peak_rss  # noqa: E402
from qemu import VM, PlaybookResult  # noqa: E402

CIS = ["cramfs", "freevxfs", "jffs2", "hfs", "hfsplus", "squashfs", "udf", "usb-storage", "dccp",
       "sctp", "rds", "tipc"]
# name -> params (None: none); all of them persistent.
PRESENT: dict[str, dict[str, int] | None] = {
    "dummy": {"numdummies": 2}, "nbd": {"nbds_max": 4}, "bonding": {"max_bonds": 0},
    "veth": None, "br_netfilter": None}
ABSENT = "ifb"
# Loaded before the first converge (those the kernel has), what the desired state has to
# undo; not sctp: it is in use once loaded.
PRELOAD = ["squashfs", "udf", "cramfs", "hfsplus", "freevxfs"]
DISABLE_CONF = "/etc/modprobe.d/cis-disable.conf"
RSS_LOG = "/var/tmp/kmod-bench-rss.log"
RSS_PYTHON = "/usr/local/bin/kmod-bench-python"
MEMORY_LIMIT_MIB = 60  # issue 12: kmod_load, kmod_blacklist, kmod_facts


def role_play(host: str) -> list[dict]:
    present = [{"name": n, "persistent": True, **({"params": p} if p else {})} for n, p in PRESENT.items()]
    return [{"name": "role", "hosts": host, "gather_facts": False, "tasks": [
        {"name": "converge", "ansible.builtin.include_role": {"name": "kernel.kmod.kmod"}, "vars": {
            "kmod_modules_present": present, "kmod_modules_absent": [ABSENT], "kmod_disable": CIS,
            "kmod_disable_path": DISABLE_CONF, "kmod_rebuild_initramfs": False}},
        {"name": "facts", "kernel.kmod.kmod_facts": {"gather_subset": ["loaded"]}}]}]


def community_play(host: str) -> list[dict]:
    """What a user writes today: modprobe in a loop, kernel_blacklist in a loop, the rest
    with copy and lineinfile."""
    with_params = {n: " ".join(f"{k}={v}" for k, v in p.items()) for n, p in PRESENT.items() if p}
    tasks: list[dict] = [
        {"name": "load", "community.general.modprobe": {
            "name": "{{ item }}", "params": "{{ params.get(item, '') }}"}, "loop": list(PRESENT)},
        {"name": "load at boot", "ansible.builtin.copy": {
            "dest": "/etc/modules-load.d/site.conf", "content": "".join(f"{n}\n" for n in PRESENT)}},
        {"name": "options at boot", "ansible.builtin.lineinfile": {
            "path": "/etc/modprobe.d/site-options.conf", "create": True,
            "regexp": "^options {{ item.key }} ", "line": "options {{ item.key }} {{ item.value }}"},
         "loop": "{{ params | dict2items }}"},
        {"name": "blacklist", "community.general.kernel_blacklist": {
            "name": "{{ item }}", "blacklist_file": DISABLE_CONF}, "loop": CIS},
        {"name": "disable", "ansible.builtin.lineinfile": {
            "path": DISABLE_CONF, "create": True, "regexp": "^install {{ item }} ",
            "line": "install {{ item }} /bin/false"}, "loop": CIS},
        {"name": "unload", "community.general.modprobe": {"name": "{{ item }}", "state": "absent"},
         "loop": CIS + [ABSENT]},
        {"name": "facts", "ansible.builtin.command": "lsmod", "changed_when": False},
    ]
    return [{"name": "community", "hosts": host, "gather_facts": False, "vars": {"params": with_params},
             "tasks": tasks}]


def run_play(vm: VM, play: list[dict], **kwargs: t.Any) -> tuple[PlaybookResult, float, float]:
    """The result, wall seconds and controller CPU seconds (ansible-playbook and its ssh)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    res = vm.ansible_playbook(play, **kwargs)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.rc != 0:
        sys.exit(f"play failed on {vm.name}: {res}")
    return res, wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def counts(res: PlaybookResult) -> tuple[int, int, int]:
    """(tasks run, module runs, changed module runs): skipped ones are not counted."""
    tasks = runs = changed = 0
    for task in res.tasks:
        items = task.get("results") or [task.result]
        items = [i for i in items if not i.get("skipped")]
        if items:
            tasks += 1
            runs += len(items)
            changed += sum(1 for i in items if i.get("changed"))
    return tasks, runs, changed


def state_problems(vm: VM) -> list[str]:
    """What differs from the desired state in the guest (empty: converged)."""
    loaded = {ln.split()[0] for ln in vm.run("cat /proc/modules", check=True).stdout.splitlines()}
    problems = [f"{m} not loaded" for m in PRESENT if m not in loaded]
    problems += [f"{m} loaded" for m in CIS + [ABSENT] if m.replace("-", "_") in loaded]
    for name in CIS:
        if vm.run(f"modprobe {name}").returncode == 0:
            problems.append(f"modprobe {name} succeeds")
    shown = vm.run("grep -h . /etc/modules-load.d/*.conf", check=False).stdout.split()
    problems += [f"{m} not in modules-load.d" for m in PRESENT if m not in shown]
    return problems


def available(vm: VM) -> list[str]:
    """The CIS modules the guest's kernel has as loadable modules."""
    return [n for n in CIS if vm.run(f"modinfo -F filename {n}").stdout.strip().endswith(
        (".ko", ".ko.xz", ".ko.zst", ".ko.gz"))]


def converge(vm: VM, play: list[dict], preload: list[str], who: str) -> list[tuple[PlaybookResult, float, float]]:
    """First converge and rerun, each printed as soon as it is measured (TCG is slow)."""
    vm.run(f"modprobe -a {' '.join(preload)}", check=True)
    runs = []
    for label in ("first", "rerun"):
        runs.append(run_play(vm, play))
        res, wall, cpu = runs[-1]
        tasks, mods, changed = counts(res)
        print(f"{who:<30}{label:<7}{wall:7.1f}s{tasks:7d}{mods:13d}{changed:9d}{cpu:15.1f}s", flush=True)
    return runs


def module_peaks(vm: VM, play: list[dict]) -> dict[str, float]:
    """Peak RSS (MiB) per module over one more (untimed) run through the wrapper."""
    vm.put(peak_rss.wrapper(RSS_LOG), RSS_PYTHON, 0o755)
    vm.run(f"rm -f {RSS_LOG}", check=True)
    run_play(vm, play, extra_vars={"ansible_python_interpreter": RSS_PYTHON})
    return peak_rss.peaks(vm.run(f"cat {RSS_LOG}", check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--kernel", default="6.12", choices=["6.1", "6.12"])
    parser.add_argument("--community-rss", action="store_true",
                        help="also the peak RSS of the community side's modules (one more slow run)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    vm = VM(args.kernel).start()
    try:
        cis_here = available(vm)
        preload = [m for m in PRELOAD if m in cis_here] + [ABSENT]
        print(f"\n== fleet: one host state in a qemu VM ({args.kernel}, TCG) ==")
        print(f"CIS modules this kernel has as modules: {len(cis_here)} of {len(CIS)} "
              f"(others: {[n for n in CIS if n not in cis_here]}); loaded before the first run: {preload}")
        print(f"{'':<30}{'run':<7}{'wall':>8}{'tasks':>7}{'module runs':>13}{'changed':>9}{'controller CPU':>16}",
              flush=True)
        ours = converge(vm, role_play(vm.name), preload, "role kernel.kmod.kmod")
        ours_problems = state_problems(vm)
        vm.restart()
        theirs = converge(vm, community_play(vm.name), preload, "community.general + builtin")
        theirs_problems = state_problems(vm)
        rss_cg = module_peaks(vm, community_play(vm.name)) if args.community_rss else {}
        # Last, as the slowest figures come first: the role over the community side's state.
        rss = module_peaks(vm, role_play(vm.name))
    finally:
        vm.stop()
    load_after = os.getloadavg()
    for label, i in (("first converge", 0), ("rerun", 1)):
        print(f"ratio role / community, {label + ':':<16} wall {ours[i][1] / theirs[i][1]:.3f}, "
              f"controller CPU {ours[i][2] / theirs[i][2]:.3f}"
              + ("  (target for the rerun: wall <= 0.25)" if i else ""))
    for who, problems in (("role", ours_problems), ("community", theirs_problems)):
        print(f"{who}: {'converged' if not problems else 'NOT converged: ' + '; '.join(problems)}")

    print("\n1,000 hosts, on paper (each host as this one; real hosts run modules faster than TCG):")
    for who, runs in (("role", ours), ("community", theirs)):
        _res, wall, cpu = runs[1]
        for forks in (5, 50):
            # Hosts run `forks` at a time; the controller has this machine's cores for its CPU.
            hosts_time = 1000 / forks * wall
            cpu_time = 1000 * cpu / (os.cpu_count() or 1)
            print(f"  {who:<10} rerun, forks={forks:<3}: max(1000/{forks} x {wall:.1f} s, 1000 x {cpu:.1f} "
                  f"CPU s / {os.cpu_count()} cores) = {max(hosts_time, cpu_time) / 60:6.1f} min")

    print(f"\npeak RSS, role side (an extra, untimed run), MiB: {peak_rss.shown(rss, MEMORY_LIMIT_MIB)}")
    if rss_cg:
        print(f"peak RSS, community side (an extra, untimed rerun), MiB: {peak_rss.shown(rss_cg)}")
    print(f"\nload average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
