# SPDX-License-Identifier: GPL-3.0-or-later
"""kernel.kmod.kmod_depmod next to kmod's depmod, each as an Ansible task on localhost.

For each cached Debian kernel (6.1: plain .ko, 6.12: .ko.xz) this makes two fresh scratch
copies without indexes, then runs in one playbook: ``depmod -b ROOT REL`` through
ansible.builtin.command on one copy, kmod_depmod on the other (cold: empty cache), and
kmod_depmod again (warm: nothing changed). Each task is timed between ``date`` stamps
taken by the tasks around it, so both sides carry the same Ansible overhead. Prints the
times and the ratios kmod_depmod / depmod (issue 12's targets: warm <= 0.35 on the plain
tree and <= 0.2 on the .ko.xz tree, cold <= 1.0 and <= 0.6), each the best of two rounds
on fresh copies, since the machine may be shared, with the load average around them.

Two floors put the ratios in proportion: a ``command: true`` task between the same stamps
(what any task costs here, so the lowest ratio any module could reach), and, for a
compressed tree, the CPU seconds decompressing its modules takes in this process: a cold
run on N CPUs cannot take less than the floor plus that divided by N.

Memory: while the playbook runs, /proc is sampled every 20 ms; the peak of the sum over
kmod_depmod's processes (the module and its forked workers) of VmRSS, and of Pss (which
shares the pages the workers inherit instead of counting them once per process), is
printed next to depmod's (target: <= 150 MB for kmod_depmod on the .ko.xz tree).

Usage: python3 benchmarks/bench_depmod.py [6.1] [6.12]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from collection_link import checkout_collections_path  # noqa: E402
from kernels import KernelTree, pristine_root, scratch_root  # noqa: E402

sys.path.insert(0, checkout_collections_path())  # as bench_edit.py: the engine from this checkout
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.file import (  # noqa: E402
    decompress, detect_compression)

INDEXES = ("modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep",
           "modules.symbols", "modules.symbols.bin", "modules.builtin.bin", "modules.builtin.alias.bin",
           "modules.devname")


def stamp(name: str) -> dict:
    return {"name": name, "ansible.builtin.command": "date +%s.%N", "register": name, "changed_when": False}


def playbook(depmod_tree, ours_tree, cache_dir: str, results: Path) -> list:
    ours = {"root": str(ours_tree.root), "kernel_release": ours_tree.release, "cache_dir": cache_dir}
    return [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [
            stamp("t0"),
            {"name": "depmod", "ansible.builtin.command": f"depmod -b {depmod_tree.root} {depmod_tree.release}"},
            stamp("t1"),
            {"name": "cold", "kernel.kmod.kmod_depmod": ours, "register": "cold"},
            stamp("t2"),
            {"name": "warm", "kernel.kmod.kmod_depmod": ours, "register": "warm"},
            stamp("t3"),
            # the floor: what any task costs between two stamps (a command doing nothing)
            {"name": "floor", "ansible.builtin.command": "true"},
            stamp("t4"),
            {"name": "save", "ansible.builtin.copy": {
                "dest": str(results),
                "content": "{{ {'t0': t0, 't1': t1, 't2': t2, 't3': t3, 't4': t4, 'cold': cold, 'warm': warm}"
                           " | to_json }}"}},
        ],
    }]


class MemorySampler(threading.Thread):
    """Peak over time of the summed VmRSS and Pss (kB) of the processes each matcher picks."""

    def __init__(self, matchers: dict) -> None:
        super().__init__(daemon=True)
        self.matchers = matchers
        self.peak = {name: {"rss": 0, "pss": 0} for name in matchers}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            totals = {name: {"rss": 0, "pss": 0} for name in self.matchers}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                    name = next((n for n, match in self.matchers.items() if match(argv)), None)
                    if name is None:
                        continue
                    with open(f"/proc/{pid}/smaps_rollup") as f:
                        for line in f:
                            field, _sep, rest = line.partition(":")
                            if field in ("Rss", "Pss"):
                                totals[name][field.lower()] += int(rest.split()[0])
                except OSError:
                    continue  # gone meanwhile
            for name, total in totals.items():
                for field in ("rss", "pss"):
                    self.peak[name][field] = max(self.peak[name][field], total[field])


def is_kmod_depmod(argv: list) -> bool:
    """The module's python (and its forked workers, which keep its command line), not the shell."""
    return b"python" in os.path.basename(argv[0]) and any(b"AnsiballZ_kmod_depmod" in a for a in argv)


def is_depmod(argv: list) -> bool:
    return os.path.basename(argv[0]) == b"depmod"


