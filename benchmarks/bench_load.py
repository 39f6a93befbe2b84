# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod_load side by side with kmod's modprobe and with community.general.modprobe.

1. Resolution: ONE check-mode kmod_load task over every module name of a real tree
   (ansible-playbook against localhost, root=TREE) vs `modprobe -d TREE -S REL
   --show-depends NAME` once per name. Also counts names whose show_depends differ, and
   prints the floor: the same ansible-playbook call running one ping task.
2. Loading (in a qemu VM with a real Debian kernel): one kmod_load task over a list of
   30 modules, then the same task again, vs community.general.modprobe in a loop over
   the same names, twice. Each side starts from a freshly booted guest.

Each part also prints the peak RSS of the module processes (an extra, untimed run through
benchmarks/peak_rss.py's interpreter wrapper) and the load average.

Run from the repository: python3 benchmarks/bench_load.py [--kernel 6.12] [--skip-vm | --skip-resolution]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "vm"))
sys.path.insert(0, str(REPO / "benchmarks"))
import kernels  # noqa: E402
import peak_rss  # noqa: E402
from qemu import VM, ansible_playbook  # noqa: E402

# Modules that load in a bare qemu guest without hardware (network, filesystems, qdiscs).
VM_MODULES = ["dummy", "veth", "vxlan", "bridge", "bonding", "macvlan", "ipvlan", "nf_nat",
              "nf_tables", "xt_conntrack", "tun", "overlay", "nfnetlink", "br_netfilter", "ip_gre",
              "ipip", "sit", "geneve", "wireguard", "tcp_bbr", "sch_htb", "sch_netem", "cls_u32",
              "act_mirred", "8021q", "nbd", "vrf", "ifb", "nlmon", "squashfs"]
T = t.TypeVar("T")
MEMORY_LIMIT_MIB = 60  # issue 12: kmod_load, kmod_blacklist, kmod_facts
RSS_LOG = "/var/tmp/kmod-bench-rss.log"
RSS_PYTHON = "/usr/local/bin/kmod-bench-python"
ANSIBLE_PACKAGE = "ansible==12.3.0"  # the PyPI package that ships community.general (for ansible-core 2.19)


def module_names(tree: kernels.KernelTree) -> list[str]:
    with open(tree.moddir / "modules.dep", encoding="utf-8") as f:
        return [os.path.basename(line.split(":", 1)[0]).split(".", 1)[0].replace("-", "_")
                for line in f]


