# SPDX-License-Identifier: GPL-3.0-or-later
"""kernel.kmod.kmod_depmod next to kmod's depmod, each as an Ansible task on localhost.

For each cached Debian kernel (6.1: plain .ko, 6.12: .ko.xz) this makes two fresh scratch
copies without indexes, then runs in one playbook: ``depmod -b ROOT REL`` through
ansible.builtin.command on one copy, kmod_depmod on the other (cold: empty cache), and
kmod_depmod again (warm: nothing changed). Each task is timed between ``date`` stamps
taken by the tasks around it, so both sides carry the same Ansible overhead. Prints the
times and the ratios kmod_depmod / depmod (target: <= 1.0 for .ko.xz, <= 2.0 for .ko),
each the best of two rounds on fresh copies, since the machine may be shared.

Usage: python3 benchmarks/bench_depmod.py [6.1] [6.12]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from collection_link import checkout_collections_path  # noqa: E402
from kernels import KernelTree, pristine_root, scratch_root  # noqa: E402

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
            {"name": "save", "ansible.builtin.copy": {
                "dest": str(results),
                "content": "{{ {'t0': t0, 't1': t1, 't2': t2, 't3': t3, 'cold': cold, 'warm': warm} | to_json }}"}},
        ],
    }]


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
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", str(book)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"playbook failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    results = json.loads(out.read_text())
    t = [float(results[f"t{i}"]["stdout"]) for i in range(4)]
    same = all((trees[0].moddir / n).read_bytes() == (trees[1].moddir / n).read_bytes() for n in INDEXES)
    return {
        "key": key, "modules": results["cold"]["module_count"], "identical": same,
        "depmod": t[1] - t[0], "cold": t[2] - t[1], "warm": t[3] - t[2],
        "cold_elapsed": results["cold"]["elapsed"], "warm_elapsed": results["warm"]["elapsed"],
        "warm_changed": results["warm"]["changed"], "pristine": str(pristine.root),
    }


def main(keys: list[str], repeat: int = 2) -> None:
    """Each measurement is the best of ``repeat`` runs: the machine may be shared."""
    with tempfile.TemporaryDirectory(prefix="bench-depmod-") as tmp:
        for key in keys:
            load_before = os.getloadavg()[0]
            runs = [run(key, Path(tmp) / f"{key}-{i}") for i in range(repeat)]
            load_after = os.getloadavg()[0]
            best = {m: min(r[m] for r in runs) for m in ("depmod", "cold", "warm", "cold_elapsed", "warm_elapsed")}
            r = runs[0]
            print(f"{key}: {r['modules']} modules, output identical to depmod: "
                  f"{all(x['identical'] for x in runs)}, best of {repeat}, "
                  f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs")
            print(f"  depmod task           {best['depmod']:7.2f} s")
            print(f"  kmod_depmod cold task {best['cold']:7.2f} s  (module's own time {best['cold_elapsed']:.2f} s)"
                  f"  ratio {best['cold'] / best['depmod']:.2f}")
            print(f"  kmod_depmod warm task {best['warm']:7.2f} s  (module's own time {best['warm_elapsed']:.2f} s)"
                  f"  ratio {best['warm'] / best['depmod']:.2f}  changed={any(x['warm_changed'] for x in runs)}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["6.1", "6.12"])