def run(key: str, work: Path) -> dict:
    work.mkdir()
    pristine = pristine_root(key)
    trees = [scratch_root(key, work / f"{key}-depmod")]
    # kmod_depmod's cache key includes the files' ctime, which changes whenever anyone
    # hard-links the cached tree again (scratch_root does): give it private copies.
    subprocess.run(["cp", "-a", str(pristine.root), str(work / f"{key}-ours")], check=True)
    trees.append(KernelTree(key, work / f"{key}-ours", pristine.release))
    for tree in trees:
        for name in INDEXES:
            (tree.moddir / name).unlink()
    book = work / f"bench-{key}.yml"
    out = work / f"results-{key}.json"
    book.write_text(json.dumps(playbook(*trees, str(work / "cache"), out)))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=checkout_collections_path(),
               ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    sampler = MemorySampler({"kmod_depmod": is_kmod_depmod, "depmod": is_depmod})
    sampler.start()
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", str(book)], env=env,
                          capture_output=True, text=True, check=False)
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"playbook failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    results = json.loads(out.read_text())
    t = [float(results[f"t{i}"]["stdout"]) for i in range(5)]
    same = all((trees[0].moddir / n).read_bytes() == (trees[1].moddir / n).read_bytes() for n in INDEXES)
    return {
        "key": key, "modules": results["cold"]["module_count"], "identical": same,
        "depmod": t[1] - t[0], "cold": t[2] - t[1], "warm": t[3] - t[2], "floor": t[4] - t[3],
        "cold_elapsed": results["cold"]["elapsed"], "warm_elapsed": results["warm"]["elapsed"],
        "warm_changed": results["warm"]["changed"], "pristine": str(pristine.root),
        "memory": sampler.peak, "load": os.getloadavg()[0],
    }


def decompression_cpu(root: Path) -> float:
    """CPU seconds this process spends decompressing every compressed module under root
    (0 for a tree of plain .ko files): the part of a cold depmod no program can skip."""
    total = 0.0
    for path in root.rglob("*.ko.*"):
        data = path.read_bytes()
        compression = detect_compression(data)
        start = time.process_time()
        decompress(data, compression, str(path))
        total += time.process_time() - start
    return total


def main(keys: list[str], repeat: int = 2) -> None:
    """Each measurement is the best of ``repeat`` runs: the machine may be shared."""
    with tempfile.TemporaryDirectory(prefix="bench-depmod-") as tmp:
        for key in keys:
            load_before = os.getloadavg()[0]
            runs = [run(key, Path(tmp) / f"{key}-{i}") for i in range(repeat)]
            load_after = os.getloadavg()[0]
            best = {m: min(r[m] for r in runs)
                    for m in ("depmod", "cold", "warm", "floor", "cold_elapsed", "warm_elapsed")}
            r = runs[0]
            print(f"{key}: {r['modules']} modules, output identical to depmod: "
                  f"{all(x['identical'] for x in runs)}, best of {repeat}, "
                  f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs")
            print(f"  depmod task           {best['depmod']:7.2f} s")
            print(f"  kmod_depmod cold task {best['cold']:7.2f} s  (module's own time {best['cold_elapsed']:.2f} s)"
                  f"  ratio {best['cold'] / best['depmod']:.2f}")
            print(f"  kmod_depmod warm task {best['warm']:7.2f} s  (module's own time {best['warm_elapsed']:.2f} s)"
                  f"  ratio {best['warm'] / best['depmod']:.2f}  changed={any(x['warm_changed'] for x in runs)}")
            print(f"  floor: `command: true` {best['floor']:5.2f} s  ratio {best['floor'] / best['depmod']:.2f}"
                  "  (no task can cost less: the lowest ratio any module can reach here)")
            decompress = decompression_cpu(Path(r["pristine"]))
            if decompress:
                bound = best["floor"] + decompress / (os.cpu_count() or 1)
                print(f"  decompressing the modules alone: {decompress:.2f} CPU s (Python's lzma/zlib/zstd, the same"
                      f" libraries as depmod's); a cold run cannot take less than floor + that / {os.cpu_count()} CPUs"
                      f" = {bound:.2f} s, ratio {bound / best['depmod']:.2f}")
            print("  load average (1 min) after each round: " + ", ".join(f"{x['load']:.1f}" for x in runs))
            for who in ("depmod", "kmod_depmod"):
                mem = {f: max(x["memory"][who][f] for x in runs) / 1024 for f in ("rss", "pss")}
                print(f"  peak memory {who:11s}  {mem['rss']:6.1f} MB summed RSS, {mem['pss']:6.1f} MB summed PSS"
                      " (all its processes)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["6.1", "6.12"])