def measure(fn: t.Callable[[], T]) -> tuple[T, tuple[float, float]]:
    """fn()'s value and (wall seconds, CPU seconds of the child processes it ran).

    CPU time is the fairer figure on a busy machine: both sides run as child processes.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    value = fn()
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return value, (wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


def host_peaks(play: list[dict], extra_vars: dict) -> dict[str, float]:
    """Peak RSS (MiB) of the module processes of one more, untimed run of play here."""
    with tempfile.TemporaryDirectory(prefix="kmod-bench-rss-") as tmp:
        log, python = f"{tmp}/rss.log", f"{tmp}/python"
        Path(python).write_text(peak_rss.wrapper(log, sys.executable))
        os.chmod(python, 0o755)
        res = ansible_playbook([], play, extra_vars={**extra_vars, "ansible_python_interpreter": python})
        if res.rc != 0:
            sys.exit(f"the run for peak RSS failed: {res}")
        return peak_rss.peaks(Path(log).read_text())


def bench_resolution(key: str) -> None:
    print(f"\n{load_average()} before the resolution benchmark")
    tree = kernels.pristine_root(key)
    names = module_names(tree)
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [{
        "name": "resolve", "check_mode": True, "kernel.kmod.kmod_load": {
            "name": "{{ names }}", "root": str(tree.root), "kernel_release": tree.release}}]}]
    res, ours = measure(lambda: ansible_playbook(
        [], play, extra_vars={"names": names, "ansible_python_interpreter": sys.executable}))
    if res.rc != 0:
        sys.exit(f"kmod_load failed: {res}")
    result = res.task("resolve")
    base = ["modprobe", "-d", str(tree.root), "-S", tree.release, "-C", "/dev/null", "--show-depends"]
    theirs, kmod = measure(lambda: [subprocess.run(base + [n], capture_output=True, text=True, check=False)
                                    .stdout.splitlines() for n in names])
    differ = [n for n, mine, want in zip(names, result["modules"], theirs) if mine["show_depends"] != want]
    # The floor: ansible-playbook running one task that does nothing (ping), same extra vars.
    ping = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "tasks": [{"name": "floor", "ansible.builtin.ping": {}}]}]
    _res, floor = measure(lambda: ansible_playbook(
        [], ping, extra_vars={"names": names, "ansible_python_interpreter": sys.executable}))
    print(f"\n== resolution: {len(names)} names of {tree.release} ==")
    print(f"{'':<36}{'wall':>10}{'CPU':>10}")
    print(f"{'one check-mode kmod_load task':<36}{ours[0]:9.1f}s{ours[1]:9.1f}s")
    print(f"{'modprobe --show-depends per name':<36}{kmod[0]:9.1f}s{kmod[1]:9.1f}s")
    print(f"{'ratio (kmod_load / modprobe)':<36}{ours[0] / kmod[0]:10.3f}{ours[1] / kmod[1]:10.3f}")
    print(f"{'floor: a one-task ping playbook':<36}{floor[0]:9.1f}s{floor[1]:9.1f}s")
    print(f"{'floor ratio (ping / modprobe)':<36}{floor[0] / kmod[0]:10.3f}{floor[1] / kmod[1]:10.3f}"
          "  (what ansible-playbook alone costs: no module run through it can go lower)")
    print(f"names whose show_depends differ from modprobe: {len(differ)} {differ[:10]}")
    peaks = host_peaks(play, {"names": names})
    print(f"peak RSS of the module process, MiB: {peak_rss.shown(peaks, MEMORY_LIMIT_MIB)}")
    print(f"{load_average()} after")


def bench_dir() -> Path:
    """A playbook directory where community.general resolves: from this Python's
    site-packages (the `ansible` package, as in the test venv) or else a collections/ that
    holds it from the `ansible` PyPI package (installed once into the cache, without
    touching ansible-core)."""
    if importlib.util.find_spec("ansible_collections.community.general") is not None:
        play_dir = kernels.CACHE / "bench" / "play-site"
        play_dir.mkdir(parents=True, exist_ok=True)
        return play_dir  # ansible scans sys.path for collections
    base = kernels.CACHE / "bench" / ANSIBLE_PACKAGE.replace("==", "-")
    if not (base / "ansible_collections" / "community" / "general").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(base), ANSIBLE_PACKAGE], check=True)
    play_dir = kernels.CACHE / "bench" / "play"
    link = play_dir / "collections" / "ansible_collections" / "community"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(base / "ansible_collections" / "community")
    return play_dir


def timed_play(vm: VM, tasks: list[dict], play_dir: Path, play_vars: dict | None = None) -> float:
    book = play_dir / "play.yml"
    book.write_text(json.dumps([{"hosts": vm.name, "gather_facts": False, "tasks": tasks,
                                 "vars": play_vars or {}}]))
    start = time.monotonic()
    res = vm.ansible_playbook(book)
    took = time.monotonic() - start
    if res.rc != 0:
        sys.exit(f"play failed on {vm.name}: {res}")
    return took


def loaded_modules(vm: VM) -> set[str]:
    return {line.split()[0] for line in vm.run("cat /proc/modules", check=True).stdout.splitlines()}


def bench_vm(key: str) -> None:
    play_dir = bench_dir()
    ours_task = [{"name": "load", "kernel.kmod.kmod_load": {"name": VM_MODULES}}]
    cg_task = [{"name": "load", "community.general.modprobe": {"name": "{{ item }}"},
                "loop": VM_MODULES}]
    vm = VM(key).start()
    try:
        before = loaded_modules(vm)
        ours = [timed_play(vm, ours_task, play_dir) for _run in range(2)]
        missing = [m for m in VM_MODULES if m.replace("-", "_") not in loaded_modules(vm)]
        vm.put(peak_rss.wrapper(RSS_LOG), RSS_PYTHON, 0o755)
        timed_play(vm, ours_task, play_dir, {"ansible_python_interpreter": RSS_PYTHON})
        peaks = peak_rss.peaks(vm.run(f"cat {RSS_LOG}", check=True).stdout)
        vm.restart()
        assert loaded_modules(vm) == before, "the second boot must start from the same state"
        cg = [timed_play(vm, cg_task, play_dir) for _run in range(2)]
        missing_cg = [m for m in VM_MODULES if m.replace("-", "_") not in loaded_modules(vm)]
    finally:
        vm.stop()
    print(f"\n== loading {len(VM_MODULES)} modules in a qemu VM ({key}) ==")
    print(f"{'':<28}{'first run':>12}{'rerun':>12}{'total':>12}")
    print(f"{'kmod_load (one task)':<28}{ours[0]:11.1f}s{ours[1]:11.1f}s{sum(ours):11.1f}s")
    print(f"{'community.general.modprobe':<28}{cg[0]:11.1f}s{cg[1]:11.1f}s{sum(cg):11.1f}s")
    print(f"{'ratio (target <= 0.08)':<28}{ours[0] / cg[0]:12.3f}{ours[1] / cg[1]:12.3f}"
          f"{sum(ours) / sum(cg):12.3f}")
    for who, names in (("kmod_load", missing), ("community.general.modprobe", missing_cg)):
        if names:
            print(f"not loaded after {who}: {names}")
    print(f"peak RSS of the module process (an extra, untimed rerun), MiB: "
          f"{peak_rss.shown(peaks, MEMORY_LIMIT_MIB)}")
    print(load_average())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--kernel", default="6.12", choices=sorted(kernels.KERNELS))
    parser.add_argument("--skip-vm", action="store_true", help="only the resolution benchmark")
    parser.add_argument("--skip-resolution", action="store_true", help="only the VM benchmark")
    args = parser.parse_args()
    if not args.skip_resolution:
        bench_resolution(args.kernel)
    if not args.skip_vm:
        bench_vm(args.kernel)


if __name__ == "__main__":
    main()
